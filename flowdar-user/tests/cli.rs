//! The `flowdar` command line without root: help, bad input, and the
//! read-side commands on traces made here.
mod common;

use common::{fixture, flowdar};

/// Runs flowdar expecting failure; returns stderr, checked to be one line.
fn one_line_error(args: &[&str]) -> String {
    let o = flowdar().args(args).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("Error: "), "{err}");
    err
}

#[test]
fn help_teaches() {
    let o = flowdar().arg("--help").output().unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    for word in ["record", "dump", "stats", "demo", "Examples:", "CAP_BPF"] {
        assert!(text.contains(word), "{word} in --help:\n{text}");
    }
    let o = flowdar().args(["record", "--help"]).output().unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("TARGET:FUNCTION") && text.contains("version = 1"),
        "{text}"
    );
}

#[test]
fn stats_json_on_a_fixture_has_exact_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.flowdar");
    fixture(&path);
    let o = flowdar()
        .args(["stats", "--json", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        out["pairing"],
        serde_json::json!({"unmatched_exits": 0, "lost_exits": 0, "time_reversals": 0})
    );
    let mut rows = out["functions"].clone();
    // Percentiles come from HDR histograms (3 significant digits): within
    // 0.1 % of the exact order statistics; the rest is exact.
    let want_percentiles = [
        [60_000u64, 1_000_000, 1_000_000],
        [100_000, 100_000, 100_000],
    ];
    for (row, want) in rows
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .zip(want_percentiles)
    {
        for (key, w) in ["p50_ns", "p90_ns", "p99_ns"].into_iter().zip(want) {
            let got = row
                .as_object_mut()
                .unwrap()
                .remove(key)
                .unwrap()
                .as_u64()
                .unwrap();
            assert!(got.abs_diff(w) <= w / 1000, "{key}: {got} vs {w}");
        }
    }
    let expected = serde_json::json!([
        {"function": "ap_read_request", "object": "apache2", "calls": 2, "in_flight": 1, "errors": 0,
         "total_ns": 1_080_000, "self_ns": 1_080_000, "mean_ns": 360_000, "max_ns": 1_000_000, "zero_returns": 1, "backend_ns": 0},
        {"function": "ap_process_async_request", "object": "apache2", "calls": 1, "in_flight": 0, "errors": 0,
         "total_ns": 100_000, "self_ns": 80_000, "mean_ns": 100_000, "max_ns": 100_000, "zero_returns": 1, "backend_ns": 0},
    ]);
    assert_eq!(rows, expected);
}

#[test]
fn dump_indents_and_times_calls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.flowdar");
    fixture(&path);
    let o = flowdar()
        .args(["dump", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("    0.010000     100     101    -> ap_read_request(0x0, 0x0, 0x0)"),
        "{text}"
    );
    assert!(
        text.contains("    0.030000     100     101    <- ap_read_request = 0xabc  [20.0 µs]"),
        "{text}"
    );
    assert!(
        text.contains("<- ap_process_async_request = 0x0  [100.0 µs]"),
        "{text}"
    );
    let o = flowdar()
        .args(["dump", "--tid", "102", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(o.stdout).unwrap().lines().count(),
        3,
        "header + 2 events"
    );
}

#[test]
fn damaged_traces_are_reported_not_crashed_on() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.flowdar");
    std::fs::write(&empty, b"").unwrap();
    assert!(one_line_error(&["stats", empty.to_str().unwrap()])
        .contains("is empty: not a flowdar trace"));
    let junk = dir.path().join("junk.flowdar");
    std::fs::write(&junk, b"<html>not a trace</html>").unwrap();
    assert!(one_line_error(&["dump", junk.to_str().unwrap()]).contains("is not a flowdar trace"));
    assert!(one_line_error(&["stats", "/nonexistent/t.flowdar"])
        .contains("cannot open trace /nonexistent/t.flowdar"));
    // Truncated: the events survive, the missing footer is a warning.
    let full = dir.path().join("full.flowdar");
    fixture(&full);
    let bytes = std::fs::read(&full).unwrap();
    let cut = dir.path().join("cut.flowdar");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let o = flowdar()
        .args(["stats", "--json", cut.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success());
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = &out["functions"];
    let read = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["function"] == "ap_read_request")
        .unwrap();
    assert_eq!(
        (read["calls"].as_u64(), read["in_flight"].as_u64()),
        (Some(2), Some(1))
    );
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(err.contains("trace is truncated at byte"), "{err}");
}

#[test]
fn malformed_probe_file_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(
        &file,
        "version = 1\n[[probe]]\ntarget = \"apache2\"\nfunction = [\"ap_read_request\"]\n",
    )
    .unwrap();
    let err = one_line_error(&[
        "record",
        "--pid",
        "1",
        "--probes",
        file.to_str().unwrap(),
        "-o",
        "/tmp/x",
    ]);
    assert!(
        err.contains(
            "p.toml:4:1: unknown field `function`, expected one of `set`, `target`, `functions`, `exclude`, `args`, `ret`, `entry_only`, `errors`, `capture`"
        ),
        "{err}"
    );
    let err = one_line_error(&[
        "record",
        "--pid",
        "1",
        "--probes",
        "/nonexistent.toml",
        "-o",
        "/tmp/x",
    ]);
    assert!(
        err.contains("cannot read probe file /nonexistent.toml: No such file"),
        "{err}"
    );
}

#[test]
fn diff_of_a_trace_against_itself_finds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.flowdar");
    fixture(&path);
    let p = path.to_str().unwrap();
    let o = flowdar().args(["diff", "--json", p, p]).output().unwrap();
    assert!(o.status.success(), "{o:?}");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(
            (
                r["significant"].as_bool(),
                r["ratio"].as_f64(),
                r["p_value"].as_f64()
            ),
            (Some(false), Some(1.0), Some(1.0))
        );
        assert_eq!(r["base_calls"], r["test_calls"]);
    }
}

#[test]
fn simplify_drops_short_calls_and_reports_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (path, out) = (dir.path().join("t.flowdar"), dir.path().join("s.flowdar"));
    fixture(&path);
    let o = flowdar()
        .args([
            "simplify",
            path.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--min-duration",
            "50us",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // The 20 µs read inside the 100 µs call goes; the 60 µs and the open call stay.
    assert_eq!(
        (
            r[0]["events_before"].as_u64(),
            r[0]["events_after"].as_u64(),
            r[0]["dropped_short"].as_u64()
        ),
        (Some(7), Some(5), Some(1))
    );
    let o = flowdar()
        .args(["stats", "--json", out.to_str().unwrap()])
        .output()
        .unwrap();
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = out["functions"].as_array().unwrap();
    let outer = rows
        .iter()
        .find(|r| r["function"] == "ap_process_async_request")
        .unwrap();
    assert_eq!(
        outer["self_ns"], 100_000,
        "the dropped call's time is the caller's own now"
    );
}

#[test]
fn sessions_and_flows_say_which_profile_they_need() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.flowdar");
    fixture(&path);
    let err = one_line_error(&["flows", path.to_str().unwrap()]);
    assert!(
        err.contains("record with --profile apache:handoff"),
        "{err}"
    );
    let o = flowdar()
        .args(["sessions", "--json", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "ap_read_request names connections: {o:?}"
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    // Fixture reads take conn 0 (args are 0): no connection identity, no session.
    assert!(rows.is_empty(), "{rows:?}");
}

#[test]
fn a_trace_of_another_format_version_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let future = dir.path().join("future.flowdar");
    let mut bytes = b"FLOWDAR\0".to_vec();
    bytes.extend_from_slice(&99u32.to_le_bytes());
    bytes.extend_from_slice(&[0; 64]);
    std::fs::write(&future, bytes).unwrap();
    let err = one_line_error(&["stats", future.to_str().unwrap()]);
    assert!(
        err.contains("is trace format version 99; this flowdar reads versions 1 to 2"),
        "{err}"
    );
}

#[test]
fn malformed_experiment_spec_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        "version = 1\nprofile = [\"apache:request\"]\n\n[[phase]]\nname = \"normal\"\nduration = 20s\n",
    )
    .unwrap();
    let err = one_line_error(&[
        "experiment",
        spec.to_str().unwrap(),
        "-o",
        dir.path().join("out").to_str().unwrap(),
    ]);
    assert!(err.contains("spec.toml:6:12"), "{err}");
}

/// Experiments send traffic only to loopback or their own lab hosts; an
/// existing server takes no configuration variants. Both refused in one
/// line before anything runs.
#[test]
fn experiments_refuse_foreign_targets_and_config_variants_for_existing_servers() {
    let dir = tempfile::tempdir().unwrap();
    let spec = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let far = spec(
        "far.toml",
        "version = 1\nprofile = [\"apache:request\"]\n[server]\npid = 1\nurl = \"http://10.1.2.3:80/index.html\"\n\
         [[phase]]\nname = \"attack\"\nduration = \"5s\"\n\
         attack = { mode = \"headers\", connections = 10, rate = 10, interval = \"2s\", ramp = \"1s\" }\n",
    );
    let out = dir.path().join("exp");
    let err = one_line_error(&[
        "experiment",
        far.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.contains("refusing to send traffic to 10.1.2.3") && err.contains("--allow-target"),
        "{err}"
    );
    let variant = spec(
        "variant.toml",
        "version = 1\nprofile = [\"apache:request\"]\n[server]\npid = 1\nurl = \"http://127.0.0.1:80/index.html\"\n\
         [[variant]]\nname = \"rt\"\nconfig = \"Timeout 3\\n\"\n\
         [[phase]]\nname = \"normal\"\nduration = \"5s\"\nload = { connections = 2 }\n",
    );
    let err = one_line_error(&[
        "experiment",
        variant.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.contains("variant `rt` changes the server's configuration"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
}
