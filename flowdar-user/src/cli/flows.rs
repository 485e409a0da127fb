//! `flowdar flows`: objects handed from one thread to another.
use std::path::PathBuf;

use clap::Args;

use super::format;
use crate::analysis::{scan, FlowTracker, StreamFlow, StreamTracker};

/// Follow work from one thread to another. Sockets: from the thread that
/// queued them (ap_queue_push_socket) to the worker that popped them
/// (ap_queue_pop_something's out-parameter) and the connection that worker
/// processed next; needs `--profile apache:handoff` (plus `connection` for
/// the connection). HTTP/2 streams: from the thread serving the client's
/// connection, to the mod_http2 worker that ran the stream, and back to
/// the connection's thread for the response; `apache:request` is enough.
///
/// JSON (stable): an array of hand-offs {object, from_tid, to_tid,
/// queued_ns, delay_ns, connection}; with --pairs, an array of
/// {from_tid, to_tid, count, mean_delay_ns, max_delay_ns}; with --streams,
/// an array of streams {pid, request, connection, from_tid, to_tid,
/// back_tid, start_ns, duration_ns, returned} (thread ids null when no
/// pass of the connection was seen around the stream: a trace begun
/// mid-pass, or a response written by the event MPM's write completion,
/// which no probe sees).
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
    /// HTTP/2 streams only (with --json: the array of streams).
    #[arg(long, conflicts_with = "pairs")]
    pub streams: bool,
}

pub fn run(args: FlowsArgs) -> anyhow::Result<()> {
    let header = crate::store::TraceReader::open(&args.trace)?
        .header()
        .clone();
    let mut t = FlowTracker::new(&header.probes);
    let mut streams = StreamTracker::new(&header.probes);
    let sockets = t.can_track() && !args.streams;
    if args.streams && !streams.can_track() {
        anyhow::bail!(
            "{}: no HTTP/2 streams to follow: record with --profile apache:request (its ap_process_request reads the stream's connection)",
            args.trace.display()
        );
    }
    if !sockets && !streams.can_track() {
        anyhow::bail!(
            "{}: no hand-offs to follow: record with --profile apache:handoff (ap_queue_push_socket and ap_queue_pop_something), or apache:request for HTTP/2 streams",
            args.trace.display()
        );
    }
    if args.json && !args.streams && !sockets {
        anyhow::bail!(
            "{}: no socket hand-offs in this trace (record with --profile apache:handoff); for its HTTP/2 streams, add --streams",
            args.trace.display()
        );
    }
    let scanned = scan(&args.trace, |e| t.push(e), |c| streams.add(c))?;
    let streams = streams.finish();
    if args.streams || !sockets {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&streams)?);
        } else {
            print_streams(&streams, args.all, scanned.start_ns);
        }
        super::report_warnings(&args.trace, &scanned);
        return Ok(());
    }
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
    if !streams.is_empty() && !args.json {
        println!();
        print_streams(&streams, args.all, scanned.start_ns);
    }
    super::report_warnings(&args.trace, &scanned);
    Ok(())
}

/// HTTP/2 streams: each one's path with --all, then per (connection
/// thread, worker) pair.
fn print_streams(streams: &[StreamFlow], all: bool, t0: u64) {
    let tid = |t: Option<u32>| t.map_or_else(|| "?".into(), |t| t.to_string());
    if all {
        println!(
            "{:>14} {:>18} {:>10} {:>8} {:>10} {:>12}",
            "start (ms)", "connection", "conn thread", "worker", "back on", "on worker"
        );
        for s in streams {
            println!(
                "{:>14.3} {:>#18x} {:>10} {:>8} {:>10} {:>12}{}",
                s.start_ns.saturating_sub(t0) as f64 / 1e6,
                s.connection,
                tid(s.from_tid),
                s.to_tid,
                tid(s.back_tid),
                format::ns(s.duration_ns),
                if s.returned { "" } else { " (in flight)" }
            );
        }
        println!();
    }
    // Per connection thread: the streams it handed out, the workers that
    // ran them, and how many came back to it for their response.
    let mut by_from: std::collections::BTreeMap<Option<u32>, (u64, u64, u64, Vec<u32>)> =
        Default::default();
    for s in streams {
        let e = by_from.entry(s.from_tid).or_default();
        e.0 += 1;
        e.1 += s.duration_ns;
        e.2 += u64::from(s.back_tid.is_some() && s.back_tid == s.from_tid);
        if !e.3.contains(&s.to_tid) {
            e.3.push(s.to_tid);
        }
    }
    let mut rows: Vec<_> = by_from.into_iter().collect();
    rows.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(&b.0)));
    println!(
        "{:>11} {:>8} {:>8} {:>13} {:>12}",
        "conn thread", "streams", "workers", "back to it", "mean time"
    );
    for (from, (n, sum, back, workers)) in &rows {
        println!(
            "{:>11} {:>8} {:>8} {:>13} {:>12}",
            tid(*from),
            n,
            workers.len(),
            back,
            format::ns(sum / n)
        );
    }
    let connections: std::collections::HashSet<_> =
        streams.iter().map(|s| (s.pid, s.connection)).collect();
    let unknown = streams.iter().filter(|s| s.from_tid.is_none()).count();
    println!(
        "\n{} HTTP/2 streams on {} connections, on {} workers; {} without the connection's thread (its pass was not seen)",
        streams.len(),
        connections.len(),
        streams
            .iter()
            .map(|s| s.to_tid)
            .collect::<std::collections::HashSet<_>>()
            .len(),
        unknown
    );
}
