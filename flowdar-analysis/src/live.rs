//! The live view behind `flowdar top`: events folded as they arrive into
//! per-interval function figures, what each worker is in now, calls in
//! flight by age, worker time per client, and the slow-HTTP alert. It sees
//! exactly the events the trace gets, so the intervals' call counts add up
//! to the trace's.
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
};

use flowdar_common::{Event, EventKind};
use hdrhistogram::Histogram;
use serde::Serialize;

use super::{
    phases::{LeanCall, LeanPhases, Phase},
    sessions::{pointer, SessionTracker, CONNECTION, READ, REQUEST},
};
use flowdar_trace::TraceProbe;

/// A worker thread found blocked on a client's TCP socket (the capture side
/// finds them through /proc; `top` hands them over in this shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedWorker {
    pub pid: u32,
    pub tid: u32,
    pub peer: SocketAddr,
    /// Waiting to read (a read, or a poll for input); else to write.
    pub reading: bool,
}

/// How a worker blocked on a client's socket from before attach shows.
pub const BLOCKED_BEFORE_ATTACH: &str = "(blocked on a client socket since before attach)";

/// When to raise the slow-HTTP alert: at least `workers` workers blocked
/// reading a request for longer than `after_ns` (defaults: `flowdar top`'s
/// flags).
#[derive(Debug, Clone, Copy)]
pub struct AlertRule {
    pub workers: usize,
    pub after_ns: u64,
}

/// One interval's figures. Field names are a stable interface (`top --json`).
#[derive(Debug, Clone, Serialize)]
pub struct Interval {
    /// Seconds since the view started.
    pub t: f64,
    /// Requests begun a second in this interval (calls of
    /// `ap_process_async_request`, else of `ap_process_request`; 0 when
    /// neither is probed).
    pub requests_per_s: f64,
    /// Workers inside the request-read path now, for any time (blocked
    /// reading since before attach included): the Slowloris gauge.
    pub reading_now: u64,
    pub functions: Vec<FunctionFigures>,
    pub workers: Vec<Worker>,
    pub in_flight: Vec<AgeBucket>,
    pub clients: Vec<ClientFigures>,
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FunctionFigures {
    pub function: String,
    /// Calls entered in the events that arrived during this interval
    /// (events arrive within ~100 ms of happening).
    pub calls: u64,
    pub calls_per_s: f64,
    /// Of the calls that returned in this interval.
    pub mean_ns: u64,
    pub p99_ns: u64,
}

/// A worker thread inside a traced call now.
#[derive(Debug, Clone, Serialize)]
pub struct Worker {
    pub pid: u32,
    pub tid: u32,
    /// The innermost traced call it is in.
    pub function: String,
    pub for_ns: u64,
    /// The phase of its connection it is in ("reading request", "handler",
    /// "backend", "writing response", "keep-alive", "closing", "TLS
    /// handshake", "connection"), and for how long; null for a worker
    /// blocked since before attach whose phase is unknown.
    pub phase: Option<Phase>,
    pub phase_ns: u64,
    /// The client of the connection it works on, when known.
    pub client: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgeBucket {
    pub age: &'static str,
    pub calls: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientFigures {
    pub address: String,
    /// Worker time spent on its connections since the view started,
    /// counting the calls still open up to now.
    pub worker_ns: u64,
    pub connections: u64,
    /// Workers on its connections now.
    pub workers_now: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub kind: &'static str,
    pub message: String,
    /// Workers held past the rule's time in the request-read path.
    pub workers: u64,
    /// The client addresses holding them, most workers first.
    pub clients: Vec<String>,
}

struct Frame {
    probe_id: u32,
    start_ns: u64,
    conn: Option<u64>,
    /// Lean: a system call waiting to read from the client.
    reads: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Role {
    /// Takes the `conn_rec *` first.
    Conn,
    /// Takes the `request_rec *` first.
    Request,
    /// A system call on a connection's socket (lean capture: the
    /// connection id in entry slot 1), in the session tracker's terms.
    Socket(super::sessions::Role),
    /// No return probe: counted, never a frame.
    EntryOnly,
    Other,
}

/// The fold of a live event stream.
pub struct LiveView {
    names: Vec<String>,
    roles: Vec<Role>,
    /// Per probe id, the entry slot holding an HTTP/2 stream's primary
    /// connection (`c->master`, `r->connection->master`), when it reads one.
    primary_slot: Vec<Option<usize>>,
    read: Option<u32>,
    /// The probe whose calls count requests (see [`Interval::requests_per_s`]).
    request: Option<usize>,
    rule: AlertRule,
    threads: HashMap<u32, (u32, Vec<Frame>)>,
    calls: Vec<u64>,
    durations: Vec<Histogram<u64>>,
    conn_client: HashMap<(u32, u64), SocketAddr>,
    request_conn: HashMap<(u32, u64), u64>,
    client_ns: HashMap<IpAddr, u64>,
    client_conns: HashMap<IpAddr, HashSet<SocketAddr>>,
    started_ns: u64,
    last_snapshot_ns: u64,
    /// Workers found blocked on a client's socket when the view started,
    /// by tid, while they stay so and send no event: their calls began
    /// before attach, so no probe will tell when they end.
    blocked: HashMap<u32, BlockedWorker>,
    blocked_seeded: bool,
    /// Lean traces: each thread's phase, followed from call to call.
    lean_phases: LeanPhases,
    /// `apache:h2`: the probes of streams opened and answered, and their
    /// counts since the last snapshot.
    streams_opened: Option<u32>,
    streams_answered: Option<u32>,
    stream_counts: (u64, u64),
}

/// SSL_accept: a worker inside it is in a TLS handshake.
const HANDSHAKE: &str = "SSL_accept";
/// Streams opened and never answered a second, beyond which (and beyond
/// the answered ones) `top` raises the HTTP/2 reset alert.
const RESETS_PER_S: f64 = 100.0;

/// (address, count) pairs, most first.
fn most_first(counts: HashMap<String, u64>) -> Vec<(String, u64)> {
    let mut by: Vec<(String, u64)> = counts.into_iter().collect();
    by.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    by
}

fn top3(by: &[(String, u64)]) -> String {
    by.iter()
        .take(3)
        .map(|(a, n)| format!("{a}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

const AGES: [(&str, u64); 4] = [
    ("< 1 s", 1_000_000_000),
    ("1-10 s", 10_000_000_000),
    ("10-60 s", 60_000_000_000),
    ("> 60 s", u64::MAX),
];

impl LiveView {
    pub fn new(probes: &[TraceProbe], rule: AlertRule, now_ns: u64) -> Self {
        let role = |p: &TraceProbe| {
            let f = p.function.as_str();
            if p.is_syscall() {
                Role::Socket(super::sessions::Role::of_syscall(f))
            } else if p.capture.entry_only {
                Role::EntryOnly
            } else if f == READ || CONNECTION.contains(&f) {
                Role::Conn
            } else if REQUEST.contains(&f) {
                Role::Request
            } else {
                Role::Other
            }
        };
        Self {
            names: probes.iter().map(|p| p.function.clone()).collect(),
            roles: probes.iter().map(role).collect(),
            primary_slot: {
                let roles = SessionTracker::roles_of(probes);
                probes
                    .iter()
                    .map(|p| match roles.get(&p.id) {
                        Some(super::sessions::Role::Request { stream: Some(k) })
                        | Some(super::sessions::Role::Connection {
                            master: Some(k), ..
                        }) => Some(*k),
                        _ => None,
                    })
                    .collect()
            },
            read: probes.iter().find(|p| p.function == READ).map(|p| p.id),
            request: [
                "ap_process_async_request",
                "ap_process_request",
                super::sessions::LEAN_REQUEST,
            ]
            .iter()
            .find_map(|f| probes.iter().position(|p| p.function == *f)),
            rule,
            threads: HashMap::new(),
            calls: vec![0; probes.len()],
            durations: probes.iter().map(|_| histogram()).collect(),
            conn_client: HashMap::new(),
            request_conn: HashMap::new(),
            client_ns: HashMap::new(),
            client_conns: HashMap::new(),
            started_ns: now_ns,
            last_snapshot_ns: now_ns,
            blocked: HashMap::new(),
            blocked_seeded: false,
            lean_phases: LeanPhases::default(),
            streams_opened: probes
                .iter()
                .find(|p| p.function == crate::h2::STREAM_OPENED)
                .map(|p| p.id),
            streams_answered: probes
                .iter()
                .find(|p| p.function == crate::h2::STREAM_ANSWERED)
                .map(|p| p.id),
            stream_counts: (0, 0),
        }
    }

    /// Whether [`LiveView::set_blocked`] still has a use: before its first
    /// call, and while threads blocked from before attach remain.
    pub fn wants_blocked(&self) -> bool {
        !self.blocked_seeded || !self.blocked.is_empty()
    }

    /// The threads blocked on a client's socket now (`capture::
    /// blocked_on_sockets`). The first call, made before any event is
    /// pushed, takes them all: blocked since before attach (one whose call
    /// began after attach leaves the set with its first event). Later calls
    /// keep those still blocked on the same peer.
    pub fn set_blocked(&mut self, now: Vec<BlockedWorker>) {
        if !self.blocked_seeded {
            self.blocked_seeded = true;
            self.blocked = now.into_iter().map(|b| (b.tid, b)).collect();
            return;
        }
        self.blocked
            .retain(|tid, b| now.iter().any(|n| n.tid == *tid && n.peer == b.peer));
    }

    pub fn push(&mut self, e: &Event) {
        if e.kind == EventKind::Client as u32 {
            // A connection's client (a request's trace context: not here).
            if let Some((conn, addr)) = e.client() {
                self.conn_client.insert((e.tgid, conn), addr);
                self.client_conns.entry(addr.ip()).or_default().insert(addr);
            }
            return;
        }
        let id = e.probe_id as usize;
        if id >= self.names.len() {
            return;
        }
        if e.kind == EventKind::Entry as u32 && flowdar_common::held_uprobe_at_attach(&e.args) {
            // A uprobe trace's worker held since before attach, written by
            // the capture from /proc: the view has it from `set_blocked`,
            // which also sees it leave (its return never comes).
            return;
        }
        self.blocked.remove(&e.tid);
        let role = self.roles[id];
        if self.threads.get(&e.tid).is_some_and(|(t, _)| *t != e.tgid) {
            // A recycled tid: the old thread's connection is not this one's.
            self.lean_phases.closed(e.tid);
        }
        if let Some(call) = self.lean_call(id, e) {
            self.lean_phases.entry(e.tid, e.ts_ns, call);
        }
        let (tgid, stack) = self
            .threads
            .entry(e.tid)
            .or_insert_with(|| (e.tgid, Vec::new()));
        if *tgid != e.tgid {
            // A recycled tid: the old thread's frames are gone with it.
            *tgid = e.tgid;
            stack.clear();
        }
        if e.kind == EventKind::Entry as u32 {
            self.calls[id] += 1;
            if Some(e.probe_id) == self.streams_opened && e.args[2] != 0 {
                self.stream_counts.0 += 1;
            } else if Some(e.probe_id) == self.streams_answered {
                self.stream_counts.1 += 1;
            }
            if role == Role::EntryOnly {
                return;
            }
            // An HTTP/2 stream's calls count for the client's connection.
            let primary = self.primary_slot[id].and_then(|k| pointer(e.args[k]));
            let enclosing = || stack.iter().rev().find_map(|f| f.conn);
            let conn = match role {
                _ if primary.is_some() => primary,
                Role::Conn => Some(e.args[0]),
                Role::Socket(_) => Some(e.args[1]),
                Role::Request => self
                    .request_conn
                    .get(&(e.tgid, e.args[0]))
                    .copied()
                    .or_else(enclosing),
                Role::Other | Role::EntryOnly => enclosing(),
            };
            stack.push(Frame {
                probe_id: e.probe_id,
                start_ns: e.ts_ns,
                conn,
                reads: matches!(role, Role::Socket(r) if r.waits_to_read(&e.args)),
            });
        } else if e.kind == EventKind::Exit as u32 {
            if let Role::Socket(super::sessions::Role::Socket {
                reading,
                poll,
                closing,
                ..
            }) = role
            {
                let bytes = e.args[0] > 0 && e.args[0] < 1 << 48;
                if reading && !poll && bytes {
                    self.lean_phases.bytes_read(e.tid, e.ts_ns);
                } else if closing {
                    self.lean_phases.closed(e.tid);
                }
            }
            let Some(pos) = stack.iter().rposition(|f| f.probe_id == e.probe_id) else {
                return; // entered before capture
            };
            // Frames above the match never returned: dropped with it.
            let Some(f) = stack.drain(pos..).next() else {
                return;
            };
            let took = e.ts_ns.saturating_sub(f.start_ns);
            let _ = self.durations[id].record(took.max(1));
            if Some(e.probe_id) == self.read && e.args[0] != 0 {
                if let Some(conn) = f.conn {
                    self.request_conn.insert((e.tgid, e.args[0]), conn);
                }
            }
            // The outermost traced call: a stretch of this worker's time.
            if stack.is_empty() {
                if let Some(addr) = f.conn.and_then(|c| self.conn_client.get(&(e.tgid, c))) {
                    *self.client_ns.entry(addr.ip()).or_default() += took;
                }
            }
        }
    }

    /// What a lean trace's entry `e` (of probe `id`) is to its thread's
    /// phase.
    fn lean_call(&self, id: usize, e: &Event) -> Option<LeanCall> {
        if e.kind != EventKind::Entry as u32 {
            return None;
        }
        match self.roles[id] {
            Role::EntryOnly if Some(id) == self.request => Some(LeanCall::Request),
            Role::Socket(r) => {
                let conn = e.args[1];
                let super::sessions::Role::Socket {
                    poll,
                    closing,
                    writing,
                    ..
                } = r
                else {
                    return None;
                };
                if r.waits_to_read(&e.args) {
                    Some(LeanCall::ReadWait(conn))
                } else if writing || poll {
                    Some(LeanCall::Write(conn))
                } else if closing {
                    Some(LeanCall::Close(conn))
                } else if self.names[id] == "shutdown" {
                    Some(LeanCall::Shutdown(conn))
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// Forgets the threads of processes that are gone (a child recycled,
    /// or killed mid-call): their open frames would otherwise stay workers
    /// forever.
    pub fn forget_dead(&mut self, alive: impl Fn(u32) -> bool) {
        self.threads.retain(|_, (tgid, _)| alive(*tgid));
        let threads = &self.threads;
        self.lean_phases.retain(|tid| threads.contains_key(&tid));
    }

    /// The figures since the last snapshot (call counts and durations
    /// restart at zero) and the state at `now_ns` (CLOCK_MONOTONIC).
    pub fn snapshot(&mut self, now_ns: u64) -> Interval {
        self.snapshot_at(now_ns, now_ns)
    }

    /// [`LiveView::snapshot`] whose rates run to `rate_end_ns` (the events
    /// pushed so far) and whose ages and states are those at `now_ns`: the
    /// last view of a stopped capture, whose events kept coming while it
    /// detached, is of the moment the stop began.
    pub fn snapshot_at(&mut self, rate_end_ns: u64, now_ns: u64) -> Interval {
        let secs = (rate_end_ns.saturating_sub(self.last_snapshot_ns) as f64 / 1e9).max(1e-9);
        self.last_snapshot_ns = rate_end_ns;
        let mut functions: Vec<FunctionFigures> = (0..self.names.len())
            .filter(|&i| self.calls[i] > 0 || !self.durations[i].is_empty())
            .map(|i| FunctionFigures {
                function: self.names[i].clone(),
                calls: self.calls[i],
                calls_per_s: self.calls[i] as f64 / secs,
                mean_ns: self.durations[i].mean() as u64,
                p99_ns: self.durations[i].value_at_quantile(0.99),
            })
            .collect();
        functions.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.function.cmp(&b.function)));
        let requests_per_s = self.request.map_or(0.0, |i| self.calls[i] as f64 / secs);
        self.calls.iter_mut().for_each(|c| *c = 0);
        self.durations.iter_mut().for_each(Histogram::reset);

        let mut workers = Vec::new();
        let mut ages = [0u64; AGES.len()];
        let mut held_now: HashMap<IpAddr, (u64, u64)> = HashMap::new();
        let mut reading: HashMap<String, u64> = HashMap::new();
        let mut handshaking: HashMap<String, u64> = HashMap::new();
        let mut reading_now = 0;
        for (&tid, (pid, stack)) in &self.threads {
            for f in stack {
                let age = now_ns.saturating_sub(f.start_ns);
                ages[AGES.iter().position(|(_, lim)| age < *lim).unwrap_or(3)] += 1;
            }
            let (Some(bottom), Some(top)) = (stack.first(), stack.last()) else {
                // Lean: between a request's start and its thread's next
                // system call, in the handler.
                if let (Some((Phase::Handler, since)), Some(conn), Some(id)) = (
                    self.lean_phases.now(tid),
                    self.lean_phases.conn(tid),
                    self.request,
                ) {
                    let client = self.conn_client.get(&(*pid, conn));
                    workers.push(Worker {
                        pid: *pid,
                        tid,
                        function: self.names[id].clone(),
                        for_ns: now_ns.saturating_sub(since),
                        phase: Some(Phase::Handler),
                        phase_ns: now_ns.saturating_sub(since),
                        client: client.map(ToString::to_string),
                    });
                }
                continue;
            };
            let client = top
                .conn
                .and_then(|c| self.conn_client.get(&(*pid, c)))
                .copied();
            if let Some(a) = client {
                let h = held_now.entry(a.ip()).or_default();
                h.0 += now_ns.saturating_sub(bottom.start_ns);
                h.1 += 1;
            }
            let for_ns = now_ns.saturating_sub(top.start_ns);
            // In a TLS handshake, whatever the innermost call (lean: the
            // read or poll SSL_accept waits in).
            let handshake = stack
                .iter()
                .find(|f| self.names[f.probe_id as usize] == HANDSHAKE)
                .map(|f| f.start_ns);
            let phase = match self.roles[top.probe_id as usize] {
                _ if handshake.is_some() => handshake.map(|t| (Phase::Handshake, t)),
                Role::Socket(_) => self.lean_phases.now(tid),
                _ => Phase::of_stack(
                    stack
                        .iter()
                        .map(|f| (self.names[f.probe_id as usize].as_str(), f.start_ns)),
                ),
            };
            // Blocked reading a request, whatever it calls meanwhile (with
            // the io set, the innermost call is apr_socket_recv, restarted
            // at every header line the client trickles in). Lean: in a
            // reading system call now, since the request's first (not
            // waiting in keep-alive, nor reading the client out at close).
            let lean_reading = match phase {
                Some((Phase::Reading, since)) if top.reads => Some(now_ns.saturating_sub(since)),
                _ => None,
            };
            let reading_since = stack
                .iter()
                .find(|f| Some(f.probe_id) == self.read)
                .map(|f| now_ns.saturating_sub(f.start_ns))
                .or(lean_reading);
            if let Some(since) = handshake {
                if now_ns.saturating_sub(since) > self.rule.after_ns {
                    let who = client.map_or_else(|| "unknown".to_string(), |a| a.ip().to_string());
                    *handshaking.entry(who).or_default() += 1;
                }
            }
            reading_now += u64::from(reading_since.is_some());
            if reading_since.is_some_and(|t| t > self.rule.after_ns) {
                let who = client.map_or_else(|| "unknown".to_string(), |a| a.ip().to_string());
                *reading.entry(who).or_default() += 1;
            }
            workers.push(Worker {
                pid: *pid,
                tid,
                function: self.names[top.probe_id as usize].clone(),
                for_ns,
                phase: phase.map(|(p, _)| p),
                phase_ns: phase.map_or(0, |(_, since)| now_ns.saturating_sub(since)),
                client: client.map(|a| a.to_string()),
            });
        }
        // Blocked since before attach: for at least as long as the view.
        let since_attach = now_ns.saturating_sub(self.started_ns);
        for b in self.blocked.values() {
            let h = held_now.entry(b.peer.ip()).or_default();
            h.0 += since_attach;
            h.1 += 1;
            reading_now += u64::from(b.reading);
            if b.reading && since_attach > self.rule.after_ns {
                *reading.entry(b.peer.ip().to_string()).or_default() += 1;
            }
            workers.push(Worker {
                pid: b.pid,
                tid: b.tid,
                function: BLOCKED_BEFORE_ATTACH.into(),
                for_ns: since_attach,
                phase: b.reading.then_some(Phase::Reading),
                phase_ns: since_attach,
                client: Some(b.peer.to_string()),
            });
            self.client_conns
                .entry(b.peer.ip())
                .or_default()
                .insert(b.peer);
        }
        workers.sort_by(|a, b| b.for_ns.cmp(&a.for_ns).then(a.tid.cmp(&b.tid)));

        let mut addrs: HashSet<IpAddr> = self.client_ns.keys().copied().collect();
        addrs.extend(held_now.keys());
        let mut clients: Vec<ClientFigures> = addrs
            .into_iter()
            .map(|ip| {
                let (open_ns, now) = held_now.get(&ip).copied().unwrap_or_default();
                ClientFigures {
                    address: ip.to_string(),
                    worker_ns: self.client_ns.get(&ip).copied().unwrap_or(0) + open_ns,
                    connections: self.client_conns.get(&ip).map_or(0, |c| c.len() as u64),
                    workers_now: now,
                }
            })
            .collect();
        clients.sort_by(|a, b| {
            b.worker_ns
                .cmp(&a.worker_ns)
                .then(a.address.cmp(&b.address))
        });

        let held: u64 = reading.values().sum();
        let mut alerts = Vec::new();
        if held as usize >= self.rule.workers {
            let by = most_first(reading);
            alerts.push(Alert {
                kind: "slow-http",
                message: format!(
                    "slow HTTP: {held} workers held > {} reading requests ({}) by {} client address{} ({})",
                    crate::units::ns(self.rule.after_ns),
                    if self.read.is_some() {
                        format!("{READ}, or blocked reading since before attach")
                    } else {
                        "waiting on the client's socket in read or poll, since the request's first read".into()
                    },
                    by.len(),
                    if by.len() == 1 { "" } else { "es" },
                    top3(&by)
                ),
                workers: held,
                clients: by.into_iter().map(|(a, _)| a).collect(),
            });
        }
        let held: u64 = handshaking.values().sum();
        if held as usize >= self.rule.workers {
            let by = most_first(handshaking);
            alerts.push(Alert {
                kind: "tls-handshake",
                message: format!(
                    "TLS handshakes held: {held} workers in {HANDSHAKE} > {} by {} client address{} ({})",
                    crate::units::ns(self.rule.after_ns),
                    by.len(),
                    if by.len() == 1 { "" } else { "es" },
                    top3(&by)
                ),
                workers: held,
                clients: by.into_iter().map(|(a, _)| a).collect(),
            });
        }
        // HTTP/2 streams reset faster than served (Rapid Reset).
        if self.streams_opened.is_some() {
            let (o, a) = (
                std::mem::take(&mut self.stream_counts.0),
                std::mem::take(&mut self.stream_counts.1),
            );
            let unanswered = o.saturating_sub(a);
            let per_s = unanswered as f64 / secs;
            if per_s >= RESETS_PER_S && unanswered > a {
                alerts.push(Alert {
                    kind: "h2-reset",
                    message: format!(
                        "HTTP/2 streams reset faster than served: {per_s:.0}/s opened and never answered, against {:.0}/s answered",
                        a as f64 / secs
                    ),
                    workers: 0,
                    clients: Vec::new(),
                });
            }
        }
        Interval {
            t: now_ns.saturating_sub(self.started_ns) as f64 / 1e9,
            requests_per_s,
            reading_now,
            functions,
            workers,
            in_flight: AGES
                .iter()
                .zip(ages)
                .map(|((age, _), calls)| AgeBucket { age, calls })
                .collect(),
            clients,
            alerts,
        }
    }
}

#[expect(
    clippy::expect_used,
    reason = "new() fails only for significant digits outside 0..=5"
)]
fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::tests::{ev, probe};

    /// A live view of a lean trace (read, poll, writev and the counted
    /// request entry) that alerts at `workers` held for 1 us.
    fn lean_view(workers: usize) -> LiveView {
        let sys = |id, name: &str, nr| TraceProbe::syscall(id, name, nr, Default::default());
        let mut counted = probe(3, super::super::sessions::LEAN_REQUEST, None);
        counted.capture.entry_only = true;
        let probes = [
            sys(0, "read", 0),
            sys(1, "poll", 7),
            sys(2, "writev", 20),
            counted,
        ];
        let rule = AlertRule {
            workers,
            after_ns: 1_000,
        };
        LiveView::new(&probes, rule, 0)
    }

    #[test]
    fn a_lean_trace_shows_workers_reading_since_the_first_read_of_their_request() {
        let mut v = lean_view(1);
        let (slow, fast) = (1 << 47 | 0x100, 1 << 47 | 0x200);
        let attacker: SocketAddr = "198.18.0.6:1000".parse().unwrap();
        let legit: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        for (conn, addr) in [(slow, attacker), (fast, legit)] {
            v.push(&Event {
                tgid: 1,
                tid: 10,
                ts_ns: 5,
                probe_id: 0,
                kind: EventKind::Client as u32,
                args: Event::client_args(conn, addr),
            });
        }
        // The slow client trickles header lines: read, poll, read, poll...
        for (kind, ts, probe) in [
            (EventKind::Entry, 11, 0),
            (EventKind::Exit, 12, 0),
            (EventKind::Entry, 13, 1),
            (EventKind::Exit, 3_000, 1),
            (EventKind::Entry, 3_001, 0),
            (EventKind::Exit, 3_002, 0),
            (EventKind::Entry, 3_003, 1),
        ] {
            // A poll's third slot: the events it waits for (POLLIN).
            v.push(&ev(11, ts, probe, kind, [9, slow, 1]));
        }
        // A request served: read, counted, written; then the EAGAIN read.
        for (kind, ts, probe) in [
            (EventKind::Entry, 20, 0),
            (EventKind::Exit, 21, 0),
            (EventKind::Entry, 22, 3),
            (EventKind::Entry, 23, 2),
            (EventKind::Exit, 24, 2),
            (EventKind::Entry, 25, 0),
            (EventKind::Exit, 26, 0),
        ] {
            v.push(&ev(12, ts, probe, kind, [8, fast, 0]));
        }
        let i = v.snapshot(5_000);
        assert_eq!(i.requests_per_s, 1.0 / 5e-6);
        assert_eq!(i.reading_now, 1, "the served worker is in no call now");
        assert_eq!(i.workers.len(), 1);
        assert_eq!(
            (
                i.workers[0].tid,
                i.workers[0].function.as_str(),
                i.workers[0].for_ns
            ),
            (11, "poll", 5_000 - 3_003)
        );
        assert_eq!(
            i.alerts.len(),
            1,
            "reading since 11, not since the last poll"
        );
        assert_eq!(
            (i.workers[0].phase, i.workers[0].phase_ns),
            (Some(Phase::Reading), 5_000 - 11),
            "reading its request since the first read"
        );
        assert_eq!(i.alerts[0].clients, ["198.18.0.6"]);
        assert!(
            i.alerts[0].message.contains("read or poll"),
            "{}",
            i.alerts[0].message
        );
    }

    #[test]
    fn intervals_count_entries_and_the_alert_names_the_clients_holding_reads() {
        let probes = [
            probe(0, READ, None),
            probe(1, "ap_invoke_handler", None),
            probe(2, "apr_socket_recv", None),
            probe(3, "ap_process_async_request", None),
        ];
        let rule = AlertRule {
            workers: 2,
            after_ns: 1_000,
        };
        let mut v = LiveView::new(&probes, rule, 0);
        let attacker: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 6];
        for (tid, conn, port) in [(11, 0xa0, 1000u64), (12, 0xb0, 1001)] {
            v.push(&Event {
                tgid: 1,
                tid,
                ts_ns: 10,
                probe_id: 0,
                kind: EventKind::Client as u32,
                args: [
                    port << 48 | conn,
                    u64::from_ne_bytes(attacker[..8].try_into().unwrap()),
                    u64::from_ne_bytes(attacker[8..].try_into().unwrap()),
                ],
            });
            v.push(&ev(tid, 11, 0, EventKind::Entry, [conn, 0, 0]));
        }
        // One of them is in a socket read that began just now (a header line
        // trickled in): still a worker held in the request read since 11.
        v.push(&ev(11, 4_900, 2, EventKind::Entry, [0, 0, 0]));
        // A request served on another thread: read, handler, done.
        v.push(&ev(13, 20, 0, EventKind::Entry, [0xc0, 0, 0]));
        v.push(&ev(13, 30, 0, EventKind::Exit, [0x77, 0, 0]));
        v.push(&ev(13, 31, 1, EventKind::Entry, [0x77, 0, 0]));
        v.push(&ev(13, 32, 3, EventKind::Entry, [0x77, 0, 0]));
        v.push(&ev(13, 40, 3, EventKind::Exit, [0, 0, 0]));
        v.push(&ev(13, 41, 1, EventKind::Exit, [0, 0, 0]));
        let i = v.snapshot(5_000);
        let calls: HashMap<&str, u64> = i
            .functions
            .iter()
            .map(|f| (f.function.as_str(), f.calls))
            .collect();
        assert_eq!(calls[READ], 3);
        assert_eq!(calls["ap_invoke_handler"], 1);
        // One request begun in 5 us.
        assert_eq!(i.requests_per_s, 1.0 / 5e-6);
        assert_eq!(i.reading_now, 2);
        assert_eq!(i.workers.len(), 2, "two workers still reading");
        let inner = i.workers.iter().find(|w| w.tid == 11).unwrap();
        assert_eq!(
            (inner.function.as_str(), inner.for_ns),
            ("apr_socket_recv", 100)
        );
        assert_eq!(i.alerts.len(), 1);
        assert_eq!(i.alerts[0].workers, 2);
        assert_eq!(i.alerts[0].clients, ["198.18.0.6"]);
        assert_eq!(i.clients[0].address, "198.18.0.6");
        assert_eq!(i.clients[0].workers_now, 2);
        assert_eq!(i.clients[0].connections, 2);
        assert_eq!(i.clients[0].worker_ns, 2 * (5_000 - 11));
        // The next interval starts from zero calls.
        let j = v.snapshot(6_000);
        assert!(j.functions.iter().all(|f| f.calls == 0));
        assert_eq!((j.requests_per_s, j.reading_now), (0.0, 2));
        // A process gone (killed mid-call) leaves no phantom workers.
        v.forget_dead(|_| false);
        let k = v.snapshot(7_000);
        assert!(k.workers.is_empty() && k.alerts.is_empty() && k.reading_now == 0);
    }

    #[test]
    fn a_lean_trace_names_each_worker_s_phase() {
        let mut v = lean_view(10);
        let c = |n: u64| 1 << 47 | n;
        // Thread 21: its request's bytes read, the request begun, no
        // system call since: in the handler.
        v.push(&ev(21, 10, 0, EventKind::Entry, [8, c(1), 100]));
        v.push(&ev(21, 11, 0, EventKind::Exit, [100, 0, 0]));
        v.push(&ev(21, 12, 3, EventKind::Entry, [0x77, 0, 0]));
        // Thread 22: writing its response (a poll for output, POLLOUT).
        v.push(&ev(22, 20, 0, EventKind::Entry, [8, c(2), 100]));
        v.push(&ev(22, 21, 0, EventKind::Exit, [100, 0, 0]));
        v.push(&ev(22, 22, 3, EventKind::Entry, [0x78, 0, 0]));
        v.push(&ev(22, 30, 2, EventKind::Entry, [8, c(2), 2]));
        v.push(&ev(22, 31, 2, EventKind::Exit, [0, 0, 0]));
        v.push(&ev(22, 32, 1, EventKind::Entry, [8, c(2), 4]));
        // Thread 23: answered, now waiting for the next request.
        v.push(&ev(23, 40, 0, EventKind::Entry, [8, c(3), 100]));
        v.push(&ev(23, 41, 0, EventKind::Exit, [100, 0, 0]));
        v.push(&ev(23, 42, 3, EventKind::Entry, [0x79, 0, 0]));
        v.push(&ev(23, 43, 2, EventKind::Entry, [8, c(3), 2]));
        v.push(&ev(23, 44, 2, EventKind::Exit, [300, 0, 0]));
        v.push(&ev(23, 45, 1, EventKind::Entry, [8, c(3), 1]));
        // Thread 24: done with its request, back in the pool (no call).
        v.push(&ev(24, 50, 0, EventKind::Entry, [8, c(4), 100]));
        v.push(&ev(24, 51, 0, EventKind::Exit, [100, 0, 0]));
        v.push(&ev(24, 52, 3, EventKind::Entry, [0x7a, 0, 0]));
        v.push(&ev(24, 53, 2, EventKind::Entry, [8, c(4), 2]));
        v.push(&ev(24, 54, 2, EventKind::Exit, [300, 0, 0]));
        let i = v.snapshot(100);
        let mut phases: Vec<(u32, Option<&str>, u64)> = i
            .workers
            .iter()
            .map(|w| (w.tid, w.phase.map(Phase::name), w.phase_ns))
            .collect();
        phases.sort_unstable();
        assert_eq!(
            phases,
            [
                (21, Some("handler"), 100 - 12),
                (22, Some("writing response"), 100 - 30),
                (23, Some("keep-alive"), 100 - 45),
            ]
        );
        assert_eq!(i.reading_now, 0, "a keep-alive wait reads no request yet");
    }

    /// A lean trace with `handshake`: workers whose read waits inside
    /// SSL_accept are in TLS handshakes, alerted as such (not as slow
    /// HTTP), with the client holding them.
    #[test]
    fn workers_held_in_ssl_accept_raise_the_tls_handshake_alert() {
        let sys = |id, name: &str, nr| TraceProbe::syscall(id, name, nr, Default::default());
        let probes = [
            sys(0, "read", 0),
            sys(1, "poll", 7),
            probe(2, HANDSHAKE, None),
        ];
        let rule = AlertRule {
            workers: 2,
            after_ns: 1_000,
        };
        let mut v = LiveView::new(&probes, rule, 0);
        let attacker: SocketAddr = "198.18.0.6:1000".parse().unwrap();
        for (tid, conn) in [(11u32, 1u64 << 47 | 1), (12, 1 << 47 | 2)] {
            v.push(&Event {
                tgid: 1,
                tid,
                ts_ns: 5,
                probe_id: 0,
                kind: EventKind::Client as u32,
                args: Event::client_args(conn, attacker),
            });
            v.push(&ev(tid, 10, 2, EventKind::Entry, [0x5000, 0, 0]));
            v.push(&ev(tid, 11, 0, EventKind::Entry, [9, conn, 5]));
            v.push(&ev(tid, 12, 0, EventKind::Exit, [5, 0, 0]));
            v.push(&ev(tid, 13, 1, EventKind::Entry, [9, conn, 1]));
        }
        let i = v.snapshot(5_000);
        assert_eq!(i.alerts.len(), 1, "{:?}", i.alerts);
        let a = &i.alerts[0];
        assert_eq!((a.kind, a.workers), ("tls-handshake", 2));
        assert_eq!(a.clients, ["198.18.0.6"]);
        assert!(
            a.message
                .starts_with("TLS handshakes held: 2 workers in SSL_accept"),
            "{}",
            a.message
        );
        assert!(i.workers.iter().all(|w| w.phase == Some(Phase::Handshake)));
        assert_eq!(i.reading_now, 0, "a handshake reads no request");
    }

    /// `apache:h2`: streams opened and never answered, faster than
    /// answered and past 100 a second, raise the reset alert; a load whose
    /// streams are answered does not.
    #[test]
    fn streams_reset_faster_than_served_raise_the_h2_reset_alert() {
        let probes = [
            probe(0, crate::h2::STREAM_OPENED, None),
            probe(1, crate::h2::STREAM_ANSWERED, None),
        ];
        let rule = AlertRule {
            workers: 1,
            after_ns: 1_000,
        };
        let mut v = LiveView::new(&probes, rule, 0);
        let second = 1_000_000_000;
        // Served: 500 streams opened and answered (and the NULL set of
        // each answered stream's clean-up, which opens nothing).
        for k in 0..500u64 {
            for (p, state) in [(0, 0x7000 + k), (1, 0), (0, 0)] {
                v.push(&ev(
                    10,
                    k * 10,
                    p,
                    EventKind::Entry,
                    [0x1, 2 * k + 1, state],
                ));
                v.push(&ev(10, k * 10 + 1, p, EventKind::Exit, [0, 0, 0]));
            }
        }
        assert!(v.snapshot(second).alerts.is_empty());
        // Reset: 1000 opened, 50 answered.
        for k in 0..1000u64 {
            v.push(&ev(
                10,
                second + k * 10,
                0,
                EventKind::Entry,
                [0x1, 2 * k + 1, 0x9000],
            ));
            v.push(&ev(10, second + k * 10 + 1, 0, EventKind::Exit, [0, 0, 0]));
        }
        for k in 0..50u64 {
            v.push(&ev(
                10,
                second + 20_000 + k,
                1,
                EventKind::Entry,
                [0x1, 0, 0],
            ));
            v.push(&ev(10, second + 20_000 + k, 1, EventKind::Exit, [0, 0, 0]));
        }
        let i = v.snapshot(2 * second);
        assert_eq!(i.alerts.len(), 1, "{:?}", i.alerts);
        assert_eq!(i.alerts[0].kind, "h2-reset");
        assert_eq!(
            i.alerts[0].message,
            "HTTP/2 streams reset faster than served: 950/s opened and never answered, against 50/s answered"
        );
    }
}
