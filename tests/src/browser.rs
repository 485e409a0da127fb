//! Pages opened in Debian's headless Chromium, as a person would see them:
//! console errors, and layout read back from the page (a script appended
//! to a copy of it writes what it measured into the DOM, which
//! `--dump-dom` prints).
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// Runs Chromium headless on `url` with `args` (a fresh profile each time,
/// nothing fetched from the network).
pub fn chromium(dir: &Path, args: &[&str], url: &str) -> Output {
    let profile = tempfile::tempdir().unwrap();
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .current_dir(dir)
        .output()
        .expect("run chromium (installed by `cargo xtask setup`)")
}

/// Measures the page after its own script ran: per sequence diagram, the
/// gap from its pane's title to its first call label and every pair of
/// intersecting text boxes; per timeline figure, its variant and the
/// points of each series in each segment.
const MEASURE: &str = r#"
<script>
(function () {
  const out = { ready: document.body.dataset.ready || null, diagrams: [], timelines: [] };
  const box = e => { const r = e.getBoundingClientRect(); return { x0: r.left, y0: r.top, x1: r.right, y1: r.bottom, text: e.textContent }; };
  document.querySelectorAll('svg.flowdar-seq').forEach(svg => {
    const pane = svg.closest('.pane');
    const title = pane ? pane.querySelector('h2') : null;
    const first = svg.querySelector('g.call text');
    const texts = [...svg.querySelectorAll('text')].map(box).filter(b => b.x1 - b.x0 > 0 && b.y1 - b.y0 > 0);
    const overlaps = [];
    for (let i = 0; i < texts.length; i++) {
      for (let j = i + 1; j < texts.length; j++) {
        const a = texts[i], b = texts[j];
        // Half a pixel of slack: adjacent boxes may share an edge.
        if (a.x0 < b.x1 - 0.5 && b.x0 < a.x1 - 0.5 && a.y0 < b.y1 - 0.5 && b.y0 < a.y1 - 0.5) {
          overlaps.push([a.text, b.text]);
        }
      }
    }
    out.diagrams.push({
      id: svg.id,
      title: title ? title.textContent : null,
      title_bottom: title ? title.getBoundingClientRect().bottom : null,
      first_label_top: first ? first.getBoundingClientRect().top : null,
      texts: texts.length,
      overlaps: overlaps,
    });
  });
  document.querySelectorAll('svg[data-figure="timeline"]').forEach(svg => {
    const segments = [...svg.querySelectorAll('g[data-segment]')].map(g => ({
      segment: g.dataset.segment,
      series: Object.fromEntries([...g.querySelectorAll('[data-series]')].map(p => [p.dataset.series, +p.dataset.points])),
      drawn: Object.fromEntries([...g.querySelectorAll('[data-series]')].map(p => [p.dataset.series, p.points.numberOfItems])),
    }));
    const r = svg.getBoundingClientRect();
    out.timelines.push({ variant: svg.dataset.variant, top: r.top, width: r.width, height: r.height, segments });
  });
  const pre = document.createElement('pre');
  pre.id = 'flowdar-layout';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"#;

/// The layout of `page` in a `width` x `height` window, measured by
/// [`MEASURE`] on a copy next to it (so relative links still resolve).
pub fn layout(page: &Path, width: u32, height: u32) -> serde_json::Value {
    let html = std::fs::read_to_string(page).unwrap();
    let copy = page.with_file_name("flowdar-layout-check.html");
    let at = html.rfind("</body>").unwrap_or(html.len());
    std::fs::write(&copy, format!("{}{MEASURE}{}", &html[..at], &html[at..])).unwrap();
    let dir = page.parent().unwrap();
    let o = chromium(
        dir,
        &[
            &format!("--window-size={width},{height}"),
            "--dump-dom",
            "--virtual-time-budget=3000",
        ],
        &format!("file://{}", copy.display()),
    );
    std::fs::remove_file(&copy).unwrap();
    let dom = String::from_utf8_lossy(&o.stdout);
    let log = String::from_utf8_lossy(&o.stderr);
    for bad in ["Uncaught", "console.error"] {
        assert!(!log.contains(bad), "console error ({bad}):\n{log}");
    }
    let json = dom
        .split("<pre id=\"flowdar-layout\">")
        .nth(1)
        .and_then(|r| r.split("</pre>").next())
        .unwrap_or_else(|| panic!("the measuring script ran:\n{log}"));
    let json = json
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

/// A screenshot of `page` at `width` x `height`, saved as `name` under
/// the workspace's `target/` for a person to look at.
pub fn screenshot(page: &Path, width: u32, height: u32, name: &str) -> PathBuf {
    let shot = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/screenshots")
        .join(name);
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let o = chromium(
        page.parent().unwrap(),
        &[
            &format!("--window-size={width},{height}"),
            &format!("--screenshot={}", shot.display()),
            "--virtual-time-budget=3000",
        ],
        &format!("file://{}", page.display()),
    );
    assert!(
        o.status.success() && shot.metadata().map(|m| m.len()).unwrap_or(0) > 10_000,
        "screenshot at {}: {}",
        shot.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    shot
}

/// Asserts what a reader needs of every sequence diagram in `layout`:
/// its first call label within 120 px of its pane's title, and no two of
/// its texts overlapping.
pub fn assert_diagrams_readable(layout: &serde_json::Value) {
    let diagrams = layout["diagrams"].as_array().unwrap();
    assert!(!diagrams.is_empty(), "no diagram in {layout}");
    for d in diagrams {
        let gap = d["first_label_top"].as_f64().unwrap() - d["title_bottom"].as_f64().unwrap();
        assert!(
            (0.0..=120.0).contains(&gap),
            "{}: the first label {gap:.0} px below its title ({})",
            d["id"],
            d["title"]
        );
        assert!(d["texts"].as_u64().unwrap() > 3, "{d}");
        assert_eq!(
            d["overlaps"].as_array().unwrap().len(),
            0,
            "{}: texts overlap: {}",
            d["id"],
            d["overlaps"]
        );
    }
}
