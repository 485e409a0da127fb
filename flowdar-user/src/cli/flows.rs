//! `flowdar flows`: objects handed from one thread to another.
use std::path::PathBuf;

use clap::Args;

use super::format;
use crate::analysis::{scan, FlowTracker};

/// Follow sockets from the thread that queued them (ap_queue_push_socket)
/// to the worker that popped them (ap_queue_pop_something's out-parameter)
/// and the connection that worker processed next. Needs a trace recorded
/// with `--profile apache:handoff` (plus `connection` for the connection).
///
/// JSON (stable): an array of hand-offs {object, from_tid, to_tid,
/// queued_ns, delay_ns, connection}; with --pairs, an array of
/// {from_tid, to_tid, count, mean_delay_ns, max_delay_ns}.
#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// Trace file written by `flowdar record`.
    pub trace: PathBuf,
    #[arg(long)]
    pub json: bool,
    /// List every hand-off, not only the per-thread-pair summary.
    #[arg(long)]
    pub all: bool,
    /// With --json: the per-thread-pair summary instead of the hand-offs.
    #[arg(long)]
    pub pairs: bool,
}

pub fn run(args: FlowsArgs) -> anyhow::Result<()> {
    let header = crate::store::TraceReader::open(&args.trace)?
        .header()
        .clone();
    let mut t = FlowTracker::new(&header.probes);
    if !t.can_track() {
        anyhow::bail!(
            "{}: no hand-offs to follow: record with --profile apache:handoff (ap_queue_push_socket and ap_queue_pop_something)",
            args.trace.display()
        );
    }
    let scanned = scan(&args.trace, |e| t.push(e), |_| {})?;
    let pairs = t.thread_pairs();
    if args.json && args.pairs {
        println!("{}", serde_json::to_string_pretty(&pairs)?);
    } else if args.json {
        println!("{}", serde_json::to_string_pretty(&t.flows)?);
    } else {
        if args.all {
            println!(
                "{:>14} {:>18} {:>8} {:>8} {:>10} {:>18}",
                "queued (ms)", "object", "from", "to", "delay", "connection"
            );
            for f in &t.flows {
                println!(
                    "{:>14.3} {:>#18x} {:>8} {:>8} {:>10} {:>18}",
                    f.queued_ns.saturating_sub(scanned.start_ns) as f64 / 1e6,
                    f.object,
                    f.from_tid,
                    f.to_tid,
                    format::ns(f.delay_ns),
                    f.connection
                        .map_or_else(|| "-".into(), |c| format!("{c:#x}"))
                );
            }
            println!();
        }
        println!(
            "{:>8} {:>8} {:>10} {:>12} {:>12}",
            "from", "to", "hand-offs", "mean delay", "max delay"
        );
        for p in &pairs {
            println!(
                "{:>8} {:>8} {:>10} {:>12} {:>12}",
                p.from_tid,
                p.to_tid,
                p.count,
                format::ns(p.mean_delay_ns),
                format::ns(p.max_delay_ns)
            );
        }
        println!(
            "\n{} hand-offs; {} queued objects not seen popped (still queued at the end, or taken by a worker that was already blocked in pop when probes attached: the kernel cannot report that return); {} pops of objects queued before capture",
            t.flows.len(),
            t.still_queued(),
            t.unmatched_pops
        );
    }
    super::report_warnings(&args.trace, &scanned);
    Ok(())
}
