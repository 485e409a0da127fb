//! Requests as spans, for exporters to tracing back ends (OTLP): one
//! server span per request, with the calls of chosen functions inside it
//! as child spans.
//!
//! A request (a uprobe trace with `apache:request`) runs from the start
//! of the `ap_read_request` that returned its `request_rec` (HTTP/1.x) or
//! from the start of its stream's `ap_process_request` (HTTP/2: no read
//! on the worker) to the end of `ap_process_request` /
//! `ap_process_async_request` (its response; one call nested in the other
//! is one request). A read that never returned (a client that never
//! finished its request: a Slowloris) is an unfinished `read request`
//! span, with its duration so far; so is a request whose processing was
//! still going at the end of capture. A child span is a call of one of
//! the chosen functions on the request's thread inside its span.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::SocketAddr,
    path::Path,
};

use super::{
    addresses::ClientBook,
    scan,
    sessions::{pointer, Role, SessionTracker, READ},
    Call, Scanned,
};
use flowdar_trace::TraceProbe;

/// The calls that end with a request's response sent.
const ANSWERING: &[&str] = &["ap_process_request", "ap_process_async_request"];
/// At most this many child calls wait on a thread for their request (a
/// thread's calls outside any request are dropped past it).
const CHILDREN_PER_THREAD: usize = 4096;

/// What a span stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpanKind {
    /// A request read and answered (or still being answered).
    Request,
    /// A request still being read at the end: the client never finished it.
    ReadRequest,
}

/// A call inside a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSpan {
    pub function: String,
    pub tid: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub finished: bool,
}

/// One request. Times are the trace's (CLOCK_MONOTONIC, ns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSpan {
    pub kind: SpanKind,
    pub pid: u32,
    /// The thread that processed it (read it, for a read still going).
    pub tid: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    /// False when it was still going when capture ended.
    pub finished: bool,
    pub client: Option<SocketAddr>,
    /// "2" for an HTTP/2 stream, "1.1" for a request read from a connection.
    pub protocol: &'static str,
    pub children: Vec<ChildSpan>,
    /// The caller's W3C trace context, from the request's `traceparent`
    /// header (read by the kernel; probes with `traceparent`).
    pub parent: Option<TraceParent>,
    /// Its final status and method (`ap_run_log_transaction` reading
    /// `r->status` and `r->method_number`), when probed.
    pub status: Option<u16>,
    pub method: Option<&'static str>,
}

/// Apache's method numbers (`M_GET`...: httpd.h) as OpenTelemetry names
/// them; a HEAD request is `M_GET` (with `header_only`), so GET here.
fn method_name(number: u32) -> &'static str {
    match number {
        0 => "GET",
        1 => "PUT",
        2 => "POST",
        3 => "DELETE",
        4 => "CONNECT",
        5 => "OPTIONS",
        6 => "TRACE",
        7 => "PATCH",
        _ => "_OTHER",
    }
}

/// Live export keeps what it needs to finish spans for ten times this.
const SETTLED_KEPT_NS: u64 = 1_000_000_000;

/// `r->status` and `r->method_number` as one read u64 (offset 104).
const OUTCOME_OFF: u64 = 104;

/// A W3C `traceparent`: the trace a request joins and its parent span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub flags: u8,
}

/// Why a trace gives no spans.
#[derive(Debug, thiserror::Error)]
pub enum SpansError {
    #[error("{path}: no request boundaries in this trace (it needs ap_read_request and ap_process_request or ap_process_async_request with their returns): record with --profile apache:request")]
    NoRequests { path: std::path::PathBuf },
    #[error(
        "{path}: --span-functions: `{function}` is not probed in this trace (probed: {probed})"
    )]
    UnknownFunction {
        path: std::path::PathBuf,
        function: String,
        probed: String,
    },
    #[error(transparent)]
    Store(#[from] flowdar_trace::StoreError),
}

/// A request's trace id and (parent span, flags), as their events came.
type ContextHalves = (Option<u128>, Option<(u64, u8)>);

/// Builds spans from calls in `scan`'s order (or a live capture's, through
/// a [`CallPairer`](crate::CallPairer)): feed events and calls, take the
/// spans that have settled.
pub struct SpanBuilder {
    roles: HashMap<u32, Role>,
    read: Option<u32>,
    answering: HashSet<u32>,
    children_of: HashSet<u32>,
    names: Vec<String>,
    /// (process, request_rec) -> the read that returned it: start and
    /// connection.
    reads: HashMap<(u32, u64), (u64, u64)>,
    /// (process, request_rec) -> its span (an absolute index), while its
    /// calls may still come.
    open: HashMap<(u32, u64), usize>,
    waiting: HashMap<u32, VecDeque<ChildSpan>>,
    /// Spans not taken yet; `spans[0]` has absolute index `taken`.
    spans: VecDeque<RequestSpan>,
    taken: usize,
    clients: ClientBook,
    /// (process, request_rec) -> the start of the call its trace context
    /// was sent with (the next entry on the sending thread), and the
    /// halves seen.
    contexts: HashMap<(u32, u64), (Option<u64>, ContextHalves)>,
    /// (process, thread) -> the request whose context that thread sent and
    /// whose entry has not come yet.
    unbound: HashMap<(u32, u32), u64>,
    /// (process, request_rec) -> (thread, start, end) of spans already
    /// taken (live export): an outer call of the same request ending later
    /// is part of it, not a request of its own.
    recent: HashMap<(u32, u64), (u32, u64, u64)>,
    /// The probe reading a request's outcome, and the slot it lands in.
    outcome_probe: Option<(u32, usize)>,
    /// (process, request_rec) -> when it was logged, (status, method
    /// number): a log that came before its request's span.
    outcomes: HashMap<(u32, u64), (u64, (u16, u32))>,
}

impl SpanBuilder {
    /// A builder for `probes`, making child spans of the calls of the
    /// probe ids in `children`.
    pub fn new(probes: &[TraceProbe], children: &HashSet<u32>) -> Self {
        let returning = |p: &&TraceProbe| !p.is_syscall() && !p.capture.entry_only;
        Self {
            roles: SessionTracker::roles_of(probes),
            read: probes
                .iter()
                .filter(returning)
                .find(|p| p.function == READ)
                .map(|p| p.id),
            answering: probes
                .iter()
                .filter(returning)
                .filter(|p| ANSWERING.contains(&p.function.as_str()))
                .map(|p| p.id)
                .collect(),
            children_of: children.clone(),
            names: probes.iter().map(|p| p.function.clone()).collect(),
            reads: HashMap::new(),
            open: HashMap::new(),
            waiting: HashMap::new(),
            spans: VecDeque::new(),
            taken: 0,
            clients: ClientBook::default(),
            contexts: HashMap::new(),
            unbound: HashMap::new(),
            recent: HashMap::new(),
            outcome_probe: probes.iter().find_map(|p| {
                let r = p.capture.read?;
                (p.function == "ap_run_log_transaction"
                    && r.offset == OUTCOME_OFF
                    && r.then.is_none())
                .then(|| Some((p.id, p.capture.read_slot()?)))
                .flatten()
            }),
            outcomes: HashMap::new(),
        }
    }

    /// A builder for the trace at `path` (named in errors) with `probes`,
    /// making child spans of the calls of `children` (function names, as
    /// probed, with their returns).
    pub fn for_trace(
        path: &Path,
        probes: &[TraceProbe],
        children: &[String],
    ) -> Result<Self, SpansError> {
        let mut ids = HashSet::new();
        for f in children {
            let found: Vec<u32> = probes
                .iter()
                .filter(|p| &p.function == f && !p.capture.entry_only)
                .map(|p| p.id)
                .collect();
            if found.is_empty() {
                let mut probed: Vec<&str> = probes.iter().map(|p| p.function.as_str()).collect();
                probed.sort_unstable();
                probed.dedup();
                return Err(SpansError::UnknownFunction {
                    path: path.into(),
                    function: f.clone(),
                    probed: probed.join(", "),
                });
            }
            ids.extend(found);
        }
        let b = Self::new(probes, &ids);
        if !b.usable() {
            return Err(SpansError::NoRequests { path: path.into() });
        }
        Ok(b)
    }

    /// Whether the probes tell where requests begin and end.
    pub fn usable(&self) -> bool {
        self.read.is_some() && !self.answering.is_empty()
    }

    /// Sees an event, in trace order, before the calls it completes.
    pub fn add_event(&mut self, e: &flowdar_common::Event) {
        use flowdar_common::TraceContextPart as Part;
        self.clients.add(e);
        if e.kind == flowdar_common::EventKind::Entry as u32 {
            // The entry the kernel sent right after the context, on the
            // same thread: the call the context belongs to.
            if let Some(r) = self.unbound.remove(&(e.tgid, e.tid)) {
                if let Some(c) = self.contexts.get_mut(&(e.tgid, r)) {
                    c.0 = Some(e.ts_ns);
                }
            }
            return;
        }
        match e.trace_context() {
            Some(Part::TraceId { request, id }) => {
                self.contexts
                    .insert((e.tgid, request), (None, (Some(id), None)));
                self.unbound.insert((e.tgid, e.tid), request);
            }
            Some(Part::Parent {
                request,
                span,
                flags,
            }) => {
                if let Some((_, halves)) = self.contexts.get_mut(&(e.tgid, request)) {
                    halves.1 = Some((span, flags));
                }
            }
            None => {}
        }
    }

    /// A request logged with `v` (`status | method_number << 32`). The
    /// event MPM logs a request when the end of its response has been
    /// written, which can be after `ap_process_async_request` returned (and
    /// on another thread): then its span exists already. Otherwise the log
    /// runs inside the processing of the request whose read is pending.
    fn add_outcome(&mut self, c: &Call, v: u64) {
        let key = (c.tgid, c.args[0]);
        let outcome = (v as u32 as u16, (v >> 32) as u32);
        let pending = self.reads.get(&key).map(|r| r.0);
        if let Some(&i) = self.open.get(&key) {
            if let Some(s) = self.span_mut(i) {
                let newer_read = pending.is_some_and(|start| start > s.end_ns);
                if s.status.is_none() && !newer_read && c.start_ns >= s.start_ns {
                    s.status = Some(outcome.0);
                    s.method = Some(method_name(outcome.1));
                    return;
                }
            }
        }
        self.outcomes.insert(key, (c.start_ns, outcome));
    }

    /// The trace context sent for request `r` with the entry of the call
    /// that began at `start_ns`, taken: the kernel sends it just before that
    /// entry, on the same thread; one sent for an earlier request at the
    /// same address (whose entry was dropped: `--min-duration`, a lost
    /// event) is not this one's. No time window: a slow machine (a guest
    /// under emulation) can take long between the two.
    fn context_of(&mut self, tgid: u32, r: u64, start_ns: u64) -> Option<TraceParent> {
        let (entry, halves) = self.contexts.remove(&(tgid, r))?;
        if entry != Some(start_ns) {
            return None;
        }
        match halves {
            (Some(trace_id), Some((span_id, flags))) => Some(TraceParent {
                trace_id,
                span_id,
                flags,
            }),
            _ => None,
        }
    }

    /// The spans that ended before `before_ns` (CLOCK_MONOTONIC), in the
    /// order they ended: a request's outer call comes microseconds after
    /// its inner one, so a second's margin leaves nothing to add to them.
    pub fn take_settled(&mut self, before_ns: u64) -> Vec<RequestSpan> {
        // What live export keeps per connection and request stays bounded.
        let horizon = before_ns.saturating_sub(10 * SETTLED_KEPT_NS);
        self.recent.retain(|_, (_, _, end)| *end >= horizon);
        self.clients.forget_before(horizon);
        let n = self
            .spans
            .iter()
            .position(|s| s.end_ns >= before_ns)
            .unwrap_or(self.spans.len());
        self.take(n)
    }

    /// Every span left (at the end of the calls).
    pub fn take_all(&mut self) -> Vec<RequestSpan> {
        self.take(self.spans.len())
    }

    fn take(&mut self, n: usize) -> Vec<RequestSpan> {
        let out: Vec<RequestSpan> = self.spans.drain(..n).collect();
        let first = self.taken;
        self.taken += n;
        let taken = self.taken;
        let recent = &mut self.recent;
        self.open.retain(|key, i| {
            if *i >= taken {
                return true;
            }
            if let Some(s) = i.checked_sub(first).and_then(|k| out.get(k)) {
                recent.insert(*key, (s.tid, s.start_ns, s.end_ns));
            }
            false
        });
        out
    }

    fn span_mut(&mut self, i: usize) -> Option<&mut RequestSpan> {
        i.checked_sub(self.taken)
            .and_then(|k| self.spans.get_mut(k))
    }

    /// Adds a call (completion order, then in-flight ones).
    pub fn add(&mut self, c: &Call) {
        let clients = std::mem::take(&mut self.clients);
        self.add_with(c, &clients);
        self.clients = clients;
    }

    fn add_with(&mut self, c: &Call, clients: &ClientBook) {
        if self.children_of.contains(&c.probe_id) {
            let name = self.names.get(c.probe_id as usize).cloned();
            let waiting = self.waiting.entry(c.tid).or_default();
            if waiting.len() >= CHILDREN_PER_THREAD {
                waiting.pop_front();
            }
            waiting.push_back(ChildSpan {
                function: name.unwrap_or_default(),
                tid: c.tid,
                start_ns: c.start_ns,
                end_ns: c.end_ns,
                finished: c.returned,
            });
        }
        if Some(c.probe_id) == self.read {
            match (c.returned, c.ret) {
                (true, Some(r)) if r != 0 => {
                    self.reads.insert((c.tgid, r), (c.start_ns, c.args[0]));
                    // A new request at this address: nothing parked for an
                    // earlier one is its.
                    self.outcomes.remove(&(c.tgid, r));
                    self.contexts.remove(&(c.tgid, r));
                }
                (false, _) => {
                    let client = clients.client_at(c.tgid, c.args[0], c.start_ns);
                    self.push(c, SpanKind::ReadRequest, c.start_ns, client, "1.1");
                }
                _ => {}
            }
            return;
        }
        if let Some((id, k)) = self.outcome_probe {
            if c.probe_id == id && c.args[k] != flowdar_common::DEREF_UNKNOWN {
                self.add_outcome(c, c.args[k]);
            }
        }
        if !self.answering.contains(&c.probe_id) {
            return;
        }
        let r = c.args[0];
        let stream = match self.roles.get(&c.probe_id) {
            Some(Role::Request { stream: Some(k) }) => pointer(c.args[*k]),
            _ => None,
        };
        let stream_client = stream.and_then(|c1| clients.client_at(c.tgid, c1, c.start_ns));
        if let Some(&(tid, start, end)) = self.recent.get(&(c.tgid, r)) {
            if tid == c.tid && c.start_ns <= end && c.end_ns >= start {
                return; // the outer call of a request already taken
            }
        }
        if let Some(&i) = self.open.get(&(c.tgid, r)) {
            // The outer call of the same request (ap_process_request
            // around ap_process_async_request): one span. An HTTP/2
            // stream is known by the outer one (it reads the master).
            let same = |s: &RequestSpan| {
                c.start_ns <= s.end_ns && c.end_ns >= s.start_ns && c.tid == s.tid
            };
            if let Some(s) = self.span_mut(i).filter(|s| same(s)) {
                s.start_ns = s.start_ns.min(c.start_ns);
                s.end_ns = s.end_ns.max(c.end_ns);
                s.finished &= c.returned;
                if stream.is_some() {
                    s.protocol = "2";
                    s.client = stream_client.or(s.client);
                }
                self.adopt(i);
                return;
            }
        }
        let (start, client, protocol) = match (stream, self.reads.remove(&(c.tgid, r))) {
            (Some(_), _) => (c.start_ns, stream_client, "2"),
            (None, Some((start, conn))) => (start, clients.client_at(c.tgid, conn, start), "1.1"),
            (None, None) => (c.start_ns, None, "1.1"),
        };
        let i = self.push(c, SpanKind::Request, start, client, protocol);
        let parent = self.context_of(c.tgid, r, c.start_ns);
        // A log parked before this span, not one of an earlier request.
        let outcome = self
            .outcomes
            .remove(&(c.tgid, r))
            .filter(|(ts, _)| *ts >= start)
            .map(|(_, o)| o);
        if let Some(s) = self.span_mut(i) {
            s.parent = parent;
            s.status = outcome.map(|o| o.0);
            s.method = outcome.map(|o| method_name(o.1));
        }
        self.open.insert((c.tgid, r), i);
    }

    fn push(
        &mut self,
        c: &Call,
        kind: SpanKind,
        start_ns: u64,
        client: Option<SocketAddr>,
        protocol: &'static str,
    ) -> usize {
        self.spans.push_back(RequestSpan {
            kind,
            pid: c.tgid,
            tid: c.tid,
            start_ns,
            end_ns: c.end_ns,
            finished: c.returned,
            client,
            protocol,
            children: Vec::new(),
            parent: None,
            status: None,
            method: None,
        });
        let i = self.taken + self.spans.len() - 1;
        self.adopt(i);
        i
    }

    /// Gives span `i` the waiting calls of its thread inside it.
    fn adopt(&mut self, i: usize) {
        let Some(k) = i.checked_sub(self.taken).filter(|&k| k < self.spans.len()) else {
            return;
        };
        let s = &mut self.spans[k];
        let Some(waiting) = self.waiting.get_mut(&s.tid) else {
            return;
        };
        let (inside, rest): (Vec<ChildSpan>, Vec<ChildSpan>) = waiting
            .drain(..)
            .partition(|k| k.start_ns >= s.start_ns && k.end_ns <= s.end_ns);
        s.children.extend(inside);
        s.children
            .sort_by_key(|k| (k.start_ns, std::cmp::Reverse(k.end_ns)));
        // Older calls than this request can no longer find one.
        *waiting = rest.into_iter().filter(|k| k.start_ns > s.end_ns).collect();
    }
}

/// The requests of the trace at `path`, with the calls of `children`
/// (function names, as probed) inside each. In start order.
pub fn spans_of(
    path: &Path,
    children: &[String],
) -> Result<(Vec<RequestSpan>, Scanned), SpansError> {
    let header = flowdar_trace::TraceReader::open(path)?.header().clone();
    let b = SpanBuilder::for_trace(path, &header.probes, children)?;
    let b = std::cell::RefCell::new(b);
    let scanned = scan(
        path,
        |e| b.borrow_mut().add_event(e),
        |c| b.borrow_mut().add(c),
    )?;
    let mut spans = b.into_inner().take_all();
    spans.sort_by_key(|s| (s.start_ns, s.pid, s.tid));
    Ok((spans, scanned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{sessions::tests::call, stats::tests::probe};

    /// A read and its request's processing make one span from the read's
    /// start; the nested ap_process_async_request adds nothing; a chosen
    /// function inside becomes a child; a read still going is an
    /// unfinished `read request`.
    #[test]
    fn a_request_spans_its_read_and_its_processing() {
        let probes = [
            probe(0, "ap_read_request", None),
            probe(1, "ap_process_async_request", None),
            probe(2, "ap_process_request", None),
            probe(3, "ap_invoke_handler", None),
        ];
        let mut b = SpanBuilder::new(&probes, &HashSet::from([3]));
        assert!(b.usable());
        for c in [
            call(0, 7, 100, 200, 0xc0, Some(0x70)),
            call(3, 7, 230, 260, 0x70, Some(0)),
            call(1, 7, 210, 300, 0x70, Some(0)),
            call(2, 7, 205, 310, 0x70, Some(0)),
            call(0, 8, 150, 1000, 0xc1, None),
        ] {
            b.add(&c);
        }
        assert_eq!(b.take_settled(310).len(), 0, "the request ends at 310");
        let spans = b.take_all();
        let got: Vec<(SpanKind, u32, u64, u64, bool, usize)> = spans
            .iter()
            .map(|s| {
                (
                    s.kind,
                    s.tid,
                    s.start_ns,
                    s.end_ns,
                    s.finished,
                    s.children.len(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (SpanKind::Request, 7, 100, 310, true, 1),
                (SpanKind::ReadRequest, 8, 150, 1000, false, 0),
            ]
        );
        assert_eq!(spans[0].children[0].function, "ap_invoke_handler");
    }

    /// Live export takes a span once its request has been over a while;
    /// an outer call of the same request that ends later (a slow client's
    /// last flush under prefork) belongs to it, and makes no second span.
    #[test]
    fn an_outer_call_after_its_span_was_taken_is_not_a_request() {
        let probes = [
            probe(0, "ap_read_request", None),
            probe(1, "ap_process_async_request", None),
            probe(2, "ap_process_request", None),
        ];
        let mut b = SpanBuilder::new(&probes, &HashSet::new());
        b.add(&call(0, 7, 100, 200, 0xc0, Some(0x70)));
        b.add(&call(1, 7, 210, 300, 0x70, Some(0)));
        assert_eq!(b.take_settled(5_000).len(), 1);
        b.add(&call(2, 7, 205, 4_000, 0x70, Some(0)));
        // The next request at the same address is one.
        b.add(&call(0, 7, 5_000, 5_100, 0xc0, Some(0x70)));
        b.add(&call(1, 7, 5_110, 5_200, 0x70, Some(0)));
        let rest = b.take_all();
        assert_eq!(
            rest.iter()
                .map(|s| (s.start_ns, s.end_ns))
                .collect::<Vec<_>>(),
            [(5_000, 5_200)]
        );
    }
}
