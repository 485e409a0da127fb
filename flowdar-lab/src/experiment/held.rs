//! Workers held when capture ended: threads with a call still in flight,
//! where (their stacks of in-flight calls) and for how long. Counted per
//! thread, so that a recursive function (`ap_pass_brigade` through the
//! output filters) or a nested one does not count a worker twice.
use std::{collections::HashMap, path::Path};

use flowdar_analysis::{scan, ReadWait, ReadWaits};

/// In a lean trace, where a worker waits for a request: the name its
/// stack gets, and the key of the longest such wait that ended in
/// [`Held::longest_returned_ns`].
pub const LEAN_READ_WAIT: &str = "read-wait";
/// `poll`'s events: waiting for input.
const POLLIN: u64 = 1;

/// Waits that do not hold a worker: the listener polling its sockets, an
/// idle worker waiting for a connection.
pub(crate) const IDLE: &[&str] = &["apr_pollset_poll", "apr_poll", "ap_queue_pop_something"];

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
    // Lean traces: the workers' waits for requests, those still going.
    let header = flowdar_trace::TraceReader::open(trace)?.header().clone();
    let waits = std::cell::RefCell::new(ReadWaits::new(&header.probes));
    let mut open_waits: Vec<ReadWait> = Vec::new();
    let mut longest_wait = 0u64;
    // Lean: threads whose open `poll` waits to send, not to read.
    let mut polls_out: Vec<u32> = Vec::new();
    let scanned = scan(
        trace,
        |_| {},
        |c| {
            if let Some(w) = waits.borrow_mut().as_mut() {
                w.add(c, |w| {
                    if !w.open {
                        longest_wait = longest_wait.max(w.end_ns - w.start_ns);
                    }
                });
            }
            if c.returned {
                let l = longest.entry(c.probe_id).or_default();
                *l = (*l).max(c.duration_ns());
            } else {
                let p = header.probes.get(c.probe_id as usize);
                if p.is_some_and(|p| p.is_syscall() && p.function.ends_with("poll"))
                    && c.args[2] & POLLIN == 0
                {
                    polls_out.push(c.tid);
                }
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
    if let Some(w) = waits.into_inner() {
        w.finish(|w| match w.open {
            true => open_waits.push(w),
            false => longest_wait = longest_wait.max(w.end_ns - w.start_ns),
        });
    }
    let mut stacks: HashMap<Vec<String>, u64> = HashMap::new();
    let mut durations = Vec::new();
    // A lean trace's held readers: since their request's first read-wait,
    // named for where they wait (after the request began: its body).
    for w in &open_waits {
        // Its uprobes' calls around the wait come first (SSL_accept: the
        // wait is a TLS handshake's).
        let mut around = open.remove(&w.tid).unwrap_or_default();
        around.sort_unstable();
        let mut stack: Vec<String> = around
            .iter()
            .filter(|&&(_, id, _)| {
                !scanned
                    .header
                    .probes
                    .get(id as usize)
                    .is_some_and(|p| p.is_syscall())
            })
            .map(|&(_, id, _)| name(id))
            .collect();
        durations.push(w.end_ns - w.start_ns);
        if w.after_request {
            stack.push(flowdar_analysis::LEAN_REQUEST.to_string());
        }
        stack.push(format!("{LEAN_READ_WAIT}: {}", name(w.last)));
        *stacks.entry(stack).or_default() += 1;
    }
    for (tid, calls) in open.iter_mut() {
        calls.sort_unstable();
        let names: Vec<String> = calls
            .iter()
            .map(|&(_, id, _)| match polls_out.contains(tid) {
                true => format!("{}(POLLOUT)", name(id)),
                false => name(id),
            })
            .collect();
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
        longest_returned_ns: longest
            .into_iter()
            .map(|(id, d)| (name(id), d))
            .chain((longest_wait > 0).then(|| (LEAN_READ_WAIT.to_string(), longest_wait)))
            .collect(),
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
