//! Threads inside a function second by second: how many workers were in
//! `ap_read_request` at the end of each second of a capture, the picture of
//! a Slowloris filling the server and of a timeout emptying it.
use std::path::Path;

use flowdar_trace::{StoreError, TraceReader};

use crate::scan;

const SECOND_NS: u64 = 1_000_000_000;

/// Threads inside one function at each whole second of a capture.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct InsidePerSecond {
    pub function: String,
    /// The capture's start, wall clock (ns since the epoch).
    pub start_unix_ns: u64,
    /// `threads[k]`: calls of the function in progress `k + 1` seconds
    /// after the capture's start (in flight at its end included). A call
    /// re-entered on its own thread counts each time.
    pub threads: Vec<u64>,
}

/// Counts, for each whole second of `trace`, the calls of `function` in
/// progress at that instant. Empty counts when the function was not probed.
pub fn inside_per_second(trace: &Path, function: &str) -> Result<InsidePerSecond, StoreError> {
    let header = TraceReader::open(trace)?.header().clone();
    let ids: Vec<u32> = header
        .probes
        .iter()
        .enumerate()
        .filter(|(_, p)| p.function == function)
        .map(|(i, _)| i as u32)
        .collect();
    let s0 = header.start_monotonic_ns;
    let mut threads: Vec<u64> = Vec::new();
    let scanned = scan(
        trace,
        |_| {},
        |c| {
            if !ids.contains(&c.probe_id) {
                return;
            }
            // Samples at s0 + k s, k >= 1, with start < sample <= end.
            let first = c.start_ns.saturating_sub(s0) / SECOND_NS + 1;
            let last = c.end_ns.saturating_sub(s0) / SECOND_NS;
            for k in first..=last {
                let i = (k - 1) as usize;
                if threads.len() <= i {
                    threads.resize(i + 1, 0);
                }
                threads[i] += 1;
            }
        },
    )?;
    let seconds = (scanned.duration_ns() / SECOND_NS) as usize;
    threads.resize(seconds, 0);
    Ok(InsidePerSecond {
        function: function.into(),
        start_unix_ns: header.start_unix_ns,
        threads,
    })
}

/// The workers held at each whole second, the way the trace can tell: in
/// a lean trace its read-waits ([`read_waits_per_second`]), else the calls
/// of `ap_read_request` in progress.
pub fn held_per_second(trace: &Path) -> Result<InsidePerSecond, StoreError> {
    match read_waits_per_second(trace)? {
        Some(w) => Ok(w),
        None => inside_per_second(trace, crate::sessions::READ),
    }
}

/// What [`read_waits_per_second`] counts, as its `function`.
pub const READ_WAITS: &str = "read, poll (waiting for a request)";

/// Lean traces: the workers waiting for a client's request at each whole
/// second ([`crate::ReadWaits`]: from a request's first read-wait through
/// the header lines a slow client trickles in). `None` for a trace that
/// watched no system calls.
pub fn read_waits_per_second(trace: &Path) -> Result<Option<InsidePerSecond>, StoreError> {
    let header = TraceReader::open(trace)?.header().clone();
    let Some(waits) = crate::ReadWaits::new(&header.probes) else {
        return Ok(None);
    };
    let s0 = header.start_monotonic_ns;
    let mut threads: Vec<u64> = Vec::new();
    let mut count = |start: u64, end: u64| {
        let first = start.saturating_sub(s0) / SECOND_NS + 1;
        let last = end.saturating_sub(s0) / SECOND_NS;
        for k in first..=last {
            let i = (k - 1) as usize;
            if threads.len() <= i {
                threads.resize(i + 1, 0);
            }
            threads[i] += 1;
        }
    };
    let waits = std::cell::RefCell::new(waits);
    let scanned = scan(
        trace,
        |_| {},
        |c| waits.borrow_mut().add(c, |w| count(w.start_ns, w.end_ns)),
    )?;
    waits.into_inner().finish(|w| count(w.start_ns, w.end_ns));
    let seconds = (scanned.duration_ns() / SECOND_NS) as usize;
    threads.resize(seconds, 0);
    Ok(Some(InsidePerSecond {
        function: READ_WAITS.into(),
        start_unix_ns: header.start_unix_ns,
        threads,
    }))
}

#[cfg(test)]
mod tests {
    use flowdar_common::EventKind::*;

    use super::*;
    use crate::{calltree::tests::write, stats::tests::ev};

    #[test]
    fn calls_in_progress_at_each_whole_second_in_flight_ones_to_the_end() {
        let s = |x: f64| (x * 1e9) as u64;
        let e = |tid, ts, id, k| ev(tid, ts, id, k, [0; 3]);
        let events = [
            e(1, s(0.5), 0, Entry),
            e(2, s(1.5), 0, Entry),
            e(3, s(1.6), 1, Entry),
            e(1, s(2.5), 0, Exit),
            e(3, s(3.2), 1, Exit),
        ];
        let (_dir, path) = write(&events, &["ap_read_request", "other"]);
        let got = inside_per_second(&path, "ap_read_request").unwrap();
        // Thread 1 in it at 1 s and 2 s; thread 2 from 1.5 s to the end
        // (3.2 s, never returned): at 2 s and 3 s.
        assert_eq!(got.threads, [1, 2, 1]);
        let none = inside_per_second(&path, "ap_process_request").unwrap();
        assert_eq!(none.threads, [0, 0, 0]);
    }
}
