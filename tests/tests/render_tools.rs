//! Rendered output opened by real tools: the HTML page in headless Chromium
//! (no console errors, lifelines and a hand-off arrow in the page, a
//! screenshot), and Parquet tables read back by DuckDB, checked against
//! `flowdar stats`. Both on a real Apache trace.
use std::{path::Path, process::Command, time::Duration};

use flowdar::server::{run_load, LoadPlan};
use flowdar_tests::{browser::chromium, *};

fn record(dir: &Path) -> std::path::PathBuf {
    let apache = small_event_apache();
    let trace = dir.join("t.flowdar");
    let rec = record_profile(apache.pid(), "apache:connection,request,io,handoff", &trace);
    let plan = LoadPlan {
        connections: 12,
        requests_per_connection: 2,
        concurrency: 2,
        ..Default::default()
    };
    assert_eq!(run_load(apache.addr(), &plan).ok, 24);
    std::thread::sleep(Duration::from_millis(500));
    let (code, out, err) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "{out}\n{err}");
    trace
}

#[test]
fn html_page_renders_in_chromium_without_errors() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let trace = record(dir.path());
    // A session that a hand-off led into, by thread and by component, side by side.
    let html = dir.path().join("page.html");
    let o = flowdar(&[
        "render",
        trace.to_str().unwrap(),
        "--session",
        "3",
        "--by",
        "thread",
        "--compare",
        trace.to_str().unwrap(),
        "--compare-session",
        "3",
        "-o",
        html.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let url = format!("file://{}", html.display());
    let dom = chromium(
        dir.path(),
        &["--dump-dom", "--virtual-time-budget=2000"],
        &url,
    );
    let text = String::from_utf8_lossy(&dom.stdout);
    let log = String::from_utf8_lossy(&dom.stderr);
    assert!(
        text.contains("data-ready=\"ok\""),
        "the page's script ran to the end:\n{log}"
    );
    for bad in ["Uncaught", "CONSOLE(", "console.error"] {
        assert!(!log.contains(bad), "console error ({bad}):\n{log}");
    }
    assert!(
        text.contains("class=\"lifeline\"") && text.contains(">thread "),
        "lifelines per thread"
    );
    assert!(
        text.contains("class=\"handoff\"") && text.contains("<title>hand-off "),
        "a hand-off arrow"
    );
    // Issue #30: pointers by short names, kept in a legend; both diagrams
    // start at the top of their panes and no two texts overlap.
    assert!(
        text.contains("(conn 1") && text.contains("conn 1 = 0x"),
        "named pointers and their legend"
    );
    flowdar_tests::browser::assert_diagrams_readable(&flowdar_tests::browser::layout(
        &html, 1400, 1000,
    ));
    assert_eq!(text.matches("<svg").count(), 2, "side by side");
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("flowdar-page.png");
    let o = chromium(
        dir.path(),
        &[
            "--window-size=1400,900",
            &format!("--screenshot={}", shot.display()),
        ],
        &url,
    );
    assert!(
        o.status.success() && shot.metadata().map(|m| m.len()).unwrap_or(0) > 10_000,
        "screenshot at {}",
        shot.display()
    );
}

#[test]
fn parquet_tables_read_back_with_duckdb_match_stats() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let trace = record(dir.path());
    let out = dir.path().join("tables");
    let o = flowdar(&[
        "export",
        trace.to_str().unwrap(),
        "--format",
        "parquet",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let script = format!(
        "import duckdb, json\n\
         c = duckdb.connect()\n\
         e = c.execute(\"select count(*) from '{d}/events.parquet'\").fetchone()[0]\n\
         rows = c.execute(\"select function, count(*), sum(duration_ns) from '{d}/calls.parquet' group by function\").fetchall()\n\
         print(json.dumps({{'events': e, 'calls': {{f: [n, int(t)] for f, n, t in rows}}}}))\n",
        d = out.display()
    );
    let py = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3");
    assert!(
        py.status.success(),
        "duckdb (pip, installed by `cargo xtask setup`): {}",
        String::from_utf8_lossy(&py.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    let t = Trace::read(&trace);
    assert_eq!(got["events"].as_u64(), Some(t.events.len() as u64));
    let stats = flowdar(&["stats", "--json", trace.to_str().unwrap()]);
    let out: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    let rows = out["functions"].as_array().unwrap();
    assert!(!rows.is_empty());
    for r in rows {
        let f = r["function"].as_str().unwrap();
        let calls = r["calls"].as_u64().unwrap() + r["in_flight"].as_u64().unwrap();
        assert_eq!(
            got["calls"][f],
            serde_json::json!([calls, r["total_ns"].as_u64().unwrap()]),
            "{f}"
        );
    }
}

/// Issue #30: `render --timeline` on a trace of its own, `request` and
/// the lean set: the requests a second add up to the requests sent (all
/// inside whole seconds of the capture), and a client that sent half a
/// request holds exactly one worker at the last second.
#[test]
fn a_trace_draws_its_own_timeline_request_and_lean() {
    require_root();
    for (profile, held_in) in [
        ("apache:request", "ap_read_request"),
        ("apache:lean", flowdar::analysis::READ_WAITS),
    ] {
        let apache = small_event_apache();
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("t.flowdar");
        let rec = record_profile(apache.pid(), profile, &trace);
        let plan = LoadPlan {
            connections: 20,
            requests_per_connection: 3,
            concurrency: 2,
            ..Default::default()
        };
        assert_eq!(run_load(apache.addr(), &plan).ok, 60, "{profile}");
        // Half a request, then 2.5 s of nothing else: the last whole
        // second has this one worker waiting for the rest.
        let mut slow = std::net::TcpStream::connect(apache.addr()).unwrap();
        std::io::Write::write_all(&mut slow, b"GET / HTTP/1.1\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(2500));
        let (code, out, err) = rec.stop(libc::SIGINT);
        assert_eq!(code, Some(0), "{out}\n{err}");
        drop(slow);
        let svg_path = dir.path().join("timeline.svg");
        let o = flowdar(&[
            "render",
            trace.to_str().unwrap(),
            "--timeline",
            "-o",
            svg_path.to_str().unwrap(),
        ]);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{profile}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            stdout.contains(&format!("workers in {held_in} at a second's end")),
            "{profile}: {stdout}"
        );
        let svg = std::fs::read_to_string(&svg_path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("data-figure=\"timeline\""));
        let requests = timeline_series(&svg, "requests");
        assert_eq!(requests.iter().sum::<u64>(), 60, "{profile}: {requests:?}");
        let held = timeline_series(&svg, "held");
        assert_eq!(held.len(), requests.len(), "{profile}: a point a second");
        assert_eq!(held.last(), Some(&1), "{profile}: {held:?}");
        assert!(
            !svg.contains("failures"),
            "{profile}: a trace counts no failures"
        );
        assert!(svg.contains(&format!("workers in {held_in}")), "{profile}");
    }
}
