//! The report's zoom section: the chain below the most affected function,
//! link by link, and what each level cost.
use std::fmt::Write as _;

use flowdar_analysis::units::ns;

use super::ratio;
use crate::experiment::Zoom;

/// The zoom's chain, link by link, and what each level cost.
pub(super) fn zoom_section(md: &mut String, z: &Zoom, variant: &str) {
    let _ = writeln!(
        md,
        "\n## Zoom: the chain below the most affected function (variant `{variant}`)\n\n{}\n\nStopped: {}.\n",
        if z.chain.is_empty() {
            "No chain: nothing changed significantly.".to_string()
        } else {
            z.chain.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(" → ")
        },
        z.stopped
    );
    let _ = writeln!(md, "| link | level | mean normal | mean attack | ratio | in flight at end | p |\n|---|---:|---:|---:|---:|---:|---:|");
    for f in &z.chain {
        // The level that first probed it below an earlier link.
        let found = z.levels.iter().find_map(|l| {
            l.rows
                .iter()
                .find(|r| &r.function == f && r.significant)
                .map(|r| (l.level, r))
        });
        if let Some((level, r)) = found {
            let _ = writeln!(
                md,
                "| `{f}` | {level} | {} | {} | {} | {} | {:.1e} |",
                ns(r.base_mean_ns),
                ns(r.test_mean_ns),
                ratio(r.ratio),
                r.in_flight,
                r.p_value
            );
        }
    }
    for d in [&z.discovery, &z.attack_discovery].into_iter().flatten() {
        let _ = writeln!(
            md,
            "\nDiscovery window under {}: {} functions attached ({} refused by the kernel) for {:.1} s, {:.2} s of degraded service in all (attach {:.2} s, detach {:.2} s){}.",
            d.under,
            d.functions,
            d.refused,
            d.window_s,
            d.degraded_s,
            d.attach_s,
            d.detach_s,
            d.requests_per_s
                .map_or(String::new(), |r| format!(", {r:.0} requests/s meanwhile"))
        );
    }
    let _ = writeln!(
        md,
        "\n| level | functions | left out for the budget | est. probed calls/request (budget) | normal-phase throughput vs untraced |\n|---:|---:|---:|---:|---:|"
    );
    for l in &z.levels {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.1} ({:.1}) | {} |",
            l.level,
            l.functions.len(),
            l.dropped.len(),
            l.estimated_calls_per_request,
            l.budget_calls_per_request,
            l.throughput_ratio
                .map_or("-".into(), |r| format!("{r:.2}x"))
        );
    }
    let _ = writeln!(
        md,
        "\nBudget: a probed call taken to cost {:.3} of a request's work ({}).",
        z.call_cost.share, z.call_cost.from
    );
    for l in &z.levels {
        if let Some(u) = l.untraced_again_rps {
            let _ = writeln!(
                md,
                "\nLevel {}'s normal phase looked over its budget against the experiment's untraced run: the untraced load was measured again beside it ({u:.0} requests/s), and the level's ratios are against that.",
                l.level
            );
        }
        if let Some(why) = l.over_budget {
            let _ = writeln!(
                md,
                "\nLevel {}'s normal phase stayed over its budget ({}): {}.",
                l.level,
                l.throughput_ratio
                    .map_or("-".into(), |r| format!("{r:.2}x untraced")),
                why.describe()
            );
        }
        for (i, r) in l.reruns.iter().enumerate() {
            let next = l
                .reruns
                .get(i + 1)
                .map_or(l.functions.len(), |n| n.functions);
            let _ = writeln!(
                md,
                "\nLevel {}'s normal phase served {:.2}x untraced with {} functions ({:.1} probed calls per request measured, a call costing {:.3} of a request's work): run again with {} within {:.1} calls per request.",
                l.level,
                r.throughput_ratio,
                r.functions,
                r.measured_calls_per_request,
                r.cost_per_call,
                next,
                r.budget_calls_per_request
            );
        }
    }
}
