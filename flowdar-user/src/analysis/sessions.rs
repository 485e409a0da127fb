//! Apache sessions: the trace demultiplexed per client connection, keyed by
//! the `conn_rec *` the request and connection functions take, following a
//! connection across threads and keep-alive passes. A session ends when
//! `ap_read_request` returns NULL (the client closed) or at lingering
//! close; `ap_run_pre_connection` (a new connection) starts a new one, since
//! `conn_rec` addresses are recycled. Sessions still open at the end of
//! capture are in flight (under Slowloris, most of them).
use std::collections::HashMap;

use serde::Serialize;

use std::{net::SocketAddr, path::Path};

use super::{
    clients::{worker_time, ClientBook},
    scan, Call, Scanned,
};
use crate::store::TraceProbe;

pub(super) const READ: &str = "ap_read_request";
/// Calls taking the `conn_rec *` first.
pub(super) const CONNECTION: &[&str] = &[
    "ap_run_process_connection",
    "ap_process_connection",
    "ap_run_pre_connection",
    "ap_start_lingering_close",
    "ap_prep_lingering_close",
    "ap_lingering_close",
];
const NEW_CONNECTION: &str = "ap_run_pre_connection";
const CLOSING: &[&str] = &["ap_start_lingering_close", "ap_lingering_close"];
/// Calls taking the `request_rec *` first.
pub(super) const REQUEST: &[&str] = &[
    "ap_process_async_request",
    "ap_process_request",
    "ap_process_request_internal",
    "ap_invoke_handler",
    "ap_run_handler",
    "ap_finalize_request_protocol",
    "ap_run_log_transaction",
];

/// One client connection. Field names are a stable interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    pub id: u64,
    /// The server process that handled it.
    pub pid: u32,
    /// The `conn_rec *` (an address in that process).
    pub connection: u64,
    /// Threads that worked on it, in order of first appearance.
    pub threads: Vec<u32>,
    /// Requests read (non-NULL `ap_read_request` returns).
    pub requests: u64,
    pub start_ns: u64,
    /// To its end, or to the end of capture when still open.
    pub duration_ns: u64,
    /// Time spent in `ap_read_request` (waiting for the client).
    pub read_ns: u64,
    /// False when it was still open when capture ended.
    pub closed: bool,
    /// The client ("ip:port"), from the kernel's read of the connection;
    /// null when it was not seen (a connection idle since before capture).
    #[serde(serialize_with = "as_text")]
    pub client: Option<std::net::SocketAddr>,
    /// Time workers spent on it (overlapping calls counted once per thread).
    pub worker_ns: u64,
    /// Its calls still open when capture ended.
    pub in_flight: u64,
    /// Start times of its requests' reads.
    #[serde(skip)]
    pub request_starts: Vec<u64>,
    /// (thread, start, end) of the calls that worked on it, for showing it.
    #[serde(skip)]
    pub windows: Vec<(u32, u64, u64)>,
    #[serde(skip)]
    end_ns: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Read,
    Connection { new: bool, closing: bool },
    Request,
}

/// Feed calls (`scan`'s order: completion order, then in-flight ones);
/// collect sessions at the end.
pub struct SessionTracker {
    roles: HashMap<u32, Role>,
    /// The latest session of each (process, connection address), open or
    /// closed: child processes forked from one parent reuse addresses.
    latest: HashMap<(u32, u64, Option<SocketAddr>), usize>,
    /// The latest session of each (process, connection address), whatever
    /// its client.
    by_conn: HashMap<(u32, u64), usize>,
    request_conn: HashMap<(u32, u64), u64>,
    sessions: Vec<Session>,
}

impl SessionTracker {
    pub fn new(probes: &[TraceProbe]) -> Self {
        let mut roles = HashMap::new();
        for p in probes {
            let f = p.function.as_str();
            let role = if f == READ {
                Role::Read
            } else if CONNECTION.contains(&f) {
                Role::Connection {
                    new: f == NEW_CONNECTION,
                    closing: CLOSING.contains(&f),
                }
            } else if REQUEST.contains(&f) {
                Role::Request
            } else {
                continue;
            };
            roles.insert(p.id, role);
        }
        Self {
            roles,
            latest: HashMap::new(),
            by_conn: HashMap::new(),
            request_conn: HashMap::new(),
            sessions: Vec::new(),
        }
    }

    /// True when the trace has a function that names connections.
    pub fn can_track(&self) -> bool {
        self.roles.values().any(|r| *r != Role::Request)
    }

    /// Adds a call of a trace without client events.
    pub fn add(&mut self, c: &Call) {
        self.add_with(c, &ClientBook::default());
    }

    /// Adds a call; `clients` holds the trace's client events read so far
    /// (every one before the call's completion). A connection's client
    /// (address and port) tells connections on a recycled `conn_rec`
    /// apart even when nothing marked the first one's end (Apache closes a
    /// keep-alive connection after `MaxKeepAliveRequests` without another
    /// read).
    pub fn add_with(&mut self, c: &Call, clients: &ClientBook) {
        let Some(&role) = self.roles.get(&c.probe_id) else {
            return;
        };
        let conn = match role {
            Role::Request => match self.request_conn.get(&(c.tgid, c.args[0])) {
                Some(&conn) => conn,
                None => return,
            },
            _ => c.args[0],
        };
        if conn == 0 {
            return;
        }
        let starts_new = matches!(role, Role::Connection { new: true, .. });
        let closing = matches!(role, Role::Connection { closing: true, .. });
        let belongs = |s: &Session| {
            if closing {
                // Lingering close follows the read that saw the client go.
                true
            } else if starts_new {
                c.start_ns <= s.start_ns
            } else {
                // Open, or closed by a call this one was still around for
                // (calls arrive in completion order: the pass that read
                // the client's close returns after the read).
                !s.closed || c.start_ns <= s.end_ns
            }
        };
        // A read (and a request after it) has its connection's client by
        // its start: the kernel sends it at the read's entry. An outer
        // connection call (a keep-alive pass) can start before the read
        // inside it sends the client: over its span.
        let client = match role {
            Role::Connection { .. } => clients.client_of(c.tgid, conn, c.start_ns, c.end_ns),
            _ => clients.client_at(c.tgid, conn, c.start_ns),
        };
        let key = (c.tgid, conn, client);
        let idx = match self.latest.get(&key).copied() {
            // The same client on the same connection: the same session.
            Some(i) if client.is_some() || belongs(&self.sessions[i]) => i,
            _ => {
                // A recycled address: whatever was open for it is over.
                if let Some(i) = self.latest.remove(&key) {
                    self.sessions[i].closed = true;
                }
                if let Some(i) = self.by_conn.get(&(c.tgid, conn)).copied() {
                    if self.sessions[i].client != client && self.sessions[i].start_ns < c.start_ns {
                        self.sessions[i].closed = true;
                    }
                }
                self.sessions.push(Session {
                    id: 0,
                    pid: c.tgid,
                    connection: conn,
                    threads: Vec::new(),
                    requests: 0,
                    start_ns: c.start_ns,
                    duration_ns: 0,
                    read_ns: 0,
                    closed: false,
                    client,
                    worker_ns: 0,
                    in_flight: 0,
                    request_starts: Vec::new(),
                    windows: Vec::new(),
                    end_ns: c.end_ns,
                });
                self.latest.insert(key, self.sessions.len() - 1);
                self.by_conn.insert((c.tgid, conn), self.sessions.len() - 1);
                self.sessions.len() - 1
            }
        };
        let s = &mut self.sessions[idx];
        s.start_ns = s.start_ns.min(c.start_ns);
        s.end_ns = s.end_ns.max(c.end_ns);
        if !s.threads.contains(&c.tid) {
            s.threads.push(c.tid);
        }
        s.windows.push((c.tid, c.start_ns, c.end_ns));
        if !c.returned {
            s.in_flight += 1;
        }
        let mut ends = false;
        match role {
            Role::Read => {
                s.read_ns += c.duration_ns();
                match c.ret {
                    Some(0) => ends = true,
                    Some(r) => {
                        s.requests += 1;
                        s.request_starts.push(c.start_ns);
                        self.request_conn.insert((c.tgid, r), conn);
                    }
                    None => {}
                }
            }
            Role::Connection { closing: true, .. } => ends = c.returned,
            _ => {}
        }
        if ends {
            s.closed = true;
        }
    }

    /// Sessions by start time, numbered from 1; `clients` (the same trace's
    /// client events) names those whose client was read after they began.
    pub fn finish(mut self, clients: &ClientBook) -> Vec<Session> {
        self.sessions
            .sort_by_key(|s| (s.start_ns, s.pid, s.connection));
        for (i, s) in self.sessions.iter_mut().enumerate() {
            s.id = i as u64 + 1;
            s.duration_ns = s.end_ns.saturating_sub(s.start_ns);
            s.request_starts.sort_unstable();
            s.worker_ns = worker_time(&s.windows);
            if s.client.is_none() {
                s.client = clients.client_of(s.pid, s.connection, s.start_ns, s.end_ns);
            }
        }
        self.sessions
    }
}

fn as_text<S: serde::Serializer>(
    a: &Option<std::net::SocketAddr>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match a {
        Some(a) => s.collect_str(a),
        None => s.serialize_none(),
    }
}

/// The sessions of a trace, with their clients.
pub fn sessions_of(path: &Path) -> Result<(Vec<Session>, Scanned), SessionsError> {
    let header = crate::store::TraceReader::open(path)?.header().clone();
    let mut t = SessionTracker::new(&header.probes);
    if !t.can_track() {
        return Err(SessionsError::NoConnections { path: path.into() });
    }
    let clients = std::cell::RefCell::new(ClientBook::default());
    let scanned = scan(
        path,
        |e| clients.borrow_mut().add(e),
        |c| t.add_with(c, &clients.borrow()),
    )?;
    Ok((t.finish(&clients.into_inner()), scanned))
}

/// Why a trace has no sessions.
#[derive(Debug, thiserror::Error)]
pub enum SessionsError {
    #[error("{path}: no connection identity in this trace: record with --profile apache:request or apache:connection")]
    NoConnections { path: std::path::PathBuf },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::stats::tests::probe;

    fn call(probe_id: u32, tid: u32, start: u64, end: u64, arg0: u64, ret: Option<u64>) -> Call {
        Call {
            probe_id,
            tgid: 1,
            tid,
            start_ns: start,
            end_ns: end,
            returned: ret.is_some(),
            depth: 0,
            args: [arg0, 0, 0],
            ret,
            children_ns: 0,
        }
    }

    #[test]
    fn keep_alive_passes_on_several_threads_make_one_session() {
        let probes = [
            probe(0, "ap_run_process_connection", None),
            probe(1, READ, None),
            probe(2, "ap_process_async_request", None),
        ];
        let mut t = SessionTracker::new(&probes);
        assert!(t.can_track());
        let c = 0xc0;
        // Completion order: read, process, pass; three passes, three threads.
        for call in [
            call(1, 11, 10, 20, c, Some(0x71)),
            call(2, 11, 21, 40, 0x71, Some(0)),
            call(0, 11, 5, 45, c, Some(0)),
            call(1, 12, 100, 120, c, Some(0x72)),
            call(2, 12, 121, 150, 0x72, Some(0)),
            call(0, 12, 95, 155, c, Some(0)),
            call(1, 13, 300, 310, c, Some(0)), // the client closed
            call(0, 13, 295, 315, c, Some(0)),
            // The address recycled for a second connection, still reading at the end.
            call(1, 11, 900, 1000, c, None),
        ] {
            t.add(&call);
        }
        let s = t.finish(&ClientBook::default());
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].id, s[0].connection, s[0].requests, s[0].closed),
            (1, c, 2, true)
        );
        assert_eq!(s[0].threads, [11, 12, 13]);
        assert_eq!(
            (s[0].start_ns, s[0].duration_ns, s[0].read_ns),
            (5, 310, 40)
        );
        assert_eq!(s[0].request_starts, [10, 100]);
        assert_eq!((s[1].requests, s[1].closed, s[1].read_ns), (0, false, 100));
        assert_eq!((s[0].in_flight, s[1].in_flight), (0, 1));
        assert_eq!(s[0].worker_ns, 40 + 60 + 20, "three passes");
    }
}
