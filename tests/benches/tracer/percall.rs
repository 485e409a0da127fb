//! Row a: the cost of one traced call. A small C program calls a probed
//! function in a tight loop; the same loop runs untraced, under do-nothing
//! programs (the floor: the uprobe traps alone), under Flowdar, and under
//! bpftrace printing each event or only counting.
use std::path::Path;

pub use flowdar_tests::looper::{build, Running, Target, FUNCTION};
use flowdar_tests::{flowdar_bin, start_recorder};

use crate::common::{median, parse_summary, Bpftrace};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tracer {
    Untraced,
    Floor,
    Flowdar,
    BpftracePrint,
    BpftraceCount,
}

impl Tracer {
    pub const ALL: [Tracer; 5] = [
        Tracer::Untraced,
        Tracer::Floor,
        Tracer::Flowdar,
        Tracer::BpftracePrint,
        Tracer::BpftraceCount,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Tracer::Untraced => "untraced",
            Tracer::Floor => "floor (do-nothing entry+exit programs)",
            Tracer::Flowdar => "Flowdar recording",
            Tracer::BpftracePrint => "bpftrace, printf per event",
            Tracer::BpftraceCount => "bpftrace, count()",
        }
    }
}

/// One configuration's result.
#[derive(Debug, Clone)]
pub struct PerCall {
    pub tracer: Tracer,
    pub ns_per_call: f64,
    /// Events the tracer delivered and lost (None where not applicable).
    pub events: Option<u64>,
    pub lost: Option<u64>,
}

/// Entry and exit printing what a Flowdar event holds: pid, tid, time,
/// probe, three arguments at entry, the return value at exit.
fn bpftrace_print_script(path: &Path, pid: u32) -> String {
    let p = path.display();
    format!(
        "uprobe:{p}:{FUNCTION} /pid == {pid}/ {{ printf(\"E {FUNCTION} %d %d %lu %lx %lx %lx\\n\", pid, tid, nsecs, arg0, arg1, arg2); }}\n\
         uretprobe:{p}:{FUNCTION} /pid == {pid}/ {{ printf(\"X {FUNCTION} %d %d %lu %lx\\n\", pid, tid, nsecs, retval); }}"
    )
}

fn bpftrace_count_script(path: &Path, pid: u32) -> String {
    let p = path.display();
    format!(
        "uprobe:{p}:{FUNCTION} /pid == {pid}/ {{ @entries = count(); }}\n\
         uretprobe:{p}:{FUNCTION} /pid == {pid}/ {{ @exits = count(); }}"
    )
}

pub fn measure_one(target: &Target, tracer: Tracer, calls: u64, out: &Path) -> PerCall {
    let run = Running::start(&target.path, calls);
    let pid = run.pid().to_string();
    let probe = format!("{}:{FUNCTION}", target.path.display());
    let record = |extra: &[&str]| {
        let mut args = vec!["--pid", &pid, "--probe", &probe, "--force", "-o"];
        args.push(out.to_str().unwrap());
        args.extend_from_slice(extra);
        start_recorder(&args)
    };
    let (ns, events, lost) = match tracer {
        Tracer::Untraced => (run.go(), None, None),
        Tracer::Floor | Tracer::Flowdar => {
            let rec = record(if tracer == Tracer::Floor {
                &["--floor"]
            } else {
                &[]
            });
            let ns = run.go();
            let (_, stdout, stderr) = rec.stop(libc::SIGINT);
            let s = parse_summary(&stdout);
            assert!(s.attach.as_nanos() > 0, "no summary:\n{stdout}\n{stderr}");
            if tracer == Tracer::Floor {
                (ns, None, None)
            } else {
                (ns, Some(s.events), Some(s.lost))
            }
        }
        Tracer::BpftracePrint => {
            let bt = Bpftrace::start(&bpftrace_print_script(&target.path, run.pid()));
            let ns = run.go();
            let (lines, lost) = bt.stop();
            (
                ns,
                Some(lines),
                Some(lost.max((2 * calls).saturating_sub(lines))),
            )
        }
        Tracer::BpftraceCount => {
            let bt = Bpftrace::start(&bpftrace_count_script(&target.path, run.pid()));
            let ns = run.go();
            bt.stop();
            (ns, None, None)
        }
    };
    PerCall {
        tracer,
        ns_per_call: ns as f64 / calls as f64,
        events,
        lost,
    }
}

/// Every configuration, `rounds` times interleaved; the median per config.
pub fn measure(calls: u64, rounds: usize, out_dir: &Path) -> Vec<PerCall> {
    let _ = flowdar_bin();
    let target = build();
    let out = out_dir.join("percall.flowdar");
    let mut all: Vec<Vec<PerCall>> = vec![Vec::new(); Tracer::ALL.len()];
    for round in 0..rounds {
        for (i, t) in Tracer::ALL.iter().enumerate() {
            eprintln!("  a. per call, round {}/{rounds}: {}", round + 1, t.label());
            all[i].push(measure_one(&target, *t, calls, &out));
        }
    }
    all.into_iter()
        .map(|runs| {
            let last = runs.last().unwrap().clone();
            PerCall {
                ns_per_call: median(runs.iter().map(|r| r.ns_per_call).collect()),
                events: runs.iter().filter_map(|r| r.events).min(),
                lost: runs.iter().filter_map(|r| r.lost).max(),
                ..last
            }
        })
        .collect()
}
