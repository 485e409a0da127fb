//! A picture of time, second by second: requests answered and failures a
//! second, and the workers inside `ap_read_request` at each second, over
//! one or more stretches of time (an untraced run, a capture's phases)
//! with their boundaries marked. Figures drawn on shared [`Scales`]
//! compare by eye. Self-contained SVG, `<svg data-figure="timeline">`, one
//! `data-points` per series (one point a second).
use std::{fmt::Write as _, path::Path};

use flowdar_trace::{StoreError, TraceReader};

use super::sequence::esc;
use crate::scan;

/// The read path: where a slow-headers attack holds its workers.
pub const HELD_IN: &str = "ap_read_request";

/// Answers and failures, one count a second.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub ok: Vec<u64>,
    pub failed: Vec<u64>,
}

/// One stretch of time: an untraced run, a phase, a capture.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub label: String,
    pub client: Option<Counts>,
    /// Seconds from the segment's start to the counts' first second (an
    /// attack's ramp in an attack phase).
    pub client_offset_s: f64,
    /// Calls of [`HELD_IN`] in progress at each second's end (traced only).
    pub held: Option<Vec<u64>>,
    pub seconds: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    /// The figure's title.
    pub variant: String,
    /// Where the requests series comes from, for the key.
    pub requests_from: String,
    /// What the held series counts workers in (`ap_read_request`, or a
    /// lean trace's read-waits), for the key.
    pub held_in: String,
    pub segments: Vec<Segment>,
}

/// Requests answered a second, from a trace: the returns of
/// `ap_process_async_request` (every HTTP/1.1 request and HTTP/2 stream
/// passes through it), or of `ap_process_request` where only that was
/// probed. `None` when neither was.
fn answered_per_second(trace: &Path) -> Result<Option<(String, Vec<u64>)>, StoreError> {
    let header = TraceReader::open(trace)?.header().clone();
    let Some(function) = ["ap_process_async_request", "ap_process_request"]
        .into_iter()
        .find(|f| header.probes.iter().any(|p| p.function == *f))
    else {
        return Ok(None);
    };
    // Entry only (the lean set): a call is its start, counted when it began.
    let what = if header
        .probes
        .iter()
        .any(|p| p.function == function && p.capture.entry_only)
    {
        format!("requests/s begun (trace: {function} calls, entry only)")
    } else {
        format!("requests/s answered (trace: {function} returns)")
    };
    let ids: Vec<u32> = header
        .probes
        .iter()
        .filter(|p| p.function == function)
        .map(|p| p.id)
        .collect();
    let s0 = header.start_monotonic_ns;
    let mut counts: Vec<u64> = Vec::new();
    let scanned = scan(
        trace,
        |_| {},
        |c| {
            if c.returned && ids.contains(&c.probe_id) {
                let k = (c.end_ns.saturating_sub(s0) / 1_000_000_000) as usize;
                if counts.len() <= k {
                    counts.resize(k + 1, 0);
                }
                counts[k] += 1;
            }
        },
    )?;
    // Whole seconds only, as the held counts.
    counts.resize((scanned.duration_ns() / 1_000_000_000) as usize, 0);
    Ok(Some((what, counts)))
}

/// The timeline of one trace on its own (`flowdar render --timeline`):
/// its requests answered a second and its workers in [`HELD_IN`].
pub fn trace_timeline(trace: &Path, title: &str) -> Result<Timeline, StoreError> {
    let held = crate::held_per_second(trace)?;
    let answered = answered_per_second(trace)?;
    let requests_from = answered.as_ref().map_or_else(
        || "requests/s: not in this trace (ap_process_async_request not probed)".to_string(),
        |(f, _)| f.clone(),
    );
    let held_in = held.function.clone();
    let seconds = held.threads.len();
    Ok(Timeline {
        variant: title.to_string(),
        requests_from,
        held_in,
        segments: vec![Segment {
            label: title.to_string(),
            client: answered.map(|(_, ok)| Counts {
                failed: Vec::new(),
                ok,
            }),
            client_offset_s: 0.0,
            held: Some(held.threads),
            seconds,
        }],
    })
}

/// The y scales every variant's figure shares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scales {
    pub rps: f64,
    pub failures: f64,
    pub held: f64,
}

pub fn scales(ts: &[Timeline]) -> Scales {
    let (mut rps, mut failures, mut held) = (0u64, 0u64, 0u64);
    let max = |v: &[u64]| v.iter().copied().max().unwrap_or(0);
    for s in ts.iter().flat_map(|t| &t.segments) {
        if let Some(c) = &s.client {
            rps = rps.max(max(&c.ok));
            failures = failures.max(max(&c.failed));
        }
        if let Some(h) = &s.held {
            held = held.max(h.iter().copied().max().unwrap_or(0));
        }
    }
    Scales {
        rps: nice(rps as f64),
        failures: nice(failures as f64),
        held: nice(held as f64),
    }
}

/// The smallest of 1, 2, 3, 5 x 10^k at or above `x` (at least 1).
fn nice(x: f64) -> f64 {
    let mut step = 1.0;
    loop {
        for m in [1.0, 2.0, 3.0, 5.0] {
            if m * step >= x {
                return m * step;
            }
        }
        step *= 10.0;
    }
}

/// Narrow enough for two variants side by side in a 1400 px window.
const W: f64 = 660.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 48.0;
/// Requests chart: top and height; held-workers chart below it.
const RPS_Y: (f64, f64) = (56.0, 130.0);
const HELD_Y: (f64, f64) = (226.0, 70.0);
/// The key's rows start below the held-workers chart, one a series.
const KEY_Y: f64 = 316.0;
const KEY_ROW: f64 = 15.0;
/// Seconds of blank between two segments.
const GAP_S: f64 = 2.0;

/// A series' numbers, space-separated, for readers of the SVG (and tests).
fn values(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
}

/// The figure of one variant, `<svg data-figure="timeline">`, on `scales`.
pub fn svg(t: &Timeline, sc: Scales) -> String {
    let total: f64 = t.segments.iter().map(|s| s.seconds as f64).sum::<f64>()
        + GAP_S * t.segments.len().saturating_sub(1) as f64;
    let px = |s: f64| LEFT + (W - LEFT - RIGHT) * s / total.max(1.0);
    let y = |(top, h): (f64, f64), v: f64, max: f64| top + h - h * (v / max).min(1.0);
    // The failures series and its scale only where a client counted them
    // (a trace's own timeline has none).
    let failures = t
        .segments
        .iter()
        .any(|s| s.client.as_ref().is_some_and(|c| !c.failed.is_empty()));
    let rows = if failures { 3.0 } else { 2.0 };
    let h_total = KEY_Y + KEY_ROW * (rows - 1.0) + 8.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r##"<svg xmlns="http://www.w3.org/2000/svg" data-figure="timeline" data-variant="{v}" width="{W}" height="{h_total}" viewBox="0 0 {W} {h_total}" font-family="sans-serif" font-size="12">
<title>Variant {v}: requests/s{f}and workers in {held}, second by second</title>
<rect width="{W}" height="{h_total}" fill="#fff"/>
<text x="{LEFT}" y="16" font-size="14" font-weight="bold">Variant {v}</text>"##,
        v = esc(&t.variant),
        held = esc(&t.held_in),
        f = if failures { ", failures/s " } else { " " },
    );
    for (chart, max, unit) in [
        (RPS_Y, sc.rps, "requests answered a second".to_string()),
        (HELD_Y, sc.held, format!("workers in {}", t.held_in)),
    ] {
        let (top, h) = chart;
        let _ = writeln!(
            o,
            r##"<line x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}" stroke="#999"/><line x1="{LEFT}" y1="{top}" x2="{r}" y2="{top}" stroke="#eee"/>
<text x="{lx}" y="{ty}" text-anchor="end">{max}</text><text x="{lx}" y="{b}" text-anchor="end">0</text><text x="{LEFT}" y="{uy}" fill="#666" font-size="10">{unit}</text>"##,
            b = top + h,
            r = W - RIGHT,
            lx = LEFT - 6.0,
            ty = top + 4.0,
            uy = top - 20.0,
            unit = esc(&unit),
        );
    }
    if failures {
        let _ = writeln!(
            o,
            r##"<text x="{rx}" y="{ty}" fill="#c0392b">{f}</text><text x="{rx}" y="{b}" fill="#c0392b">0</text><text x="{ux}" y="{uy}" fill="#c0392b" font-size="10" text-anchor="end">failures a second</text>"##,
            f = sc.failures,
            rx = W - RIGHT + 6.0,
            ux = W - RIGHT,
            ty = RPS_Y.0 + 4.0,
            b = RPS_Y.0 + RPS_Y.1,
            uy = RPS_Y.0 - 20.0,
        );
    }
    let mut at = 0.0;
    for s in &t.segments {
        let x0 = px(at);
        let _ = writeln!(
            o,
            // The boundary in each chart, not across the held chart's
            // unit label between them.
            r##"<g data-segment="{l}"><line x1="{x0:.1}" y1="{t}" x2="{x0:.1}" y2="{b}" stroke="#555" stroke-dasharray="4 3"/><line x1="{x0:.1}" y1="{t2}" x2="{x0:.1}" y2="{b2}" stroke="#555" stroke-dasharray="4 3"/><text x="{tx:.1}" y="{ly}">{l} ({n} s)</text>"##,
            l = esc(&s.label),
            t = RPS_Y.0 - 14.0,
            b = RPS_Y.0 + RPS_Y.1,
            t2 = HELD_Y.0,
            b2 = HELD_Y.0 + HELD_Y.1,
            tx = x0 + 4.0,
            ly = RPS_Y.0 - 4.0,
            n = s.seconds,
        );
        if let Some(c) = &s.client {
            let at_s = |k: usize| px(at + s.client_offset_s + k as f64 + 0.5);
            let line = |vals: &[u64], colour: &str, series: &str, max: f64| {
                let pts: Vec<String> = vals
                    .iter()
                    .enumerate()
                    .map(|(k, &n)| format!("{:.1},{:.1}", at_s(k), y(RPS_Y, n as f64, max)))
                    .collect();
                format!(
                    r##"<polyline data-series="{series}" data-points="{}" data-values="{}" points="{}" fill="none" stroke="{colour}" stroke-width="2"/>
"##,
                    vals.len(),
                    values(vals),
                    pts.join(" ")
                )
            };
            o.push_str(&line(&c.ok, "#1f5fbf", "requests", sc.rps));
            if !c.failed.is_empty() {
                o.push_str(&line(&c.failed, "#c0392b", "failures", sc.failures));
            }
        }
        if let Some(h) = &s.held {
            let pts: Vec<String> = h
                .iter()
                .enumerate()
                .map(|(k, &n)| {
                    format!(
                        "{:.1},{:.1}",
                        px(at + k as f64 + 1.0),
                        y(HELD_Y, n as f64, sc.held)
                    )
                })
                .collect();
            let _ = writeln!(
                o,
                r##"<polyline data-series="held" data-points="{}" data-values="{}" points="{}" fill="none" stroke="#e67e22" stroke-width="2"/>"##,
                h.len(),
                values(h),
                pts.join(" ")
            );
        }
        o.push_str("</g>\n");
        at += s.seconds as f64 + GAP_S;
    }
    // The key, a row a series: long names (a trace's own sources) never
    // run into each other.
    let mut keys = vec![("#1f5fbf", t.requests_from.clone())];
    if failures {
        keys.push(("#c0392b", "failures/s (right scale)".to_string()));
    }
    keys.push((
        "#e67e22",
        format!("workers in {} at each second (trace)", t.held_in),
    ));
    o.push_str("<g font-size=\"11\">");
    for (k, (colour, label)) in keys.iter().enumerate() {
        let ly = KEY_Y + KEY_ROW * k as f64;
        let _ = write!(
            o,
            r##"<line x1="{LEFT}" y1="{m}" x2="{a}" y2="{m}" stroke="{colour}" stroke-width="2"/><text x="{ta}" y="{ly}">{label}</text>"##,
            m = ly - 4.0,
            a = LEFT + 20.0,
            ta = LEFT + 24.0,
            label = esc(label),
        );
    }
    o.push_str("</g>\n</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(ok: Vec<u64>) -> Counts {
        Counts {
            failed: vec![0; ok.len()],
            ok,
        }
    }

    #[test]
    fn scales_are_shared_and_round() {
        assert_eq!(
            (
                nice(0.0),
                nice(1.0),
                nice(4.0),
                nice(18876.0),
                nice(27844.0)
            ),
            (1.0, 1.0, 5.0, 20000.0, 30000.0)
        );
        let t = |v: &str, ok: Vec<u64>, held: Vec<u64>| Timeline {
            variant: v.into(),
            requests_from: "client".into(),
            held_in: HELD_IN.into(),
            segments: vec![Segment {
                label: "attack".into(),
                seconds: ok.len(),
                client: Some(client(ok)),
                client_offset_s: 0.0,
                held: Some(held),
            }],
        };
        let ts = [
            t("none", vec![0, 0], vec![150, 150]),
            t("reqtimeout", vec![700, 1800], vec![40, 3]),
        ];
        assert_eq!(
            scales(&ts),
            Scales {
                rps: 2000.0,
                failures: 1.0,
                held: 200.0
            }
        );
    }

    #[test]
    fn one_point_a_second_per_series_and_segments_marked() {
        let t = Timeline {
            variant: "none".into(),
            requests_from: "client".into(),
            held_in: HELD_IN.into(),
            segments: vec![
                Segment {
                    label: "untraced".into(),
                    seconds: 3,
                    client: Some(client(vec![10, 10, 10])),
                    client_offset_s: 0.0,
                    held: None,
                },
                Segment {
                    label: "attack".into(),
                    seconds: 5,
                    client: Some(client(vec![0, 0, 0])),
                    client_offset_s: 2.0,
                    held: Some(vec![50, 100, 150, 150, 150]),
                },
            ],
        };
        let s = svg(
            &t,
            Scales {
                rps: 10.0,
                failures: 1.0,
                held: 200.0,
            },
        );
        assert!(s.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" data-figure=\"timeline\" data-variant=\"none\""));
        assert_eq!(
            s.matches("data-series=\"requests\" data-points=\"3\"")
                .count(),
            2
        );
        assert_eq!(
            s.matches("data-series=\"held\" data-points=\"5\"").count(),
            1
        );
        assert!(s.contains("<g data-segment=\"untraced\">") && s.contains("attack (5 s)"));
        // 10 s of x (3 + 2 of gap + 5) over 548 px: the attack's client
        // starts 2 s into the segment (5 s in), at 7.5 s for its first point; a full
        // requests chart is its top (56), zero its bottom (186).
        assert!(
            s.contains("data-values=\"10 10 10\" points=\"91.4,56.0 146.2,56.0 201.0,56.0\""),
            "{s}"
        );
        assert!(s.contains("points=\"475.0,186.0"), "{s}");
        assert!(s.contains("data-values=\"50 100 150 150 150\""), "{s}");
        // Failures counted (zeros here): their series, scale and key.
        assert_eq!(s.matches("data-series=\"failures\"").count(), 2);
        assert!(s.contains("failures/s (right scale)"));
        // A trace's own timeline counts no failures: no series, no key.
        let mut own = t.clone();
        for seg in &mut own.segments {
            if let Some(c) = &mut seg.client {
                c.failed.clear();
            }
        }
        let s = svg(
            &own,
            Scales {
                rps: 10.0,
                failures: 1.0,
                held: 200.0,
            },
        );
        assert!(!s.contains("failures"), "{s}");
    }
}
