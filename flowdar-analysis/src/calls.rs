//! Pairing entry and exit events into calls, per thread, with a shadow stack.
//!
//! The awkward cases are counted, not hidden: an exit whose entry predates
//! capture (`unmatched_exits`); entries whose exit never came because a
//! longjmp or the kernel's uretprobe depth limit skipped it (`lost_exits`,
//! found when an outer frame returns first); and calls still open when
//! capture ends, reported as in-flight with their duration so far.
use rustc_hash::FxHashMap;

use flowdar_common::{Event, EventKind, MAX_ARGS};

/// One call of a probed function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub probe_id: u32,
    pub tgid: u32,
    pub tid: u32,
    pub start_ns: u64,
    /// End time; for an in-flight call, the end of capture.
    pub end_ns: u64,
    /// False when the call had not returned when capture ended.
    pub returned: bool,
    /// Nesting depth among probed calls on its thread (0 = outermost).
    pub depth: u32,
    pub args: [u64; MAX_ARGS],
    pub ret: Option<u64>,
    /// Time spent in probed callees.
    pub children_ns: u64,
    /// Time spent waiting on a backend (mod_proxy's scheme handler: see
    /// [`BACKEND`]) in this call or its callees.
    pub backend_ns: u64,
}

/// Functions whose whole time is an exchange with a backend server:
/// mod_proxy's scheme handler (`proxy_fcgi`, `proxy_http`...) connects,
/// sends the request, waits for the answer and relays it.
pub const BACKEND: &[&str] = &["proxy_run_scheme_handler"];

impl Call {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
    pub fn self_ns(&self) -> u64 {
        self.duration_ns().saturating_sub(self.children_ns)
    }
}

/// Pairing anomalies over a whole trace.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PairingCounts {
    pub unmatched_exits: u64,
    pub lost_exits: u64,
    /// Events whose timestamp is older than the previous one on its thread.
    pub time_reversals: u64,
}

#[derive(Debug, Default)]
struct Thread {
    tgid: u32,
    stack: Vec<Call>,
    last_ts: u64,
}

/// Streaming pairer: feed events in file order, get calls as they complete.
#[derive(Debug, Default)]
pub struct CallPairer {
    threads: FxHashMap<u32, Thread>,
    /// Probe ids of [`BACKEND`] functions.
    backend: Vec<u32>,
    /// Probe ids without a return probe: each entry is a call of no length.
    entry_only: Vec<u32>,
    pub counts: PairingCounts,
}

impl CallPairer {
    pub fn new() -> Self {
        Self::default()
    }

    /// A pairer that also sums, per call, the time in the probes' backend
    /// functions ([`Call::backend_ns`]).
    pub fn for_probes(probes: &[flowdar_trace::TraceProbe]) -> Self {
        Self {
            backend: probes
                .iter()
                .filter(|p| BACKEND.contains(&p.function.as_str()))
                .map(|p| p.id)
                .collect(),
            entry_only: probes
                .iter()
                .filter(|p| p.capture.entry_only)
                .map(|p| p.id)
                .collect(),
            ..Self::default()
        }
    }

    /// Current depth of `tid`'s stack (for indenting dumps).
    pub fn depth(&self, tid: u32) -> usize {
        self.threads.get(&tid).map_or(0, |t| t.stack.len())
    }

    /// Feeds one event; completed calls go to `out`.
    pub fn push(&mut self, ev: &Event, mut out: impl FnMut(Call)) {
        let t = self.threads.entry(ev.tid).or_insert_with(|| Thread {
            tgid: ev.tgid,
            ..Default::default()
        });
        t.tgid = ev.tgid;
        if ev.ts_ns < t.last_ts {
            self.counts.time_reversals += 1;
        }
        t.last_ts = ev.ts_ns;
        if ev.kind == EventKind::Fold as u32 || ev.kind == EventKind::Client as u32 {
            // A loop-folding annotation from `flowdar simplify`, or a
            // connection's client: not calls.
            return;
        }
        // A uprobe call written at attach (a worker already blocked in it)
        // ends at its thread's next event: its return probe came too late.
        // An event stamped before it means the probes saw that thread go
        // on after attach: the written call was not in progress, dropped.
        if t.stack
            .first()
            .is_some_and(|c| flowdar_common::held_uprobe_at_attach(&c.args))
        {
            let mut held = t.stack.remove(0);
            if ev.ts_ns > held.start_ns {
                held.end_ns = ev.ts_ns;
                held.returned = true;
                out(held);
            }
        }
        if ev.kind == EventKind::Entry as u32 {
            let entry_only = self.entry_only.contains(&ev.probe_id);
            let call = Call {
                probe_id: ev.probe_id,
                tgid: ev.tgid,
                tid: ev.tid,
                start_ns: ev.ts_ns,
                end_ns: ev.ts_ns,
                // No return probe: the call is its entry, of no length.
                returned: entry_only,
                depth: t.stack.len() as u32,
                args: ev.args,
                ret: None,
                children_ns: 0,
                backend_ns: 0,
            };
            match entry_only {
                true => out(call),
                false => t.stack.push(call),
            }
            return;
        }
        let Some(pos) = t.stack.iter().rposition(|c| c.probe_id == ev.probe_id) else {
            self.counts.unmatched_exits += 1;
            return;
        };
        // Frames above the match never returned (longjmp, depth limit).
        let mut above = t.stack.split_off(pos);
        self.counts.lost_exits += above.len() as u64 - 1;
        let mut call = above.swap_remove(0);
        call.end_ns = ev.ts_ns;
        call.returned = true;
        call.ret = Some(ev.args[0]);
        if self.backend.contains(&call.probe_id) {
            call.backend_ns = call.duration_ns();
        }
        if let Some(parent) = t.stack.last_mut() {
            parent.children_ns += call.duration_ns();
            parent.backend_ns += call.backend_ns;
        }
        out(call);
    }

    /// Ends the trace at `end_ns`: every open call goes to `out` as
    /// in-flight, innermost first, with its duration so far.
    pub fn finish(mut self, end_ns: u64, mut out: impl FnMut(Call)) -> PairingCounts {
        let mut tids: Vec<u32> = self.threads.keys().copied().collect();
        tids.sort_unstable();
        for tid in tids {
            let Some(t) = self.threads.get_mut(&tid) else {
                continue;
            };
            while let Some(mut call) = t.stack.pop() {
                call.end_ns = end_ns.max(call.start_ns);
                if self.backend.contains(&call.probe_id) {
                    call.backend_ns = call.duration_ns();
                }
                if let Some(parent) = t.stack.last_mut() {
                    parent.children_ns += call.duration_ns();
                    parent.backend_ns += call.backend_ns;
                }
                out(call);
            }
        }
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(tid: u32, ts: u64, probe: u32, kind: EventKind, a0: u64) -> Event {
        crate::stats::tests::ev(tid, ts, probe, kind, [a0, 0, 0])
    }
    use EventKind::{Entry as In, Exit as Out};

    fn pair(events: &[Event], end: u64) -> (Vec<Call>, PairingCounts) {
        let mut calls = Vec::new();
        let mut p = CallPairer::new();
        for e in events {
            p.push(e, |c| calls.push(c));
        }
        let counts = p.finish(end, |c| calls.push(c));
        (calls, counts)
    }

    #[test]
    fn an_entry_only_probe_makes_a_call_of_no_length_at_its_entry() {
        use crate::stats::tests::probe;
        let mut counted = probe(1, "ap_process_request_internal", None);
        counted.capture.entry_only = true;
        let probes = [probe(0, "read", None), counted];
        let mut p = CallPairer::for_probes(&probes);
        let mut calls = Vec::new();
        for e in [
            ev(7, 10, 0, In, 0),
            ev(7, 20, 0, Out, 5),
            ev(7, 30, 1, In, 0xabc),
            ev(7, 40, 0, In, 0),
        ] {
            p.push(&e, |c| calls.push(c));
        }
        let counts = p.finish(100, |c| calls.push(c));
        let got: Vec<(u32, u64, u64, bool)> = calls
            .iter()
            .map(|c| (c.probe_id, c.start_ns, c.end_ns, c.returned))
            .collect();
        assert_eq!(
            got,
            [(0, 10, 20, true), (1, 30, 30, true), (0, 40, 100, false)]
        );
        assert_eq!((counts.lost_exits, counts.unmatched_exits), (0, 0));
    }

    /// A call written at attach for a worker already in it ends at its
    /// thread's next event (its return probe never fires); one the probes
    /// saw the thread leave before (an earlier stamp) is dropped.
    #[test]
    fn a_call_held_at_attach_ends_at_its_threads_next_event() {
        let held = flowdar_common::SOCKET_CONN_BIT | flowdar_common::SEEDED_CONN_BIT | 1;
        assert!(flowdar_common::held_uprobe_at_attach(&[held, 0, 0]));
        assert!(!flowdar_common::held_uprobe_at_attach(&[u64::MAX, 0, 0]));
        assert!(!flowdar_common::held_uprobe_at_attach(&[
            0x7f00_0000_1000,
            0,
            0
        ]));
        let (calls, counts) = pair(
            &[
                ev(7, 100, 0, In, held),
                ev(7, 250, 1, In, 0xabc),
                ev(7, 300, 1, Out, 0),
                ev(8, 100, 0, In, held + 1),
                ev(8, 90, 0, Out, 0x55),
                ev(9, 100, 0, In, held + 2),
            ],
            1000,
        );
        let got: Vec<(u32, u32, u64, u64, bool, Option<u64>)> = calls
            .iter()
            .map(|c| (c.tid, c.probe_id, c.start_ns, c.end_ns, c.returned, c.ret))
            .collect();
        assert_eq!(
            got,
            [
                (7, 0, 100, 250, true, None),
                (7, 1, 250, 300, true, Some(0)),
                (9, 0, 100, 1000, false, None),
            ]
        );
        assert_eq!(
            counts.unmatched_exits, 1,
            "tid 8's exit: its call was not the written one"
        );
    }

    #[test]
    fn backend_time_is_counted_in_the_backend_call_and_every_caller() {
        use crate::stats::tests::probe;
        let probes = [
            probe(0, "ap_invoke_handler", None),
            probe(1, "proxy_run_scheme_handler", None),
            probe(2, "apr_socket_recv", None),
        ];
        let mut p = CallPairer::for_probes(&probes);
        let mut calls = Vec::new();
        for e in [
            ev(1, 0, 0, In, 0),
            ev(1, 10, 1, In, 0),
            ev(1, 20, 2, In, 0),
            ev(1, 60, 2, Out, 0),
            ev(1, 70, 1, Out, 0),
            ev(1, 100, 0, Out, 0),
            // A second exchange still waiting at the end.
            ev(1, 200, 0, In, 0),
            ev(1, 210, 1, In, 0),
        ] {
            p.push(&e, |c| calls.push(c));
        }
        p.finish(300, |c| calls.push(c));
        let backend: Vec<(u32, u64, u64)> = calls
            .iter()
            .map(|c| (c.probe_id, c.duration_ns(), c.backend_ns))
            .collect();
        assert_eq!(
            backend,
            [
                (2, 40, 0),
                (1, 60, 60),
                (0, 100, 60),
                (1, 90, 90),
                (0, 100, 90)
            ]
        );
    }

    #[test]
    fn nested_calls_get_depth_and_self_time() {
        let (calls, counts) = pair(
            &[
                ev(1, 0, 0, In, 9),
                ev(1, 10, 1, In, 0),
                ev(1, 30, 1, Out, 5),
                ev(1, 100, 0, Out, 0),
            ],
            200,
        );
        assert_eq!(counts, PairingCounts::default());
        assert_eq!(calls.len(), 2);
        let (inner, outer) = (&calls[0], &calls[1]);
        assert_eq!(
            (inner.probe_id, inner.depth, inner.duration_ns(), inner.ret),
            (1, 1, 20, Some(5))
        );
        assert_eq!(
            (
                outer.probe_id,
                outer.depth,
                outer.duration_ns(),
                outer.self_ns()
            ),
            (0, 0, 100, 80)
        );
        assert_eq!(outer.args[0], 9);
    }

    #[test]
    fn threads_pair_independently() {
        let (calls, _) = pair(
            &[
                ev(1, 0, 0, In, 0),
                ev(2, 5, 0, In, 0),
                ev(1, 7, 0, Out, 0),
                ev(2, 20, 0, Out, 0),
            ],
            30,
        );
        let durations: Vec<(u32, u64)> = calls.iter().map(|c| (c.tid, c.duration_ns())).collect();
        assert_eq!(durations, [(1, 7), (2, 15)]);
    }

    #[test]
    fn recursion_pairs_innermost_first() {
        let (calls, _) = pair(
            &[
                ev(1, 0, 0, In, 0),
                ev(1, 1, 0, In, 0),
                ev(1, 3, 0, Out, 0),
                ev(1, 10, 0, Out, 0),
            ],
            20,
        );
        assert_eq!(
            calls
                .iter()
                .map(|c| (c.depth, c.duration_ns()))
                .collect::<Vec<_>>(),
            [(1, 2), (0, 10)]
        );
    }

    #[test]
    fn awkward_cases_are_counted() {
        // Exit of a call entered before capture; a skipped exit (longjmp);
        // a call still open at the end.
        let (calls, counts) = pair(
            &[
                ev(1, 0, 3, Out, 0),
                ev(1, 1, 0, In, 0),
                ev(1, 2, 1, In, 0),
                ev(1, 5, 0, Out, 0),
                ev(1, 6, 2, In, 0),
                ev(1, 4, 2, In, 0),
            ],
            50,
        );
        assert_eq!(counts.unmatched_exits, 1);
        assert_eq!(counts.lost_exits, 1);
        assert_eq!(counts.time_reversals, 1);
        let in_flight: Vec<_> = calls.iter().filter(|c| !c.returned).collect();
        assert_eq!(in_flight.len(), 2);
        assert_eq!(
            in_flight[0].duration_ns(),
            46,
            "innermost first, measured to the end"
        );
        assert_eq!(in_flight[1].duration_ns(), 44);
    }
}
