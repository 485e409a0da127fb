//! Apache sessions: the trace demultiplexed per client connection, keyed by
//! the `conn_rec *` the request and connection functions take, following a
//! connection across threads and keep-alive passes. A session ends when
//! `ap_read_request` returns NULL (the client closed) or at lingering
//! close; `ap_run_pre_connection` (a new connection) starts a new one, since
//! `conn_rec` addresses are recycled. Sessions still open at the end of
//! capture are in flight (under Slowloris, most of them).
//!
//! HTTP/2 (mod_http2): a client connection is one session and its streams
//! are its requests. A stream runs on a worker, on a secondary connection
//! whose `conn_rec->master` is the client's; the probes read it
//! (`ap_process_request`: `r->connection->master`; the connection calls:
//! `c->master`), and everything a stream does is attributed to the
//! primary connection and its client.
//!
//! Lean traces (`apache:lean`): the connection is the socket, seen by the
//! kernel's syscall tracepoints with an id it made at accept (bit 47 set)
//! and the peer address it read there. Its reads, polls and writes are
//! the session's calls; `close` ends it; a request is an
//! `ap_process_async_request` call (once per request read from a client;
//! subrequests and internal redirects run `ap_process_request_internal`
//! but not it), given to the connection its
//! thread last did socket I/O on (it has read the request there). An
//! HTTP/2 stream's worker does no socket I/O of the client's connection:
//! the counted call reads `r->connection->master` and that connection's
//! client (address and port), and the stream is given to the socket the
//! kernel accepted from that client.
use std::collections::HashMap;

use serde::Serialize;

use std::{net::SocketAddr, path::Path};

use super::{
    addresses::{worker_time, ClientBook},
    scan, Call, Scanned,
};
use flowdar_common::{Event, EventKind, CONN_MASTER_OFF, DEREF_UNKNOWN, REQUEST_CONNECTION_OFF};
use flowdar_trace::{FieldRead, TraceProbe};

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
    // mod_proxy's exchange with a backend (see `crate::calls::BACKEND`).
    "proxy_run_scheme_handler",
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
    /// "h2" (HTTP/2 streams ran for it), "http/1.1" (requests were read
    /// on it), or null (no request seen: a handshake that never finished,
    /// or a trace without the probes that tell).
    pub protocol: Option<&'static str>,
    /// Over TLS: true when OpenSSL's calls ran for it, false when the trace
    /// probed OpenSSL (`apache:tls`) and none did, null without those probes.
    pub tls: Option<bool>,
    /// Time in TLS handshakes (`SSL_accept`), reads (`SSL_read`, which
    /// waits for the client) and writes (`SSL_write`); 0 without
    /// `apache:tls`.
    pub handshake_ns: u64,
    pub tls_read_ns: u64,
    pub tls_write_ns: u64,
    /// Time its requests waited on a backend server (mod_proxy's scheme
    /// handler: `apache:backend`); 0 without those probes.
    pub backend_ns: u64,
    /// Time workers spent on it (overlapping calls counted once per thread).
    pub worker_ns: u64,
    /// Its calls still open when capture ended.
    pub in_flight: u64,
    /// Lean traces: a worker was already waiting on it when capture began
    /// (its wait counts from then: a lower bound).
    pub held_at_attach: bool,
    /// Start times of its requests' reads.
    #[serde(skip)]
    pub request_starts: Vec<u64>,
    /// Each answered HTTP/1.x request's latency, from the first bytes of
    /// it the server read (a uprobe trace: the start of `ap_read_request`)
    /// to the end of its response ([`latencies`]).
    /// Not HTTP/2 streams': the connection's thread reads their frames and
    /// writes their responses around the worker's call, and the worker's
    /// part alone understates them (40 µs of a 1-6 ms wait measured).
    #[serde(skip)]
    pub request_ns: Vec<u64>,
    #[serde(skip)]
    marks: Vec<(u64, Mark)>,
    /// (thread, start, end) of the calls that worked on it, for showing it.
    #[serde(skip)]
    pub windows: Vec<(u32, u64, u64)>,
    #[serde(skip)]
    end_ns: u64,
    /// Requests read with `ap_read_request`, and HTTP/2 streams.
    #[serde(skip)]
    reads: u64,
    #[serde(skip)]
    streams: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Read,
    /// `master`: the entry slot holding `c->master`, when the probe reads it.
    Connection {
        new: bool,
        closing: bool,
        master: Option<usize>,
    },
    /// `stream`: the entry slot holding `r->connection->master`.
    Request {
        stream: Option<usize>,
    },
    /// A system call on a connection's socket (lean capture): entry slot
    /// 1 holds the connection id. `reading`: it may wait for the client
    /// (`read`, `poll`...: see [`Role::waits_to_read`]); `poll`: its
    /// events say which way; `closing`: `close`.
    Socket {
        reading: bool,
        poll: bool,
        closing: bool,
        writing: bool,
    },
}

/// What a call tells about a request's latency, in its session's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mark {
    /// The server read bytes from the client (`read` returning some, or
    /// `ap_read_request` returning a request): at its start.
    Data,
    /// A request began (the lean set's counted call, or the read itself).
    Request,
    /// The server sent (part of) a response: at its end (a write returning
    /// some bytes, or the end of `ap_process_request`).
    Sent,
}

/// `POLLIN`: a poll that waits for the client's bytes (its events are in
/// entry slot 2; a poll for `POLLOUT` alone waits to send).
const POLLIN: u64 = 1;

impl Role {
    /// The role of a lean trace's system call `function`.
    pub(crate) fn of_syscall(function: &str) -> Self {
        Role::Socket {
            reading: SOCKET_READS.contains(&function),
            poll: function.ends_with("poll"),
            closing: function == "close",
            writing: SOCKET_WRITES.contains(&function),
        }
    }

    /// Whether a call in this role with these entry slots waits to read
    /// from the client: a read, or a poll for input (a wait seeded at
    /// attach, `HELD_AT_ATTACH` in slot 2, is one).
    pub(crate) fn waits_to_read(self, args: &[u64; 3]) -> bool {
        match self {
            Role::Socket { reading, poll, .. } => reading && (!poll || args[2] & POLLIN != 0),
            _ => false,
        }
    }
}

/// Lean capture's system calls that wait for the client.
pub(super) const SOCKET_READS: &[&str] = &["read", "readv", "recvfrom", "recvmsg", "poll", "ppoll"];
/// Lean capture's system calls that send to the client.
pub(super) const SOCKET_WRITES: &[&str] = &["write", "writev", "sendfile", "sendmsg", "sendto"];
/// The calls that end with a request's response sent (uprobe traces).
const ANSWERED: &[&str] = &["ap_process_request", "ap_process_async_request"];
/// The call that counts requests in a lean trace.
pub const LEAN_REQUEST: &str = "ap_process_async_request";

/// The slot of a probe's field read when it reads `what`.
fn slot_reading(p: &TraceProbe, what: FieldRead) -> Option<usize> {
    let r = p.capture.read?;
    (r.offset == what.offset && r.then == what.then).then(|| p.capture.read_slot())?
}

/// A user pointer read by a probe: not NULL, not a faulted read.
pub(crate) fn pointer(v: u64) -> Option<u64> {
    (v != 0 && v != DEREF_UNKNOWN && v < 1 << 48).then_some(v)
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
    tls: crate::tls::TlsCalls,
    /// Probe ids of `crate::calls::BACKEND` functions.
    backend: Vec<u32>,
    /// Probe ids of [`ANSWERED`] functions (a uprobe trace's responses).
    answered: Vec<u32>,
    /// Lean traces: the probe id whose calls count requests, and each
    /// thread's connection of its latest socket call.
    lean_request: Option<u32>,
    thread_conn: HashMap<(u32, u32), u64>,
    /// Lean traces: the socket (connection id) of each client address and
    /// port, from its socket calls: an HTTP/2 stream names its client's
    /// `conn_rec`, whose client event gives the address.
    peer_conn: HashMap<(u32, SocketAddr), u64>,
}

impl SessionTracker {
    pub fn new(probes: &[TraceProbe]) -> Self {
        Self {
            roles: Self::roles_of(probes),
            latest: HashMap::new(),
            by_conn: HashMap::new(),
            request_conn: HashMap::new(),
            sessions: Vec::new(),
            tls: crate::tls::TlsCalls::new(probes),
            backend: probes
                .iter()
                .filter(|p| crate::calls::BACKEND.contains(&p.function.as_str()))
                .map(|p| p.id)
                .collect(),
            answered: probes
                .iter()
                .filter(|p| ANSWERED.contains(&p.function.as_str()) && !p.capture.entry_only)
                .map(|p| p.id)
                .collect(),
            lean_request: Self::lean_request(probes),
            thread_conn: HashMap::new(),
            peer_conn: HashMap::new(),
        }
    }

    /// A lean trace's request-counting probe: socket calls and no
    /// `ap_read_request` (which counts requests where it is probed).
    fn lean_request(probes: &[TraceProbe]) -> Option<u32> {
        let lean =
            probes.iter().any(TraceProbe::is_syscall) && !probes.iter().any(|p| p.function == READ);
        lean.then(|| probes.iter().find(|p| p.function == LEAN_REQUEST))
            .flatten()
            .map(|p| p.id)
    }

    /// What each probe tells about connections, by probe id.
    pub(crate) fn roles_of(probes: &[TraceProbe]) -> HashMap<u32, Role> {
        let mut roles = HashMap::new();
        for p in probes {
            let f = p.function.as_str();
            let master = FieldRead {
                arg: 0,
                offset: CONN_MASTER_OFF,
                then: None,
            };
            let stream = FieldRead {
                arg: 0,
                offset: REQUEST_CONNECTION_OFF,
                then: Some(CONN_MASTER_OFF),
            };
            let role = if p.is_syscall() {
                Role::of_syscall(f)
            } else if f == READ {
                Role::Read
            } else if CONNECTION.contains(&f) {
                Role::Connection {
                    new: f == NEW_CONNECTION,
                    closing: CLOSING.contains(&f),
                    master: slot_reading(p, master),
                }
            } else if REQUEST.contains(&f) {
                Role::Request {
                    stream: slot_reading(p, stream),
                }
            } else {
                continue;
            };
            roles.insert(p.id, role);
        }
        roles
    }

    /// True when the trace has a function that names connections.
    pub fn can_track(&self) -> bool {
        self.roles
            .values()
            .any(|r| !matches!(r, Role::Request { stream: None }))
    }

    /// Sees an event in file order, before the calls it ends: an HTTP/2
    /// stream's entry names its request's primary connection, so the
    /// calls inside it (which complete first) find their session.
    pub fn add_event(&mut self, e: &Event) {
        if e.kind != EventKind::Entry as u32 {
            return;
        }
        if let Some(Role::Request { stream: Some(k) }) = self.roles.get(&e.probe_id) {
            if let (Some(r), Some(c1)) = (pointer(e.args[0]), pointer(e.args[*k])) {
                self.request_conn.insert((e.tgid, r), c1);
            }
        }
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
        if self.tls.add(c) {
            return;
        }
        let Some(&role) = self.roles.get(&c.probe_id) else {
            return;
        };
        // A stream's own call names its primary connection; the secondary
        // connection's calls are passes of the primary one.
        let primary = match role {
            Role::Request { stream: Some(k) }
            | Role::Connection {
                master: Some(k), ..
            } => pointer(c.args[k]),
            _ => None,
        };
        let stream = primary.is_some() && matches!(role, Role::Request { .. });
        let lean_request = self.lean_request == Some(c.probe_id);
        let conn = match (role, primary) {
            // A lean trace's HTTP/2 stream: the socket of its client.
            (_, Some(c1)) if lean_request => {
                let peer = clients.client_at(c.tgid, c1, c.start_ns);
                match peer.and_then(|a| self.peer_conn.get(&(c.tgid, a))) {
                    Some(&conn) => conn,
                    None => return,
                }
            }
            (_, Some(c1)) => c1,
            (Role::Socket { .. }, None) => {
                self.thread_conn.insert((c.tgid, c.tid), c.args[1]);
                c.args[1]
            }
            (Role::Request { .. }, None) if lean_request => {
                match self.thread_conn.get(&(c.tgid, c.tid)) {
                    Some(&conn) => conn,
                    None => return,
                }
            }
            (Role::Request { .. }, None) => match self.request_conn.get(&(c.tgid, c.args[0])) {
                Some(&conn) => conn,
                None => return,
            },
            _ => c.args[0],
        };
        if conn == 0 {
            return;
        }
        let secondary = primary.is_some();
        let starts_new = !secondary && matches!(role, Role::Connection { new: true, .. });
        let closing = !secondary
            && matches!(
                role,
                Role::Connection { closing: true, .. } | Role::Socket { closing: true, .. }
            );
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
        if let (Role::Socket { .. }, Some(a)) = (role, client) {
            self.peer_conn.insert((c.tgid, a), conn);
        }
        let key = (c.tgid, conn, client);
        let idx = match self.latest.get(&key).copied() {
            // The same client on the same connection: the same session,
            // unless that one was closed before this call began. A client
            // can connect again from the same port (Apache closed first,
            // so the TIME_WAIT is the server's), and Apache hand it the
            // same `conn_rec` address: 2 connections of 101 requests seen
            // as one of 202 (h2load over HTTP/1.1, one run in five).
            Some(i)
                if (client.is_some() && !self.sessions[i].closed) || belongs(&self.sessions[i]) =>
            {
                i
            }
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
                    protocol: None,
                    tls: None,
                    handshake_ns: 0,
                    tls_read_ns: 0,
                    tls_write_ns: 0,
                    backend_ns: 0,
                    worker_ns: 0,
                    in_flight: 0,
                    held_at_attach: false,
                    request_starts: Vec::new(),
                    request_ns: Vec::new(),
                    marks: Vec::new(),
                    windows: Vec::new(),
                    end_ns: c.end_ns,
                    reads: 0,
                    streams: 0,
                });
                self.latest.insert(key, self.sessions.len() - 1);
                self.by_conn.insert((c.tgid, conn), self.sessions.len() - 1);
                self.sessions.len() - 1
            }
        };
        let mark = self.mark_of(role, c, lean_request, stream);
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
        if let Some(mark) = mark {
            s.marks.push(mark);
        }
        let mut ends = false;
        match role {
            Role::Read => {
                s.read_ns += c.duration_ns();
                s.held_at_attach |= flowdar_common::held_uprobe_at_attach(&c.args);
                match c.ret {
                    Some(0) => ends = true,
                    Some(r) => {
                        s.requests += 1;
                        s.reads += 1;
                        s.request_starts.push(c.start_ns);
                        self.request_conn.insert((c.tgid, r), conn);
                    }
                    None => {}
                }
            }
            Role::Connection { .. } | Role::Socket { .. } if closing => ends = c.returned,
            Role::Socket { .. } if role.waits_to_read(&c.args) => {
                s.read_ns += c.duration_ns();
                s.held_at_attach |= c.args[2] == flowdar_common::HELD_AT_ATTACH;
            }
            Role::Request { .. } if lean_request => {
                s.requests += 1;
                if stream {
                    s.streams += 1;
                } else {
                    s.reads += 1;
                }
                s.request_starts.push(c.start_ns);
            }
            Role::Request { .. } if self.backend.contains(&c.probe_id) => {
                s.backend_ns += c.duration_ns();
            }
            Role::Request { .. } if stream => {
                s.requests += 1;
                s.streams += 1;
                s.request_starts.push(c.start_ns);
            }
            _ => {}
        }
        if ends {
            s.closed = true;
        }
    }

    /// What `c` (in `role`) tells about its request's latency.
    fn mark_of(
        &self,
        role: Role,
        c: &Call,
        lean_request: bool,
        stream: bool,
    ) -> Option<(u64, Mark)> {
        let some_bytes = |ret: Option<u64>| ret.is_some_and(|n| n > 0 && n < 1 << 48);
        match role {
            // The read that returns a request began with its first bytes.
            Role::Read if c.ret.is_some_and(|r| r != 0) => Some((c.start_ns, Mark::Request)),
            Role::Socket {
                reading: true,
                poll: false,
                ..
            } if some_bytes(c.ret) => Some((c.start_ns, Mark::Data)),
            Role::Socket { writing: true, .. } if some_bytes(c.ret) => Some((c.end_ns, Mark::Sent)),
            Role::Request { .. } if lean_request && !stream => Some((c.start_ns, Mark::Request)),
            Role::Request { .. }
                if !stream && c.returned && self.answered.contains(&c.probe_id) =>
            {
                Some((c.end_ns, Mark::Sent))
            }
            _ => None,
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
            s.request_ns = latencies(std::mem::take(&mut s.marks));
            s.worker_ns = worker_time(&s.windows);
            s.protocol = if s.streams > 0 {
                Some("h2")
            } else if s.reads > 0 {
                Some("http/1.1")
            } else {
                None
            };
            if s.client.is_none() {
                s.client = clients.client_of(s.pid, s.connection, s.start_ns, s.end_ns);
            }
        }
        let windows = self.sessions.iter().map(|s| (s.pid, &s.windows[..]));
        if let Some(times) = self.tls.attribute(windows) {
            for (s, t) in self.sessions.iter_mut().zip(times) {
                s.tls = Some(t.tls);
                s.handshake_ns = t.handshake_ns;
                s.tls_read_ns = t.read_ns;
                s.tls_write_ns = t.write_ns;
            }
        }
        self.sessions
    }
}

/// Each answered request's latency from a session's marks: from the
/// first bytes read of it to the end of the last send before the next
/// request begins. Reads while a request is handled and nothing was sent
/// yet are its body; a request unanswered when capture ended has none. In
/// a uprobe trace the read that returns a request marks its begin; in a
/// lean trace the counted call does, after the reads of its bytes.
fn latencies(mut marks: Vec<(u64, Mark)>) -> Vec<u64> {
    marks.sort_unstable();
    let mut out = Vec::new();
    // The first bytes since the last response; the request being answered
    // (since its first bytes) and its last send so far.
    let (mut first, mut current, mut sent) = (None, None, None::<u64>);
    for (at, mark) in marks {
        match mark {
            Mark::Data if current.is_none() || sent.is_some() => {
                first.get_or_insert(at);
            }
            Mark::Data => {}
            Mark::Request => {
                if let (Some(b), Some(e)) = (current, sent) {
                    out.push(e.saturating_sub(b));
                }
                current = Some(first.take().unwrap_or(at));
                sent = None;
            }
            Mark::Sent if current.is_some() => {
                sent = Some(sent.map_or(at, |s| s.max(at)));
                // Bytes read between two sends (a body after `100
                // Continue`) were this request's, not the next one's.
                first = None;
            }
            Mark::Sent => {}
        }
    }
    if let (Some(b), Some(e)) = (current, sent) {
        out.push(e.saturating_sub(b));
    }
    out
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
    let header = flowdar_trace::TraceReader::open(path)?.header().clone();
    let t = SessionTracker::new(&header.probes);
    if !t.can_track() {
        return Err(SessionsError::NoConnections { path: path.into() });
    }
    let clients = std::cell::RefCell::new(ClientBook::default());
    let t = std::cell::RefCell::new(t);
    let scanned = scan(
        path,
        |e| {
            clients.borrow_mut().add(e);
            t.borrow_mut().add_event(e);
        },
        |c| t.borrow_mut().add_with(c, &clients.borrow()),
    )?;
    let t = t.into_inner();
    Ok((t.finish(&clients.into_inner()), scanned))
}

/// Why a trace has no sessions.
#[derive(Debug, thiserror::Error)]
pub enum SessionsError {
    #[error("{path}: no connection identity in this trace: record with --profile apache:request or apache:connection")]
    NoConnections { path: std::path::PathBuf },
    #[error(transparent)]
    Store(#[from] flowdar_trace::StoreError),
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::stats::tests::probe;

    /// A call of process 1 (returned when `ret` is given).
    pub(crate) fn call(
        probe_id: u32,
        tid: u32,
        start: u64,
        end: u64,
        arg0: u64,
        ret: Option<u64>,
    ) -> Call {
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
            backend_ns: 0,
        }
    }

    #[test]
    fn a_lean_trace_makes_sessions_of_sockets_and_gives_requests_to_the_last_read() {
        let sys = |id, name: &str, nr| TraceProbe::syscall(id, name, nr, Default::default());
        let mut counted = probe(4, LEAN_REQUEST, None);
        counted.capture.entry_only = true;
        let probes = [
            sys(0, "read", 0),
            sys(1, "poll", 7),
            sys(2, "writev", 20),
            sys(3, "close", 3),
            counted,
        ];
        let mut t = SessionTracker::new(&probes);
        assert!(t.can_track());
        let (a, b) = (1 << 47 | 0x100, 1 << 47 | 0x200);
        // Reads and writes return the byte count asked for.
        let sock = |probe, tid, start, end, conn, third| Call {
            args: [9, conn, third],
            ..call(probe, tid, start, end, 9, Some(third))
        };
        // Connection a: two keep-alive requests on two threads, a write
        // that waited in poll for POLLOUT (not reading), then the close.
        // Connection b: a worker still polling for its headers at the end.
        for c in [
            sock(0, 1, 10, 12, a, 8000),
            call(4, 1, 13, 13, 0x77, None),
            sock(1, 1, 14, 20, a, 4),
            sock(2, 1, 21, 22, a, 200),
            sock(0, 2, 30, 31, a, 8000),
            call(4, 2, 32, 32, 0x78, None),
            sock(0, 3, 35, 36, b, 8000),
            sock(2, 2, 33, 34, a, 200),
            sock(3, 2, 40, 41, a, 0),
        ] {
            t.add(&Call {
                returned: true,
                ..c
            });
        }
        t.add(&Call {
            returned: false,
            ret: None,
            ..sock(1, 3, 37, 100, b, 1)
        });
        let sessions = t.finish(&ClientBook::default());
        let by_conn = |conn| sessions.iter().find(|s| s.connection == conn).unwrap();
        let (sa, sb) = (by_conn(a), by_conn(b));
        assert_eq!((sa.requests, sa.closed, sa.read_ns), (2, true, 2 + 1));
        assert_eq!(sa.threads, [1, 2]);
        assert_eq!(sa.protocol, Some("http/1.1"));
        assert_eq!((sb.requests, sb.closed, sb.in_flight), (0, false, 1));
        assert_eq!(sb.read_ns, 1 + 63, "the read and the poll for input so far");
        assert_eq!(
            sa.request_ns,
            [22 - 10, 34 - 30],
            "first bytes read to last write"
        );
        assert!(sb.request_ns.is_empty(), "no request began on b");
    }

    #[test]
    fn a_request_lasts_from_its_first_bytes_to_its_last_send() {
        use Mark::*;
        // Headers in three reads, a body read after the request began, two
        // writes; a keep-alive request; then one never answered.
        let marks = vec![
            (10, Data),
            (15, Data),
            (18, Data),
            (19, Request),
            (20, Data),
            (25, Sent),
            (27, Sent),
            (40, Data),
            (41, Request),
            (44, Sent),
            (50, Data),
            (51, Request),
        ];
        assert_eq!(latencies(marks), [27 - 10, 44 - 40]);
        // A uprobe trace: the read that returns the request marks its
        // begin, the end of `ap_process_request` its response.
        assert_eq!(
            latencies(vec![(5, Request), (9, Sent), (12, Request), (20, Sent)]),
            [4, 8]
        );
        // A body read between an interim answer (`100 Continue`) and the
        // response is the request's own: the next request starts afresh.
        assert_eq!(
            latencies(vec![
                (10, Data),
                (19, Request),
                (25, Sent),
                (30, Data),
                (40, Sent),
                (100, Data),
                (101, Request),
                (110, Sent),
            ]),
            [30, 10]
        );
        // Sends before any request (a connection seeded at attach) are no
        // request's.
        assert!(latencies(vec![(1, Sent), (2, Data)]).is_empty());
    }

    /// A client that connects again from the same port, served at a
    /// recycled `conn_rec` address, after its first connection closed:
    /// two sessions, not one with both connections' requests.
    #[test]
    fn the_same_client_and_port_again_at_a_recycled_address_is_a_new_session() {
        use crate::addresses::tests::client_event;
        let probes = [
            probe(0, "ap_run_process_connection", None),
            probe(1, READ, None),
        ];
        let mut t = SessionTracker::new(&probes);
        let c = 0xc0;
        let ip = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 2];
        let mut book = ClientBook::default();
        book.add(&client_event(1, 10, c, ip, 47626));
        book.add(&client_event(1, 500, c, ip, 47626));
        for call in [
            call(1, 11, 10, 20, c, Some(0x71)),
            call(1, 11, 30, 40, c, Some(0)), // the connection ends
            call(0, 11, 5, 45, c, Some(0)),
            call(1, 12, 500, 510, c, Some(0x72)),
            call(0, 12, 495, 520, c, Some(0)),
        ] {
            t.add_with(&call, &book);
        }
        let s = t.finish(&book);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(
            (s[0].requests, s[0].closed, s[0].start_ns, s[0].end_ns),
            (1, true, 5, 45)
        );
        assert_eq!((s[1].requests, s[1].start_ns, s[1].end_ns), (1, 495, 520));
        assert_eq!(s[0].client, s[1].client);
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

    #[test]
    fn an_http2_connection_is_one_session_whose_streams_are_its_requests() {
        use flowdar_trace::FieldRead;
        let read = |p: &mut TraceProbe, offset, then| {
            p.capture.args = 1;
            p.capture.read = Some(FieldRead {
                arg: 0,
                offset,
                then,
            });
        };
        let mut pass = probe(0, "ap_run_process_connection", None);
        read(&mut pass, CONN_MASTER_OFF, None);
        let mut stream = probe(1, "ap_process_request", None);
        read(&mut stream, REQUEST_CONNECTION_OFF, Some(CONN_MASTER_OFF));
        let probes = [pass, stream, probe(2, "ap_invoke_handler", None)];
        let mut t = SessionTracker::new(&probes);
        assert!(t.can_track());
        let (c1, c2, r) = (0xc1, 0xc2, 0x71);
        // The stream's entry comes first in the file; its handler
        // completes before it.
        t.add_event(&Event {
            tgid: 1,
            tid: 21,
            ts_ns: 110,
            probe_id: 1,
            kind: EventKind::Entry as u32,
            args: [r, c1, 0],
        });
        for c in [
            call(2, 21, 115, 140, r, Some(0)),
            call(1, 21, 110, 150, r, Some(0)),
            Call {
                args: [c2, c1, 0],
                ..call(0, 21, 105, 160, c2, Some(0))
            },
            Call {
                args: [r, c1, 0],
                ..call(1, 22, 170, 190, r, Some(0))
            },
            call(0, 30, 100, 200, c1, Some(0)),
        ] {
            let c = if c.probe_id == 1 && c.start_ns == 110 {
                Call {
                    args: [r, c1, 0],
                    ..c
                }
            } else {
                c
            };
            t.add(&c);
        }
        let s = t.finish(&ClientBook::default());
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!((s[0].connection, s[0].requests), (c1, 2));
        assert_eq!(s[0].protocol, Some("h2"));
        assert_eq!(s[0].threads, [21, 22, 30]);
        assert_eq!(s[0].request_starts, [110, 170]);
        assert!(s[0].request_ns.is_empty(), "streams have no latency");
    }
}
