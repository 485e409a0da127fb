//! `flowdar stats`: per-function call counts and durations.
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::format;
use crate::analysis::{scan, FunctionStats, Scanned, Stats};

/// Per-function statistics: calls, calls still running when capture ended
/// (in-flight: counted with their duration so far, a lower bound, in every
/// time column), failures by the probe's error rule, total, self (outside
/// probed callees), mean, p50/p90/p99 (HDR histograms) and maximum time.
///
/// JSON (stable): {"functions": [...], "pairing": {...}, "cut_by_detach":
/// calls in flight when the probes were removed (recordings that detached)}.
/// Function fields:
/// function, object, calls, in_flight, errors, total_ns, self_ns, mean_ns,
/// p50_ns, p90_ns, p99_ns, max_ns, zero_returns. Pairing anomalies:
/// unmatched_exits (returns of calls begun before capture), lost_exits
/// (entries whose return never came: longjmp, or recursion deeper than the
/// kernel's return-probe limit), time_reversals.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Trace file written by `flowdar record`.
    pub trace: PathBuf,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Sort order.
    #[arg(long, value_enum, default_value_t = SortKey::Total)]
    pub sort: SortKey,
    /// Only functions matching this name or glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub function: Vec<String>,
    /// Only functions with at least this many calls (returned + in flight).
    #[arg(long, default_value_t = 0)]
    pub min_calls: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SortKey {
    Total,
    SelfTime,
    Calls,
    Mean,
    P99,
    Max,
    Errors,
    Name,
}

/// Reads a whole trace into per-function statistics.
pub fn compute(path: &std::path::Path) -> anyhow::Result<(Vec<FunctionStats>, Scanned)> {
    let header = crate::store::TraceReader::open(path)?.header().clone();
    let mut stats = Stats::new(&header.probes);
    let scanned = scan(path, |_| {}, |c| stats.add(c))?;
    Ok((stats.finish(), scanned))
}

pub fn run(args: StatsArgs) -> anyhow::Result<()> {
    let (mut rows, scanned) = compute(&args.trace)?;
    rows.retain(|r| {
        r.calls + r.in_flight >= args.min_calls
            && (args.function.is_empty()
                || args
                    .function
                    .iter()
                    .any(|f| *f == r.function || crate::probes::glob_matches(f, &r.function)))
    });
    use std::cmp::Reverse;
    match args.sort {
        SortKey::Total => {}
        SortKey::SelfTime => rows.sort_by_key(|r| Reverse(r.self_ns)),
        SortKey::Calls => rows.sort_by_key(|r| Reverse(r.calls + r.in_flight)),
        SortKey::Mean => rows.sort_by_key(|r| Reverse(r.mean_ns)),
        SortKey::P99 => rows.sort_by_key(|r| Reverse(r.p99_ns)),
        SortKey::Max => rows.sort_by_key(|r| Reverse(r.max_ns)),
        SortKey::Errors => rows.sort_by_key(|r| Reverse(r.errors)),
        SortKey::Name => rows.sort_by(|a, b| a.function.cmp(&b.function)),
    }
    // Open at the end of a recording that detached: each was still running
    // when its return probe went (entries go first, returns ~100 ms later),
    // a system call when the entries went (both its sides stop then).
    let cut_by_detach = scanned
        .footer
        .as_ref()
        .filter(|f| f.entries_removed_ns > 0)
        .map(|_| rows.iter().map(|r| r.in_flight).sum::<u64>());
    if args.json {
        let mut out = serde_json::json!({ "functions": rows, "pairing": scanned.pairing });
        if let Some(n) = cut_by_detach {
            out["cut_by_detach"] = n.into();
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_table(&rows);
        if scanned.pairing.unmatched_exits + scanned.pairing.lost_exits > 0 {
            println!(
                "\n{} exits had no entry in the capture (calls begun while only return probes were in place: they go in first on attach and come out last on detach); {} entries lost their exit (longjmp, uretprobe depth limit)",
                scanned.pairing.unmatched_exits, scanned.pairing.lost_exits
            );
        }
        if let Some(n) = cut_by_detach.filter(|n| *n > 0) {
            println!(
                "\n{n} calls in flight were cut by detach: still running when their return probes were removed (after the entry probes), or for system calls when the entry probes were, so their durations are their time so far"
            );
        }
    }
    super::report_warnings(&args.trace, &scanned);
    super::note_if_lean(&args.trace);
    Ok(())
}

pub(super) fn print_table(rows: &[FunctionStats]) {
    println!(
        "{:<32} {:<16} {:>8} {:>9} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "function",
        "object",
        "calls",
        "in-flight",
        "errors",
        "total",
        "self",
        "mean",
        "p50",
        "p99",
        "max"
    );
    for r in rows {
        println!(
            "{:<32} {:<16} {:>8} {:>9} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            r.function,
            r.object,
            r.calls,
            r.in_flight,
            r.errors,
            format::ns(r.total_ns),
            format::ns(r.self_ns),
            format::ns(r.mean_ns),
            format::ns(r.p50_ns),
            format::ns(r.p99_ns),
            format::ns(r.max_ns)
        );
    }
    if rows.is_empty() {
        println!("(no calls recorded)");
    }
}
