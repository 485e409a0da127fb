//! Lean traces: each worker's wait for a client's request, as one span.
//! A Slowloris client trickles header lines, so a worker's `poll` returns
//! at every line and the `read` after it is short: no single system call
//! spans the wait, as `ap_read_request` does in a uprobe trace. The span
//! runs from the first read-wait on a connection (a `read`, or a `poll`
//! for input) through the following ones on the same connection, until
//! the worker does anything else: the request begins (the lean set's
//! counted call), it writes, it closes, or it reads another connection.
use std::collections::HashMap;

use flowdar_trace::TraceProbe;

use crate::{
    sessions::{Role, LEAN_REQUEST},
    Call,
};

/// One worker's wait for one client, in a lean trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadWait {
    pub tgid: u32,
    pub tid: u32,
    /// The connection id the kernel gave the socket.
    pub conn: u64,
    pub start_ns: u64,
    /// The end of its last read-wait, or of capture when still waiting.
    pub end_ns: u64,
    /// Still waiting when capture ended.
    pub open: bool,
    /// It began after the request did (a request body), not before its
    /// headers were complete.
    pub after_request: bool,
    /// The system call it was in last (`poll`, `read`).
    pub last: u32,
}

#[derive(Default)]
struct Thread {
    wait: Option<ReadWait>,
    /// The connection whose request this thread began and has not yet
    /// answered (no write since).
    requested: Option<u64>,
    /// The connection of its latest socket call.
    conn: Option<u64>,
}

/// Folds a lean trace's calls (in `scan`'s order) into read-waits.
pub struct ReadWaits {
    roles: HashMap<u32, Role>,
    request: Option<u32>,
    threads: HashMap<u32, Thread>,
}

impl ReadWaits {
    /// None unless the trace watched system calls (a lean trace).
    pub fn new(probes: &[TraceProbe]) -> Option<Self> {
        let roles: HashMap<u32, Role> = probes
            .iter()
            .filter(|p| p.is_syscall())
            .map(|p| (p.id, Role::of_syscall(&p.function)))
            .collect();
        (!roles.is_empty()).then(|| Self {
            roles,
            request: probes
                .iter()
                .find(|p| p.function == LEAN_REQUEST)
                .map(|p| p.id),
            threads: HashMap::new(),
        })
    }

    /// Adds one call; waits that ended go to `out`.
    pub fn add(&mut self, c: &Call, mut out: impl FnMut(ReadWait)) {
        let t = self.threads.entry(c.tid).or_default();
        if Some(c.probe_id) == self.request {
            if let Some(w) = t.wait.take() {
                out(w);
            }
            t.requested = t.conn;
            return;
        }
        let Some(&role) = self.roles.get(&c.probe_id) else {
            return;
        };
        let conn = c.args[1];
        t.conn = Some(conn);
        if !role.waits_to_read(&c.args) {
            if let Some(w) = t.wait.take() {
                out(w);
            }
            t.requested = None;
            return;
        }
        match &mut t.wait {
            Some(w) if w.conn == conn => {
                w.end_ns = w.end_ns.max(c.end_ns);
                w.open = !c.returned;
                w.last = c.probe_id;
            }
            _ => {
                if let Some(w) = t.wait.take() {
                    out(w);
                }
                t.wait = Some(ReadWait {
                    tgid: c.tgid,
                    tid: c.tid,
                    conn,
                    start_ns: c.start_ns,
                    end_ns: c.end_ns,
                    open: !c.returned,
                    after_request: t.requested == Some(conn),
                    last: c.probe_id,
                });
            }
        }
    }

    /// The waits still going at the end of the calls.
    pub fn finish(self, mut out: impl FnMut(ReadWait)) {
        let mut waits: Vec<ReadWait> = self.threads.into_values().filter_map(|t| t.wait).collect();
        waits.sort_by_key(|w| (w.start_ns, w.tid));
        waits.into_iter().for_each(&mut out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::tests::probe;

    #[test]
    fn a_trickled_header_is_one_wait_and_a_body_read_says_so() {
        let sys = |id, name: &str, nr| TraceProbe::syscall(id, name, nr, Default::default());
        let mut counted = probe(3, LEAN_REQUEST, None);
        counted.capture.entry_only = true;
        let probes = [
            sys(0, "read", 0),
            sys(1, "poll", 7),
            sys(2, "writev", 20),
            counted,
        ];
        let mut r = ReadWaits::new(&probes).unwrap();
        let c = |probe_id, tid, start_ns, end_ns, conn, third, returned| Call {
            probe_id,
            tgid: 1,
            tid,
            start_ns,
            end_ns,
            returned,
            depth: 0,
            args: [9, conn, third],
            ret: None,
            children_ns: 0,
            backend_ns: 0,
        };
        let mut done = Vec::new();
        for call in [
            // Thread 1: headers in three pieces, the request, a body read,
            // the response (its wait for room to write is no read).
            c(0, 1, 10, 11, 0xa, 8000, true),
            c(1, 1, 12, 50, 0xa, 1, true),
            c(0, 1, 51, 52, 0xa, 8000, true),
            c(1, 1, 53, 90, 0xa, 1, true),
            c(0, 1, 91, 92, 0xa, 8000, true),
            c(3, 1, 93, 93, 0x77, 0, true),
            c(0, 1, 94, 120, 0xa, 8000, true),
            c(1, 1, 121, 130, 0xa, 4, true),
            c(2, 1, 131, 132, 0xa, 200, true),
            // Thread 2: a client that never finishes.
            c(0, 2, 20, 21, 0xb, 8000, true),
            c(1, 2, 22, 200, 0xb, 1, false),
        ] {
            r.add(&call, |w| done.push(w));
        }
        r.finish(|w| done.push(w));
        let got: Vec<(u32, u64, u64, bool, bool)> = done
            .iter()
            .map(|w| (w.tid, w.start_ns, w.end_ns, w.open, w.after_request))
            .collect();
        assert_eq!(
            got,
            [
                (1, 10, 92, false, false),
                (1, 94, 120, false, true),
                (2, 20, 200, true, false)
            ]
        );
    }
}
