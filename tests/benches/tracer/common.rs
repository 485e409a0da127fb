//! Shared pieces: recorder summaries, bpftrace runs, child resource usage.
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

use flowdar_tests::reap;

/// What `flowdar record` printed when it stopped.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub events: u64,
    pub lost: u64,
    pub attach: Duration,
    pub detach: Duration,
    /// "uprobe_multi" or "perf", as record printed it.
    pub attach_mode: String,
    /// Functions a pattern matched that could not be probed (refused by
    /// the kernel): in the trace's probe table, never attached.
    pub skipped: usize,
    /// Kernel programs' (name, runs, ns per run), with `--bpf-stats`.
    pub programs: Vec<(String, u64, f64)>,
}

/// Parses "N events, L lost", "attached in A (attach mode: M), detached in
/// D", "K functions matched by patterns could not be probed" and
/// "Kernel program P: R runs, T ns per run".
pub fn parse_summary(out: &str) -> Summary {
    let mut s = Summary::default();
    for line in out.lines() {
        if let Some(rest) = line
            .strip_prefix("Recorded ")
            .and_then(|l| l.split_once("): "))
            .map(|(_, r)| r)
        {
            let mut words = rest.split([' ', ',']).filter(|w| !w.is_empty());
            s.events = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            let _events_word = words.next();
            s.lost = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        }
        if let Some(rest) = line.strip_prefix("Probes attached in ") {
            let (a, rest) = rest.split_once(", detached in ").unwrap_or_default();
            let d = rest.split(';').next().unwrap_or_default();
            let (a, mode) = a.split_once(" (attach mode: ").unwrap_or((a, ""));
            s.attach = parse_duration(a);
            s.detach = parse_duration(d);
            s.attach_mode = mode
                .split([';', ')'])
                .next()
                .unwrap_or_default()
                .to_string();
        }
        if let Some((n, _)) = line.split_once(" functions matched by patterns could not be probed")
        {
            s.skipped = n.trim().parse().unwrap_or(0);
        }
        if let Some((name, rest)) = line
            .strip_prefix("Kernel program ")
            .and_then(|r| r.split_once(": "))
        {
            let mut words = rest.split([' ', ',']).filter(|w| !w.is_empty());
            let runs = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            let ns = words.nth(1).and_then(|w| w.parse().ok()).unwrap_or(0.0);
            s.programs.push((name.to_string(), runs, ns));
        }
    }
    s
}

/// "58.3 ms", "1.26 s", "812 µs", "40 ns" as printed by flowdar.
pub fn parse_duration(text: &str) -> Duration {
    let (n, unit) = text.trim().split_once(' ').unwrap_or((text, "s"));
    let n: f64 = n.parse().unwrap_or(0.0);
    let secs = match unit.trim() {
        "ns" => n / 1e9,
        "µs" | "us" => n / 1e6,
        "ms" => n / 1e3,
        "min" => n * 60.0,
        _ => n,
    };
    Duration::from_secs_f64(secs)
}

/// bpftrace running a script, its stdout lines counted as they arrive (the
/// consumer of per-event output), ready once it says it has attached.
pub struct Bpftrace {
    child: Child,
    lines: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Bpftrace {
    pub fn start(script: &str) -> Self {
        let mut child = Command::new("bpftrace")
            .arg("-e")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bpftrace (cargo xtask setup installs it)");
        let lines = Arc::new(AtomicU64::new(0));
        let lost = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel();
        let count = |stream: Box<dyn std::io::Read + Send>, tx: mpsc::Sender<()>| {
            let (lines, lost) = (lines.clone(), lost.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if line.starts_with("Attaching") {
                        let _ = tx.send(());
                    } else if let Some(n) = line
                        .strip_prefix("Lost ")
                        .and_then(|r| r.split(' ').next())
                        .and_then(|n| n.parse::<u64>().ok())
                    {
                        lost.fetch_add(n, Ordering::Relaxed);
                    } else if line.starts_with("E ") || line.starts_with("X ") {
                        lines.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        let reader = count(Box::new(child.stdout.take().unwrap()), tx.clone());
        count(Box::new(child.stderr.take().unwrap()), tx);
        rx.recv_timeout(Duration::from_secs(60))
            .expect("bpftrace attached within 60 s");
        // bpftrace prints "Attaching" just before the last attach calls.
        std::thread::sleep(Duration::from_millis(300));
        Self {
            child,
            lines,
            lost,
            reader: Some(reader),
        }
    }

    /// Stops bpftrace; returns (event lines received, events it reported lost).
    pub fn stop(mut self) -> (u64, u64) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (
            self.lines.load(Ordering::Relaxed),
            self.lost.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wall time and peak RSS of a command run to completion (output discarded).
/// The child is reaped by [`reap`] (wait4), which also gives its resource usage.
#[expect(
    clippy::zombie_processes,
    reason = "reap (wait4) reaps the child, which clippy cannot see"
)]
pub fn run_measured(cmd: &mut Command) -> (Duration, u64) {
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let done = reap(child.id(), true).expect("a blocking wait4 returns the child");
    let wall = started.elapsed();
    assert!(done.status.success(), "{cmd:?} failed: {}", done.status);
    (wall, done.peak_rss)
}

pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Median of a few noisy measurements.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The configurations in the order round `round` (from 0) runs them: as
/// listed on even rounds, reversed on odd ones. A slow drift of the machine
/// then weighs on every configuration alike, and neighbours (the floor and
/// Flowdar) are measured in both orders.
pub fn round_order<T: Copy>(all: &[T], round: usize) -> Vec<(usize, T)> {
    let mut order: Vec<(usize, T)> = all.iter().copied().enumerate().collect();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

/// Ratios of two configurations measured side by side, one per round, and
/// their median. Two runs of the same round share the machine's state of
/// that minute, which a ratio of medians taken across rounds does not: on
/// this shared machine the drift between rounds is larger than the effects
/// measured.
#[derive(Debug, Clone)]
pub struct Paired {
    pub median: f64,
    pub rounds: Vec<f64>,
}

impl Paired {
    /// `a[i] / b[i]` for each round `i` that both have: a configuration
    /// measured in extra rounds (row b's floor/`request` pairs) is paired
    /// with a shorter one over their common first rounds only.
    pub fn of(a: &[f64], b: &[f64]) -> Self {
        let rounds: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
        Paired {
            median: median(rounds.clone()),
            rounds,
        }
    }

    /// "0.97 (rounds: 0.96, 0.97, 0.99)", with `digits` decimals.
    pub fn show(&self, digits: usize) -> String {
        let each: Vec<String> = self
            .rounds
            .iter()
            .map(|r| format!("{r:.digits$}"))
            .collect();
        format!("{:.digits$} (rounds: {})", self.median, each.join(", "))
    }
}
