//! What a probed call costs: the share of a request's work, from level 0's
//! observer effect when it probed enough calls to measure one, else the
//! prior; and where the figure comes from.
use std::collections::BTreeMap;

use flowdar_analysis::{CallTree, DiffRow};

use super::{CALIBRATION_CALLS, PRIOR_COST_PER_CALL, PRIOR_SOURCE};
use crate::experiment::{
    error::Result,
    results::{CallCost, PhaseResult},
};

pub(super) fn ratio(p: &PhaseResult, untraced_rps: Option<f64>) -> Option<f64> {
    let u = untraced_rps.filter(|u| *u > 0.0)?;
    Some(p.client.as_ref()?.requests_per_s / u)
}

/// Probed calls (entries: half the events, recorded or lost) per request
/// served in a phase.
pub(super) fn calls_per_request(p: &PhaseResult) -> f64 {
    ((p.events + p.lost) / 2) as f64 / requests(p)
}

fn requests(p: &PhaseResult) -> f64 {
    p.client.as_ref().map_or(0, |c| c.requests).max(1) as f64
}

/// Each function's calls per request in a phase's trace, the lost events'
/// share spread over them in proportion.
pub(super) fn measured_per_request(p: &PhaseResult) -> Result<BTreeMap<String, f64>> {
    let tree = CallTree::of(&p.trace)?;
    let scale = (p.events + p.lost) as f64 / p.events.max(1) as f64 / requests(p);
    Ok(tree
        .calls
        .into_iter()
        .map(|(f, n)| (f, n as f64 * scale))
        .collect())
}

/// The share of a request's work one probed call costs: from level 0's
/// observer effect when it probed enough to measure one, never below the
/// prior; and where the figure comes from.
pub(super) fn cost_per_call(normal: &PhaseResult, ratio0: Option<f64>) -> CallCost {
    let c0 = calls_per_request(normal);
    let prior = |why: String| CallCost {
        share: PRIOR_COST_PER_CALL,
        from: format!("{PRIOR_SOURCE}; {why}"),
    };
    match ratio0 {
        Some(r) if r > 0.0 && r < 1.0 && c0 >= CALIBRATION_CALLS => {
            let measured = (1.0 / r - 1.0) / c0;
            if measured >= PRIOR_COST_PER_CALL {
                CallCost {
                    share: measured,
                    from: format!(
                        "measured here by level 0 ({c0:.1} probed calls per request, {r:.2}x untraced)"
                    ),
                }
            } else {
                prior(format!("level 0 measured {measured:.3} here, below it"))
            }
        }
        Some(_) if c0 < CALIBRATION_CALLS => prior(format!(
            "level 0 probed {c0:.1} calls per request, too few to measure it here"
        )),
        Some(r) => prior(format!(
            "level 0 ran at {r:.2}x untraced, which measures nothing"
        )),
        None => prior("no untraced run to measure it against".into()),
    }
}

pub(super) fn normal_functions(rows: &[DiffRow]) -> Vec<String> {
    rows.iter().map(|r| r.function.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cheap_level_zero_cannot_make_calls_look_free() {
        assert_eq!(cost_per_call_of(1.0, 0.8).share, PRIOR_COST_PER_CALL);
        assert_eq!(cost_per_call_of(10.0, 0.99).share, PRIOR_COST_PER_CALL);
        // 0.5x with 10 calls per request: each call is a tenth of a request.
        assert!((cost_per_call_of(10.0, 0.5).share - 0.1).abs() < 1e-12);
    }

    #[test]
    fn the_budget_says_where_its_cost_per_call_comes_from() {
        assert_eq!(
            cost_per_call_of(10.0, 0.5).from,
            "measured here by level 0 (10.0 probed calls per request, 0.50x untraced)"
        );
        assert_eq!(
            cost_per_call_of(1.0, 0.8).from,
            "the prior measured on a 2-core VM: BENCHMARKS.md row b; level 0 probed 1.0 calls per request, too few to measure it here"
        );
        assert_eq!(
            cost_per_call_of(10.0, 0.99).from,
            "the prior measured on a 2-core VM: BENCHMARKS.md row b; level 0 measured 0.001 here, below it"
        );
        assert!(cost_per_call_of(10.0, 1.2)
            .from
            .ends_with("level 0 ran at 1.20x untraced, which measures nothing"));
    }

    fn cost_per_call_of(h0: f64, ratio: f64) -> CallCost {
        let p = PhaseResult {
            name: "normal".into(),
            trace: std::path::PathBuf::new(),
            duration_s: 1.0,
            client: Some(crate::server::ClientReport {
                requests: 1000,
                ..Default::default()
            }),
            client_error: None,
            attack: None,
            attack_report: None,
            events: (2.0 * h0 * 1000.0) as u64,
            lost: 0,
            attach_mode: String::new(),
        };
        cost_per_call(&p, Some(ratio))
    }
}
