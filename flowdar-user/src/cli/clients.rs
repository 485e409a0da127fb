//! `flowdar clients`: for whom the server worked.
use std::path::PathBuf;

use clap::Args;

use super::format;
use crate::analysis::{by_client, sessions_of};

/// Who held the server's workers: one row per client IP address, with its
/// connections, requests, the time workers spent on its connections, how
/// much of that was blocked reading from it, and its calls still open when
/// capture ended. Sorted by worker time, most first. Under a slow-HTTP
/// attack the attacker is the first row, with most of the reading time and
/// the open calls. Needs the `request` or `connection` profile (client
/// addresses are read by the kernel from Apache's connection record).
///
/// Request latency per client (p50, p99): from the first bytes the server
/// read of a request to the end of its response, over the HTTP/1.x requests
/// answered in the trace; "-" when none was. HTTP/2 streams are not
/// measured: their frames are read and their responses written by the
/// connection's thread, around the worker's part.
///
/// JSON fields (stable): address, connections, requests, worker_ns, read_ns,
/// backend_ns, in_flight, held_at_attach, answered, latency_p50_ns,
/// latency_p99_ns.
#[derive(Debug, Args)]
pub struct ClientsArgs {
    /// Trace file written by `flowdar record`.
    pub trace: PathBuf,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ClientsArgs) -> anyhow::Result<()> {
    let (sessions, scanned) = sessions_of(&args.trace)?;
    let rows = by_client(&sessions);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let total: u64 = rows.iter().map(|r| r.worker_ns).sum();
        println!(
            "{:<40} {:>11} {:>9} {:>12} {:>7} {:>12} {:>10} {:>10} {:>10}",
            "client",
            "connections",
            "requests",
            "worker time",
            "share",
            "reading",
            "in flight",
            "p50",
            "p99"
        );
        let latency = |ns: Option<u64>| ns.map_or_else(|| "-".to_string(), format::ns);
        for r in &rows {
            println!(
                "{:<40} {:>11} {:>9} {:>12} {:>6.1}% {:>12} {:>10} {:>10} {:>10}",
                r.address,
                r.connections,
                r.requests,
                format::ns(r.worker_ns),
                100.0 * r.worker_ns as f64 / total.max(1) as f64,
                format::ns(r.read_ns),
                r.in_flight,
                latency(r.latency_p50_ns),
                latency(r.latency_p99_ns)
            );
        }
        println!(
            "\n{}, {} connections, {} of worker time{}",
            match rows.iter().filter(|r| r.address != "unknown").count() {
                1 => "1 client".to_string(),
                n => format!("{n} clients"),
            },
            sessions.len(),
            format::ns(total),
            if rows.iter().any(|r| r.address == "unknown") {
                "; \"unknown\": connections opened before capture and not read from since"
            } else {
                ""
            }
        );
        let held: u64 = rows.iter().map(|r| r.held_at_attach).sum();
        if held > 0 {
            let by: Vec<String> = rows
                .iter()
                .filter(|r| r.held_at_attach > 0)
                .map(|r| format!("{} {}", r.address, r.held_at_attach))
                .collect();
            println!(
                "{held} connections already had a worker waiting on them when capture began ({}): their reading time counts from the attach, a lower bound.",
                by.join(", ")
            );
        }
    }
    super::report_warnings(&args.trace, &scanned);
    Ok(())
}
