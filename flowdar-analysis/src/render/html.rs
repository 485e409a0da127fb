//! One self-contained HTML page (no network fetches): the sequence
//! diagram(s) inline, the scene data as JSON for hover details, pan (drag)
//! and zoom (wheel), and two diagrams side by side to compare sessions,
//! each starting at the top of its pane.
use std::fmt::Write as _;

use super::{scene::Scene, sequence};

const STYLE: &str = r#"
body { font-family: sans-serif; margin: 0; background: #f6f7f9; }
header { padding: 8px 14px; background: #243b55; color: #fff; }
header small { opacity: .8; }
.panes { display: flex; gap: 8px; padding: 8px; }
.pane { flex: 1; overflow: hidden; background: #fff; border: 1px solid #ccd; height: 85vh; cursor: grab; }
.pane h2 { font-size: 14px; margin: 4px 8px; }
.pane svg { width: 100%; height: calc(100% - 28px); }
#tip { position: fixed; pointer-events: none; background: #222; color: #fff; padding: 6px 8px; font: 12px monospace; border-radius: 4px; display: none; max-width: 520px; white-space: pre-wrap; }
g.call:hover text, g.return:hover text { fill: #c0392b; }
"#;

const SCRIPT: &str = r#"
(function () {
  const data = JSON.parse(document.getElementById('flowdar-data').textContent);
  const tip = document.getElementById('tip');
  const fmt = ns => ns < 1e3 ? ns + ' ns' : ns < 1e6 ? (ns / 1e3).toFixed(1) + ' µs' : ns < 1e9 ? (ns / 1e6).toFixed(1) + ' ms' : (ns / 1e9).toFixed(2) + ' s';
  document.querySelectorAll('svg.flowdar-seq').forEach((svg, k) => {
    const scene = data.scenes[k];
    const names = {};
    scene.legend.forEach(n => { names[n.name] = n.value; });
    const named = a => names[a] ? a + ' = ' + names[a] : a;
    const vb = svg.viewBox.baseVal;
    // A diagram taller than its pane starts at the top, as wide as the
    // pane: drag to see the rest.
    const box = svg.getBoundingClientRect();
    if (box.width > 0 && vb.height / vb.width > box.height / box.width) {
      vb.height = vb.width * box.height / box.width;
    }
    const home = [vb.x, vb.y, vb.width, vb.height];
    let drag = null;
    svg.addEventListener('wheel', e => {
      e.preventDefault();
      const f = e.deltaY > 0 ? 1.15 : 1 / 1.15;
      const r = svg.getBoundingClientRect();
      const px = vb.x + (e.clientX - r.left) / r.width * vb.width;
      const py = vb.y + (e.clientY - r.top) / r.height * vb.height;
      vb.width *= f; vb.height *= f;
      vb.x = px - (px - vb.x) * f; vb.y = py - (py - vb.y) * f;
    }, { passive: false });
    svg.addEventListener('mousedown', e => { drag = [e.clientX, e.clientY, vb.x, vb.y]; });
    window.addEventListener('mouseup', () => { drag = null; });
    svg.addEventListener('mousemove', e => {
      if (drag) {
        const r = svg.getBoundingClientRect();
        vb.x = drag[2] - (e.clientX - drag[0]) / r.width * vb.width;
        vb.y = drag[3] - (e.clientY - drag[1]) / r.height * vb.height;
      }
      const g = e.target.closest('g.call, g.return');
      if (!g) { tip.style.display = 'none'; return; }
      const c = scene.calls[+g.dataset.i];
      tip.textContent = c.function + '(' + c.args.map(named).join(', ') + ')' + (c.ret !== null ? ' = ' + named(c.ret) : '') +
        '\nthread ' + c.tid + ' (process ' + c.pid + ')' +
        '\nstart ' + fmt(c.start_ns) + (c.in_flight ? ', in flight for ' + fmt(c.duration_ns) + '+' : ', took ' + fmt(c.duration_ns)) +
        (c.source ? '\nsource ' + c.source : '');
      tip.style.left = (e.clientX + 14) + 'px'; tip.style.top = (e.clientY + 10) + 'px'; tip.style.display = 'block';
    });
    svg.addEventListener('dblclick', () => { [vb.x, vb.y, vb.width, vb.height] = home; });
  });
  document.body.dataset.ready = 'ok';
})();
"#;

/// The page for one scene, or two side by side.
pub fn page(scenes: &[&Scene], unit_ns: u64) -> String {
    let data = data_json(scenes);
    let mut s = String::new();
    let title = scenes
        .iter()
        .map(|sc| sc.title.as_str())
        .collect::<Vec<_>>()
        .join(" vs ");
    let _ = writeln!(s, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Flowdar: {}</title><style>{STYLE}</style></head><body>", sequence::esc(&title));
    let _ = writeln!(s, "<header><b>Flowdar</b> {} <small>drag to pan, wheel to zoom, double-click to reset, hover a call for details</small></header>", sequence::esc(&title));
    s.push_str("<div class=\"panes\">\n");
    for (k, sc) in scenes.iter().enumerate() {
        let _ = writeln!(
            s,
            "<div class=\"pane\"><h2>{}</h2>",
            sequence::esc(&sc.title)
        );
        s.push_str(&sequence::svg(sc, unit_ns, &format!("seq{k}")));
        s.push_str("</div>\n");
    }
    s.push_str("</div>\n<div id=\"tip\"></div>\n");
    // JSON inside a script element: only "</" needs escaping.
    let _ = writeln!(
        s,
        "<script type=\"application/json\" id=\"flowdar-data\">{}</script>",
        data.replace("</", "<\\/")
    );
    let _ = writeln!(s, "<script>{SCRIPT}</script>\n</body></html>");
    s
}

/// The data the page's script reads (pinned by snapshot tests).
#[expect(
    clippy::expect_used,
    reason = "a Scene is plain strings, numbers and lists: serde_json fails only on maps with non-string keys"
)]
pub fn data_json(scenes: &[&Scene]) -> String {
    serde_json::to_string_pretty(&serde_json::json!({ "scenes": scenes }))
        .expect("scene serialises")
}
