//! HTTP/2 streams between threads. mod_http2 reads a stream's frames on the
//! thread that serves the client's connection (inside
//! `ap_run_process_connection` of the primary `conn_rec`), runs the stream
//! on one of its workers (`ap_process_request` on a secondary connection
//! whose `master` is the primary one), and sends the response back out on
//! the connection's thread. A [`StreamFlow`] is that path: from the
//! connection's thread, to the worker, and back.
use std::collections::HashMap;

use serde::Serialize;

use super::Call;
use crate::sessions::{pointer, Role, SessionTracker};
use flowdar_trace::TraceProbe;

/// One stream. Field names are a stable interface
/// (`flowdar flows --streams --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamFlow {
    pub pid: u32,
    /// The stream's `request_rec *`.
    pub request: u64,
    /// The client's (primary) `conn_rec *`.
    pub connection: u64,
    /// The thread serving the connection when the stream began; null when
    /// no pass of the connection was seen around it (a trace without
    /// `ap_run_process_connection`, or one that began mid-pass).
    pub from_tid: Option<u32>,
    /// The worker that ran it.
    pub to_tid: u32,
    /// The thread serving the connection when the stream ended, where its
    /// response goes out; null as for `from_tid`.
    pub back_tid: Option<u32>,
    pub start_ns: u64,
    /// On the worker (`ap_process_request`).
    pub duration_ns: u64,
    /// False when still running at the end of capture.
    pub returned: bool,
}

/// A thread's pass over a connection: (thread, start, end).
type Pass = (u32, u64, u64);

/// Feed calls (any order); read the streams at the end.
pub struct StreamTracker {
    roles: HashMap<u32, Role>,
    streams: Vec<StreamFlow>,
    /// Passes of primary connections: (process, connection) -> (thread,
    /// start, end).
    passes: HashMap<(u32, u64), Vec<Pass>>,
}

impl StreamTracker {
    pub fn new(probes: &[TraceProbe]) -> Self {
        Self {
            roles: SessionTracker::roles_of(probes),
            streams: Vec::new(),
            passes: HashMap::new(),
        }
    }

    /// True when the trace says which connection a stream belongs to.
    pub fn can_track(&self) -> bool {
        self.roles
            .values()
            .any(|r| matches!(r, Role::Request { stream: Some(_) }))
    }

    pub fn add(&mut self, c: &Call) {
        match self.roles.get(&c.probe_id) {
            Some(Role::Request { stream: Some(k) }) => {
                if let Some(c1) = pointer(c.args[*k]) {
                    self.streams.push(StreamFlow {
                        pid: c.tgid,
                        request: c.args[0],
                        connection: c1,
                        from_tid: None,
                        to_tid: c.tid,
                        back_tid: None,
                        start_ns: c.start_ns,
                        duration_ns: c.duration_ns(),
                        returned: c.returned,
                    });
                }
            }
            // A primary connection's pass: its master is NULL.
            Some(Role::Connection {
                new: false,
                closing: false,
                master: Some(k),
            }) if c.args[*k] == 0 && c.args[0] != 0 => {
                self.passes
                    .entry((c.tgid, c.args[0]))
                    .or_default()
                    .push((c.tid, c.start_ns, c.end_ns));
            }
            _ => {}
        }
    }

    /// The streams by start time, each with its connection's threads.
    pub fn finish(mut self) -> Vec<StreamFlow> {
        for p in self.passes.values_mut() {
            p.sort_unstable_by_key(|&(_, start, _)| start);
        }
        for s in &mut self.streams {
            let Some(passes) = self.passes.get(&(s.pid, s.connection)) else {
                continue;
            };
            let around = |t: u64| {
                passes
                    .iter()
                    .find(|&&(_, start, end)| start <= t && t <= end)
                    .map(|&(tid, _, _)| tid)
            };
            let end = s.start_ns + s.duration_ns;
            s.from_tid = around(s.start_ns);
            // The response goes out on the pass running at the stream's
            // end, or on the next one (the connection resumed to send it).
            s.back_tid = around(end).or_else(|| {
                passes
                    .iter()
                    .find(|&&(_, start, _)| start >= end)
                    .map(|&(tid, _, _)| tid)
            });
        }
        self.streams.sort_by_key(|s| (s.start_ns, s.pid, s.to_tid));
        self.streams
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::tests::probe;
    use flowdar_common::{CONN_MASTER_OFF, REQUEST_CONNECTION_OFF};
    use flowdar_trace::FieldRead;

    fn reading(id: u32, f: &str, offset: u64, then: Option<u64>) -> TraceProbe {
        let mut p = probe(id, f, None);
        p.capture.args = 1;
        p.capture.read = Some(FieldRead {
            arg: 0,
            offset,
            then,
        });
        p
    }

    fn call(probe_id: u32, tid: u32, start: u64, end: u64, args: [u64; 3]) -> Call {
        Call {
            probe_id,
            tgid: 1,
            tid,
            start_ns: start,
            end_ns: end,
            returned: true,
            depth: 0,
            args,
            ret: Some(0),
            children_ns: 0,
            backend_ns: 0,
        }
    }

    #[test]
    fn a_stream_goes_from_the_connections_thread_to_a_worker_and_back() {
        let probes = [
            reading(0, "ap_run_process_connection", CONN_MASTER_OFF, None),
            reading(
                1,
                "ap_process_request",
                REQUEST_CONNECTION_OFF,
                Some(CONN_MASTER_OFF),
            ),
        ];
        let mut t = StreamTracker::new(&probes);
        assert!(t.can_track());
        let (c1, c2) = (0xc1, 0xc2);
        for c in [
            // Two streams on workers 21 and 22; the second ends after the
            // connection's first pass, and goes out on its next one (31).
            call(1, 21, 110, 150, [0x71, c1, 0]),
            call(0, 21, 105, 160, [c2, c1, 0]), // the secondary's pass: not the connection's
            call(1, 22, 120, 250, [0x72, c1, 0]),
            call(0, 30, 100, 200, [c1, 0, 0]),
            call(0, 31, 260, 300, [c1, 0, 0]),
            // An HTTP/1.1 request: no master, no stream.
            call(1, 23, 400, 410, [0x73, 0, 0]),
        ] {
            t.add(&c);
        }
        let s = t.finish();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].from_tid, s[0].to_tid, s[0].back_tid, s[0].connection),
            (Some(30), 21, Some(30), c1)
        );
        assert_eq!((s[0].start_ns, s[0].duration_ns), (110, 40));
        assert_eq!(
            (s[1].from_tid, s[1].to_tid, s[1].back_tid),
            (Some(30), 22, Some(31))
        );
    }
}
