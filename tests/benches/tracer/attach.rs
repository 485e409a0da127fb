//! Row e: attaching and detaching the whole `apache:full` profile (the times
//! `flowdar record` prints), and the time from launching `flowdar record` to
//! the first recorded event; medians of the rounds.
use std::{path::Path, process::Command, time::Duration};

use flowdar::{
    capture::monotonic_ns,
    server::{ApacheOptions, ThrowawayApache},
    store::TraceReader,
};
use flowdar_tests::flowdar_bin;

use crate::{
    common::{median, parse_summary},
    percall::{self, Running, FUNCTION},
};

#[derive(Debug, Clone)]
pub struct AttachRow {
    /// Functions attached: the trace's probe table less those the kernel
    /// refused (skipped and reported by record).
    pub functions: usize,
    pub refused: usize,
    /// As record printed it: "uprobe_multi" or "perf".
    pub attach_mode: String,
    pub attach: Duration,
    pub detach: Duration,
    pub first_event: Duration,
}

fn record(args: &[&str]) -> String {
    let out = Command::new(flowdar_bin())
        .arg("record")
        .args(args)
        .output()
        .expect("run flowdar record");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "record failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

pub fn measure(rounds: usize, out_dir: &Path) -> AttachRow {
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let trace = out_dir.join("attach.flowdar");
    let pid = apache.pid().to_string();
    let (mut attach, mut detach) = (Vec::new(), Vec::new());
    let (mut functions, mut refused, mut attach_mode) = (0, 0, String::new());
    for round in 0..rounds {
        eprintln!(
            "  e. attach/detach apache:full, round {}/{rounds}",
            round + 1
        );
        let out = record(&[
            "--pid",
            &pid,
            "--profile",
            "apache:full",
            "--duration",
            "1s",
            "--force",
            "-o",
            trace.to_str().unwrap(),
        ]);
        let s = parse_summary(&out);
        attach.push(s.attach.as_secs_f64());
        detach.push(s.detach.as_secs_f64());
        let table = TraceReader::open(&trace).unwrap().header().probes.len();
        (functions, refused) = (table - s.skipped, s.skipped);
        attach_mode = s.attach_mode;
    }
    // Startup: launch to the first event of a function called every 50 µs.
    let target = percall::build();
    let mut first = Vec::new();
    for round in 0..rounds {
        eprintln!("  e. launch to first event, round {}/{rounds}", round + 1);
        let mut run = Running::start(&target.bin, 0);
        run.pace();
        let probe = format!("{}:{FUNCTION}", target.bin.display());
        let launched = monotonic_ns();
        record(&[
            "--pid",
            &run.pid().to_string(),
            "--probe",
            &probe,
            "--duration",
            "500ms",
            "--force",
            "-o",
            trace.to_str().unwrap(),
        ]);
        let mut first_ts = None;
        let _ = TraceReader::open(&trace).unwrap().for_each_event(|e| {
            first_ts.get_or_insert(e.ts_ns);
        });
        let first_ts = first_ts.expect("an event was recorded");
        first.push(first_ts.saturating_sub(launched) as f64 / 1e9);
    }
    AttachRow {
        functions,
        refused,
        attach_mode,
        attach: Duration::from_secs_f64(median(attach)),
        detach: Duration::from_secs_f64(median(detach)),
        first_event: Duration::from_secs_f64(median(first)),
    }
}
