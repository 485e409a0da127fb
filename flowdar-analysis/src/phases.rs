//! What phase of its connection a worker is in now, and since when: reading
//! the request, in the handler, waiting on a backend, writing the response,
//! idle in keep-alive, closing. For `flowdar top`'s workers.
//!
//! A uprobe trace tells from the calls a worker is inside
//! ([`Phase::of_stack`]). A lean trace has one system call at a time and
//! one entry-only uprobe a request, so [`LeanPhases`] follows each thread
//! from call to call: a request's entry starts the handler, which lasts
//! until the thread's next system call; a write (or a poll for output)
//! is the response; a read-wait after a request's response on the same
//! connection is keep-alive until bytes arrive; after `shutdown`,
//! lingering close. Which phases show depends on what the trace watches:
//! `keep-alive` comes from lean traces (and uprobe ones cannot tell it from
//! `connection`), `TLS handshake` and `backend` from uprobes (`apache:tls`,
//! `apache:backend`).
use std::collections::HashMap;

use serde::Serialize;

/// A worker's phase. Serialised as its name (`top --json`'s `phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Handshake,
    Reading,
    Handler,
    Backend,
    Writing,
    KeepAlive,
    Closing,
    /// In the connection's code, none of the above.
    Connection,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Handshake => "TLS handshake",
            Phase::Reading => "reading request",
            Phase::Handler => "handler",
            Phase::Backend => "backend",
            Phase::Writing => "writing response",
            Phase::KeepAlive => "keep-alive",
            Phase::Closing => "closing",
            Phase::Connection => "connection",
        }
    }

    /// A uprobe trace's worker, from the functions it is inside (outermost
    /// first, with each call's start): the phase and when it began.
    pub fn of_stack<'a>(frames: impl IntoIterator<Item = (&'a str, u64)>) -> Option<(Self, u64)> {
        let mut found: Option<(Self, u64)> = None;
        let mut outermost = None;
        for (f, start) in frames {
            outermost.get_or_insert(start);
            let phase = match f {
                "ap_read_request" => Phase::Reading,
                "SSL_accept" => Phase::Handshake,
                "proxy_run_scheme_handler" => Phase::Backend,
                "apr_socket_send" | "apr_socket_sendv" | "apr_socket_sendfile" | "SSL_write" => {
                    Phase::Writing
                }
                "ap_start_lingering_close" | "ap_prep_lingering_close" | "ap_lingering_close" => {
                    Phase::Closing
                }
                "ap_process_async_request"
                | "ap_process_request"
                | "ap_process_request_internal"
                | "ap_invoke_handler"
                | "ap_run_handler" => Phase::Handler,
                _ => continue,
            };
            // The innermost telling call wins, except that a handler's
            // phase starts with its outermost request call.
            found = match found {
                Some((Phase::Handler, since)) if phase == Phase::Handler => Some((phase, since)),
                _ => Some((phase, start)),
            };
        }
        found.or(outermost.map(|s| (Phase::Connection, s)))
    }
}

impl Serialize for Phase {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// A lean trace's call, as the phase follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeanCall {
    /// The counted request call (entry only).
    Request,
    /// A read or a poll for input on `conn`.
    ReadWait(u64),
    /// A write, or a poll for output, on `conn`.
    Write(u64),
    Shutdown(u64),
    Close(u64),
}

#[derive(Debug, Clone, Copy)]
struct Thread {
    conn: u64,
    phase: Phase,
    since: u64,
    /// A request began on `conn` (the counted call) since its last bytes.
    requested: bool,
    /// That request's response went out and no bytes came in since (a
    /// write before any request, such as a TLS handshake's, is none).
    responded: bool,
    /// `shutdown` ran on `conn`: what follows is lingering close.
    shut: bool,
}

/// Each thread's phase in a lean trace.
#[derive(Debug, Default)]
pub struct LeanPhases {
    threads: HashMap<u32, Thread>,
}

impl LeanPhases {
    /// A call's entry on thread `tid` at `ts`.
    pub fn entry(&mut self, tid: u32, ts: u64, call: LeanCall) {
        let conn = match call {
            LeanCall::Request => {
                if let Some(t) = self.threads.get_mut(&tid) {
                    (t.phase, t.since) = (Phase::Handler, ts);
                    (t.requested, t.responded) = (true, false);
                }
                return;
            }
            LeanCall::ReadWait(c)
            | LeanCall::Write(c)
            | LeanCall::Shutdown(c)
            | LeanCall::Close(c) => c,
        };
        let t = self.threads.entry(tid).or_insert(Thread {
            conn,
            phase: Phase::Connection,
            since: ts,
            requested: false,
            responded: false,
            shut: false,
        });
        if t.conn != conn {
            *t = Thread {
                conn,
                phase: Phase::Connection,
                since: ts,
                requested: false,
                responded: false,
                shut: false,
            };
        }
        let phase = match call {
            LeanCall::ReadWait(_) if t.shut => Phase::Closing,
            LeanCall::ReadWait(_) if t.responded => Phase::KeepAlive,
            LeanCall::ReadWait(_) => Phase::Reading,
            LeanCall::Write(_) => {
                t.responded |= t.requested;
                Phase::Writing
            }
            LeanCall::Shutdown(_) | LeanCall::Close(_) => {
                t.shut = true;
                Phase::Closing
            }
            LeanCall::Request => return,
        };
        if t.phase != phase {
            (t.phase, t.since) = (phase, ts);
        }
    }

    /// A read on `tid` returned bytes at `ts`: a request is coming in.
    pub fn bytes_read(&mut self, tid: u32, ts: u64) {
        if let Some(t) = self.threads.get_mut(&tid) {
            (t.requested, t.responded) = (false, false);
            if t.phase == Phase::KeepAlive {
                (t.phase, t.since) = (Phase::Reading, ts);
            }
        }
    }

    /// `close` returned on `tid`: its connection is over.
    pub fn closed(&mut self, tid: u32) {
        self.threads.remove(&tid);
    }

    /// `tid`'s phase and since when, if it has one.
    pub fn now(&self, tid: u32) -> Option<(Phase, u64)> {
        self.threads.get(&tid).map(|t| (t.phase, t.since))
    }

    /// The connection `tid` works on.
    pub fn conn(&self, tid: u32) -> Option<u64> {
        self.threads.get(&tid).map(|t| t.conn)
    }

    pub fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        self.threads.retain(|tid, _| keep(*tid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lean_worker_goes_through_its_connection_s_phases() {
        let mut p = LeanPhases::default();
        let c = 1 << 47 | 0x100;
        p.entry(7, 10, LeanCall::ReadWait(c));
        p.entry(7, 12, LeanCall::ReadWait(c));
        assert_eq!(
            p.now(7),
            Some((Phase::Reading, 10)),
            "polls between header lines"
        );
        p.bytes_read(7, 13);
        p.entry(7, 14, LeanCall::Request);
        assert_eq!(p.now(7), Some((Phase::Handler, 14)));
        p.entry(7, 20, LeanCall::Write(c));
        p.entry(7, 22, LeanCall::Write(c));
        assert_eq!(p.now(7), Some((Phase::Writing, 20)));
        p.entry(7, 30, LeanCall::ReadWait(c));
        assert_eq!(
            p.now(7),
            Some((Phase::KeepAlive, 30)),
            "waiting for the next request"
        );
        p.bytes_read(7, 35);
        assert_eq!(p.now(7), Some((Phase::Reading, 35)));
        p.entry(7, 36, LeanCall::Request);
        p.entry(7, 40, LeanCall::Write(c));
        p.entry(7, 41, LeanCall::Shutdown(c));
        p.entry(7, 42, LeanCall::ReadWait(c));
        assert_eq!(
            p.now(7),
            Some((Phase::Closing, 41)),
            "lingering close reads"
        );
        p.closed(7);
        assert_eq!(p.now(7), None);
        // A TLS handshake's writes come before any request: the reads
        // after them still wait for one.
        let tls = c + 2;
        p.entry(8, 10, LeanCall::ReadWait(tls));
        p.bytes_read(8, 11);
        p.entry(8, 12, LeanCall::Write(tls));
        p.entry(8, 13, LeanCall::ReadWait(tls));
        assert_eq!(p.now(8), Some((Phase::Reading, 13)));
        // Another connection starts afresh.
        p.entry(7, 50, LeanCall::Write(c));
        p.entry(7, 51, LeanCall::ReadWait(c + 1));
        assert_eq!(p.now(7), Some((Phase::Reading, 51)));
    }

    #[test]
    fn a_uprobe_worker_s_phase_is_its_innermost_telling_call() {
        let of = |frames: &[(&str, u64)]| Phase::of_stack(frames.iter().copied());
        assert_eq!(
            of(&[
                ("ap_run_process_connection", 1),
                ("ap_read_request", 5),
                ("apr_socket_recv", 9)
            ]),
            Some((Phase::Reading, 5))
        );
        assert_eq!(
            of(&[
                ("ap_run_process_connection", 1),
                ("ap_process_async_request", 5),
                ("ap_invoke_handler", 6),
                ("apr_socket_sendv", 9)
            ]),
            Some((Phase::Writing, 9))
        );
        assert_eq!(
            of(&[("ap_process_async_request", 5), ("ap_invoke_handler", 6)]),
            Some((Phase::Handler, 5)),
            "a handler's phase runs from its request's first call"
        );
        assert_eq!(
            of(&[("ap_invoke_handler", 6), ("proxy_run_scheme_handler", 7)]),
            Some((Phase::Backend, 7))
        );
        assert_eq!(
            of(&[("ap_run_process_connection", 3)]),
            Some((Phase::Connection, 3))
        );
        assert_eq!(of(&[]), None);
    }
}
