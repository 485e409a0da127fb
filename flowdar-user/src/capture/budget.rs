//! `record --budget PCT`: keep the deepest set of probes whose estimated
//! cost fits the budget. A probe's cost is its calls times one probed
//! call's measured cost (for a function that begins as it does), as a
//! share of the server's CPU time, both from a short estimate window with
//! every probe in place. The cost is an
//! isolated call's, an upper bound inside servers, so the set kept is
//! smaller than the budget would allow, never larger. The dearest functions
//! (calls times their own price) are dropped first; at one price a caller
//! is never hotter than its callee's share of it, so callers stay, and
//! between two functions as dear the shorter (usually the callee) goes
//! first.

/// One probe as the estimate window saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeLoad {
    pub function: String,
    /// Calls in the window (recorded, or dropped as short).
    pub calls: u64,
    /// Mean duration of its calls in the window (ns).
    pub mean_ns: u64,
    /// What one probed call of it costs (by how it begins).
    pub ns_per_call: u64,
}

/// What the budget kept and dropped, with the estimates behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetChoice {
    /// Indexes into the loads, in their order.
    pub kept: Vec<usize>,
    /// Indexes into the loads, dearest first, with the overhead (a
    /// fraction) each would have added on its own.
    pub dropped: Vec<(usize, f64)>,
    /// Estimated overhead (a fraction) of every probe, and of the kept set.
    pub all: f64,
    pub kept_overhead: f64,
}

/// Chooses the probes that fit `budget` (a fraction: 0.05 for 5%).
/// `own_work_ns` is the server's CPU time in the window without the
/// probes' share; it must be positive.
pub fn choose(loads: &[ProbeLoad], own_work_ns: u64, budget: f64) -> BudgetChoice {
    let cost = |l: &ProbeLoad| (l.calls * l.ns_per_call) as f64 / own_work_ns.max(1) as f64;
    let all: f64 = loads.iter().map(cost).sum();
    let mut order: Vec<usize> = (0..loads.len()).collect();
    // The dearest first: calls times each one's own price (a function
    // whose first instruction is single-stepped costs ~20 times one that
    // begins with a `push`, so the most called is not always the dearest).
    order.sort_by(|&a, &b| {
        let dear = |i: usize| loads[i].calls.saturating_mul(loads[i].ns_per_call);
        dear(b)
            .cmp(&dear(a))
            .then(loads[a].mean_ns.cmp(&loads[b].mean_ns))
            .then(a.cmp(&b))
    });
    let mut total = all;
    let mut dropped = Vec::new();
    for i in order {
        if total <= budget + 1e-9 {
            break;
        }
        let c = cost(&loads[i]);
        total -= c;
        dropped.push((i, c));
    }
    let gone: std::collections::HashSet<usize> = dropped.iter().map(|(i, _)| *i).collect();
    BudgetChoice {
        kept: (0..loads.len()).filter(|i| !gone.contains(i)).collect(),
        dropped,
        all,
        kept_overhead: total.max(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(function: &str, calls: u64, mean_ns: u64) -> ProbeLoad {
        ProbeLoad {
            function: function.into(),
            calls,
            mean_ns,
            ns_per_call: 10_000,
        }
    }

    #[test]
    fn the_hottest_go_first_until_the_rest_fits() {
        // 10 µs a call against 1 s of the server's CPU: 1000 calls cost 1%.
        let loads = [
            load("ap_process_request", 1000, 500_000),
            load("apr_bucket_alloc", 40_000, 300),
            load("ap_read_request", 1000, 80_000),
            load("apr_socket_recv", 3000, 20_000),
        ];
        let c = choose(&loads, 1_000_000_000, 0.05);
        assert_eq!(c.dropped.iter().map(|d| d.0).collect::<Vec<_>>(), vec![1]);
        assert_eq!(c.kept, vec![0, 2, 3]);
        assert!((c.all - 0.45).abs() < 1e-9);
        assert!((c.kept_overhead - 0.05).abs() < 1e-9);
        let tight = choose(&loads, 1_000_000_000, 0.015);
        // Then apr_socket_recv (3%), then of the two with 1000 calls the
        // shorter one, ap_read_request (the callee).
        assert_eq!(
            tight.dropped.iter().map(|d| d.0).collect::<Vec<_>>(),
            vec![1, 3, 2]
        );
        assert_eq!(tight.kept, vec![0]);
    }

    #[test]
    fn a_function_that_begins_with_a_push_is_priced_at_its_own_cost() {
        // Against 1 s of CPU: 1000 single-stepped calls cost 1%, 1500 with
        // a push (900 ns a call) 0.135%: the more called stays.
        let push = ProbeLoad {
            ns_per_call: 900,
            ..load("apr_socket_recv", 1500, 20_000)
        };
        let loads = [load("ap_run_handler", 1000, 30_000), push];
        let c = choose(&loads, 1_000_000_000, 0.005);
        assert!((c.all - 0.01135).abs() < 1e-9, "{}", c.all);
        assert_eq!(c.kept, vec![1]);
        assert_eq!(c.dropped.iter().map(|d| d.0).collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn everything_is_kept_within_budget_and_nothing_fits_a_zero_budget() {
        let cheap = |f: &str, calls| ProbeLoad {
            ns_per_call: 1000,
            ..load(f, calls, 1)
        };
        let loads = [cheap("a", 10), cheap("b", 20)];
        let c = choose(&loads, 1_000_000_000, 0.05);
        assert_eq!((c.kept.len(), c.dropped.len()), (2, 0));
        let none = choose(&loads, 1_000_000_000, 0.0);
        assert!(none.kept.is_empty());
        assert_eq!(none.dropped.len(), 2);
    }
}
