//! Calls a thread returns from without having entered them in its own
//! records: a forked child inherits its parent's stack (it returns from
//! `fork` and, if it returns from `main`, from `main`), and uftrace counts
//! each such return as a call (`uftrace report`). The converter gives each
//! one an entry, at the start of the thread's records, timed when the parent
//! last entered that function (the call did begin there), so Flowdar pairs
//! it into a call and counts what uftrace counts.
use std::collections::HashMap;

use super::data::{Record, RecordKind};

#[derive(Debug, Default)]
pub struct Inherited {
    /// Open entries per thread (function addresses).
    stacks: HashMap<u32, Vec<u64>>,
    /// Latest entry time per (process, function).
    last_entry: HashMap<(u32, u64), u64>,
    /// Each thread's first record time.
    first_ts: HashMap<u32, u64>,
    /// Per thread: the inherited frames found, innermost first (the order
    /// their returns come in).
    frames: HashMap<u32, Vec<Frame>>,
}

/// A call a thread returns from without having entered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub addr: u64,
    /// When it began (the entry to write).
    pub began: u64,
    /// When it returned (its exit record's time).
    pub returned: u64,
}

impl Inherited {
    /// Pass 1: sees every record in time order; `parent` is the process
    /// the record's process was forked from, if any.
    pub fn observe(&mut self, pid: u32, parent: Option<u32>, tid: u32, r: &Record) {
        let first = *self.first_ts.entry(tid).or_insert(r.ts_ns);
        let stack = self.stacks.entry(tid).or_default();
        match r.kind {
            RecordKind::Entry => {
                stack.push(r.addr);
                self.last_entry.insert((pid, r.addr), r.ts_ns);
            }
            RecordKind::Exit if stack.pop().is_none() => {
                let began = parent
                    .and_then(|p| self.last_entry.get(&(p, r.addr)))
                    .copied()
                    .unwrap_or(first)
                    .min(first);
                self.frames.entry(tid).or_default().push(Frame {
                    addr: r.addr,
                    began,
                    returned: r.ts_ns,
                });
            }
            _ => {}
        }
    }

    /// Pass 2: the entries to write before `tid`'s first record,
    /// outermost first, `began` never decreasing.
    pub fn take(&mut self, tid: u32) -> Vec<Frame> {
        let mut frames = self.frames.remove(&tid).unwrap_or_default();
        frames.reverse();
        let mut t = 0;
        for f in &mut frames {
            t = t.max(f.began);
            f.began = t;
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ts_ns: u64, kind: RecordKind, addr: u64) -> Record {
        Record {
            ts_ns,
            kind,
            more: false,
            depth: 0,
            addr,
        }
    }

    #[test]
    fn a_forked_child_returns_from_its_parents_calls() {
        let (main, fork, work) = (0x10, 0x20, 0x30);
        let mut i = Inherited::default();
        // Parent 1: main -> fork (returns) ...; child 2 returns from fork,
        // runs work, returns from main.
        i.observe(1, None, 1, &rec(100, RecordKind::Entry, main));
        i.observe(1, None, 1, &rec(110, RecordKind::Entry, fork));
        i.observe(1, None, 1, &rec(150, RecordKind::Exit, fork));
        i.observe(2, Some(1), 2, &rec(160, RecordKind::Exit, fork));
        i.observe(2, Some(1), 2, &rec(170, RecordKind::Entry, work));
        i.observe(2, Some(1), 2, &rec(180, RecordKind::Exit, work));
        i.observe(2, Some(1), 2, &rec(190, RecordKind::Exit, main));
        let frames: Vec<(u64, u64, u64)> = i
            .take(2)
            .iter()
            .map(|f| (f.addr, f.began, f.returned))
            .collect();
        assert_eq!(frames, vec![(main, 100, 190), (fork, 110, 160)]);
        assert_eq!(i.take(1), vec![]);
    }
}
