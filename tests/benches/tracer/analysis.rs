//! Row d: `flowdar stats` and `flowdar diff` on generated traces of 2 M and
//! 10 M events: events per second and peak memory (the child's max RSS).
//! Each command runs once unmeasured first (page cache, writeback of the
//! freshly generated file), then `rounds` times: the median time and the
//! largest peak RSS are kept. The reader decodes on up to 4 threads
//! (`TraceReader::for_each_event`), so the rates use the machine's cores.
use std::{path::Path, process::Command, time::Duration};

use flowdar::{
    store::TraceProbe,
    store::{TraceFooter, TraceHeader, TraceWriter},
};
use flowdar_common::{Event, EventKind};
use flowdar_tests::flowdar_bin;

use crate::common::{median, run_measured};

const PROBES: u32 = 40;
const THREADS: u32 = 16;
const MAX_DEPTH: usize = 6;

/// A server-like trace: 16 threads, calls nested up to 6 deep over 40
/// functions, 50-2000 ns between events; `slow` makes function 3 take 5 µs
/// longer (the diff's change to find).
pub fn generate(path: &Path, events: u64, seed: u64, slow: bool) {
    let probes = (0..PROBES)
        .map(|id| TraceProbe {
            id,
            function: format!("bench_fn_{id}"),
            path: "/bench".into(),
            attach_path: "/bench".into(),
            address: 0x1000 + u64::from(id) * 0x40,
            file_offset: 0x1000 + u64::from(id) * 0x40,
            capture: Default::default(),
            optional: false,
            source: None,
            params: Vec::new(),
        })
        .collect();
    let header = TraceHeader {
        tool_version: env!("CARGO_PKG_VERSION").into(),
        host: "bench".into(),
        kernel: "bench".into(),
        command_line: vec!["generated".into()],
        start_unix_ns: 0,
        start_monotonic_ns: 1_000_000_000,
        target_pid: 1000,
        probes,
        attach_mode: "uprobe_multi".into(),
        attached_monotonic_ns: 0,
        target_ns_pid: 0,
    };
    let mut w = TraceWriter::create(path, &header, true).expect("create trace");
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut stacks: Vec<Vec<u32>> = vec![Vec::new(); THREADS as usize];
    let mut ts = 1_000_000_000u64;
    let mut chunk = Vec::with_capacity(flowdar::capture::BATCH_EVENTS);
    let mut written = 0u64;
    while written < events {
        let t = (next() % u64::from(THREADS)) as usize;
        ts += 50 + next() % 1950;
        let stack = &mut stacks[t];
        let r = next();
        let (probe, kind) = if stack.is_empty() || (stack.len() < MAX_DEPTH && r % 100 < 52) {
            let p = ((stack.len() as u64 * 7 + r / 100) % u64::from(PROBES)) as u32;
            stack.push(p);
            (p, EventKind::Entry)
        } else {
            let p = stack.pop().unwrap();
            if slow && p == 3 {
                ts += 5000;
            }
            (p, EventKind::Exit)
        };
        chunk.push(Event {
            tgid: 1000,
            tid: 1000 + t as u32,
            ts_ns: ts,
            probe_id: probe,
            kind: kind as u32,
            args: [r & 0xffff, 0, 0],
        });
        written += 1;
        if chunk.len() == chunk.capacity() {
            w.write_chunk(&chunk).unwrap();
            chunk.clear();
        }
    }
    w.write_chunk(&chunk).unwrap();
    w.finish(TraceFooter {
        end_monotonic_ns: ts,
        stop_reason: "generated".into(),
        ..Default::default()
    })
    .unwrap();
}

#[derive(Debug, Clone)]
pub struct AnalysisRow {
    /// The command as run, trace paths relative to the output directory.
    pub command: String,
    pub events: u64,
    pub seconds: f64,
    pub peak_rss: u64,
}

impl AnalysisRow {
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.seconds
    }
}

/// One unmeasured run, then `rounds` measured ones: the median time and
/// the largest peak RSS.
fn warm_median(rounds: usize, mut f: impl FnMut() -> (Duration, u64)) -> (Duration, u64) {
    let _warm_up = f();
    let runs: Vec<(Duration, u64)> = (0..rounds).map(|_| f()).collect();
    let time = median(runs.iter().map(|(d, _)| d.as_secs_f64()).collect());
    let rss = runs.iter().map(|(_, r)| *r).max().unwrap_or(0);
    (Duration::from_secs_f64(time), rss)
}

pub fn measure(rounds: usize, out_dir: &Path) -> Vec<AnalysisRow> {
    let mut rows = Vec::new();
    for (label, n) in [("2M", 2_000_000u64), ("10M", 10_000_000)] {
        let a_name = format!("gen-{label}-a.flowdar");
        let b_name = format!("gen-{label}-b.flowdar");
        let (a, b) = (out_dir.join(&a_name), out_dir.join(&b_name));
        eprintln!("  d. generating {label}-event traces");
        generate(&a, n, 0x9e37_79b9_7f4a_7c15, false);
        generate(&b, n, 0x2545_f491_4f6c_dd1d, true);
        eprintln!("  d. flowdar stats / diff on {label} events");
        let (d, rss) = warm_median(rounds, || {
            run_measured(Command::new(flowdar_bin()).arg("stats").arg(&a))
        });
        rows.push(AnalysisRow {
            command: format!("stats {a_name}"),
            events: n,
            seconds: d.as_secs_f64(),
            peak_rss: rss,
        });
        let (d, rss) = warm_median(rounds, || {
            run_measured(Command::new(flowdar_bin()).arg("diff").arg(&a).arg(&b))
        });
        rows.push(AnalysisRow {
            command: format!("diff {a_name} {b_name}"),
            events: 2 * n,
            seconds: d.as_secs_f64(),
            peak_rss: rss,
        });
    }
    rows
}
