//! Per-function statistics over the calls of a trace, with HDR histograms
//! for the percentiles (constant memory whatever the trace length).
use hdrhistogram::Histogram;
use serde::Serialize;

use super::Call;
use flowdar_trace::{ErrorRule, TraceProbe};

/// Statistics of one probed function. Field names are a stable interface
/// (`flowdar stats --json`). Durations of in-flight calls count as lower
/// bounds (their time so far) in every duration field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FunctionStats {
    pub function: String,
    /// The file the function lives in.
    pub object: String,
    /// Calls that returned inside the capture.
    pub calls: u64,
    /// Calls still running when capture ended.
    pub in_flight: u64,
    /// Returned calls whose return value the probe marks as failure.
    pub errors: u64,
    pub total_ns: u64,
    pub self_ns: u64,
    pub mean_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    /// Returned calls whose return value was 0 (NULL, APR_SUCCESS...).
    pub zero_returns: u64,
    /// Of `total_ns`, the time waiting on a backend server (mod_proxy's
    /// scheme handler, in the call or below it: `apache:backend`); the
    /// rest is Apache's own.
    pub backend_ns: u64,
}

struct Acc {
    row: FunctionStats,
    hist: Histogram<u32>,
    rule: Option<ErrorRule>,
}

/// Accumulates [`FunctionStats`] per probe id.
pub struct Stats {
    rows: Vec<Acc>,
}

/// 1 ns to 1 hour at 3 significant digits: ~0.1 % error, ~20 KiB each.
#[expect(
    clippy::expect_used,
    reason = "new_with_bounds() fails only for bounds or digits out of range, and these are constants"
)]
fn histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

impl Stats {
    /// One row per probe of the trace's probe table.
    pub fn new(probes: &[TraceProbe]) -> Self {
        Self {
            rows: probes
                .iter()
                .map(|p| Acc {
                    row: FunctionStats {
                        function: p.display_name(),
                        object: p.object_name(),
                        ..Default::default()
                    },
                    hist: histogram(),
                    rule: p.capture.errors,
                })
                .collect(),
        }
    }

    pub fn add(&mut self, call: &Call) {
        let Some(acc) = self.rows.get_mut(call.probe_id as usize) else {
            return;
        };
        let row = &mut acc.row;
        let d = call.duration_ns();
        if call.returned {
            row.calls += 1;
            let ret = call.ret.unwrap_or(0);
            row.zero_returns += u64::from(ret == 0);
            row.errors += u64::from(acc.rule.is_some_and(|r| r.is_error(ret)));
        } else {
            row.in_flight += 1;
        }
        row.total_ns += d;
        row.backend_ns += call.backend_ns;
        row.self_ns += call.self_ns();
        row.max_ns = row.max_ns.max(d);
        acc.hist.saturating_record(d.max(1));
    }

    /// Rows with at least one call, busiest (total time) first.
    pub fn finish(self) -> Vec<FunctionStats> {
        let mut rows: Vec<FunctionStats> = self
            .rows
            .into_iter()
            .filter(|a| a.row.calls + a.row.in_flight > 0)
            .map(|mut a| {
                let n = a.row.calls + a.row.in_flight;
                a.row.mean_ns = a.row.total_ns.checked_div(n).unwrap_or(0);
                let q = |p: f64| a.hist.value_at_quantile(p).min(a.row.max_ns);
                a.row.p50_ns = q(0.5);
                a.row.p90_ns = q(0.9);
                a.row.p99_ns = q(0.99);
                a.row
            })
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
pub(crate) mod tests {
    use super::*;
    use flowdar_trace::Capture;

    pub(crate) fn probe(id: u32, name: &str, errors: Option<ErrorRule>) -> TraceProbe {
        TraceProbe {
            id,
            function: name.into(),
            path: "/usr/sbin/apache2".into(),
            attach_path: "/usr/sbin/apache2".into(),
            address: 0,
            file_offset: 0,
            capture: Capture {
                errors,
                ..Default::default()
            },
            optional: false,
            source: None,
            params: Vec::new(),
        }
    }

    /// An event of thread `tid` of process 1.
    pub(crate) fn ev(
        tid: u32,
        ts: u64,
        probe_id: u32,
        kind: flowdar_common::EventKind,
        args: [u64; 3],
    ) -> flowdar_common::Event {
        flowdar_common::Event {
            tgid: 1,
            tid,
            ts_ns: ts,
            probe_id,
            kind: kind as u32,
            args,
        }
    }

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
            backend_ns: 0,
        }
    }

    #[test]
    fn sums_means_percentiles_errors_and_in_flight() {
        let mut s = Stats::new(&[
            probe(0, "a", Some(ErrorRule::Zero)),
            probe(1, "b", None),
            probe(2, "c", None),
        ]);
        for i in 1..=100 {
            s.add(&call(0, 0, i * 1000, true, if i % 10 == 0 { 0 } else { 7 }));
        }
        s.add(&call(1, 0, 5_000_000, false, 0));
        let rows = s.finish();
        assert_eq!(rows.len(), 2, "c had no calls");
        let b = &rows[1];
        assert_eq!(
            (
                b.function.as_str(),
                b.calls,
                b.in_flight,
                b.mean_ns,
                b.p99_ns
            ),
            ("b", 0, 1, 5_000_000, 5_000_000)
        );
        let a = &rows[0];
        assert_eq!((a.calls, a.errors, a.zero_returns), (100, 10, 10));
        assert_eq!(
            (a.total_ns, a.mean_ns, a.max_ns),
            (5_050_000, 50_500, 100_000)
        );
        // HDR at 3 significant digits: within 0.1 %.
        for (got, want) in [(a.p50_ns, 50_000), (a.p90_ns, 90_000), (a.p99_ns, 99_000)] {
            assert!(got.abs_diff(want) <= want / 1000 + 1, "{got} vs {want}");
        }
    }
}
