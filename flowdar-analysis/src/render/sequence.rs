//! Sequence diagrams as SVG: one lifeline per lane, call and return arrows
//! in time order (one row each), hand-offs as orange arrows labelled with
//! the object's address, and each call's duration as dots on its return
//! arrow: one dot per unit (500 µs by default), a number past four dots.
use std::fmt::Write as _;

use super::{labels::Labels, names::Named, scene::Scene};

const LANE_W: u64 = 190;
const LEFT: u64 = 20;
const TOP: u64 = 70;
const ROW_H: u64 = 22;

/// Duration as dots: one per `unit`, a number past four.
pub fn dots(duration_ns: u64, unit_ns: u64) -> String {
    let n = duration_ns / unit_ns.max(1);
    match n {
        0 => String::new(),
        1..=4 => "•".repeat(n as usize),
        _ => n.to_string(),
    }
}

#[derive(Clone, Copy)]
enum Item {
    Call(usize),
    Return(usize),
}

/// Rows in time order: a call at its start, its return at its end.
fn rows(scene: &Scene) -> Vec<(u64, Item)> {
    let mut items: Vec<(u64, u8, u32, Item)> = Vec::new();
    for (i, c) in scene.calls.iter().enumerate() {
        items.push((c.start_ns, 1, c.depth, Item::Call(i)));
        if !c.in_flight {
            items.push((
                c.start_ns + c.duration_ns,
                0,
                u32::MAX - c.depth,
                Item::Return(i),
            ));
        }
    }
    items.sort_by_key(|&(t, order, depth, _)| (t, order, depth));
    items.into_iter().map(|(t, _, _, item)| (t, item)).collect()
}

fn x(lane: usize) -> u64 {
    LEFT + LANE_W * lane as u64 + LANE_W / 2
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Rows of the legend under the diagram: pointer names in columns, then
/// the units.
fn legend_rows(scene: &Scene, unit_ns: u64, width: u64) -> Vec<Vec<String>> {
    let per_row = ((width - 2 * LEFT) / LEGEND_COL).max(1) as usize;
    let mut rows: Vec<Vec<String>> = scene
        .legend
        .chunks(per_row)
        .map(|chunk| {
            chunk
                .iter()
                .map(|n| shorten(&format!("{} = {}", n.name, n.value), LEGEND_CHARS))
                .collect()
        })
        .collect();
    rows.push(vec![format!(
        "one dot = {}; more than four dots shown as a number",
        crate::units::ns(unit_ns)
    )]);
    rows
}

/// Draws `what` at the first spot where it fits (see [`Labels::place`]).
fn put_text(labels: &mut Labels, s: &mut String, what: &str, spots: &[(u64, u64)], attrs: &str) {
    if let Some(p) = labels.place(what, spots) {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}"{attrs}>{}</text>"#,
            p.x,
            p.y,
            esc(&p.text)
        );
    }
}

/// The scene as a standalone SVG document; `id` prefixes element ids so two
/// diagrams can share a page. No two texts overlap: labels that would are
/// moved or shortened, and every element's hover title has the full text.
pub fn svg(scene: &Scene, unit_ns: u64, id: &str) -> String {
    let rows = rows(scene);
    let width = (2 * LEFT + LANE_W * scene.lanes.len().max(1) as u64).max(760);
    let legend = legend_rows(scene, unit_ns, width);
    let rows_end = TOP + ROW_H * (rows.len() as u64 + 1) + 10;
    let truncated_h = if scene.truncated > 0 { ROW_H } else { 0 };
    let height = rows_end + truncated_h + LEGEND_H * legend.len() as u64 + 10;
    let row_y = |r: usize| TOP + ROW_H * (r as u64 + 1);
    let mut labels = Labels::new(width);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" id="{id}" class="flowdar-seq" width="{width}" height="{height}" viewBox="0 0 {width} {height}" preserveAspectRatio="xMidYMin meet" font-family="DejaVu Sans Mono, monospace" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r##"<defs><marker id="{id}-arrow" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#333"/></marker><marker id="{id}-hand" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#e67e22"/></marker></defs>"##
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#fff"/>"##);
    // The title, shortened to the width (13 px bold: 13/11 of a character).
    let fit = ((width - 2 * LEFT) as f64 / (6.7 * TITLE_SCALE)) as usize;
    let title = shorten(&scene.title, fit);
    labels.reserve(LEFT as f64, 18, &title, TITLE_SCALE);
    let _ = writeln!(
        s,
        r#"<text class="title" x="{LEFT}" y="18" font-size="13" font-weight="bold"><title>{}</title>{}</text>"#,
        esc(&scene.title),
        esc(&title)
    );
    for (i, lane) in scene.lanes.iter().enumerate() {
        let cx = x(i);
        let name = shorten(lane, ((LANE_W - 30) as f64 / 6.7) as usize);
        let half = name.chars().count() as f64 * 6.7 / 2.0;
        labels.reserve(cx as f64 - half, 48, &name, 1.0);
        let _ = writeln!(
            s,
            r##"<g class="lifeline" data-lane="{i}"><title>{}</title><rect x="{}" y="32" width="{}" height="24" rx="4" fill="#eef3fb" stroke="#4a6fa5"/><text x="{cx}" y="48" text-anchor="middle">{}</text><line x1="{cx}" y1="56" x2="{cx}" y2="{rows_end}" stroke="#9aa" stroke-dasharray="4,3"/></g>"##,
            esc(lane),
            cx - LANE_W / 2 + 10,
            LANE_W - 20,
            esc(&name),
        );
    }
    for (r, &(_, item)) in rows.iter().enumerate() {
        let y = row_y(r);
        match item {
            Item::Call(i) => {
                let c = &scene.calls[i];
                let (x1, x2) = (x(c.from_lane), x(c.lane));
                let _ = write!(
                    s,
                    r#"<g class="call" data-i="{i}"><title>{}</title>"#,
                    esc(&call_tip(c, &scene.legend))
                );
                let label = format!("{}({})", c.function, c.args.join(", "));
                let end = if x1 == x2 {
                    let _ = write!(
                        s,
                        r##"<path d="M{x1},{} h28 v10 h-26" fill="none" stroke="#333" marker-end="url(#{id}-arrow)"/>"##,
                        y - 6
                    );
                    (x1 + 34, y + 2)
                } else {
                    let _ = write!(
                        s,
                        r##"<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="#333" marker-end="url(#{id}-arrow)"/>"##
                    );
                    (x1.min(x2) + 6, y - 4)
                };
                let shown = if x1 == x2 { label } else { c.function.clone() };
                let before = labels.len();
                put_text(&mut labels, &mut s, &shown, &[end], "");
                if c.in_flight {
                    // After the call's own label, else under the arrow.
                    let after = labels.last_end(before).map_or(end, |e| (e + 8, end.1));
                    put_text(
                        &mut labels,
                        &mut s,
                        &format!("… in flight {}+", crate::units::ns(c.duration_ns)),
                        &[after, (x2 + 6, y + 12)],
                        r##" class="in-flight" fill="#c0392b""##,
                    );
                }
                s.push_str("</g>\n");
            }
            Item::Return(i) => {
                let c = &scene.calls[i];
                let (x1, x2) = (x(c.lane), x(c.from_lane));
                let d = dots(c.duration_ns, unit_ns);
                let _ = write!(
                    s,
                    r#"<g class="return" data-i="{i}"><title>{} returned {} after {}</title>"#,
                    esc(&c.function),
                    esc(&with_value(
                        c.ret.as_deref().unwrap_or_default(),
                        &scene.legend
                    )),
                    crate::units::ns(c.duration_ns)
                );
                let at = if x1 == x2 {
                    let _ = write!(
                        s,
                        r##"<path d="M{},{} h-20" stroke="#777" stroke-dasharray="3,2" marker-end="url(#{id}-arrow)"/>"##,
                        x1 + 24,
                        y
                    );
                    (x1 + 4, y - 4)
                } else {
                    let _ = write!(
                        s,
                        r##"<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="#777" stroke-dasharray="3,2" marker-end="url(#{id}-arrow)"/>"##
                    );
                    ((x1 + x2) / 2 + 4, y - 4)
                };
                if !d.is_empty() {
                    put_text(
                        &mut labels,
                        &mut s,
                        &d,
                        &[at, (at.0 + 30, y + 4)],
                        r##" class="dots" fill="#1a5276""##,
                    );
                }
                s.push_str("</g>\n");
            }
        }
    }
    let times: Vec<u64> = rows.iter().map(|&(t, _)| t).collect();
    let row_at = |t: u64| {
        times
            .partition_point(|&x| x < t)
            .min(times.len().saturating_sub(1))
    };
    for h in &scene.handoffs {
        if times.is_empty() {
            break;
        }
        let (y1, y2) = (row_y(row_at(h.queued_ns)), row_y(row_at(h.popped_ns)));
        let (x1, x2) = (x(h.from_lane), x(h.to_lane));
        let (x1, x2) = if x1 == x2 {
            (x1 - 40, x2 + 40)
        } else {
            (x1, x2)
        };
        let _ = write!(
            s,
            r##"<g class="handoff"><title>hand-off {} queued by thread {} at {}, popped by thread {} at {}</title><line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#e67e22" stroke-width="1.5" marker-end="url(#{id}-hand)"/>"##,
            esc(&with_value(&h.object, &scene.legend)),
            h.from_tid,
            crate::units::ns(h.queued_ns),
            h.to_tid,
            crate::units::ns(h.popped_ns),
        );
        let (mx, my) = ((x1 + x2) / 2 + 4, (y1 + y2) / 2);
        let spots: Vec<(u64, u64)> = [
            my.saturating_sub(3),
            my + 13,
            my.saturating_sub(17),
            my + 27,
        ]
        .into_iter()
        .flat_map(|y| [(mx, y), (x1.min(x2) + 6, y)])
        .collect();
        put_text(
            &mut labels,
            &mut s,
            &format!("hand-off {}", h.object),
            &spots,
            r##" fill="#e67e22""##,
        );
        s.push_str("</g>\n");
    }
    let mut y = rows_end + LEGEND_H;
    if scene.truncated > 0 {
        let _ = writeln!(
            s,
            r##"<text x="{LEFT}" y="{y}" fill="#c0392b">{} more calls not drawn (narrow the selection: --session, --window, --min-duration)</text>"##,
            scene.truncated
        );
        y += truncated_h;
    }
    s.push_str(r#"<g class="legend">"#);
    for row in &legend {
        for (k, entry) in row.iter().enumerate() {
            let _ = write!(
                s,
                r##"<text x="{}" y="{y}" fill="#555">{}</text>"##,
                LEFT + LEGEND_COL * k as u64,
                esc(entry)
            );
        }
        y += LEGEND_H;
    }
    s.push_str("</g>\n</svg>\n");
    s
}

const TITLE_SCALE: f64 = 13.0 / 11.0;
const LEGEND_H: u64 = 16;
const LEGEND_CHARS: usize = 26;
const LEGEND_COL: u64 = 181;

/// `text` cut to `max` characters, ending in `…` when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        text.chars()
            .take(max.saturating_sub(1))
            .chain(['…'])
            .collect()
    }
}

/// `name = 0x…` for a name of the legend, the text itself otherwise.
fn with_value(text: &str, legend: &[Named]) -> String {
    match legend.iter().rev().find(|n| n.name == text) {
        Some(n) => format!("{} = {}", n.name, n.value),
        None => text.to_string(),
    }
}

fn call_tip(c: &super::scene::SceneCall, legend: &[Named]) -> String {
    let args: Vec<String> = c.args.iter().map(|a| with_value(a, legend)).collect();
    format!(
        "{}({}) [thread {}] start {} {}{}",
        c.function,
        args.join(", "),
        c.tid,
        crate::units::ns(c.start_ns),
        if c.in_flight {
            format!("in flight for {}+", crate::units::ns(c.duration_ns))
        } else {
            format!("took {}", crate::units::ns(c.duration_ns))
        },
        c.source
            .as_ref()
            .map_or_else(String::new, |src| format!(" at {src}"))
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dots_per_unit_then_a_number() {
        let u = 500_000;
        assert_eq!(super::dots(499_999, u), "");
        assert_eq!(super::dots(500_000, u), "•");
        assert_eq!(super::dots(2_100_000, u), "••••");
        assert_eq!(super::dots(2_500_000, u), "5");
        assert_eq!(super::dots(60_000_000_000, u), "120000");
    }
}
