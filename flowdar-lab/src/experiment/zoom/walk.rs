//! The walk down the discovered call tree: from the tail of the chain
//! found so far, the next set of functions to probe within the budget, and
//! the chain extended by what a level found significant.
use std::collections::{BTreeMap, BTreeSet};

use flowdar_analysis::{CallTree, DiffRow};

use super::MAX_DEPTH;
use crate::experiment::{
    error::Result,
    results::{Discovery, Dropped},
};

/// The walk down the discovered call tree: the chain found so far, and
/// what was tried below its tail.
pub(super) struct Walk {
    /// Who calls whom: both windows' edges (the attack's connections take
    /// paths the normal load may not).
    pub(super) shape: CallTree,
    /// Rates and times: the normal load's window.
    tree: CallTree,
    /// Where the attack held workers when its window closed.
    held: CallTree,
    requests: u64,
    budget: f64,
    pub(super) chain: Vec<String>,
    /// Functions below the current tail already probed (or over the budget
    /// on their own): a tail is searched in batches until none is left.
    tried: BTreeSet<String>,
    /// Of `tried`, what costs more than the whole budget alone (its calls
    /// per request): never probed, and named when the walk stops short
    /// of where the attack held workers.
    too_costly: BTreeMap<String, f64>,
}

/// The function with calls in flight at the end of `held` that no other
/// such function calls: where held workers' stacks begin (the most held
/// first, then by name).
fn outermost_held(held: &CallTree) -> Option<String> {
    let open: Vec<(&String, u64)> = held
        .open_at_end
        .iter()
        .filter(|(f, n)| **n > 0 && !crate::experiment::held::IDLE.contains(&f.as_str()))
        .map(|(f, n)| (f, *n))
        .collect();
    open.iter()
        .filter(|(f, _)| {
            !open
                .iter()
                .any(|(g, _)| g != f && held.callees(g).iter().any(|(c, _)| c == f))
        })
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(f, _)| (*f).clone())
}

impl Walk {
    /// The chain starts at the most affected function of level 0 that got
    /// slower, preferring one the discovery sees calling something.
    pub(super) fn new(
        discovery: &Discovery,
        attack_discovery: &Discovery,
        significant: &[&DiffRow],
        budget: f64,
    ) -> Result<Self> {
        let tree = CallTree::of(&discovery.trace)?;
        let held = CallTree::of(&attack_discovery.trace)?;
        let mut shape = tree.clone();
        shape.add_edges(&held);
        // A lean level 0 ranks system calls and a call of no length, none
        // of which the tree has callees for: start from the outermost
        // function the attack held workers in.
        let start = significant
            .iter()
            .find(|r| !shape.callees(&r.function).is_empty())
            .map(|r| r.function.clone())
            .or_else(|| outermost_held(&held))
            .unwrap_or_else(|| significant[0].function.clone());
        Ok(Self {
            chain: vec![start],
            shape,
            tree,
            held,
            requests: discovery.requests,
            budget,
            tried: BTreeSet::new(),
            too_costly: BTreeMap::new(),
        })
    }

    /// The calls per request a level may probe.
    pub(super) fn budget(&self) -> f64 {
        self.budget
    }

    /// Back to `budget` after a rerun showed noise, not cost: what the
    /// lowered budget left out for good but fits `budget` may be tried by
    /// a later batch again.
    pub(super) fn restore_budget(&mut self, budget: f64, dropped: &[Dropped]) {
        self.budget = budget;
        self.release(dropped);
    }

    /// A refit that led to no rerun (nothing fitted): what it set aside
    /// was probed by the level after all (the lowered budget stays, for
    /// the levels after).
    pub(super) fn probed_after_all(&mut self, dropped: &[Dropped]) {
        for d in dropped {
            self.too_costly.remove(&d.function);
        }
    }

    /// What the budget left out but fits it alone: a later batch may try it.
    fn release(&mut self, dropped: &[Dropped]) {
        for d in dropped
            .iter()
            .filter(|d| d.calls_per_request <= self.budget)
        {
            self.tried.remove(&d.function);
            self.too_costly.remove(&d.function);
        }
    }

    /// What the budget left out that cannot fit it even alone.
    fn set_aside(&mut self, dropped: &[Dropped]) {
        for d in dropped.iter().filter(|d| d.calls_per_request > self.budget) {
            self.tried.insert(d.function.clone());
            self.too_costly
                .insert(d.function.clone(), d.calls_per_request);
        }
    }

    /// The nearest function below `tail` that the attack held workers in
    /// and that costs more than the budget alone, with its calls per
    /// request.
    fn held_over_budget(&self, tail: &str) -> Option<(String, f64)> {
        self.shape
            .below(tail, usize::MAX)
            .into_iter()
            .filter(|(f, _)| self.held_now(f) > 0)
            .find_map(|(f, _)| Some((f.clone(), *self.too_costly.get(&f)?)))
    }

    pub(super) fn tail(&self) -> &str {
        self.chain.last().map_or("", String::as_str)
    }

    fn held_now(&self, f: &str) -> u64 {
        self.held.open_at_end.get(f).copied().unwrap_or(0)
    }

    /// The next level's set below the tail, what the budget left out, and
    /// its estimated calls per request; or why the walk stops.
    pub(super) fn next_set(
        &mut self,
    ) -> std::result::Result<(Vec<String>, Vec<Dropped>, f64), String> {
        let tail = self.tail().to_string();
        // Near the tail, and at any depth what the attack held workers in.
        let below: Vec<(String, usize)> = self
            .shape
            .below(&tail, usize::MAX)
            .into_iter()
            .filter(|(f, d)| (*d <= MAX_DEPTH || self.held_now(f) > 0) && !self.tried.contains(f))
            .collect();
        if below.is_empty() {
            return Err(if self.tried.is_empty() {
                format!("`{tail}` called no probed function in the discovery window (a leaf)")
            } else if let Some((f, calls)) = self.held_over_budget(&tail) {
                format!(
                    "where the attack held workers below `{tail}`, `{f}` alone costs more than the budget ({calls:.1} probed calls per request, the budget {:.1}): a larger --budget reaches it",
                    self.budget
                )
            } else {
                format!(
                    "nothing below `{tail}` (up to {MAX_DEPTH} calls down, or where the attack held workers) got significantly slower under attack"
                )
            });
        }
        let requests = self.requests.max(1) as f64;
        let per_request = |f: &str| self.tree.calls.get(f).copied().unwrap_or(0) as f64 / requests;
        let (set, dropped, estimate) = within_budget(
            &below,
            self.budget,
            &per_request,
            &|f| self.tree.mean_ns(f),
            &|f| self.held_now(f),
        );
        if set.is_empty() {
            return Err(format!(
                "what lies below `{tail}` costs more than the budget ({:.1} probed calls per request)",
                self.budget
            ));
        }
        self.tried.extend(set.iter().cloned());
        // What cannot fit even alone will never be probed.
        self.set_aside(&dropped);
        Ok((set, dropped, estimate))
    }

    /// A level's set fitted again to the budget that its normal phase's
    /// throughput allows (`budget`, kept for the levels after it when
    /// smaller), by the calls per request that phase `measured`. What no
    /// longer fits but would alone may be tried by a later batch.
    pub(super) fn refit(
        &mut self,
        set: &[String],
        budget: f64,
        measured: &dyn Fn(&str) -> f64,
    ) -> (Vec<String>, Vec<Dropped>, f64) {
        self.budget = self.budget.min(budget);
        let tail = self.tail().to_string();
        let depth: std::collections::BTreeMap<String, usize> =
            self.shape.below(&tail, usize::MAX).into_iter().collect();
        let set: Vec<(String, usize)> = set
            .iter()
            .map(|f| (f.clone(), depth.get(f).copied().unwrap_or(usize::MAX)))
            .collect();
        let (fit, dropped, spent) = within_budget(
            &set,
            self.budget,
            measured,
            &|f| self.tree.mean_ns(f),
            &|f| self.held_now(f),
        );
        self.release(&dropped);
        self.set_aside(&dropped);
        (fit, dropped, spent)
    }

    /// Extends the chain with a level's significant rows; a new tail
    /// forgets what was tried that does not lie below it.
    pub(super) fn advance(&mut self, rows: &[DiffRow]) {
        let before = self.chain.len();
        extend(&mut self.chain, rows, &self.shape);
        if self.chain.len() > before {
            let shape = &self.shape;
            let tail = self.chain.last().map_or("", String::as_str);
            self.tried.retain(|f| shape.distance(tail, f).is_some());
            let tried = &self.tried;
            self.too_costly.retain(|f, _| tried.contains(f));
        }
    }
}

/// The functions below a tail that fit the budget (the tail itself was
/// measured by the level that found it). First those the attack held
/// workers in (nearest first), then the others nearest first, the longest
/// calls first within a depth; one that does not fit is skipped for the
/// cheaper ones after it.
fn within_budget(
    below: &[(String, usize)],
    budget: f64,
    per_request: &dyn Fn(&str) -> f64,
    mean_ns: &dyn Fn(&str) -> u64,
    held: &dyn Fn(&str) -> u64,
) -> (Vec<String>, Vec<Dropped>, f64) {
    let mut set = Vec::new();
    let mut spent = 0.0;
    let mut dropped = Vec::new();
    let mut ranked: Vec<(&str, bool, usize, f64, u64)> = below
        .iter()
        .map(|(f, d)| (f.as_str(), held(f) == 0, *d, per_request(f), mean_ns(f)))
        .collect();
    ranked.sort_by(|a, b| {
        (a.1, a.2)
            .cmp(&(b.1, b.2))
            .then(b.4.cmp(&a.4))
            .then(a.0.cmp(b.0))
    });
    for (f, _, _, calls, mean) in ranked {
        if spent + calls <= budget {
            spent += calls;
            set.push(f.to_string());
        } else {
            dropped.push(Dropped {
                function: f.to_string(),
                calls_per_request: calls,
                mean_ns: mean,
            });
        }
    }
    dropped.sort_by(|a, b| b.calls_per_request.total_cmp(&a.calls_per_request));
    (set, dropped, spent)
}

/// Appends to `chain` the significant functions of `rows` below its tail,
/// nearest first (by the discovered tree), the most affected among equals.
fn extend(chain: &mut Vec<String>, rows: &[DiffRow], tree: &CallTree) {
    loop {
        let tail = chain.last().expect("non-empty chain").clone();
        let taken: BTreeSet<&String> = chain.iter().collect();
        let next = rows
            .iter()
            // Slower under attack: what got faster explains nothing here;
            // nor does a callee only the attack ran (diff's "new" rows: a
            // code path of the attack's requests, not what slowed down).
            .filter(|r| {
                r.significant
                    && r.ratio > 1.0
                    && r.ratio.is_finite()
                    && !taken.contains(&r.function)
            })
            .filter_map(|r| Some((tree.distance(&tail, &r.function)?, r)))
            .min_by(|(da, a), (db, b)| {
                da.cmp(db)
                    .then(b.impact_ns_per_s.total_cmp(&a.impact_ns_per_s))
            })
            .map(|(_, r)| r.function.clone());
        match next {
            Some(f) => chain.push(f),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_takes_callers_first_and_skips_what_does_not_fit() {
        let below = vec![
            ("ap_get_mime_headers_core".to_string(), 1),
            ("apr_pool_create".to_string(), 1),
            ("ap_rgetline_core".to_string(), 2),
            ("apr_socket_recv".to_string(), 3),
        ];
        let calls = |f: &str| match f {
            "ap_get_mime_headers_core" => 1.0,
            "apr_pool_create" => 3.0,
            "ap_rgetline_core" => 2.5,
            "apr_socket_recv" => 1.0,
            _ => 0.0,
        };
        let mean = |f: &str| match f {
            "ap_get_mime_headers_core" => 9_000,
            "apr_pool_create" => 300,
            "ap_rgetline_core" => 2_000,
            "apr_socket_recv" => 1_500,
            _ => 0,
        };
        let (set, dropped, spent) = within_budget(&below, 5.0, &calls, &mean, &|_| 0);
        // Depth 1 first (the long call before the short one), then what
        // still fits deeper down: the 2.5 calls of ap_rgetline_core do not.
        assert_eq!(
            set,
            [
                "ap_get_mime_headers_core",
                "apr_pool_create",
                "apr_socket_recv"
            ]
        );
        let names: Vec<&str> = dropped.iter().map(|d| d.function.as_str()).collect();
        assert_eq!(names, ["ap_rgetline_core"]);
        assert_eq!(spent, 5.0);
        // Where the attack held workers goes first, however deep.
        let held = |f: &str| u64::from(f == "apr_socket_recv" || f == "ap_rgetline_core") * 150;
        let (set, _, spent) = within_budget(&below, 5.0, &calls, &mean, &held);
        assert_eq!(
            set,
            [
                "ap_rgetline_core",
                "apr_socket_recv",
                "ap_get_mime_headers_core"
            ]
        );
        assert_eq!(spent, 4.5);
    }

    /// ap_get_mime_headers_core calls apr_table_compress (half a call a
    /// request) and apr_socket_recv (1.7 a request, where the attack held
    /// 150 workers), with a budget of 1.2 calls a request.
    fn walk_below_the_header_read() -> Walk {
        let mut tree = CallTree::default();
        for (f, n) in [
            ("ap_get_mime_headers_core", 100),
            ("apr_table_compress", 50),
            ("apr_socket_recv", 170),
        ] {
            tree.calls.insert(f.into(), n);
        }
        tree.edges.insert(
            "ap_get_mime_headers_core".into(),
            [
                ("apr_table_compress".into(), 50),
                ("apr_socket_recv".into(), 170),
            ]
            .into(),
        );
        let mut held = CallTree::default();
        held.open_at_end.insert("apr_socket_recv".into(), 150);
        Walk {
            shape: tree.clone(),
            tree,
            held,
            requests: 100,
            budget: 1.2,
            chain: vec!["ap_get_mime_headers_core".into()],
            tried: BTreeSet::new(),
            too_costly: BTreeMap::new(),
        }
    }

    #[test]
    fn a_held_function_over_the_budget_alone_is_named_where_the_walk_stops() {
        let mut walk = walk_below_the_header_read();
        let (set, dropped, _) = walk.next_set().unwrap();
        assert_eq!(set, ["apr_table_compress"]);
        assert_eq!(dropped.len(), 1);
        let why = walk.next_set().unwrap_err();
        assert_eq!(
            why,
            "where the attack held workers below `ap_get_mime_headers_core`, `apr_socket_recv` alone costs more than the budget (1.7 probed calls per request, the budget 1.2): a larger --budget reaches it"
        );
        // A budget restored after a noisy rerun lets it be tried again.
        walk.restore_budget(2.0, &dropped);
        let (set, _, _) = walk.next_set().unwrap();
        assert_eq!(set, ["apr_socket_recv"]);
    }
}
