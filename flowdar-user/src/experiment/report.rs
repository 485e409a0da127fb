//! The experiment's report: client-side impact per phase, the diff of the
//! attack phase against the first ranked by impact, and a normal session
//! beside an attacked one; as `report.md`, a self-contained `report.html`
//! and `diff.json`.
use std::{fmt::Write as _, path::Path};

use anyhow::Context as _;

use super::PhaseResult;
use crate::units::{ns, signed_ns as signed};
use crate::{
    analysis::{diff, DiffRow, Session},
    render::{self, SceneOptions},
};

/// Rows of the diff shown in the reports and on the terminal.
const TOP: usize = 12;

pub struct Report {
    pub diff: Vec<DiffRow>,
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
    let (a, _) = crate::cli::sessions_of(base)?;
    let (b, _) = crate::cli::sessions_of(test)?;
    let normal = a.into_iter().find(|s| s.closed && s.requests > 0);
    let attacked = b
        .into_iter()
        .filter(|s| !s.closed)
        .max_by_key(|s| s.read_ns);
    Ok((normal, attacked))
}

/// Writes report.md, report.html and diff.json into `dir`, comparing the
/// last phase with the first.
pub fn write(dir: &Path, phases: &[PhaseResult], title: &str) -> anyhow::Result<Report> {
    let (base, test) = (
        phases.first().context("no phases")?,
        phases.last().context("no phases")?,
    );
    let rows = diff(&base.trace, &test.trace)?;
    std::fs::write(dir.join("diff.json"), serde_json::to_string_pretty(&rows)?)?;
    let mut md = String::new();
    let _ = writeln!(md, "# {title}\n");
    let _ = writeln!(md, "## Client side\n\n| phase | requests/s | p50 | p99 | requests | errors | attack |\n|---|---:|---:|---:|---:|---:|---|");
    for p in phases {
        let (rps, p50, p99, n, err) = p.wrk.as_ref().map_or(
            ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
            |w| {
                (
                    format!("{:.0}", w.requests_per_sec),
                    w.latency_p50_us
                        .map_or("-".into(), |v| ns((v * 1e3) as u64)),
                    w.latency_p99_us
                        .map_or("-".into(), |v| ns((v * 1e3) as u64)),
                    w.requests.to_string(),
                    w.errors.to_string(),
                )
            },
        );
        let _ = writeln!(
            md,
            "| {} | {rps} | {p50} | {p99} | {n} | {err} | {} |",
            p.name,
            p.attack
                .as_deref()
                .map_or("none".into(), |a| format!("`{a}`"))
        );
    }
    if let (Some(a), Some(b)) = (&base.wrk, &test.wrk) {
        if a.requests_per_sec > 0.0 {
            let _ = writeln!(
                md,
                "\nThroughput under attack: {:.0}% of normal.",
                100.0 * b.requests_per_sec / a.requests_per_sec
            );
        }
    }
    let _ = writeln!(
        md,
        "\n## What changed: `flowdar diff {} {}`\n\nRanked by impact: server time per second of capture gained under attack (calls still stuck when capture ended count as lower bounds). `*`: significant (Mann-Whitney p < 0.001 and the mean moved 1.5x).\n\n| | function | calls normal | calls attack | mean normal | mean attack | ratio | in flight | p-value | impact |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        base.trace.file_name().unwrap_or_default().to_string_lossy(),
        test.trace.file_name().unwrap_or_default().to_string_lossy()
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
    let (normal, attacked) = pick_sessions(&base.trace, &test.trace)?;
    let mut scenes = Vec::new();
    for (s, p, label) in [(&normal, base, "normal"), (&attacked, test, "attacked")] {
        if let Some(s) = s {
            let title = format!(
                "{label}: {} session {} ({} requests, {} reading)",
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
        phases.iter().map(|p| format!("`{}`", p.trace.file_name().unwrap_or_default().to_string_lossy())).collect::<Vec<_>>().join(", ")
    );
    std::fs::write(dir.join("report.md"), &md)?;
    let intro = markdown_tables_to_html(&md);
    let refs: Vec<&render::Scene> = scenes.iter().collect();
    let page = render::page(&refs, 500_000).replacen(
        "<div class=\"panes\">",
        &format!("<div class=\"report\">{intro}</div>\n<div class=\"panes\">"),
        1,
    );
    std::fs::write(dir.join("report.html"), page)?;
    Ok(Report {
        diff: rows,
        markdown: md,
    })
}

/// A small Markdown-to-HTML for the report's headings, paragraphs and tables.
fn markdown_tables_to_html(md: &str) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let code = |s: &str| {
        let mut out = String::new();
        for (i, part) in esc(s).split('`').enumerate() {
            if i % 2 == 1 {
                let _ = write!(out, "<code>{part}</code>");
            } else {
                out.push_str(part);
            }
        }
        out
    };
    let mut html = String::from("<style>.report{padding:8px 16px;background:#fff}.report table{border-collapse:collapse;font-size:13px}.report td,.report th{border:1px solid #ccd;padding:3px 8px;text-align:right}.report td:nth-child(2){text-align:left}</style>");
    let mut in_table = false;
    for line in md.lines() {
        if line.starts_with('|') {
            if line.contains("---") {
                continue;
            }
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let tag = if in_table { "td" } else { "th" };
            if !in_table {
                html.push_str("<table>");
                in_table = true;
            }
            html.push_str("<tr>");
            for c in cells {
                let _ = write!(html, "<{tag}>{}</{tag}>", code(c));
            }
            html.push_str("</tr>");
            continue;
        }
        if in_table {
            html.push_str("</table>");
            in_table = false;
        }
        if let Some(h) = line.strip_prefix("## ") {
            let _ = write!(html, "<h3>{}</h3>", code(h));
        } else if let Some(h) = line.strip_prefix("# ") {
            let _ = write!(html, "<h2>{}</h2>", code(h));
        } else if let Some(item) = line.strip_prefix("- ") {
            let _ = write!(html, "<div>• {}</div>", code(item));
        } else if !line.trim().is_empty() {
            let _ = write!(html, "<p>{}</p>", code(line));
        }
    }
    if in_table {
        html.push_str("</table>");
    }
    html
}
