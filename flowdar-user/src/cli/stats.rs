//! `flowdar stats`: per-function call counts and durations.
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::format;
use crate::{
    analysis::{CallPairer, FunctionStats, Stats},
    store::TraceReader,
};

/// Per-function statistics: calls, calls still running at the end
/// (in-flight, counted with their duration so far), total, self and mean
/// time, maximum, and how many calls returned 0 (NULL, APR_SUCCESS).
///
/// JSON fields (stable): function, object, calls, in_flight, total_ns,
/// self_ns, mean_ns, max_ns, zero_returns.
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
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SortKey {
    Total,
    SelfTime,
    Calls,
    Mean,
    Max,
    Name,
}

/// Reads a whole trace into per-function statistics.
pub fn compute(path: &std::path::Path) -> anyhow::Result<(Vec<FunctionStats>, TraceReader)> {
    let reader = TraceReader::open(path)?;
    let header = reader.header().clone();
    let mut stats = Stats::new(
        header
            .probes
            .iter()
            .map(|p| (p.function.clone(), format::short_object(&p.path))),
    );
    let mut pairer = CallPairer::new();
    let mut last_ts = header.start_monotonic_ns;
    let reader = reader.for_each_event(|ev| {
        last_ts = last_ts.max(ev.ts_ns);
        pairer.push(ev, |c| stats.add(&c));
    })?;
    let end = reader
        .footer()
        .map_or(last_ts, |f| f.end_monotonic_ns.max(last_ts));
    pairer.finish(end, |c| stats.add(&c));
    Ok((stats.finish(), reader))
}

pub fn run(args: StatsArgs) -> anyhow::Result<()> {
    let (mut rows, reader) = compute(&args.trace)?;
    use std::cmp::Reverse;
    match args.sort {
        SortKey::Total => {}
        SortKey::SelfTime => rows.sort_by_key(|r| Reverse(r.self_ns)),
        SortKey::Calls => rows.sort_by_key(|r| Reverse(r.calls + r.in_flight)),
        SortKey::Mean => rows.sort_by_key(|r| Reverse(r.mean_ns)),
        SortKey::Max => rows.sort_by_key(|r| Reverse(r.max_ns)),
        SortKey::Name => rows.sort_by(|a, b| a.function.cmp(&b.function)),
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&rows);
    }
    super::report_read_warnings(&reader);
    Ok(())
}

pub(super) fn print_table(rows: &[FunctionStats]) {
    println!(
        "{:<32} {:<16} {:>8} {:>9} {:>11} {:>11} {:>11} {:>11}",
        "function", "object", "calls", "in-flight", "total", "self", "mean", "max"
    );
    for r in rows {
        println!(
            "{:<32} {:<16} {:>8} {:>9} {:>11} {:>11} {:>11} {:>11}",
            r.function,
            r.object,
            r.calls,
            r.in_flight,
            format::ns(r.total_ns),
            format::ns(r.self_ns),
            format::ns(r.mean_ns),
            format::ns(r.max_ns)
        );
    }
    if rows.is_empty() {
        println!("(no calls recorded)");
    }
}
