//! Per-function statistics over the calls of a trace.
use serde::Serialize;

use super::Call;

/// Statistics of one probed function. Field names are a stable interface
/// (`flowdar stats --json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FunctionStats {
    pub function: String,
    /// The file the function lives in.
    pub object: String,
    /// Calls that returned inside the capture.
    pub calls: u64,
    /// Calls still running when capture ended (counted in the times below
    /// with their duration so far, a lower bound).
    pub in_flight: u64,
    pub total_ns: u64,
    pub self_ns: u64,
    pub mean_ns: u64,
    pub max_ns: u64,
    /// Returned calls whose return value was 0 (NULL, APR_SUCCESS...).
    pub zero_returns: u64,
}

/// Accumulates [`FunctionStats`] per probe id.
#[derive(Debug, Clone)]
pub struct Stats {
    rows: Vec<FunctionStats>,
}

impl Stats {
    /// One row per probe: `(function, object)` in probe-id order.
    pub fn new(probes: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            rows: probes
                .into_iter()
                .map(|(function, object)| FunctionStats {
                    function,
                    object,
                    ..Default::default()
                })
                .collect(),
        }
    }

    pub fn add(&mut self, call: &Call) {
        let Some(row) = self.rows.get_mut(call.probe_id as usize) else {
            return;
        };
        let d = call.duration_ns();
        if call.returned {
            row.calls += 1;
            if call.ret == Some(0) {
                row.zero_returns += 1;
            }
        } else {
            row.in_flight += 1;
        }
        row.total_ns += d;
        row.self_ns += call.self_ns();
        row.max_ns = row.max_ns.max(d);
    }

    /// Rows with at least one call, busiest (total time) first.
    pub fn finish(mut self) -> Vec<FunctionStats> {
        for r in &mut self.rows {
            let n = r.calls + r.in_flight;
            r.mean_ns = r.total_ns.checked_div(n).unwrap_or(0);
        }
        let mut rows: Vec<FunctionStats> = self
            .rows
            .into_iter()
            .filter(|r| r.calls + r.in_flight > 0)
            .collect();
        rows.sort_by(|a, b| {
            b.total_ns
                .cmp(&a.total_ns)
                .then_with(|| a.function.cmp(&b.function))
        });
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(probe_id: u32, start: u64, end: u64, returned: bool, ret: u64) -> Call {
        Call {
            probe_id,
            tgid: 1,
            tid: 1,
            start_ns: start,
            end_ns: end,
            returned,
            depth: 0,
            args: [0; 3],
            ret: returned.then_some(ret),
            children_ns: 0,
        }
    }

    #[test]
    fn sums_means_maxima_and_in_flight() {
        let mut s = Stats::new([
            ("a".to_string(), "x".to_string()),
            ("b".into(), "x".into()),
            ("c".into(), "x".into()),
        ]);
        s.add(&call(0, 0, 10, true, 0));
        s.add(&call(0, 0, 30, true, 7));
        s.add(&call(1, 0, 1000, false, 0));
        let rows = s.finish();
        assert_eq!(rows.len(), 2, "c had no calls");
        assert_eq!(rows[0].function, "b");
        assert_eq!(
            (rows[0].calls, rows[0].in_flight, rows[0].mean_ns),
            (0, 1, 1000)
        );
        let a = &rows[1];
        assert_eq!(
            (a.calls, a.total_ns, a.mean_ns, a.max_ns, a.zero_returns),
            (2, 40, 20, 30, 1)
        );
    }
}
