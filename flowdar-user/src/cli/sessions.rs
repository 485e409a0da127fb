//! `flowdar sessions`: the trace per client connection.
use std::path::PathBuf;

use clap::Args;

use super::format;
use crate::analysis::{scan, Session};

/// Demultiplex an Apache trace into per-connection sessions (keyed by the
/// conn_rec pointer, followed across threads and keep-alive passes; a
/// session ends when ap_read_request returns NULL or at lingering close)
/// with client-visible timing: start, requests, total time, time blocked
/// reading the client. `--show ID` prints one session's calls. Needs the
/// `request` or `connection` profile.
///
/// HTTP/2: a client connection is one session and its streams are its
/// requests; the workers that ran them are among its threads (mod_http2's
/// secondary connections are followed to the client's through
/// conn_rec->master).
///
/// JSON fields (stable): id, connection, threads, requests, start_ns,
/// duration_ns, read_ns, closed, client ("ip:port", null when not seen),
/// protocol ("h2", "http/1.1", or null when no request was seen), tls
/// (true/false with `apache:tls`, else null), handshake_ns, tls_read_ns,
/// tls_write_ns (OpenSSL's SSL_accept, SSL_read, SSL_write), worker_ns,
/// in_flight.
#[derive(Debug, Args)]
pub struct SessionsArgs {
    /// Trace file written by `flowdar record`.
    pub trace: PathBuf,
    #[arg(long)]
    pub json: bool,
    /// Print the calls of this session.
    #[arg(long, value_name = "ID")]
    pub show: Option<u64>,
}

pub fn run(args: SessionsArgs) -> anyhow::Result<()> {
    let (sessions, scanned) = crate::analysis::sessions_of(&args.trace)?;
    if let Some(id) = args.show {
        let s = sessions
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| anyhow::anyhow!("no session {id} (the trace has {})", sessions.len()))?;
        return show(&args.trace, s, scanned.start_ns);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&sessions)?);
    } else {
        println!(
            "{:>6} {:>18} {:>22} {:>12} {:>12} {:>9} {:>11} {:>11}  threads",
            "id",
            "connection",
            "client",
            "protocol",
            "start (ms)",
            "requests",
            "duration",
            "reading"
        );
        for s in &sessions {
            println!(
                "{:>6} {:>#18x} {:>22} {:>12} {:>12.3} {:>9} {:>11} {:>11}  {}{}",
                s.id,
                s.connection,
                s.client.map_or_else(|| "?".to_string(), |a| a.to_string()),
                format!(
                    "{}{}",
                    s.protocol.unwrap_or("?"),
                    if s.tls == Some(true) { "+tls" } else { "" }
                ),
                s.start_ns.saturating_sub(scanned.start_ns) as f64 / 1e6,
                s.requests,
                format::ns(s.duration_ns),
                format::ns(s.read_ns),
                threads(&s.threads),
                if s.closed {
                    ""
                } else {
                    "  (open at the end: in flight)"
                }
            );
        }
        let open = sessions.iter().filter(|s| !s.closed).count();
        println!(
            "\n{} sessions, {} still open when capture ended",
            sessions.len(),
            open
        );
    }
    super::report_warnings(&args.trace, &scanned);
    Ok(())
}

/// The first threads of a session, and how many more (an HTTP/2 session's
/// streams run on many workers).
fn threads(tids: &[u32]) -> String {
    const SHOWN: usize = 6;
    let mut t = tids
        .iter()
        .take(SHOWN)
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    if tids.len() > SHOWN {
        t.push_str(&format!(" +{} more", tids.len() - SHOWN));
    }
    t
}

/// The session's calls: those on its threads inside its windows.
fn show(path: &std::path::Path, s: &Session, t0: u64) -> anyhow::Result<()> {
    let header = crate::store::TraceReader::open(path)?.header().clone();
    let mut calls = Vec::new();
    let inside = |tid: u32, start: u64| {
        s.windows
            .iter()
            .any(|&(t, a, b)| t == tid && a <= start && start <= b)
    };
    scan(
        path,
        |_| {},
        |c| {
            if inside(c.tid, c.start_ns) {
                calls.push(c.clone());
            }
        },
    )?;
    calls.sort_by_key(|c| (c.start_ns, c.depth));
    println!(
        "session {} on connection {:#x}: {} requests, {}, threads {:?}{}",
        s.id,
        s.connection,
        s.requests,
        format::ns(s.duration_ns),
        s.threads,
        if s.closed {
            ""
        } else {
            " (still open at the end)"
        }
    );
    for c in calls {
        let name = header
            .probes
            .get(c.probe_id as usize)
            .map_or_else(|| "?".into(), |p| p.display_name());
        println!(
            "{:>14.3} {:>7}  {}{name}  {}{}",
            c.start_ns.saturating_sub(t0) as f64 / 1e6,
            c.tid,
            "  ".repeat(c.depth as usize),
            format::ns(c.duration_ns()),
            if c.returned {
                String::new()
            } else {
                " (in flight)".into()
            }
        );
    }
    Ok(())
}
