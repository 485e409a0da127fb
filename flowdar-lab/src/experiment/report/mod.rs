//! The experiment's report: in plain words first (the denial, its cause in
//! the trace, the attacker, what each mitigation changed: `summary`), then
//! client figures per variant and phase, the main diff rows side by side per
//! variant and each variant's full diff of its last phase against its first
//! (`tables`), the zoom's chain (`zoom`), and a normal session beside an
//! attacked one; as `report.md`, a self-contained `report.html`
//! (`markdown`), `experiment.json` and per variant `VARIANT/diff.json`.
mod markdown;
mod summary;
mod tables;
mod timeline;
mod zoom;

use std::{fmt::Write as _, path::Path};

use flowdar_analysis::{
    diff,
    render::{self, SceneOptions},
    units::ns,
    DiffRow, Session,
};
use serde_json::json;

use super::{
    error::{ExperimentError, Result},
    held::held_workers,
    Outcome, PhaseResult,
};

pub struct Report {
    /// Per variant, the diff of its last phase against its first.
    pub diffs: Vec<(String, Vec<DiffRow>)>,
    /// The first paragraph: what happened, in plain words.
    pub summary: String,
    pub markdown: String,
}

/// A diff's ratio as the tables show it.
pub(super) fn ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.1}x")
    } else {
        "new".into()
    }
}

/// Requests per second of a phase's client (0 without one).
pub(super) fn rps(p: &PhaseResult) -> f64 {
    p.client.as_ref().map_or(0.0, |c| c.requests_per_s)
}

/// A normal session (the first that completed a request) and an attacked
/// one (the open session that spent longest reading).
fn pick_sessions(base: &Path, test: &Path) -> Result<(Option<Session>, Option<Session>)> {
    let (a, _) = flowdar_analysis::sessions_of(base)?;
    let (b, _) = flowdar_analysis::sessions_of(test)?;
    let normal = a.into_iter().find(|s| s.closed && s.requests > 0);
    let attacked = b
        .into_iter()
        .filter(|s| !s.closed)
        .max_by_key(|s| s.read_ns);
    Ok((normal, attacked))
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
                        "client_error": p.client_error,
                        "events": p.events,
                        "lost": p.lost,
                        "throughput_vs_first_phase": if first > 0.0 { Some(rps(p) / first) } else { None },
                        "throughput_vs_untraced": v.throughput_ratio(p),
                        "per_second": p.client.as_ref().map(|c| &c.per_second),
                        "attack": p.attack.as_ref().map(|command| json!({
                            "command": command,
                            "sent": p.attack_report,
                        })),
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
                    "per_second": u.client.as_ref().map(|c| &c.per_second),
                })
            });
            json!({"name": v.name, "config": v.config, "untraced": untraced, "phases": phases})
        })
        .collect();
    json!({ "variants": variants })
}

/// Writes report.md, report.html, experiment.json and VARIANT/diff.json
/// into `dir`, comparing each variant's last phase with its first.
pub fn write(dir: &Path, outcome: &Outcome, title: &str) -> Result<Report> {
    let first = outcome
        .variants
        .first()
        .ok_or_else(|| ExperimentError::Refused("no variants".into()))?;
    let mut diffs = Vec::new();
    for v in &outcome.variants {
        let (base, test) = (
            v.phases.first().ok_or_else(no_phases)?,
            v.phases.last().ok_or_else(no_phases)?,
        );
        let rows = diff(&base.trace, &test.trace)?;
        let json = serde_json::to_string_pretty(&rows)?;
        write_file(&dir.join(&v.name).join("diff.json"), json)?;
        diffs.push((v.name.clone(), rows));
    }
    write_file(
        &dir.join("experiment.json"),
        serde_json::to_string_pretty(&json(outcome))?,
    )?;
    let mut held = Vec::new();
    for v in &outcome.variants {
        held.push(held_workers(&v.phases.last().ok_or_else(no_phases)?.trace)?);
    }
    let first_diff = diffs.first().map_or(&[][..], |(_, rows)| rows.as_slice());
    let summary = summary::summary(outcome, &held, first_diff)?;
    let mut md = String::new();
    let _ = writeln!(md, "# {title}\n\n{summary}\n");
    let timelines = timeline::timelines(&outcome.variants)?;
    let scales = render::timeline_scales(&timelines);
    let mut figures = std::collections::HashMap::new();
    let _ = writeln!(
        md,
        "## Second by second\n\nThe client's requests/s (blue) and failures/s (red) through the untraced run and each phase, and the workers {} at each second of the traced phases (orange, from the trace); every variant on the same scales.\n",
        match timelines.first().map(|t| t.held_in.as_str()) {
            Some(f) if f == render::HELD_IN => format!("inside `{f}`"),
            _ => "waiting for a request (in `read` or `poll`, from its first read)".to_string(),
        }
    );
    for t in &timelines {
        let file = format!("{}/timeline.svg", t.variant);
        let svg = render::timeline_svg(t, scales);
        write_file(&dir.join(&file), &svg)?;
        let _ = writeln!(md, "![Variant {}: second by second]({file})\n", t.variant);
        figures.insert(file, svg);
    }
    tables::client_table(&mut md, &outcome.variants);
    tables::compare_table(&mut md, &diffs);
    for (v, (_, rows)) in outcome.variants.iter().zip(&diffs) {
        tables::diff_table(&mut md, v, rows);
    }
    if let Some(z) = &outcome.zoom {
        zoom::zoom_section(&mut md, z, &first.name);
    }
    if let Some(e) = &outcome.zoom_error {
        let _ = writeln!(md, "\n## Zoom\n\nThe zoom failed after the phases: {e}");
    }
    let (base, test) = (&first.phases[0], first.phases.last().ok_or_else(no_phases)?);
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
    write_file(&dir.join("report.md"), &md)?;
    let intro = markdown::to_html(&md, &figures);
    let refs: Vec<&render::Scene> = scenes.iter().collect();
    let page = render::page(&refs, 500_000).replacen(
        "<div class=\"panes\">",
        &format!("<div class=\"report\">{intro}</div>\n<div class=\"panes\">"),
        1,
    );
    write_file(&dir.join("report.html"), page)?;
    Ok(Report {
        diffs,
        summary,
        markdown: md,
    })
}

fn no_phases() -> ExperimentError {
    ExperimentError::Refused("no phases".into())
}

/// Reports quote clients and traces: written with the trace's mode.
fn write_file(path: &Path, text: impl AsRef<[u8]>) -> Result<()> {
    flowdar_trace::private::write(path, text).map_err(|source| ExperimentError::Write {
        path: path.into(),
        source,
    })
}
