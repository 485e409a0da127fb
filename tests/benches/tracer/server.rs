//! Rows b and c: Apache (event MPM, static file, keep-alive) under wrk,
//! untraced, under do-nothing programs on the `request` probes (the floor),
//! under Flowdar with the `request`, `lean`, `io` and `full` profiles, and under
//! bpftrace printing each event of the `request` functions. Trace bytes per
//! event come from the same recordings.
use std::{path::Path, time::Duration};

use flowdar::{
    probes::{profile_requests, resolve},
    server::{run_wrk, ApacheOptions, ThrowawayApache, WrkPlan},
};
use flowdar_tests::start_recorder;

use crate::common::{file_size, median, parse_summary, round_order, Bpftrace};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Config {
    Untraced,
    Floor,
    Request,
    Lean,
    TopLean,
    Io,
    Full,
    BpftraceRequest,
}

impl Config {
    pub const ALL: [Config; 8] = [
        Config::Untraced,
        Config::Floor,
        Config::Request,
        Config::Lean,
        Config::TopLean,
        Config::Io,
        Config::Full,
        Config::BpftraceRequest,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Config::Untraced => "untraced",
            Config::Floor => "floor: `request` probes, do-nothing programs",
            Config::Request => "Flowdar `apache:request`",
            Config::Lean => "Flowdar `apache:lean` (syscall tracepoints + 1 function)",
            Config::TopLean => {
                "`flowdar top --pid P --json -o T` (its default, `apache:lean`, shown live)"
            }
            Config::Io => "Flowdar `apache:io`",
            Config::Full => "Flowdar `apache:full`",
            Config::BpftraceRequest => "bpftrace, `request` functions, printf per event",
        }
    }

    fn profile(self) -> &'static str {
        match self {
            Config::Io => "apache:io",
            Config::Lean => "apache:lean",
            Config::Full => "apache:full",
            _ => "apache:request",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Throughput {
    pub config: Config,
    pub requests_per_sec: f64,
    pub p99_us: f64,
    pub events: Option<u64>,
    pub lost: Option<u64>,
    pub bytes_per_event: Option<f64>,
    /// Flowdar's attach mode as record printed it (Flowdar and the floor).
    pub attach_mode: Option<String>,
    /// Requests/s of each round, in round order (the median's inputs).
    pub rounds: Vec<f64>,
}

/// bpftrace printing every entry and exit of the `request` functions, with
/// the filter Flowdar applies in the kernel (the parent or its children).
fn bpftrace_script(apache: &ThrowawayApache) -> String {
    let pid = apache.pid();
    let requests = profile_requests("apache:request").unwrap();
    let probes = resolve(pid, &requests, Path::new("/usr/lib/debug")).expect("resolve");
    let filter = format!("/pid == {pid} || curtask->real_parent->tgid == {pid}/");
    let mut script = String::new();
    for p in probes {
        let (path, f) = (p.path.display(), &p.function);
        script.push_str(&format!(
            "uprobe:{path}:{f} {filter} {{ printf(\"E {f} %d %d %lu %lx %lx %lx\\n\", pid, tid, nsecs, arg0, arg1, arg2); }}\n\
             uretprobe:{path}:{f} {filter} {{ printf(\"X {f} %d %d %lu %lx\\n\", pid, tid, nsecs, retval); }}\n"
        ));
    }
    script
}

fn measure_one(apache: &ThrowawayApache, config: Config, secs: u64, out: &Path) -> Throughput {
    let plan = WrkPlan {
        duration: Duration::from_secs(secs),
        ..Default::default()
    };
    let pid = apache.pid().to_string();
    let run_wrk = || {
        let r = run_wrk(apache.addr(), &plan).expect("wrk");
        assert_eq!(r.errors, 0, "wrk saw errors: {r:?}");
        r
    };
    let mut attach_mode = None;
    let (report, events, lost, bpe) = match config {
        Config::Untraced => (run_wrk(), None, None, None),
        Config::BpftraceRequest => {
            let bt = Bpftrace::start(&bpftrace_script(apache));
            let r = run_wrk();
            let (lines, lost) = bt.stop();
            (r, Some(lines), Some(lost), None)
        }
        Config::TopLean => {
            let mut cmd = std::process::Command::new(flowdar_tests::flowdar_bin());
            cmd.args(["top", "--pid", &pid, "--json", "--force", "-o"])
                .arg(out);
            // Ready once the first interval is out: attached and showing.
            let top =
                flowdar_tests::Background::start(cmd, "\"functions\"", Duration::from_secs(60));
            let r = run_wrk();
            let (code, stdout, stderr) = top.stop(libc::SIGINT);
            assert_eq!(code, Some(0), "top failed:\n{stderr}");
            assert!(
                stdout.lines().count() >= secs as usize,
                "an interval a second:\n{stdout}"
            );
            let (events, lost) = top_summary(&stderr);
            let bpe = file_size(out) as f64 / events.max(1) as f64;
            (r, Some(events), Some(lost), Some(bpe))
        }
        _ => {
            let mut args = vec![
                "--pid",
                &pid,
                "--profile",
                config.profile(),
                "--force",
                "-o",
                out.to_str().unwrap(),
            ];
            if config == Config::Floor {
                args.push("--floor");
            }
            let rec = start_recorder(&args);
            let r = run_wrk();
            let (code, stdout, stderr) = rec.stop(libc::SIGINT);
            assert_eq!(code, Some(0), "record failed:\n{stdout}\n{stderr}");
            let s = parse_summary(&stdout);
            attach_mode = Some(s.attach_mode.clone());
            if config == Config::Floor {
                (r, None, None, None)
            } else {
                let bpe = file_size(out) as f64 / s.events.max(1) as f64;
                (r, Some(s.events), Some(s.lost), Some(bpe))
            }
        }
    };
    Throughput {
        config,
        requests_per_sec: report.requests_per_sec,
        p99_us: report.latency_p99_us.unwrap_or(f64::NAN),
        events,
        lost,
        bytes_per_event: bpe,
        attach_mode,
        rounds: Vec::new(),
    }
}

/// Events and lost from top's last line: "Stopped (REASON) after 5.1 s:
/// 123 events, 0 lost; trace in PATH."
fn top_summary(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("Stopped ("))
        .unwrap_or_else(|| panic!("no summary line from top:\n{stderr}"));
    let rest = line.split_once("s: ").map_or("", |(_, r)| r);
    let mut words = rest.split([' ', ',', ';']).filter(|w| !w.is_empty());
    let events = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let _events_word = words.next();
    let lost = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or(u64::MAX);
    (events, lost)
}

/// Every configuration, `rounds` times interleaved (every other round in
/// reverse order), against one Apache; then `pairs` more rounds of the
/// floor and `request` alone, side by side in alternating order: their
/// ratio is issue #15's target, and this machine's drift from minute to
/// minute (+-10% and more) needs more than three pairs to see a few
/// percent; and `pairs` triples of untraced, `lean` and `top -o`, side by
/// side likewise (issue #28's ratio). Each row's figures are the medians
/// of the `rounds` rounds; `rounds` holds every run's requests/s, the
/// pairs' and triples' included.
pub fn measure(secs: u64, rounds: usize, pairs: usize, out_dir: &Path) -> Vec<Throughput> {
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    // Warm Apache up (children, caches) before the first measured run.
    let _ = run_wrk(
        apache.addr(),
        &WrkPlan {
            duration: Duration::from_secs(2),
            ..Default::default()
        },
    );
    let mut all: Vec<Vec<Throughput>> = vec![Vec::new(); Config::ALL.len()];
    for round in 0..rounds {
        for (i, c) in round_order(&Config::ALL, round) {
            eprintln!(
                "  b. server, round {}/{rounds}: {} (wrk {secs} s)",
                round + 1,
                c.label()
            );
            let out = out_dir.join(format!("server-{i}.flowdar"));
            all[i].push(measure_one(&apache, c, secs, &out));
        }
    }
    // Side by side, in alternating order continuing the rounds' (with an
    // odd number of them, a restart would run one first twice in a row):
    // the floor and `request` (issue #15's ratio), and untraced, `lean`
    // and `top -o` (issue #28's: in a round up to six other runs, a
    // minute of this machine's drift, separate them; a triple, 20 s).
    let groups: [(&str, &[Config]); 2] = [
        ("floor/request pair", &[Config::Floor, Config::Request]),
        (
            "untraced/lean/top triple",
            &[Config::Untraced, Config::Lean, Config::TopLean],
        ),
    ];
    for (what, group) in groups {
        for p in 0..pairs {
            for (_, c) in round_order(group, rounds + p) {
                eprintln!(
                    "  b. server, {what} {}/{pairs}: {} (wrk {secs} s)",
                    p + 1,
                    c.label()
                );
                let i = Config::ALL.iter().position(|x| *x == c).unwrap();
                let out = out_dir.join(format!("server-{i}.flowdar"));
                all[i].push(measure_one(&apache, c, secs, &out));
            }
        }
    }
    // The table compares the rows over the same rounds (the pairs ran
    // later, in another minute of this machine's drift); the pairs only
    // add to the paired ratio, kept in `rounds`, and to the losses.
    all.into_iter()
        .map(|runs| {
            let table = &runs[..rounds.min(runs.len())];
            let last = table.last().unwrap().clone();
            Throughput {
                requests_per_sec: median(table.iter().map(|r| r.requests_per_sec).collect()),
                p99_us: median(table.iter().map(|r| r.p99_us).collect()),
                lost: runs.iter().filter_map(|r| r.lost).max(),
                rounds: runs.iter().map(|r| r.requests_per_sec).collect(),
                ..last
            }
        })
        .collect()
}
