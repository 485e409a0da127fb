//! The report's tables: the client's figures per variant and phase, the
//! main diff rows side by side, and each variant's full diff.
use std::fmt::Write as _;

use flowdar_analysis::{
    units::{ns, signed_ns as signed},
    DiffRow,
};

use super::{ratio, rps};
use crate::{
    experiment::{PhaseResult, VariantResult},
    server::ClientReport,
};

/// Rows of the diff shown in the reports and on the terminal.
pub(super) const TOP: usize = 12;
/// Functions of the main comparison rows: the read path (a lean trace's
/// are its read system calls).
const READ_PATH: &[&str] = &["ap_read_request", "apr_socket_recv", "poll", "read"];

pub(super) fn client_table(md: &mut String, variants: &[VariantResult]) {
    let _ = writeln!(md, "## Client side (wall time; timeouts count as failures)\n\n`untraced` is the normal load again with nothing attached; `vs untraced` is each traced phase's throughput over it (for the normal phase: the observer effect).\n\n| variant | phase | requests/s | vs first phase | vs untraced | p50 | p99 | requests | connect failures | request failures | attack |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for v in variants {
        let first = rps(&v.phases[0]);
        if let Some(u) = &v.untraced {
            client_row(
                md,
                [&v.name, &format!("untraced ({})", u.phase), "-", "-"],
                u.client.as_ref(),
                "none",
            );
        }
        for p in &v.phases {
            let vs_first = if first > 0.0 {
                format!("{:.1}%", 100.0 * rps(p) / first)
            } else {
                "-".into()
            };
            let vs_untraced = v
                .throughput_ratio(p)
                .map_or("-".into(), |r| format!("{r:.2}x"));
            let attack = p
                .attack
                .as_deref()
                .map_or("none".into(), |a| format!("`{a}`"));
            client_row(
                md,
                [&v.name, &p.name, &vs_first, &vs_untraced],
                p.client.as_ref(),
                &attack,
            );
        }
    }
}

/// One row of the client table: `[variant, phase, vs first, vs untraced]`,
/// then the client's figures and the attack.
fn client_row(md: &mut String, lead: [&str; 4], c: Option<&ClientReport>, attack: &str) {
    let opt = |x: Option<u64>| x.map_or("-".into(), ns);
    let count = |f: fn(&ClientReport) -> u64| c.map_or("-".into(), |c| f(c).to_string());
    let [variant, phase, vs_first, vs_untraced] = lead;
    let _ = writeln!(
        md,
        "| {variant} | {phase} | {:.0} | {vs_first} | {vs_untraced} | {} | {} | {} | {} | {} | {attack} |",
        c.map_or(0.0, |c| c.requests_per_s),
        opt(c.and_then(|c| c.p50_ns)),
        opt(c.and_then(|c| c.p99_ns)),
        count(|c| c.requests),
        count(|c| c.connect_failures),
        count(|c| c.request_failures),
    );
}

/// The main rows side by side: the read path and each variant's top rows.
pub(super) fn compare_table(md: &mut String, diffs: &[(String, Vec<DiffRow>)]) {
    let mut functions: Vec<String> = READ_PATH.iter().map(|s| s.to_string()).collect();
    for (_, rows) in diffs {
        for r in rows.iter().take(3) {
            if !functions.contains(&r.function) {
                functions.push(r.function.clone());
            }
        }
    }
    let _ = writeln!(md, "\n## What the trace says changed, per variant (last phase against first)\n\n| function | variant | calls | mean | p99 | in flight at end | impact |\n|---|---|---:|---:|---:|---:|---:|");
    for f in &functions {
        for (name, rows) in diffs {
            if let Some(r) = rows.iter().find(|r| &r.function == f) {
                let _ = writeln!(
                    md,
                    "| `{f}`{} | {name} | {} -> {} | {} -> {} | {} -> {} | {} | {}/s |",
                    if r.significant { " *" } else { "" },
                    r.base_calls,
                    r.test_calls,
                    ns(r.base_mean_ns),
                    ns(r.test_mean_ns),
                    ns(r.base_p99_ns),
                    ns(r.test_p99_ns),
                    r.in_flight,
                    signed(r.impact_ns_per_s)
                );
            }
        }
    }
}

pub(super) fn diff_table(md: &mut String, v: &VariantResult, rows: &[DiffRow]) {
    let (base, test) = (&v.phases[0], v.phases.last().expect("phases"));
    let name = |p: &PhaseResult| {
        format!(
            "{}/{}",
            v.name,
            p.trace.file_name().unwrap_or_default().to_string_lossy()
        )
    };
    let _ = writeln!(
        md,
        "\n## Variant `{}`: `flowdar diff {} {}`\n\nRanked by impact: server time per second of capture gained (calls still stuck when capture ended count as lower bounds). `*`: significant (Mann-Whitney p < 0.001 and the mean moved 1.5x, or new: not called in the first phase, 10 calls or more and 10 ms/s or more in the last).\n\n| | function | calls {b} | calls {t} | mean {b} | mean {t} | ratio | in flight | p-value | impact |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        v.name,
        name(base),
        name(test),
        b = base.name,
        t = test.name
    );
    for (i, r) in rows.iter().take(TOP).enumerate() {
        let _ = writeln!(
            md,
            "| {} | `{}`{} | {} | {} | {} | {} | {} | {} | {:.1e} | {}/s |",
            i + 1,
            r.function,
            if r.significant { " *" } else { "" },
            r.base_calls,
            r.test_calls,
            ns(r.base_mean_ns),
            ns(r.test_mean_ns),
            ratio(r.ratio),
            r.in_flight,
            r.p_value,
            signed(r.impact_ns_per_s)
        );
    }
    if let Some(v) = flowdar_analysis::backend_verdict(rows) {
        let _ = writeln!(md, "\n{v}");
    }
}
