//! The experiment's report: in plain words first (the denial, its cause in
//! the trace, the attacker, what each mitigation changed), then client
//! figures per variant and phase, the main diff rows side by side per
//! variant, each variant's full diff of its last phase against its first,
//! and a normal session beside an attacked one; as `report.md`, a
//! self-contained `report.html`, `experiment.json` and per variant
//! `VARIANT/diff.json`.
use std::{fmt::Write as _, path::Path};

use anyhow::Context as _;
use serde_json::json;

use super::{
    held::{held_workers, Held},
    Outcome, PhaseResult, VariantResult,
};
use crate::server::ClientReport;
use crate::units::{ns, signed_ns as signed};
use crate::{
    analysis::{diff, DiffRow, Session},
    render::{self, SceneOptions},
};

/// Rows of the diff shown in the reports and on the terminal.
const TOP: usize = 12;
/// Functions of the main comparison rows: the read path.
const READ_PATH: &[&str] = &["ap_read_request", "apr_socket_recv"];

pub struct Report {
    /// Per variant, the diff of its last phase against its first.
    pub diffs: Vec<(String, Vec<DiffRow>)>,
    /// The first paragraph: what happened, in plain words.
    pub summary: String,
    pub markdown: String,
}

fn ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.1}x")
    } else {
        "new".into()
    }
}

/// A normal session (the first that completed a request) and an attacked
/// one (the open session that spent longest reading).
fn pick_sessions(base: &Path, test: &Path) -> anyhow::Result<(Option<Session>, Option<Session>)> {
    let (a, _) = crate::analysis::sessions_of(base)?;
    let (b, _) = crate::analysis::sessions_of(test)?;
    let normal = a.into_iter().find(|s| s.closed && s.requests > 0);
    let attacked = b
        .into_iter()
        .filter(|s| !s.closed)
        .max_by_key(|s| s.read_ns);
    Ok((normal, attacked))
}

/// Requests per second of a phase's client (0 without one).
fn rps(p: &PhaseResult) -> f64 {
    p.client.as_ref().map_or(0.0, |c| c.requests_per_s)
}

/// What the held workers were doing, from the functions they were in.
fn doing(stack: &[String]) -> &'static str {
    let has = |f: &str| stack.iter().any(|s| s.split(' ').next() == Some(f));
    if has("ap_read_request") {
        ": the read path, reading request headers that the attacker sends slowly or never"
    } else if has("apr_socket_recv") {
        ": the read path inside the handler, reading a request body that comes a few bytes at a time"
    } else if has("ap_pass_brigade")
        || has("apr_socket_sendv")
        || has("ap_core_output_filter")
        // The output filter's blocking write waits in apr_poll (APR reads
        // wait inside apr_socket_recv instead): the write path, even with
        // only the default profile's probes.
        || (has("ap_run_handler") && has("apr_poll"))
    {
        ": the write path, sending a response to a client that reads it a few bytes at a time"
    } else {
        ""
    }
}

/// Which clients held the workers, by address, from the trace's client
/// events (issue #16): the connections still open at the end of capture
/// with calls in flight, grouped by client address, the lab's hosts named.
/// None when the trace has no client addresses (recorded without them).
fn held_by_clients(test_trace: &Path, hosts: &super::Hosts) -> anyhow::Result<Option<String>> {
    let sessions = match crate::analysis::sessions_of(test_trace) {
        Ok((s, _)) => s,
        Err(crate::analysis::SessionsError::NoConnections { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let open: Vec<Session> = sessions
        .into_iter()
        .filter(|s| !s.closed && s.in_flight > 0)
        .collect();
    let rows = crate::analysis::by_client(&open);
    if rows.is_empty() || rows.iter().all(|r| r.address == "unknown") {
        return Ok(None);
    }
    let label = |a: &str| {
        let is = |h: &Option<(std::net::IpAddr, String)>| {
            h.as_ref().is_some_and(|(ip, _)| ip.to_string() == a)
        };
        if is(&hosts.attacker) {
            " (the attacker's host)"
        } else if is(&hosts.client) {
            " (the legitimate client's host)"
        } else {
            ""
        }
    };
    let parts: Vec<String> = rows
        .iter()
        .take(3)
        .map(|r| {
            format!(
                "{}{}: {} connections, {} calls in flight, {} of worker time",
                r.address,
                label(&r.address),
                r.connections,
                r.in_flight,
                ns(r.worker_ns)
            )
        })
        .collect();
    Ok(Some(format!(
        "Held by client address (`flowdar clients`): {}{}.",
        parts.join("; "),
        if rows.len() > 3 {
            format!("; {} more", rows.len() - 3)
        } else {
            String::new()
        }
    )))
}

/// The first paragraph: the denial, its cause and the attacker, then what
/// each further variant changed.
fn summary(outcome: &Outcome, held: &[Held]) -> anyhow::Result<String> {
    let mut out = String::new();
    let first = &outcome.variants[0];
    let (base, test) = (&first.phases[0], first.phases.last().context("no phases")?);
    let h = &outcome.hosts;
    let attacker = h
        .attacker
        .as_ref()
        .map_or("this host".into(), |(ip, ns)| format!("{ip} (host {ns})"));
    let client = h
        .client
        .as_ref()
        .map_or("this host".into(), |(ip, _)| ip.to_string());
    let attack = test.attack.as_deref().unwrap_or("no attack");
    let (b, t) = (rps(base), rps(test));
    let pct = if b > 0.0 { 100.0 * t / b } else { 0.0 };
    let failures = test.client.as_ref().map_or(0, |c| c.errors());
    if test.client.is_none() {
        let _ = write!(
            out,
            "**The attack alone.** Phase `{}` ran `{attack}` from {attacker} without legitimate load: \
             the diff below compares the attack's requests with the legitimate ones of phase `{}` ({b:.0} requests/s from {client}).",
            test.name, base.name
        );
    } else {
        let verdict = if pct <= 10.0 {
            "Denial of service"
        } else if pct < 90.0 {
            "Degraded service"
        } else {
            "No denial"
        };
        let _ = write!(
            out,
            "**{verdict}.** Without mitigation (variant `{}`), under `{attack}` from {attacker}, \
             the legitimate client at {client} got {t:.0} requests/s against {b:.0} in phase `{}` \
             ({pct:.1}% of normal, {failures} connects or requests timed out or failed; counted over wall time).",
            first.name, base.name
        );
    }
    let held_now = &held[0];
    if held_now.workers > 0 {
        let _ = write!(
            out,
            " The trace says why: when capture ended {} workers were held in {}{}, for up to {} (median {}; capture began with the attack){}.",
            held_now.workers,
            held_now
                .stack
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(" > "),
            if held_now.with_stack < held_now.workers {
                format!(" ({} of them; the others elsewhere)", held_now.with_stack)
            } else {
                String::new()
            },
            ns(held_now.longest_ns),
            ns(held_now.median_ns),
            doing(&held_now.stack)
        );
    } else {
        let _ = write!(out, " No worker was held when capture ended.");
    }
    match held_by_clients(&test.trace, h)? {
        Some(line) => {
            let _ = write!(out, " {line}");
        }
        None => {
            let _ = write!(
                out,
                " The attack came from {attacker}, the client from {client}."
            );
        }
    }
    if let Some(n) = &h.note {
        let _ = write!(out, " Lab: {n}.");
    }
    if let Some(line) = observer_effect(first) {
        let _ = write!(out, " {line}");
    }
    for (v, h) in outcome.variants.iter().zip(held).skip(1) {
        let (vb, vt) = (
            rps(&v.phases[0]),
            rps(v.phases.last().context("no phases")?),
        );
        let gain = if t > 0.0 { vt / t } else { f64::INFINITY };
        let settings = v
            .config
            .trim()
            .lines()
            .filter(|l| !l.starts_with("LoadModule"))
            .collect::<Vec<_>>()
            .join("; ");
        let _ = write!(
            out,
            "\n\nWith `{}` ({settings}): {vt:.0} requests/s under the same attack ({:.1}% of its normal {vb:.0}; {}). \
             In the trace, {} workers were held when capture ended{} (without mitigation: {}){}.",
            v.name,
            if vb > 0.0 { 100.0 * vt / vb } else { 0.0 },
            if gain.is_finite() {
                format!("{gain:.1}x the unmitigated {t:.0}")
            } else {
                format!("against {t:.0} without mitigation")
            },
            h.workers,
            if h.workers > 0 {
                format!(
                    ", in {}",
                    h.stack
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(" > ")
                )
            } else {
                String::new()
            },
            held_now.workers,
            h.longest_returned_ns
                .get("ap_read_request")
                .map_or(String::new(), |l| format!(
                    "; the longest `ap_read_request` that returned took {} (without mitigation, workers were held for up to {})",
                    ns(*l),
                    ns(held_now.longest_ns)
                ))
        );
    }
    Ok(out)
}

/// What tracing cost the normal load: its traced phase against the same load
/// untraced.
fn observer_effect(v: &VariantResult) -> Option<String> {
    let u = v.untraced.as_ref()?;
    let phase = v.phases.iter().find(|p| p.name == u.phase)?;
    let ratio = v.throughput_ratio(phase)?;
    Some(format!(
        "Observer effect: traced, phase `{}` served {:.0} requests/s; the same load untraced served {:.0} ({:.2}x).",
        phase.name,
        rps(phase),
        u.client.as_ref()?.requests_per_s,
        ratio
    ))
}

/// The zoom's chain, link by link, and what each level cost.
fn zoom_section(md: &mut String, z: &super::Zoom, variant: &str) {
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
}

/// `experiment.json`: per variant and phase, the client and tracer figures.
fn json(outcome: &Outcome) -> serde_json::Value {
    let variants: Vec<_> = outcome
        .variants
        .iter()
        .map(|v| {
            let first = rps(&v.phases[0]);
            let phases: Vec<_> = v
                .phases
                .iter()
                .map(|p| {
                    json!({
                        "name": p.name,
                        "requests_per_s": rps(p),
                        "p99_ns": p.client.as_ref().and_then(|c| c.p99_ns),
                        "errors": p.client.as_ref().map_or(0, |c| c.errors()),
                        "events": p.events,
                        "lost": p.lost,
                        "throughput_vs_first_phase": if first > 0.0 { Some(rps(p) / first) } else { None },
                        "throughput_vs_untraced": v.throughput_ratio(p),
                    })
                })
                .collect();
            let untraced = v.untraced.as_ref().map(|u| {
                json!({
                    "phase": u.phase,
                    "requests_per_s": u.client.as_ref().map(|c| c.requests_per_s),
                    "p99_ns": u.client.as_ref().and_then(|c| c.p99_ns),
                    "errors": u.client.as_ref().map(|c| c.errors()),
                    "client_error": u.client_error,
                })
            });
            json!({"name": v.name, "config": v.config, "untraced": untraced, "phases": phases})
        })
        .collect();
    json!({ "variants": variants })
}

fn client_table(md: &mut String, variants: &[VariantResult]) {
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
fn compare_table(md: &mut String, diffs: &[(String, Vec<DiffRow>)]) {
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

fn diff_table(md: &mut String, v: &VariantResult, rows: &[DiffRow]) {
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
        "\n## Variant `{}`: `flowdar diff {} {}`\n\nRanked by impact: server time per second of capture gained (calls still stuck when capture ended count as lower bounds). `*`: significant (Mann-Whitney p < 0.001 and the mean moved 1.5x).\n\n| | function | calls {b} | calls {t} | mean {b} | mean {t} | ratio | in flight | p-value | impact |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
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
}

/// Writes report.md, report.html, experiment.json and VARIANT/diff.json
/// into `dir`, comparing each variant's last phase with its first.
pub fn write(dir: &Path, outcome: &Outcome, title: &str) -> anyhow::Result<Report> {
    let first = outcome.variants.first().context("no variants")?;
    let mut diffs = Vec::new();
    for v in &outcome.variants {
        let (base, test) = (
            v.phases.first().context("no phases")?,
            v.phases.last().context("no phases")?,
        );
        let rows = diff(&base.trace, &test.trace)?;
        std::fs::write(
            dir.join(&v.name).join("diff.json"),
            serde_json::to_string_pretty(&rows)?,
        )?;
        diffs.push((v.name.clone(), rows));
    }
    std::fs::write(
        dir.join("experiment.json"),
        serde_json::to_string_pretty(&json(outcome))?,
    )?;
    let held = outcome
        .variants
        .iter()
        .map(|v| held_workers(&v.phases.last().expect("phases").trace))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let summary = summary(outcome, &held)?;
    let mut md = String::new();
    let _ = writeln!(md, "# {title}\n\n{summary}\n");
    client_table(&mut md, &outcome.variants);
    compare_table(&mut md, &diffs);
    for (v, (_, rows)) in outcome.variants.iter().zip(&diffs) {
        diff_table(&mut md, v, rows);
    }
    if let Some(z) = &outcome.zoom {
        zoom_section(&mut md, z, &first.name);
    }
    if let Some(e) = &outcome.zoom_error {
        let _ = writeln!(md, "\n## Zoom\n\nThe zoom failed after the phases: {e}");
    }
    let (base, test) = (&first.phases[0], first.phases.last().context("no phases")?);
    let (normal, attacked) = pick_sessions(&base.trace, &test.trace)?;
    let mut scenes = Vec::new();
    for (s, p, label) in [(&normal, base, "normal"), (&attacked, test, "attacked")] {
        if let Some(s) = s {
            let title = format!(
                "{label}: {}/{} session {} ({} requests, {} reading)",
                first.name,
                p.name,
                s.id,
                s.requests,
                ns(s.read_ns)
            );
            let opts = SceneOptions {
                session: Some(s.id),
                max_calls: 60,
                ..Default::default()
            };
            scenes.push(render::build_scene(&p.trace, &title, &opts)?);
        }
    }
    let _ = writeln!(
        md,
        "\n## A normal session and an attacked one\n\n{}\n\nSee `report.html` for the diagrams side by side (pan, zoom, hover); every figure can be re-derived from the traces: {}.",
        scenes.iter().map(|s| format!("- {}", s.title)).collect::<Vec<_>>().join("\n"),
        outcome.variants.iter().flat_map(|v| v.phases.iter().map(move |p| format!("`{}/{}`", v.name, p.trace.file_name().unwrap_or_default().to_string_lossy()))).collect::<Vec<_>>().join(", ")
    );
    std::fs::write(dir.join("report.md"), &md)?;
    let intro = super::markdown::to_html(&md);
    let refs: Vec<&render::Scene> = scenes.iter().collect();
    let page = render::page(&refs, 500_000).replacen(
        "<div class=\"panes\">",
        &format!("<div class=\"report\">{intro}</div>\n<div class=\"panes\">"),
        1,
    );
    std::fs::write(dir.join("report.html"), page)?;
    Ok(Report {
        diffs,
        summary,
        markdown: md,
    })
}

#[cfg(test)]
mod tests {
    use super::doing;

    fn stack(fs: &[&str]) -> Vec<String> {
        fs.iter().map(|f| format!("{f} (12.0 s)")).collect()
    }

    #[test]
    fn held_stacks_name_the_path_they_wait_in() {
        assert!(doing(&stack(&["ap_read_request", "apr_socket_recv"])).contains("request headers"));
        assert!(doing(&stack(&["ap_invoke_handler", "apr_socket_recv"])).contains("request body"));
        // A slow read with only apache:request,io probed.
        assert!(
            doing(&stack(&["ap_invoke_handler", "ap_run_handler", "apr_poll"]))
                .contains("the write path")
        );
        assert_eq!(doing(&stack(&["apr_pollset_poll"])), "");
    }
}
