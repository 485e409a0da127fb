//! A session's time windows per thread, indexed for lookups by time.
//!
//! An HTTP/2 session has one window per stream, thousands in a busy trace;
//! the scene asks about every call of the trace, so a linear scan per call
//! is quadratic. Windows are merged per thread into disjoint, sorted
//! intervals and found by binary search.

use std::collections::HashMap;

/// Disjoint, sorted `[start, end]` intervals per thread id.
#[derive(Debug, Default)]
pub(crate) struct Windows {
    by_tid: HashMap<u32, Vec<(u64, u64)>>,
}

impl Windows {
    /// Indexes `(tid, start_ns, end_ns)` windows, merging overlaps.
    pub(crate) fn new(windows: impl IntoIterator<Item = (u32, u64, u64)>) -> Self {
        let mut by_tid: HashMap<u32, Vec<(u64, u64)>> = HashMap::new();
        for (tid, a, b) in windows {
            by_tid.entry(tid).or_default().push((a, b.max(a)));
        }
        for spans in by_tid.values_mut() {
            spans.sort_unstable();
            let mut merged: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
            for &(a, b) in spans.iter() {
                match merged.last_mut() {
                    Some(last) if a <= last.1 => last.1 = last.1.max(b),
                    _ => merged.push((a, b)),
                }
            }
            *spans = merged;
        }
        Self { by_tid }
    }

    /// The last interval of `tid` that starts before `bound` (exclusive).
    fn last_starting_before(&self, tid: u32, bound: u64) -> Option<(u64, u64)> {
        let spans = self.by_tid.get(&tid)?;
        let n = spans.partition_point(|&(a, _)| a < bound);
        n.checked_sub(1).map(|i| spans[i])
    }

    /// Whether `ts` falls inside one of `tid`'s windows.
    pub(crate) fn contains(&self, tid: u32, ts: u64) -> bool {
        self.last_starting_before(tid, ts.saturating_add(1))
            .is_some_and(|(_, b)| ts <= b)
    }

    /// Whether a window of `tid` is open at `ts` or opens less than
    /// `lead_ns` after it.
    pub(crate) fn open_within(&self, tid: u32, ts: u64, lead_ns: u64) -> bool {
        self.last_starting_before(tid, ts.saturating_add(lead_ns))
            .is_some_and(|(_, b)| ts <= b)
    }
}

#[cfg(test)]
mod tests {
    use super::Windows;

    /// The linear definitions the index replaces.
    fn contains_linear(w: &[(u32, u64, u64)], tid: u32, ts: u64) -> bool {
        w.iter().any(|&(t, a, b)| t == tid && a <= ts && ts <= b)
    }
    fn open_within_linear(w: &[(u32, u64, u64)], tid: u32, ts: u64, lead: u64) -> bool {
        w.iter()
            .any(|&(t, a, b)| t == tid && ts <= b && a.saturating_sub(ts) < lead)
    }

    #[test]
    fn index_answers_like_a_linear_scan() {
        let w = vec![
            (1, 10, 20),
            (1, 15, 30),
            (1, 50, 60),
            (2, 5, 5),
            (1, 100, 200),
            (2, 40, 45),
        ];
        let idx = Windows::new(w.iter().copied());
        for tid in 0..4 {
            for ts in 0..250 {
                assert_eq!(
                    idx.contains(tid, ts),
                    contains_linear(&w, tid, ts),
                    "{tid} {ts}"
                );
                for lead in [1, 7, 30] {
                    assert_eq!(
                        idx.open_within(tid, ts, lead),
                        open_within_linear(&w, tid, ts, lead),
                        "{tid} {ts} {lead}"
                    );
                }
            }
        }
    }
}
