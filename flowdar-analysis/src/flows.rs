//! Hand-offs between threads: an object (a socket) queued by one thread
//! (`ap_queue_push_socket`, argument 1) and popped by another
//! (`ap_queue_pop_something`, out-parameter 1 read at exit), then the
//! connection that thread processes next. Addresses are pool-recycled, so a
//! pop matches the oldest unmatched push of the same address.
use std::collections::{BTreeMap, HashMap, VecDeque};

use flowdar_common::{Event, EventKind};
use serde::Serialize;

use flowdar_trace::TraceProbe;

const PUSH: &str = "ap_queue_push_socket";
const POP: &str = "ap_queue_pop_something";
/// Calls whose first argument is the connection a worker then processes.
const PROCESS: &[&str] = &["ap_run_process_connection", "ap_process_connection"];

/// One hand-off. Field names are a stable interface (`flowdar flows --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flow {
    /// The object's address (the `apr_socket_t *`).
    pub object: u64,
    pub from_tid: u32,
    pub to_tid: u32,
    /// When it was queued (monotonic ns).
    pub queued_ns: u64,
    /// From the push's entry to the pop's return.
    pub delay_ns: u64,
    /// The `conn_rec *` the popping thread processed next, when probed.
    pub connection: Option<u64>,
}

/// Hand-offs between one pair of threads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ThreadPair {
    pub from_tid: u32,
    pub to_tid: u32,
    pub count: u64,
    pub mean_delay_ns: u64,
    pub max_delay_ns: u64,
}

/// Feed events in file order; read `flows` and the counters at the end.
pub struct FlowTracker {
    push: Option<u32>,
    pop: Option<u32>,
    process: Vec<u32>,
    /// Keyed by (process, address): forked children reuse addresses.
    pending: HashMap<(u32, u64), VecDeque<(u32, u64)>>,
    awaiting_connection: HashMap<u32, usize>,
    pub flows: Vec<Flow>,
    /// Pops of an object no push was seen for (queued before capture).
    pub unmatched_pops: u64,
}

impl FlowTracker {
    pub fn new(probes: &[TraceProbe]) -> Self {
        let id = |name: &str| probes.iter().find(|p| p.function == name).map(|p| p.id);
        Self {
            push: id(PUSH),
            pop: id(POP),
            process: probes
                .iter()
                .filter(|p| PROCESS.contains(&p.function.as_str()))
                .map(|p| p.id)
                .collect(),
            pending: HashMap::new(),
            awaiting_connection: HashMap::new(),
            flows: Vec::new(),
            unmatched_pops: 0,
        }
    }

    /// True when the trace has both ends of a hand-off probed.
    pub fn can_track(&self) -> bool {
        self.push.is_some() && self.pop.is_some()
    }

    pub fn push(&mut self, e: &Event) {
        if e.kind != EventKind::Entry as u32 && e.kind != EventKind::Exit as u32 {
            return;
        }
        let entry = e.kind == EventKind::Entry as u32;
        if entry && Some(e.probe_id) == self.push {
            self.pending
                .entry((e.tgid, e.args[1]))
                .or_default()
                .push_back((e.tid, e.ts_ns));
        } else if !entry
            && Some(e.probe_id) == self.pop
            && e.args[0] == 0
            && e.args[1] != 0
            && e.args[1] != flowdar_common::DEREF_UNKNOWN
        {
            match self
                .pending
                .get_mut(&(e.tgid, e.args[1]))
                .and_then(VecDeque::pop_front)
            {
                Some((from, at)) => {
                    self.awaiting_connection.insert(e.tid, self.flows.len());
                    self.flows.push(Flow {
                        object: e.args[1],
                        from_tid: from,
                        to_tid: e.tid,
                        queued_ns: at,
                        delay_ns: e.ts_ns.saturating_sub(at),
                        connection: None,
                    });
                }
                None => self.unmatched_pops += 1,
            }
        } else if entry && self.process.contains(&e.probe_id) {
            if let Some(i) = self.awaiting_connection.remove(&e.tid) {
                self.flows[i].connection = Some(e.args[0]);
            }
        }
    }

    /// Objects queued but not popped by the end of capture.
    pub fn still_queued(&self) -> u64 {
        self.pending.values().map(|q| q.len() as u64).sum()
    }

    /// Hand-offs summed per (from, to) thread pair, busiest first.
    pub fn thread_pairs(&self) -> Vec<ThreadPair> {
        let mut m: BTreeMap<(u32, u32), (u64, u64, u64)> = BTreeMap::new();
        for f in &self.flows {
            let e = m.entry((f.from_tid, f.to_tid)).or_default();
            e.0 += 1;
            e.1 += f.delay_ns;
            e.2 = e.2.max(f.delay_ns);
        }
        let mut out: Vec<ThreadPair> = m
            .into_iter()
            .map(|((from_tid, to_tid), (count, sum, max))| ThreadPair {
                from_tid,
                to_tid,
                count,
                mean_delay_ns: sum / count,
                max_delay_ns: max,
            })
            .collect();
        out.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.from_tid.cmp(&b.from_tid))
                .then(a.to_tid.cmp(&b.to_tid))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::tests::{ev, probe};

    use EventKind::{Entry as In, Exit as Out};

    #[test]
    fn pops_match_the_oldest_push_of_the_address_and_find_the_connection() {
        let probes = [
            probe(0, PUSH, None),
            probe(1, POP, None),
            probe(2, "ap_run_process_connection", None),
        ];
        let mut t = FlowTracker::new(&probes);
        assert!(t.can_track());
        for e in [
            ev(10, 100, 0, In, [0, 0xa, 0]),
            ev(10, 110, 0, Out, [0, 0, 0]),
            ev(10, 200, 0, In, [0, 0xa, 0]), // the same address queued again
            ev(20, 250, 1, Out, [0, 0xa, 0x99]),
            ev(20, 260, 2, In, [0xc1, 0, 0]),
            ev(30, 400, 1, Out, [0, 0xa, 0]),
            ev(30, 500, 1, Out, [0, 0xb, 0]), // never pushed in capture
            ev(30, 600, 1, Out, [70014, 0, 0]), // an interrupted pop
            ev(10, 700, 0, In, [0, 0xd, 0]),
        ] {
            t.push(&e);
        }
        assert_eq!(t.flows.len(), 2);
        assert_eq!(
            t.flows[0],
            Flow {
                object: 0xa,
                from_tid: 10,
                to_tid: 20,
                queued_ns: 100,
                delay_ns: 150,
                connection: Some(0xc1)
            }
        );
        assert_eq!(
            (
                t.flows[1].queued_ns,
                t.flows[1].delay_ns,
                t.flows[1].connection
            ),
            (200, 200, None)
        );
        assert_eq!((t.unmatched_pops, t.still_queued()), (1, 1));
        let pairs = t.thread_pairs();
        assert_eq!(pairs.len(), 2);
        assert_eq!(
            (
                pairs[0].from_tid,
                pairs[0].to_tid,
                pairs[0].count,
                pairs[0].mean_delay_ns
            ),
            (10, 20, 1, 150)
        );
    }
}
