//! Workers held when capture ended: threads with a call still in flight,
//! where (their stacks of in-flight calls) and for how long. Counted per
//! thread, so that a recursive function (`ap_pass_brigade` through the
//! output filters) or a nested one does not count a worker twice.
use std::{collections::HashMap, path::Path};

use flowdar_analysis::scan;

/// Waits that do not hold a worker: the listener polling its sockets, an
/// idle worker waiting for a connection.
const IDLE: &[&str] = &["apr_pollset_poll", "apr_poll", "ap_queue_pop_something"];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Held {
    /// Threads held (a call in flight that is not an idle wait).
    pub workers: u64,
    /// The in-flight stack shared by most of them, outermost first; a
    /// function re-entered through its own callees appears once, with a
    /// count (`ap_pass_brigade x5`).
    pub stack: Vec<String>,
    /// Threads with exactly that stack.
    pub with_stack: u64,
    /// How long their outermost in-flight call had run: longest, median.
    pub longest_ns: u64,
    pub median_ns: u64,
    /// Per function, its longest call that returned (what a timeout caps).
    pub longest_returned_ns: HashMap<String, u64>,
}

/// Reads `trace` and finds its held workers.
pub fn held_workers(trace: &Path) -> Result<Held, flowdar_trace::StoreError> {
    // Per thread: (depth, probe, duration) of its in-flight calls.
    let mut open: HashMap<u32, Vec<(u32, u32, u64)>> = HashMap::new();
    let mut longest: HashMap<u32, u64> = HashMap::new();
    let scanned = scan(
        trace,
        |_| {},
        |c| {
            if c.returned {
                let l = longest.entry(c.probe_id).or_default();
                *l = (*l).max(c.duration_ns());
            } else {
                open.entry(c.tid)
                    .or_default()
                    .push((c.depth, c.probe_id, c.duration_ns()));
            }
        },
    )?;
    let name = |id: u32| {
        scanned
            .header
            .probes
            .get(id as usize)
            .map_or_else(|| format!("probe {id}"), |p| p.function.clone())
    };
    let mut stacks: HashMap<Vec<String>, u64> = HashMap::new();
    let mut durations = Vec::new();
    for calls in open.values_mut() {
        calls.sort_unstable();
        let names: Vec<String> = calls.iter().map(|&(_, id, _)| name(id)).collect();
        if names.first().is_some_and(|n| IDLE.contains(&n.as_str())) {
            continue;
        }
        durations.push(calls[0].2);
        *stacks.entry(fold_repeats(&names)).or_default() += 1;
    }
    durations.sort_unstable();
    let (stack, with_stack) = stacks
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
        .unwrap_or_default();
    Ok(Held {
        workers: durations.len() as u64,
        stack,
        with_stack,
        longest_ns: durations.last().copied().unwrap_or(0),
        median_ns: durations.get(durations.len() / 2).copied().unwrap_or(0),
        longest_returned_ns: longest.into_iter().map(|(id, d)| (name(id), d)).collect(),
    })
}

/// `[a, b, b, b, c]` -> `[a, b x3, c]`.
fn fold_repeats(names: &[String]) -> Vec<String> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for n in names {
        match out.last_mut() {
            Some((last, k)) if last == n => *k += 1,
            _ => out.push((n.clone(), 1)),
        }
    }
    out.into_iter()
        .map(|(n, k)| if k > 1 { format!("{n} x{k}") } else { n })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_fold_into_a_count() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            fold_repeats(&s(&["h", "p", "p", "p", "o", "p"])),
            s(&["h", "p x3", "o", "p"])
        );
        assert!(fold_repeats(&[]).is_empty());
    }
}
