//! Soak run (issue 9; not a test): Flowdar records Apache under steady wrk
//! load with the `request` profile for a long time; its RSS and CPU are
//! sampled every 5 s, and at the end the events lost and the trace's
//! integrity are checked. `cargo xtask soak [--duration 10m]` runs it.
//! Prints a Markdown report (also written to $BENCH_OUT/soak.md), and exits
//! 1 when integrity is not held.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark prints its figures and progress"
)]
use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use flowdar::{
    server::{run_wrk, ApacheOptions, ThrowawayApache, WrkPlan},
    store::TraceReader,
};
use flowdar_tests::{require_root, start_recorder};

const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// (RSS bytes, CPU seconds user+system) of a process.
fn usage(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based) of stat: 11 and 12 here.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((rss_kib * 1024, ticks / hz))
}

fn main() {
    require_root();
    let duration = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(|d| humantime::parse_duration(&d).expect("a duration like 10m"))
        .unwrap_or(Duration::from_secs(600));
    let out_dir = std::env::var_os("BENCH_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("flowdar-soak"));
    std::fs::create_dir_all(&out_dir).unwrap();
    let trace = out_dir.join("soak.flowdar");
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let rec = start_recorder(&[
        "--pid",
        &apache.pid().to_string(),
        "--profile",
        "apache:request",
        "--force",
        "-o",
        trace.to_str().unwrap(),
    ]);
    eprintln!(
        "soak: Apache PID {} under wrk (2 threads, 20 connections) for {}, recorded by PID {}",
        apache.pid(),
        humantime::format_duration(duration),
        rec.pid()
    );
    let addr = apache.addr();
    let load = std::thread::spawn(move || {
        run_wrk(
            addr,
            &WrkPlan {
                duration,
                ..Default::default()
            },
        )
    });
    let started = Instant::now();
    let mut samples: Vec<(f64, u64, f64)> = Vec::new(); // (t, rss, cpu % of one core)
    let mut last_cpu = usage(rec.pid()).map_or(0.0, |u| u.1);
    let mut last_t = 0.0;
    while !load.is_finished() {
        std::thread::sleep(SAMPLE_EVERY);
        let Some((rss, cpu)) = usage(rec.pid()) else {
            break;
        };
        let t = started.elapsed().as_secs_f64();
        let pct = 100.0 * (cpu - last_cpu) / (t - last_t);
        samples.push((t, rss, pct));
        (last_cpu, last_t) = (cpu, t);
        if samples.len().is_multiple_of(12) {
            eprintln!(
                "soak: {:>5.0} s  RSS {:>6.1} MiB  CPU {:>5.1}%",
                t,
                rss as f64 / 1048576.0,
                pct
            );
        }
    }
    let wrk = load.join().unwrap().expect("wrk");
    let (code, stdout, stderr) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{stdout}\n{stderr}");

    // Integrity: the trace reads back whole, and its counts match the summary.
    let reader = TraceReader::open(&trace).expect("open trace");
    let handler = reader
        .header()
        .probes
        .iter()
        .find(|p| p.function == "ap_invoke_handler")
        .map(|p| p.id);
    let mut read_events = 0u64;
    let mut handled = 0u64;
    let reader = reader
        .for_each_event(|e| {
            read_events += 1;
            handled += u64::from(
                Some(e.probe_id) == handler && e.kind == flowdar_common::EventKind::Exit as u32,
            );
        })
        .expect("read trace");
    let footer = reader.footer().cloned().expect("a footer");
    let warnings = reader.warnings().len();
    let lost: u64 = footer.kernel_drops.iter().sum::<u64>() + footer.user_drops.iter().sum::<u64>();
    let size = std::fs::metadata(&trace).map_or(0, |m| m.len());

    let rss: Vec<u64> = samples.iter().map(|s| s.1).collect();
    let first_minute_max = samples
        .iter()
        .filter(|s| s.0 <= 60.0)
        .map(|s| s.1)
        .max()
        .unwrap_or(0);
    let cpu_mean = samples.iter().map(|s| s.2).sum::<f64>() / samples.len().max(1) as f64;
    let mib = |b: u64| b as f64 / 1048576.0;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Soak run {} on {} (kernel {}): `apache:request` profile, wrk -t2 -c20 for {}.\n",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        humantime::format_duration(duration),
    );
    let _ = writeln!(md, "| measure | value |\n|---|---:|");
    let _ = writeln!(
        md,
        "| requests served (wrk) | {} ({:.0}/s, {} errors) |",
        wrk.requests, wrk.requests_per_sec, wrk.errors
    );
    let _ = writeln!(
        md,
        "| requests handled, as recorded (`ap_invoke_handler` returns) | {handled} |"
    );
    let _ = writeln!(md, "| events recorded | {} |", footer.events);
    let _ = writeln!(md, "| events read back | {read_events} |");
    let _ = writeln!(md, "| events lost (kernel + user) | {lost} |");
    let _ = writeln!(md, "| read warnings | {warnings} |");
    let _ = writeln!(
        md,
        "| trace size | {:.1} MiB ({:.2} B/event) |",
        mib(size),
        size as f64 / footer.events.max(1) as f64
    );
    let _ = writeln!(
        md,
        "| Flowdar RSS: min / max / max in the first minute | {:.1} / {:.1} / {:.1} MiB |",
        mib(rss.iter().copied().min().unwrap_or(0)),
        mib(rss.iter().copied().max().unwrap_or(0)),
        mib(first_minute_max)
    );
    let _ = writeln!(
        md,
        "| Flowdar CPU, mean of {} samples | {cpu_mean:.1}% of one core |",
        samples.len()
    );
    let _ = writeln!(md, "\nRSS and CPU over time (every minute):\n");
    let _ = writeln!(
        md,
        "| t (s) | RSS (MiB) | CPU (% of a core) |\n|---:|---:|---:|"
    );
    for s in samples
        .iter()
        .filter(|s| (s.0 as u64) % 60 < SAMPLE_EVERY.as_secs())
    {
        let _ = writeln!(md, "| {:.0} | {:.1} | {:.1} |", s.0, mib(s.1), s.2);
    }
    let verdict = read_events == footer.events && warnings == 0 && lost == 0;
    let _ = writeln!(
        md,
        "\nIntegrity: {} (every event read back, no warnings, nothing lost).",
        if verdict { "held" } else { "NOT held" }
    );
    println!("{md}");
    std::fs::write(out_dir.join("soak.md"), &md).unwrap();
    // The report is written either way; a broken integrity fails the run
    // (and `cargo xtask soak`).
    if !verdict {
        eprintln!(
            "soak: integrity NOT held: {read_events} of {} events read back, {warnings} warnings, {lost} lost",
            footer.events
        );
        std::process::exit(1);
    }
}
