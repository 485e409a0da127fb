//! Row a: the cost of one traced call. A small C program calls a probed
//! function in a tight loop; the same loop runs untraced, under do-nothing
//! programs (the floor: the uprobe traps alone), under Flowdar, and under
//! bpftrace printing each event or only counting.
use std::path::Path;

pub use flowdar_tests::looper::{build, Running, Target, FUNCTION};
use flowdar_tests::{flowdar_bin, start_recorder};

use crate::common::{median, parse_summary, round_order, Bpftrace, Summary};

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
    /// Flowdar's attach mode as record printed it (Flowdar and the floor).
    pub attach_mode: Option<String>,
    /// ns/call of each round, in round order (the median's inputs).
    pub rounds: Vec<f64>,
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

/// One run of `tracer`; with `bpf_stats` (Flowdar and the floor only),
/// `record --bpf-stats` also reports its kernel programs' run times.
pub fn measure_one(
    target: &Target,
    tracer: Tracer,
    calls: u64,
    out: &Path,
    bpf_stats: bool,
) -> (PerCall, Summary) {
    let run = Running::start(&target.bin, calls);
    let pid = run.pid().to_string();
    let probe = format!("{}:{FUNCTION}", target.bin.display());
    let record = |extra: &[&str]| {
        let mut args = vec!["--pid", &pid, "--probe", &probe, "--force", "-o"];
        args.push(out.to_str().unwrap());
        args.extend_from_slice(extra);
        if bpf_stats {
            args.push("--bpf-stats");
        }
        start_recorder(&args)
    };
    let mut summary = Summary::default();
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
            summary = parse_summary(&stdout);
            assert!(
                summary.attach.as_nanos() > 0,
                "no summary:\n{stdout}\n{stderr}"
            );
            if tracer == Tracer::Floor {
                (ns, None, None)
            } else {
                (ns, Some(summary.events), Some(summary.lost))
            }
        }
        Tracer::BpftracePrint => {
            let bt = Bpftrace::start(&bpftrace_print_script(&target.bin, run.pid()));
            let ns = run.go();
            let (lines, lost) = bt.stop();
            (
                ns,
                Some(lines),
                Some(lost.max((2 * calls).saturating_sub(lines))),
            )
        }
        Tracer::BpftraceCount => {
            let bt = Bpftrace::start(&bpftrace_count_script(&target.bin, run.pid()));
            let ns = run.go();
            bt.stop();
            (ns, None, None)
        }
    };
    let row = PerCall {
        tracer,
        ns_per_call: ns as f64 / calls as f64,
        events,
        lost,
        attach_mode: (!summary.attach_mode.is_empty()).then(|| summary.attach_mode.clone()),
        rounds: Vec::new(),
    };
    (row, summary)
}

/// Every configuration, `rounds` times interleaved (every other round in
/// reverse order); the median per config, each round's figure kept.
pub fn measure(calls: u64, rounds: usize, out_dir: &Path) -> Vec<PerCall> {
    let _ = flowdar_bin();
    let target = build();
    let out = out_dir.join("percall.flowdar");
    let mut all: Vec<Vec<PerCall>> = vec![Vec::new(); Tracer::ALL.len()];
    for round in 0..rounds {
        for (i, t) in round_order(&Tracer::ALL, round) {
            eprintln!("  a. per call, round {}/{rounds}: {}", round + 1, t.label());
            all[i].push(measure_one(&target, t, calls, &out, false).0);
        }
    }
    all.into_iter()
        .map(|runs| {
            let last = runs.last().unwrap().clone();
            PerCall {
                ns_per_call: median(runs.iter().map(|r| r.ns_per_call).collect()),
                events: runs.iter().filter_map(|r| r.events).min(),
                lost: runs.iter().filter_map(|r| r.lost).max(),
                rounds: runs.iter().map(|r| r.ns_per_call).collect(),
                ..last
            }
        })
        .collect()
}

/// One `record --bpf-stats` run: its cost per call and the kernel programs
/// that ran once per call of the probed function.
pub struct ProgramTimes {
    pub tracer: Tracer,
    pub ns_per_call: f64,
    /// (program, runs, ns per run).
    pub programs: Vec<(String, u64, f64)>,
}

/// Where a traced call's time goes: one run each of the floor and of
/// Flowdar with `record --bpf-stats` (the kernel's per-program run time,
/// which itself adds a little to each run: these runs are not in the
/// table).
pub fn kernel_programs(calls: u64, out_dir: &Path) -> Vec<ProgramTimes> {
    let target = build();
    let out = out_dir.join("percall-stats.flowdar");
    [Tracer::Floor, Tracer::Flowdar]
        .into_iter()
        .map(|t| {
            eprintln!("  a. per call with --bpf-stats: {}", t.label());
            let (row, summary) = measure_one(&target, t, calls, &out, true);
            let programs = summary
                .programs
                .into_iter()
                .filter(|(_, runs, _)| *runs >= calls)
                .collect();
            ProgramTimes {
                tracer: t,
                ns_per_call: row.ns_per_call,
                programs,
            }
        })
        .collect()
}

/// Markdown for [`kernel_programs`]: each program's run time, and what is
/// left of the floor's cost for the uprobe traps themselves.
pub fn render_programs(times: &[ProgramTimes], rows: &[PerCall]) -> String {
    use std::fmt::Write as _;
    let mut md = String::from(
        "Where a call's time goes (`record --bpf-stats`: one more run each of the floor and of Flowdar, not in the table above; the kernel's statistics add a little to every run):\n\n\
         | configuration | ns/call in this run | kernel programs, ns per run |\n|---|---:|---|\n",
    );
    for t in times {
        let list: Vec<String> = t
            .programs
            .iter()
            .map(|(name, _, ns)| format!("{name} {ns:.0}"))
            .collect();
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} |",
            t.tracer.label(),
            t.ns_per_call,
            list.join(", ")
        );
    }
    let ns = |tracer: Tracer| {
        rows.iter()
            .find(|r| r.tracer == tracer)
            .map_or(0.0, |r| r.ns_per_call)
    };
    let nop: f64 = times
        .iter()
        .filter(|t| t.tracer == Tracer::Floor)
        .flat_map(|t| t.programs.iter().map(|(_, _, ns)| ns))
        .sum();
    let trap = ns(Tracer::Floor) - ns(Tracer::Untraced) - nop;
    let _ = writeln!(
        md,
        "\nThe uprobe traps of one traced call (entry and return): {trap:.0} ns, the floor's median ns/call above less the untraced call and its do-nothing programs' {nop:.0} ns; {:.0} ns a hit.\n",
        trap / 2.0
    );
    md
}
