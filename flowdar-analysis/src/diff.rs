//! Comparing two runs (a normal one and one under attack): per function,
//! call rates, mean and tail durations, their ratio, and a Mann-Whitney U
//! test on the duration distributions; ranked by the time each function
//! gained per second of capture, in-flight calls included as lower bounds.
use std::{collections::HashMap, path::Path};

use serde::Serialize;

use super::{scan, Call, FunctionStats, Stats};
use flowdar_trace::StoreError;

/// Durations kept per function for the rank test (reservoir sample):
/// bounded memory, and U on 20k values resolves any effect worth ranking.
const SAMPLE: usize = 20_000;
/// A change counts as significant below this p-value...
const P_SIGNIFICANT: f64 = 1e-3;
/// ...and when the mean moved by at least this factor.
const RATIO_SIGNIFICANT: f64 = 1.5;
/// A function the base run never called is significant from this many
/// calls (returned or in flight) in the test run, taking at least
/// [`NEW_SIGNIFICANT_NS_PER_S`]: there is no base sample for a rank test,
/// and a wait that only the attack brings (a lean trace's `poll` for a
/// slow client's headers) is the change to rank first.
pub const NEW_SIGNIFICANT_CALLS: u64 = 10;
/// ...1% of one worker's time: a code path only the attack's requests
/// take, short and cheap, is not a change worth ranking.
pub const NEW_SIGNIFICANT_NS_PER_S: f64 = 10_000_000.0;

/// One function in both runs. Field names are a stable interface
/// (`flowdar diff --json`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DiffRow {
    pub function: String,
    pub object: String,
    pub base_calls: u64,
    pub test_calls: u64,
    /// Calls per request (requests: Apache request-processing calls), when
    /// the run processed any.
    pub base_calls_per_request: Option<f64>,
    pub test_calls_per_request: Option<f64>,
    pub base_mean_ns: u64,
    pub test_mean_ns: u64,
    pub base_p99_ns: u64,
    pub test_p99_ns: u64,
    /// test_mean / base_mean (infinite when the base never called it).
    pub ratio: f64,
    /// Two-sided Mann-Whitney U p-value on the durations.
    pub p_value: f64,
    /// Calls still running at the end of the test run (durations are
    /// lower bounds).
    pub in_flight: u64,
    pub base_in_flight: u64,
    /// Function time per second of capture, test minus base: how much
    /// more of the server's time went here (the ranking key).
    pub impact_ns_per_s: f64,
    pub significant: bool,
    /// Of the mean, the time waiting on a backend server (mod_proxy's
    /// scheme handler in or below the call; 0 without `apache:backend`).
    pub base_backend_mean_ns: u64,
    pub test_backend_mean_ns: u64,
}

/// What the most affected function's slowdown was made of, in one
/// sentence, when the runs probed a backend: its added mean time spent
/// waiting on the backend, or in Apache itself. None without backend
/// probes or without a significant slowdown.
pub fn backend_verdict(rows: &[DiffRow]) -> Option<String> {
    let r = rows
        .iter()
        .find(|r| r.significant && r.test_mean_ns > r.base_mean_ns)?;
    if r.base_backend_mean_ns == 0 && r.test_backend_mean_ns == 0 {
        return None;
    }
    let added = r.test_mean_ns - r.base_mean_ns;
    let backend = r
        .test_backend_mean_ns
        .saturating_sub(r.base_backend_mean_ns);
    let ms = |ns: u64| ns as f64 / 1e6;
    let share = backend as f64 / added as f64;
    Some(if share >= 0.5 {
        format!(
            "The backend got slower: `{}` took {:.2} ms more a call ({:.2} -> {:.2} ms), {:.2} ms of it waiting on the backend (mod_proxy's scheme handler): {:.0}%.",
            r.function,
            ms(added),
            ms(r.base_mean_ns),
            ms(r.test_mean_ns),
            ms(backend),
            share * 100.0
        )
    } else {
        format!(
            "Apache got slower, not the backend: `{}` took {:.2} ms more a call ({:.2} -> {:.2} ms), of which {:.2} ms waiting on the backend ({:.0}%).",
            r.function,
            ms(added),
            ms(r.base_mean_ns),
            ms(r.test_mean_ns),
            ms(backend),
            share * 100.0
        )
    })
}

/// Per-run aggregates for the diff.
struct Run {
    stats: Vec<FunctionStats>,
    samples: HashMap<String, Vec<u64>>,
    requests: u64,
    duration_ns: u64,
}

/// Reservoir sampling with a fixed-seed xorshift: deterministic output.
struct Reservoir {
    seen: u64,
    rng: u64,
    values: Vec<u64>,
}

impl Reservoir {
    fn new() -> Self {
        Self {
            seen: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            values: Vec::new(),
        }
    }

    fn add(&mut self, v: u64) {
        self.seen += 1;
        if self.values.len() < SAMPLE {
            self.values.push(v);
            return;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let j = self.rng % self.seen;
        if (j as usize) < SAMPLE {
            self.values[j as usize] = v;
        }
    }
}

/// Functions whose calls are requests being processed.
const REQUEST_FUNCTIONS: &[&str] = &["ap_process_async_request", "ap_process_request"];

fn run(path: &Path) -> Result<Run, StoreError> {
    let header = flowdar_trace::TraceReader::open(path)?.header().clone();
    let mut stats = Stats::new(&header.probes);
    let mut res: Vec<Reservoir> = header.probes.iter().map(|_| Reservoir::new()).collect();
    let request_ids: Vec<u32> = header
        .probes
        .iter()
        .filter(|p| REQUEST_FUNCTIONS.contains(&p.function.as_str()))
        .map(|p| p.id)
        .collect();
    let mut requests = 0;
    let scanned = scan(
        path,
        |_| {},
        |c: &Call| {
            stats.add(c);
            if let Some(r) = res.get_mut(c.probe_id as usize) {
                r.add(c.duration_ns().max(1));
            }
            requests += u64::from(c.returned && request_ids.contains(&c.probe_id));
        },
    )?;
    let names: Vec<String> = header.probes.iter().map(|p| p.display_name()).collect();
    let mut samples = HashMap::new();
    for (i, r) in res.into_iter().enumerate() {
        samples
            .entry(names[i].clone())
            .or_insert_with(Vec::new)
            .extend(r.values);
    }
    Ok(Run {
        stats: stats.finish(),
        samples,
        requests,
        duration_ns: scanned.duration_ns().max(1),
    })
}

/// Diffs `test` against `base`, most affected first.
pub fn diff(base: &Path, test: &Path) -> Result<Vec<DiffRow>, StoreError> {
    // The two traces are independent: read them at the same time.
    let (b, t) = std::thread::scope(|s| {
        let b = s.spawn(|| run(base));
        let t = run(test);
        // A panic of the reader thread is this thread's panic.
        let b = b.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        (b, t)
    });
    let (b, t) = (b?, t?);
    let by_name = |r: &Run| -> HashMap<String, FunctionStats> {
        r.stats
            .iter()
            .map(|s| (s.function.clone(), s.clone()))
            .collect()
    };
    let (bs, ts) = (by_name(&b), by_name(&t));
    let mut names: Vec<&String> = bs.keys().chain(ts.keys()).collect();
    names.sort();
    names.dedup();
    let empty = FunctionStats::default();
    let per_s = |s: &FunctionStats, r: &Run| s.total_ns as f64 * 1e9 / r.duration_ns as f64;
    let per_req = |s: &FunctionStats, r: &Run| {
        (r.requests > 0).then(|| (s.calls + s.in_flight) as f64 / r.requests as f64)
    };
    let mut rows: Vec<DiffRow> = names
        .into_iter()
        .map(|name| {
            let (x, y) = (
                bs.get(name).unwrap_or(&empty),
                ts.get(name).unwrap_or(&empty),
            );
            let none = Vec::new();
            let p_value = mann_whitney_p(
                b.samples.get(name).unwrap_or(&none),
                t.samples.get(name).unwrap_or(&none),
            );
            let ratio = if x.mean_ns == 0 {
                if y.mean_ns == 0 {
                    1.0
                } else {
                    f64::INFINITY
                }
            } else {
                y.mean_ns as f64 / x.mean_ns as f64
            };
            let moved = ratio >= RATIO_SIGNIFICANT || ratio <= 1.0 / RATIO_SIGNIFICANT;
            // Probed in the base run too: a function only the test run
            // probed is not new, just unmeasured before.
            let new = b.samples.contains_key(name.as_str())
                && x.calls + x.in_flight == 0
                && y.calls + y.in_flight >= NEW_SIGNIFICANT_CALLS
                && per_s(y, &t) >= NEW_SIGNIFICANT_NS_PER_S;
            DiffRow {
                function: name.clone(),
                object: if y.object.is_empty() {
                    x.object.clone()
                } else {
                    y.object.clone()
                },
                base_calls: x.calls,
                test_calls: y.calls,
                base_calls_per_request: per_req(x, &b),
                test_calls_per_request: per_req(y, &t),
                base_mean_ns: x.mean_ns,
                test_mean_ns: y.mean_ns,
                base_p99_ns: x.p99_ns,
                test_p99_ns: y.p99_ns,
                ratio,
                p_value,
                in_flight: y.in_flight,
                base_in_flight: x.in_flight,
                impact_ns_per_s: per_s(y, &t) - per_s(x, &b),
                significant: (p_value < P_SIGNIFICANT && moved) || new,
                base_backend_mean_ns: backend_mean(x),
                test_backend_mean_ns: backend_mean(y),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        b.significant
            .cmp(&a.significant)
            .then(b.impact_ns_per_s.total_cmp(&a.impact_ns_per_s))
            .then_with(|| a.function.cmp(&b.function))
    });
    Ok(rows)
}

/// Backend time per call (in-flight calls included, as in `mean_ns`).
fn backend_mean(s: &FunctionStats) -> u64 {
    s.backend_ns.checked_div(s.calls + s.in_flight).unwrap_or(0)
}

/// Two-sided p-value of the Mann-Whitney U test (normal approximation with
/// tie and continuity corrections). 1 when either sample is empty or all
/// values are equal.
pub fn mann_whitney_p(a: &[u64], b: &[u64]) -> f64 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    if a.is_empty() || b.is_empty() {
        return 1.0;
    }
    let mut all: Vec<(u64, bool)> = a
        .iter()
        .map(|&v| (v, true))
        .chain(b.iter().map(|&v| (v, false)))
        .collect();
    all.sort_unstable_by_key(|&(v, _)| v);
    let n = all.len();
    let (mut r1, mut ties) = (0.0f64, 0.0f64);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        r1 += rank * all[i..=j].iter().filter(|x| x.1).count() as f64;
        i = j + 1;
    }
    let u1 = r1 - n1 * (n1 + 1.0) / 2.0;
    let nn = n1 + n2;
    let sigma = (n1 * n2 / 12.0 * ((nn + 1.0) - ties / (nn * (nn - 1.0)))).sqrt();
    if sigma == 0.0 || !sigma.is_finite() {
        return 1.0;
    }
    let z = ((u1 - n1 * n2 / 2.0).abs() - 0.5).max(0.0) / sigma;
    libm::erfc(z / std::f64::consts::SQRT_2).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_only_the_test_run_has_is_significant_and_ranks_first() {
        use flowdar_common::EventKind::{Entry, Exit};
        let e = |tid, ts, id, k| crate::stats::tests::ev(tid, ts, id, k, [0; 3]);
        // Base: short reads. Test: the same reads, and 12 long polls.
        let reads: Vec<_> = (0..50u64)
            .flat_map(|i| [e(1, 100 * i, 0, Entry), e(1, 100 * i + 2, 0, Exit)])
            .collect();
        let mut polls = reads.clone();
        polls.extend((0..12u64).flat_map(|i| {
            [
                e(2 + i as u32, 10_000, 1, Entry),
                e(2 + i as u32, 1_000_000, 1, Exit),
            ]
        }));
        let (_b, base) = crate::calltree::tests::write(&reads, &["read", "poll"]);
        let (_t, test) = crate::calltree::tests::write(&polls, &["read", "poll"]);
        let rows = diff(&base, &test).unwrap();
        assert_eq!(rows[0].function, "poll");
        assert!(
            rows[0].significant && rows[0].ratio.is_infinite(),
            "{rows:#?}"
        );
        // Fewer calls than the bar: not enough to call it a change.
        let few: Vec<_> = reads
            .iter()
            .copied()
            .chain([e(2, 10_000, 1, Entry), e(2, 1_000_000, 1, Exit)])
            .collect();
        let (_f, few) = crate::calltree::tests::write(&few, &["read", "poll"]);
        let rows = diff(&base, &few).unwrap();
        let poll = rows.iter().find(|r| r.function == "poll").unwrap();
        assert!(!poll.significant, "{poll:#?}");
    }

    #[test]
    fn identical_samples_are_not_significant() {
        let a: Vec<u64> = (1..=500).collect();
        assert!(mann_whitney_p(&a, &a) > 0.9);
        assert_eq!(mann_whitney_p(&[5; 10], &[5; 10]), 1.0);
        assert_eq!(mann_whitney_p(&[], &a), 1.0);
    }

    #[test]
    fn the_verdict_says_whether_the_backend_or_apache_got_slower() {
        let row = |base: u64, test: u64, base_backend: u64, test_backend: u64| DiffRow {
            function: "ap_invoke_handler".into(),
            object: "apache2".into(),
            base_calls: 20,
            test_calls: 20,
            base_calls_per_request: None,
            test_calls_per_request: None,
            base_mean_ns: base,
            test_mean_ns: test,
            base_p99_ns: base,
            test_p99_ns: test,
            ratio: test as f64 / base as f64,
            p_value: 1e-5,
            in_flight: 0,
            base_in_flight: 0,
            impact_ns_per_s: 1.0,
            significant: true,
            base_backend_mean_ns: base_backend,
            test_backend_mean_ns: test_backend,
        };
        let slower_backend =
            backend_verdict(&[row(51_000_000, 151_000_000, 50_000_000, 150_000_000)]).unwrap();
        assert!(
            slower_backend
                .starts_with("The backend got slower: `ap_invoke_handler` took 100.00 ms more"),
            "{slower_backend}"
        );
        assert!(slower_backend.ends_with("100%."), "{slower_backend}");
        let slower_apache =
            backend_verdict(&[row(51_000_000, 151_000_000, 50_000_000, 60_000_000)]).unwrap();
        assert!(
            slower_apache.starts_with("Apache got slower, not the backend"),
            "{slower_apache}"
        );
        assert_eq!(
            backend_verdict(&[row(1_000, 3_000, 0, 0)]),
            None,
            "no backend probes"
        );
        let faster = row(151_000_000, 51_000_000, 150_000_000, 50_000_000);
        assert_eq!(backend_verdict(&[faster]), None, "nothing got slower");
    }

    #[test]
    fn shifted_samples_are() {
        let a: Vec<u64> = (1..=200).collect();
        let b: Vec<u64> = (1..=200).map(|v| v * 100).collect();
        assert!(mann_whitney_p(&a, &b) < 1e-6);
        // Textbook case: U = 3 for (1,2,3,4) vs (5,6,7,8)... fully separated
        // n=4 each: exact p = 0.029; the normal approximation gives ~0.04.
        let p = mann_whitney_p(&[1, 2, 3, 4], &[5, 6, 7, 8]);
        assert!((0.02..0.06).contains(&p), "{p}");
    }
}
