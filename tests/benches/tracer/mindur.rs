//! Row m: what `record --min-duration` saves on `apache:request,io` under
//! wrk: events and bytes per request, and the CPU time of Flowdar's drain
//! and writer threads, against the same recording with every call kept.
use std::{path::Path, time::Duration};

use flowdar::server::{run_wrk, ApacheOptions, ThrowawayApache, WrkPlan};
use flowdar_tests::start_recorder;

use crate::common::{file_size, median, parse_summary};

/// The minimum durations compared (None: every call kept).
pub const MINIMA: [Option<&str>; 3] = [None, Some("50us"), Some("1ms")];

#[derive(Debug, Clone)]
pub struct Row {
    pub min: Option<&'static str>,
    pub requests_per_sec: f64,
    pub events_per_request: f64,
    pub bytes_per_request: f64,
    /// CPU time of the drain and writer threads per 1000 requests (ms).
    pub pipeline_ms_per_k: f64,
    pub short: u64,
    pub lost: u64,
}

/// Time on CPU of the recorder's threads named `flowdar-drain` and
/// `flowdar-writer`, in ms (schedstat: nanoseconds, where utime and stime
/// count 10 ms ticks).
fn pipeline_cpu_ms(pid: u32) -> f64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| matches!(c.trim(), "flowdar-drain" | "flowdar-writer"))
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(|ns| ns as f64 / 1e6)
        .sum()
}

fn measure_one(apache: &ThrowawayApache, min: Option<&'static str>, secs: u64, out: &Path) -> Row {
    let pid = apache.pid().to_string();
    let mut args = vec![
        "--pid",
        &pid,
        "--profile",
        "apache:request,io",
        "--force",
        "-o",
        out.to_str().unwrap(),
    ];
    if let Some(m) = min {
        args.extend(["--min-duration", m]);
    }
    let rec = start_recorder(&args);
    let report = run_wrk(
        apache.addr(),
        &WrkPlan {
            duration: Duration::from_secs(secs),
            ..Default::default()
        },
    )
    .expect("wrk");
    let cpu = pipeline_cpu_ms(rec.pid());
    let (code, stdout, stderr) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{stdout}\n{stderr}");
    let s = parse_summary(&stdout);
    let short = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Minimum duration "))
        .and_then(|l| l.split(": ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let n = report.requests.max(1) as f64;
    Row {
        min,
        requests_per_sec: report.requests_per_sec,
        events_per_request: s.events as f64 / n,
        bytes_per_request: file_size(out) as f64 / n,
        pipeline_ms_per_k: cpu * 1000.0 / n,
        short,
        lost: s.lost,
    }
}

/// Each minimum, `rounds` times interleaved; medians per minimum.
pub fn measure(secs: u64, rounds: usize, out_dir: &Path) -> Vec<Row> {
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let out = out_dir.join("mindur.flowdar");
    let mut all: Vec<Vec<Row>> = vec![Vec::new(); MINIMA.len()];
    for round in 0..rounds {
        for (i, m) in MINIMA.iter().enumerate() {
            eprintln!(
                "  m. min-duration, round {}/{rounds}: {} (wrk {secs} s)",
                round + 1,
                m.unwrap_or("none")
            );
            all[i].push(measure_one(&apache, *m, secs, &out));
        }
    }
    all.into_iter()
        .map(|rows| Row {
            min: rows[0].min,
            requests_per_sec: median(rows.iter().map(|r| r.requests_per_sec).collect()),
            events_per_request: median(rows.iter().map(|r| r.events_per_request).collect()),
            bytes_per_request: median(rows.iter().map(|r| r.bytes_per_request).collect()),
            pipeline_ms_per_k: median(rows.iter().map(|r| r.pipeline_ms_per_k).collect()),
            short: rows.iter().map(|r| r.short).max().unwrap_or(0),
            lost: rows.iter().map(|r| r.lost).max().unwrap_or(0),
        })
        .collect()
}

pub fn render(rows: &[Row], rounds: usize, secs: u64) -> String {
    let mut md = format!(
        "#### m. Preprocessing in the kernel: `record --min-duration` on `apache:request,io` (wrk -t2 -c20, {secs} s per run; medians of {rounds} interleaved rounds; short calls and lost: the most of the rounds)\n\n\
         | minimum | requests/s | events/request | bytes/request | drain+writer CPU ms per 1000 requests (schedstat) | short calls dropped | lost |\n|---|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {:.0} | {:.2} | {:.1} | {:.2} | {} | {} |\n",
            r.min.unwrap_or("none (every call)"),
            r.requests_per_sec,
            r.events_per_request,
            r.bytes_per_request,
            r.pipeline_ms_per_k,
            r.short,
            r.lost
        ));
    }
    let base = &rows[0];
    for r in &rows[1..] {
        md.push_str(&format!(
            "\n{}: events {:.2}x, bytes {:.2}x, drain+writer CPU {:.2}x, requests/s {:.2}x of recording every call.",
            r.min.unwrap_or("-"),
            r.events_per_request / base.events_per_request.max(1e-9),
            r.bytes_per_request / base.bytes_per_request.max(1e-9),
            r.pipeline_ms_per_k / base.pipeline_ms_per_k.max(1e-9),
            r.requests_per_sec / base.requests_per_sec.max(1e-9),
        ));
    }
    md.push('\n');
    md
}
