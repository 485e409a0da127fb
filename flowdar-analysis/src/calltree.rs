//! The dynamic call tree of a trace: which probed function called which,
//! directly (its nearest probed caller on the same thread), and how often.
//!
//! Apache reaches most callees through pointers (hooks, filters, bucket
//! types), so a static call graph misses the calls that matter; a short
//! recording with a wide probe set sees them. Calls whose entry predates the
//! capture have no known caller and are counted, not attributed.
use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    path::{Path, PathBuf},
};

use flowdar_common::EventKind;
use rustc_hash::FxHashMap;
use serde::Serialize;

use flowdar_trace::{StoreError, TraceReader};

/// Who called whom in one trace.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CallTree {
    /// Entries per function.
    pub calls: BTreeMap<String, u64>,
    /// Returned calls per function and their summed duration (callees
    /// included), for the mean time a call takes.
    pub returned: BTreeMap<String, (u64, u64)>,
    /// Caller -> callee -> entries of the callee directly under the caller.
    pub edges: BTreeMap<String, BTreeMap<String, u64>>,
    /// The file each function lives in, as the target sees it.
    pub objects: BTreeMap<String, PathBuf>,
    /// Calls entered in the trace and still running at its end, per
    /// function: under an attack, where the workers are held.
    pub open_at_end: BTreeMap<String, u64>,
}

impl CallTree {
    /// Reads the tree of the trace at `path`.
    pub fn of(path: &Path) -> Result<Self, StoreError> {
        let reader = TraceReader::open(path)?;
        let probes = reader.header().probes.clone();
        let names: Vec<String> = probes.iter().map(|p| p.display_name()).collect();
        let mut tree = Self::default();
        for (p, name) in probes.iter().zip(&names) {
            tree.objects.insert(name.clone(), p.path.clone());
        }
        // Per thread: the probe ids and start times of the calls open now.
        let mut stacks: FxHashMap<u32, Vec<(u32, u64)>> = FxHashMap::default();
        reader.for_each_event(|e| {
            let Some(name) = names.get(e.probe_id as usize) else {
                return;
            };
            if e.kind == EventKind::Entry as u32 && flowdar_common::held_uprobe_at_attach(&e.args) {
                return; // held since attach, its return never seen: no caller
            }
            let stack = stacks.entry(e.tid).or_default();
            if e.kind == EventKind::Entry as u32 {
                *tree.calls.entry(name.clone()).or_default() += 1;
                if let Some(&(caller, _)) = stack.last() {
                    *tree
                        .edges
                        .entry(names[caller as usize].clone())
                        .or_default()
                        .entry(name.clone())
                        .or_default() += 1;
                }
                stack.push((e.probe_id, e.ts_ns));
            } else if e.kind == EventKind::Exit as u32 {
                // Frames above the match never returned (longjmp).
                if let Some(pos) = stack.iter().rposition(|&(id, _)| id == e.probe_id) {
                    let started = stack[pos].1;
                    let r = tree.returned.entry(name.clone()).or_default();
                    r.0 += 1;
                    r.1 += e.ts_ns.saturating_sub(started);
                    stack.truncate(pos);
                }
            }
        })?;
        for stack in stacks.values() {
            for &(id, _) in stack {
                *tree
                    .open_at_end
                    .entry(names[id as usize].clone())
                    .or_default() += 1;
            }
        }
        Ok(tree)
    }

    /// Adds `other`'s caller -> callee edges (not its counts or times).
    pub fn add_edges(&mut self, other: &CallTree) {
        for (caller, callees) in &other.edges {
            let mine = self.edges.entry(caller.clone()).or_default();
            for (callee, n) in callees {
                *mine.entry(callee.clone()).or_default() += n;
            }
        }
        for (f, path) in &other.objects {
            self.objects
                .entry(f.clone())
                .or_insert_with(|| path.clone());
        }
    }

    /// The mean duration of `f`'s returned calls, callees included.
    pub fn mean_ns(&self, f: &str) -> u64 {
        self.returned
            .get(f)
            .map_or(0, |&(n, total)| total / n.max(1))
    }

    /// The functions `f` called directly, most called first.
    pub fn callees(&self, f: &str) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = self
            .edges
            .get(f)
            .map(|m| m.iter().map(|(k, n)| (k.as_str(), *n)).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v
    }

    /// Every function reachable from `f` within `depth` calls, with its
    /// distance (1: a direct callee), nearest first; `f` itself excluded.
    pub fn below(&self, f: &str, depth: usize) -> Vec<(String, usize)> {
        let mut seen = BTreeSet::from([f.to_string()]);
        let mut out = Vec::new();
        let mut queue = VecDeque::from([(f.to_string(), 0)]);
        while let Some((g, d)) = queue.pop_front() {
            if d == depth {
                continue;
            }
            for (callee, _) in self.callees(&g) {
                if seen.insert(callee.to_string()) {
                    out.push((callee.to_string(), d + 1));
                    queue.push_back((callee.to_string(), d + 1));
                }
            }
        }
        out
    }

    /// Distance from `from` down to `to` (None: `to` is not below `from`).
    pub fn distance(&self, from: &str, to: &str) -> Option<usize> {
        self.below(from, usize::MAX)
            .into_iter()
            .find(|(g, _)| g == to)
            .map(|(_, d)| d)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use flowdar_common::{Event, EventKind::*};

    use super::*;
    use flowdar_trace::{TraceFooter, TraceWriter};

    use crate::stats::tests::{ev, probe};

    /// A trace of `events` with one probe per name.
    pub(crate) fn write(events: &[Event], names: &[&str]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.flowdar");
        let mut header = flowdar_trace::TraceHeader {
            tool_version: "t".into(),
            host: "h".into(),
            kernel: "k".into(),
            command_line: vec![],
            start_unix_ns: 0,
            start_monotonic_ns: 0,
            target_pid: 1,
            probes: vec![],
            attach_mode: String::new(),
            attached_monotonic_ns: 0,
            target_ns_pid: 0,
        };
        header.probes = names
            .iter()
            .enumerate()
            .map(|(i, n)| probe(i as u32, n, None))
            .collect();
        let mut w = TraceWriter::create(&path, &header, false).unwrap();
        w.write_chunk(events).unwrap();
        w.finish(TraceFooter::default()).unwrap();
        (dir, path)
    }

    #[test]
    fn direct_callers_through_unprobed_frames_and_unknown_callers() {
        // Thread 1: a > b > c, a > c; thread 2: c's exit and b's entry with
        // no caller (their callers predate the capture).
        let e = |tid, ts, id, k| ev(tid, ts, id, k, [0; 3]);
        let events = [
            e(2, 1, 2, Exit),
            e(2, 2, 1, Entry),
            e(1, 3, 0, Entry),
            e(1, 4, 1, Entry),
            e(1, 5, 2, Entry),
            e(1, 6, 2, Exit),
            e(1, 7, 1, Exit),
            e(1, 8, 2, Entry),
            e(1, 9, 2, Exit),
            e(1, 10, 0, Exit),
        ];
        let (_dir, path) = write(&events, &["a", "b", "c"]);
        let t = CallTree::of(&path).unwrap();
        assert_eq!(t.calls["a"], 1);
        assert_eq!(t.calls["b"], 2);
        assert_eq!(t.calls["c"], 2);
        assert_eq!(t.callees("a"), vec![("b", 1), ("c", 1)]);
        assert_eq!(t.callees("b"), vec![("c", 1)]);
        assert_eq!(t.below("a", 1), vec![("b".into(), 1), ("c".into(), 1)]);
        assert_eq!(t.distance("b", "c"), Some(1));
        assert_eq!(t.distance("c", "a"), None);
        // a: 3..10; b: 4..7 (thread 2's b never returned); c: 5..6, 8..9.
        assert_eq!((t.mean_ns("a"), t.mean_ns("b"), t.mean_ns("c")), (7, 3, 1));
        // Thread 2's b never returned.
        assert_eq!(t.open_at_end, BTreeMap::from([("b".to_string(), 1)]));
    }
}
