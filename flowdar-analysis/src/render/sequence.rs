//! Sequence diagrams as SVG: one lifeline per lane, call and return arrows
//! in time order (one row each), hand-offs as orange arrows labelled with
//! the object's address, and each call's duration as dots on its return
//! arrow: one dot per unit (500 µs by default), a number past four dots.
use std::fmt::Write as _;

use super::scene::Scene;

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

/// The scene as a standalone SVG document; `id` prefixes element ids so two
/// diagrams can share a page.
pub fn svg(scene: &Scene, unit_ns: u64, id: &str) -> String {
    let rows = rows(scene);
    let width = (2 * LEFT + LANE_W * scene.lanes.len().max(1) as u64).max(760);
    let height = TOP + ROW_H * (rows.len() as u64 + 1) + 30;
    let row_y = |r: usize| TOP + ROW_H * (r as u64 + 1);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" id="{id}" class="flowdar-seq" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="monospace" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r##"<defs><marker id="{id}-arrow" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#333"/></marker><marker id="{id}-hand" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#e67e22"/></marker></defs>"##
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#fff"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="18" font-size="13" font-weight="bold">{} (one dot = {}; more than four dots shown as a number)</text>"##,
        esc(&scene.title),
        crate::units::ns(unit_ns)
    );
    for (i, lane) in scene.lanes.iter().enumerate() {
        let cx = x(i);
        let _ = writeln!(
            s,
            r##"<g class="lifeline" data-lane="{i}"><rect x="{}" y="32" width="{}" height="24" rx="4" fill="#eef3fb" stroke="#4a6fa5"/><text x="{cx}" y="48" text-anchor="middle">{}</text><line x1="{cx}" y1="56" x2="{cx}" y2="{}" stroke="#9aa" stroke-dasharray="4,3"/></g>"##,
            cx - LANE_W / 2 + 10,
            LANE_W - 20,
            esc(lane),
            height - 10
        );
    }
    for (r, &(_, item)) in rows.iter().enumerate() {
        let y = row_y(r);
        match item {
            Item::Call(i) => {
                let c = &scene.calls[i];
                let (x1, x2) = (x(c.from_lane), x(c.lane));
                let tip = format!(
                    "{} [thread {}] start {} {}{}",
                    c.function,
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
                );
                let _ = write!(
                    s,
                    r#"<g class="call" data-i="{i}"><title>{}</title>"#,
                    esc(&tip)
                );
                if x1 == x2 {
                    let _ = write!(
                        s,
                        r##"<path d="M{x1},{} h28 v10 h-26" fill="none" stroke="#333" marker-end="url(#{id}-arrow)"/>"##,
                        y - 6
                    );
                    let _ = write!(
                        s,
                        r#"<text x="{}" y="{}">{}({})</text>"#,
                        x1 + 34,
                        y + 2,
                        esc(&c.function),
                        c.args.join(", ")
                    );
                } else {
                    let _ = write!(
                        s,
                        r##"<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="#333" marker-end="url(#{id}-arrow)"/>"##
                    );
                    let _ = write!(
                        s,
                        r#"<text x="{}" y="{}">{}</text>"#,
                        x1.min(x2) + 6,
                        y - 4,
                        esc(&c.function)
                    );
                }
                if c.in_flight {
                    let _ = write!(
                        s,
                        r##"<text x="{}" y="{}" fill="#c0392b">… in flight {}+</text>"##,
                        x2 + 6,
                        y + 12,
                        crate::units::ns(c.duration_ns)
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
                    c.ret.clone().unwrap_or_default(),
                    crate::units::ns(c.duration_ns)
                );
                if x1 == x2 {
                    let _ = write!(
                        s,
                        r##"<path d="M{},{} h-20" stroke="#777" stroke-dasharray="3,2" marker-end="url(#{id}-arrow)"/>"##,
                        x1 + 24,
                        y
                    );
                } else {
                    let _ = write!(
                        s,
                        r##"<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="#777" stroke-dasharray="3,2" marker-end="url(#{id}-arrow)"/>"##
                    );
                }
                if !d.is_empty() {
                    let _ = write!(
                        s,
                        r##"<text class="dots" x="{}" y="{}" fill="#1a5276">{}</text>"##,
                        (x1 + x2) / 2 + 4,
                        y - 4,
                        d
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
        let _ = writeln!(
            s,
            r##"<g class="handoff"><title>{} queued by thread {} at {}, popped by thread {} at {}</title><line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#e67e22" stroke-width="1.5" marker-end="url(#{id}-hand)"/><text x="{}" y="{}" fill="#e67e22">hand-off {}</text></g>"##,
            h.object,
            h.from_tid,
            crate::units::ns(h.queued_ns),
            h.to_tid,
            crate::units::ns(h.popped_ns),
            (x1 + x2) / 2 + 4,
            (y1 + y2) / 2 - 3,
            h.object
        );
    }
    if scene.truncated > 0 {
        let _ = writeln!(
            s,
            r##"<text x="{LEFT}" y="{}" fill="#c0392b">{} more calls not drawn (narrow the selection: --session, --window, --min-duration)</text>"##,
            height - 8,
            scene.truncated
        );
    }
    s.push_str("</svg>\n");
    s
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
