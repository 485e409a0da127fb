//! Application-agnostic simplification of a trace: drop calls shorter than
//! a threshold (their time stays in the parent, as self time), cut the tree
//! below a depth, collapse a library's internal calls into its outermost
//! call, and fold repeated identical sibling subtrees (loops) into one call
//! followed by a `Fold` event carrying the repeat count and total time.
//! Per thread, each top-level call's tree is built, simplified and written
//! once it completes; output stays in time order across threads.
use std::{
    collections::{HashMap, HashSet},
    hash::{Hash, Hasher},
    path::Path,
};

use flowdar_common::{Event, EventKind};
use rustc_hash::FxHasher;
use serde::Serialize;

use flowdar_trace::{StoreError, TraceFooter, TraceReader, TraceWriter};

#[derive(Debug, Clone, Default)]
pub struct SimplifyOptions {
    /// Drop calls shorter than this (ns).
    pub min_duration_ns: u64,
    /// Drop calls nested deeper than this (0 = top-level calls only).
    pub max_depth: Option<u32>,
    /// Objects (file names, e.g. `libapr-1.so.0.7.2` or a prefix such as
    /// `libapr-1`) whose calls made from inside the same object are dropped.
    pub collapse: Vec<String>,
    pub fold_loops: bool,
}

/// What a simplification did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SimplifyReport {
    pub events_before: u64,
    pub events_after: u64,
    pub dropped_short: u64,
    pub dropped_deep: u64,
    pub dropped_collapsed: u64,
    /// Calls folded away into a repeated sibling.
    pub folded: u64,
}

struct Node {
    entry: Event,
    exit: Option<Event>,
    children: Vec<Node>,
    /// (repeats in all, total ns) when loops were folded into this node.
    fold: Option<(u64, u64)>,
    shape: u64,
}

impl Node {
    fn duration(&self) -> Option<u64> {
        self.exit.map(|x| x.ts_ns.saturating_sub(self.entry.ts_ns))
    }

    fn calls(&self) -> u64 {
        1 + self.children.iter().map(Node::calls).sum::<u64>()
    }
}

/// Writes a simplified copy of `input` to `output`.
pub fn simplify(
    input: &Path,
    output: &Path,
    opts: &SimplifyOptions,
    force: bool,
) -> Result<SimplifyReport, StoreError> {
    let reader = TraceReader::open(input)?;
    let mut header = reader.header().clone();
    header.command_line = std::env::args().collect();
    let objects: Vec<String> = header.probes.iter().map(|p| p.object_name()).collect();
    let collapsed: HashSet<usize> = objects
        .iter()
        .enumerate()
        .filter(|(_, o)| opts.collapse.iter().any(|c| o.starts_with(c.as_str())))
        .map(|(i, _)| i)
        .collect();
    let mut s = Simplifier {
        opts: opts.clone(),
        objects,
        collapsed,
        stacks: HashMap::new(),
        ready: Vec::new(),
        report: SimplifyReport::default(),
        writer: TraceWriter::create(output, &header, force)?,
    };
    let mut err = None;
    let reader = reader.for_each_event(|e| {
        if err.is_none() {
            if let Err(x) = s.push(e) {
                err = Some(x);
            }
        }
    })?;
    if let Some(e) = err {
        return Err(e);
    }
    let footer = reader.footer().cloned().unwrap_or_default();
    s.finish(TraceFooter {
        stop_reason: format!("simplified from {}", input.display()),
        ..footer
    })
}

struct Simplifier {
    opts: SimplifyOptions,
    objects: Vec<String>,
    collapsed: HashSet<usize>,
    stacks: HashMap<u32, Vec<Node>>,
    ready: Vec<Event>,
    report: SimplifyReport,
    writer: TraceWriter,
}

/// Flush the time-ordered output once this many events wait.
const FLUSH_AT: usize = 64 * 1024;

impl Simplifier {
    fn push(&mut self, e: &Event) -> Result<(), StoreError> {
        self.report.events_before += 1;
        if e.kind == EventKind::Client as u32
            || (e.kind == EventKind::Entry as u32 && flowdar_common::held_uprobe_at_attach(&e.args))
        {
            // Connection metadata, kept as is before the call it came with;
            // a call held since attach (its return never comes: readers end
            // it at the thread's next event), kept as is, not a frame.
            self.ready.push(*e);
            return Ok(());
        }
        let stack = self.stacks.entry(e.tid).or_default();
        if e.kind == EventKind::Entry as u32 {
            stack.push(Node {
                entry: *e,
                exit: None,
                children: Vec::new(),
                fold: None,
                shape: 0,
            });
            return Ok(());
        }
        if e.kind == EventKind::Fold as u32 {
            return Ok(()); // an earlier simplification's annotation: recomputed below
        }
        let Some(pos) = stack.iter().rposition(|n| n.entry.probe_id == e.probe_id) else {
            self.ready.push(*e); // exit whose entry predates capture: keep as is
            return Ok(());
        };
        // Frames above the match never returned: they close as children,
        // each of the frame below it.
        let mut above = stack.split_off(pos);
        let mut node = above.remove(0);
        while let Some(orphan) = above.pop() {
            match above.last_mut() {
                Some(parent) => parent.children.push(orphan),
                None => node.children.push(orphan),
            }
        }
        node.exit = Some(*e);
        match stack.last_mut() {
            Some(parent) => parent.children.push(node),
            None => {
                self.emit_top(node);
                if self.ready.len() >= FLUSH_AT {
                    self.flush(false)?;
                }
            }
        }
        Ok(())
    }

    /// Simplifies a completed (or, at the end, open) top-level call.
    fn emit_top(&mut self, mut node: Node) {
        let keep = !self.short(&node);
        if !keep {
            self.report.dropped_short += node.calls();
            return;
        }
        self.simplify_children(&mut node, 0);
        let mut out = std::mem::take(&mut self.ready);
        Self::emit(&node, &mut out);
        self.ready = out;
    }

    fn short(&self, n: &Node) -> bool {
        n.duration().is_some_and(|d| d < self.opts.min_duration_ns)
    }

    fn simplify_children(&mut self, node: &mut Node, depth: u32) {
        let children = std::mem::take(&mut node.children);
        let parent_object = node.entry.probe_id as usize;
        let mut kept: Vec<Node> = Vec::with_capacity(children.len());
        for mut c in children {
            if self.short(&c) {
                self.report.dropped_short += c.calls();
                continue;
            }
            if self.opts.max_depth.is_some_and(|m| depth + 1 > m) {
                self.report.dropped_deep += c.calls();
                continue;
            }
            let object = c.entry.probe_id as usize;
            if self.collapsed.contains(&object)
                && self.objects.get(object).is_some()
                && self.objects.get(object) == self.objects.get(parent_object)
            {
                self.report.dropped_collapsed += c.calls();
                continue;
            }
            self.simplify_children(&mut c, depth + 1);
            if self.opts.fold_loops {
                if let Some(prev) = kept.last_mut() {
                    if prev.shape == c.shape && prev.exit.is_some() && c.exit.is_some() {
                        let (n, total) = prev.fold.unwrap_or((1, prev.duration().unwrap_or(0)));
                        prev.fold = Some((n + 1, total + c.duration().unwrap_or(0)));
                        self.report.folded += c.calls();
                        continue;
                    }
                }
            }
            kept.push(c);
        }
        node.children = kept;
        let mut h = FxHasher::default();
        node.entry.probe_id.hash(&mut h);
        for c in &node.children {
            c.shape.hash(&mut h);
        }
        node.shape = h.finish();
    }

    fn emit(n: &Node, out: &mut Vec<Event>) {
        out.push(n.entry);
        for c in &n.children {
            Self::emit(c, out);
        }
        if let Some(x) = n.exit {
            out.push(x);
            if let Some((count, total)) = n.fold {
                out.push(Event {
                    kind: EventKind::Fold as u32,
                    args: [count, total, 0],
                    ..x
                });
            }
        }
    }

    /// Writes the waiting events older than every open call (all at the end).
    fn flush(&mut self, all: bool) -> Result<(), StoreError> {
        let watermark = if all {
            u64::MAX
        } else {
            self.stacks
                .values()
                .filter_map(|s| s.first())
                .map(|n| n.entry.ts_ns)
                .min()
                .unwrap_or(u64::MAX)
        };
        self.ready.sort_by_key(|e| e.ts_ns);
        let cut = self.ready.partition_point(|e| e.ts_ns < watermark);
        let rest = self.ready.split_off(cut);
        for chunk in self.ready.chunks(flowdar_trace::CHUNK_EVENTS) {
            self.writer.write_chunk(chunk)?;
            self.report.events_after += chunk.len() as u64;
        }
        self.ready = rest;
        Ok(())
    }

    fn finish(mut self, footer: TraceFooter) -> Result<SimplifyReport, StoreError> {
        // Calls still open at the end of capture stay, as in-flight calls.
        let stacks: Vec<Vec<Node>> = self.stacks.drain().map(|(_, s)| s).collect();
        for mut stack in stacks {
            while let Some(n) = stack.pop() {
                match stack.last_mut() {
                    Some(parent) => parent.children.push(n),
                    None => {
                        let mut n = n;
                        self.simplify_children(&mut n, 0);
                        Self::emit(&n, &mut self.ready);
                    }
                }
            }
        }
        self.flush(true)?;
        let report = self.report.clone();
        self.writer.finish(footer)?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowdar_trace::TraceHeader;

    use crate::stats::tests::probe;

    fn ev(tid: u32, ts: u64, probe_id: u32, kind: EventKind) -> Event {
        crate::stats::tests::ev(tid, ts, probe_id, kind, [0; 3])
    }
    use EventKind::{Entry as In, Exit as Out};

    fn run(events: &[Event], opts: &SimplifyOptions) -> (Vec<Event>, SimplifyReport) {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let mut p = vec![
            probe(0, "outer", None),
            probe(1, "loop_body", None),
            probe(2, "leaf", None),
        ];
        p[2].path = "/usr/lib/libapr-1.so.0".into();
        p[1].path = "/usr/lib/libapr-1.so.0".into();
        let header = TraceHeader {
            tool_version: String::new(),
            host: String::new(),
            kernel: String::new(),
            command_line: vec![],
            start_unix_ns: 0,
            start_monotonic_ns: 0,
            target_pid: 1,
            probes: p,
            attach_mode: "uprobe_multi".into(),
            attached_monotonic_ns: 0,
            target_ns_pid: 0,
        };
        let mut w = TraceWriter::create(&a, &header, false).unwrap();
        w.write_chunk(events).unwrap();
        w.finish(TraceFooter::default()).unwrap();
        let report = simplify(&a, &b, opts, false).unwrap();
        let mut out = Vec::new();
        TraceReader::open(&b)
            .unwrap()
            .for_each_event(|e| out.push(*e))
            .unwrap();
        (out, report)
    }

    /// outer { body{leaf} x3, body{} } on thread 1; a short outer on thread 2.
    fn sample() -> Vec<Event> {
        vec![
            ev(1, 0, 0, In),
            ev(1, 10, 1, In),
            ev(1, 12, 2, In),
            ev(1, 14, 2, Out),
            ev(1, 20, 1, Out),
            ev(2, 21, 0, In),
            ev(2, 22, 0, Out),
            ev(1, 30, 1, In),
            ev(1, 31, 2, In),
            ev(1, 33, 2, Out),
            ev(1, 40, 1, Out),
            ev(1, 50, 1, In),
            ev(1, 52, 2, In),
            ev(1, 55, 2, Out),
            ev(1, 60, 1, Out),
            ev(1, 70, 1, In),
            ev(1, 80, 1, Out),
            ev(1, 100, 0, Out),
        ]
    }

    #[test]
    fn loops_fold_into_one_call_with_a_count() {
        let (out, r) = run(
            &sample(),
            &SimplifyOptions {
                fold_loops: true,
                ..Default::default()
            },
        );
        let kinds: Vec<(u32, u32, u64)> =
            out.iter().map(|e| (e.probe_id, e.kind, e.ts_ns)).collect();
        assert_eq!(
            kinds,
            [
                (0, 1, 0),
                (1, 1, 10),
                (2, 1, 12),
                (2, 2, 14),
                (1, 2, 20),
                (1, 3, 20),
                (0, 1, 21),
                (0, 2, 22),
                (1, 1, 70),
                (1, 2, 80),
                (0, 2, 100)
            ]
        );
        let fold = out
            .iter()
            .find(|e| e.kind == EventKind::Fold as u32)
            .unwrap();
        assert_eq!(fold.args[..2], [3, 10 + 10 + 10]);
        assert_eq!((r.events_before, r.events_after, r.folded), (18, 11, 4));
    }

    #[test]
    fn short_calls_depth_and_library_internals_are_dropped() {
        let (out, r) = run(
            &sample(),
            &SimplifyOptions {
                min_duration_ns: 3,
                ..Default::default()
            },
        );
        assert_eq!(
            r.dropped_short, 3,
            "the 2 ns leaves and thread 2's 1 ns outer"
        );
        assert!(out.iter().all(|e| e.tid == 1));
        let (_, r) = run(
            &sample(),
            &SimplifyOptions {
                max_depth: Some(0),
                ..Default::default()
            },
        );
        assert_eq!((r.dropped_deep, r.events_after), (7, 4));
        let (out, r) = run(
            &sample(),
            &SimplifyOptions {
                collapse: vec!["libapr-1".into()],
                ..Default::default()
            },
        );
        assert_eq!(
            r.dropped_collapsed, 3,
            "leaf inside loop_body, both in libapr"
        );
        assert!(out.iter().all(|e| e.probe_id != 2));
    }

    #[test]
    fn open_calls_stay_in_flight() {
        let events = [
            ev(1, 0, 0, In),
            ev(1, 5, 1, In),
            ev(1, 6, 1, Out),
            ev(3, 7, 1, In),
        ];
        let (out, _) = run(
            &events,
            &SimplifyOptions {
                fold_loops: true,
                min_duration_ns: 0,
                ..Default::default()
            },
        );
        assert_eq!(out.len(), 4);
    }
}
