//! `flowdar import uftrace`: a C program built with `gcc -pg`, recorded by
//! uftrace itself, imported; calls per function equal `uftrace report`'s
//! and what the program's arithmetic says (threads, recursion, a forked
//! child), and the other commands read the imported trace: diff, render
//! and info show those same calls. No root needed (uftrace traces through
//! -pg's mcount).
use std::{collections::BTreeMap, path::Path, process::Command};

use flowdar_tests::*;

const SOURCE: &str = include_str!("../fixtures/uftrace_demo.c");
/// The program's argument: `work(N)` on the main thread, `work(2N)` on the other.
const N: u64 = 7;

fn run(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&flowdar_tests::run_ok(cmd).stdout).into_owned()
}

/// `uftrace report`'s table: function -> Calls. Its `linux:schedule` rows
/// come from perf context-switch records, not function calls: the import
/// leaves them out (README), so does this.
fn uftrace_report(data: &Path) -> BTreeMap<String, u64> {
    let out = run(Command::new("uftrace").arg("report").arg("-d").arg(data));
    let mut calls = BTreeMap::new();
    for line in out.lines().skip(2) {
        // "  10.045 us    8.863 us          92  fib"
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert!(cols.len() >= 6, "unexpected uftrace report line: {line}");
        let (n, name) = (cols[4], cols[5..].join(" "));
        if !name.starts_with("linux:") {
            calls.insert(name, n.parse().expect("calls column"));
        }
    }
    calls
}

fn fib_calls(n: u64) -> u64 {
    if n < 2 {
        1
    } else {
        1 + fib_calls(n - 1) + fib_calls(n - 2)
    }
}

fn fib_leaves(n: u64) -> u64 {
    if n < 2 {
        1
    } else {
        fib_leaves(n - 1) + fib_leaves(n - 2)
    }
}

#[test]
fn a_uftrace_recording_imports_with_its_exact_call_counts() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("uftrace_demo.c");
    std::fs::write(&src, SOURCE).unwrap();
    let exe = dir.path().join("uftrace_demo");
    run(Command::new("gcc")
        .args(["-pg", "-O1", "-pthread", "-o"])
        .arg(&exe)
        .arg(&src));
    let data = dir.path().join("uftrace.data");
    run(Command::new("uftrace")
        .arg("record")
        .arg("-d")
        .arg(&data)
        .arg(&exe)
        .arg(N.to_string()));
    let trace = dir.path().join("t.flowdar");
    let out = flowdar(&[
        "import",
        "uftrace",
        data.to_str().unwrap(),
        "-o",
        trace.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "import failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("on 3 threads"), "{stdout}");

    let stats = flowdar(&["stats", "--json", trace.to_str().unwrap()]);
    assert!(stats.status.success());
    let json: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    let mut ours = BTreeMap::new();
    for f in json["functions"].as_array().unwrap() {
        let n = f["calls"].as_u64().unwrap() + f["in_flight"].as_u64().unwrap();
        *ours
            .entry(f["function"].as_str().unwrap().to_string())
            .or_insert(0) += n;
        assert_eq!(f["object"], "uftrace_demo", "{f}");
    }
    let theirs = uftrace_report(&data);
    assert_eq!(ours, theirs, "flowdar stats vs uftrace report");
    // And what the program does: fib(8) on one thread, fib(6) on the other;
    // a leaf per loop turn (N, 2N and the child's 3) and per fib leaf; the
    // child returns from the parent's fork and main.
    assert_eq!(ours["fib"], fib_calls(8) + fib_calls(6));
    assert_eq!(ours["leaf"], 3 * N + 3 + fib_leaves(8) + fib_leaves(6));
    assert_eq!((ours["work"], ours["worker"]), (3, 1));
    assert_eq!((ours["main"], ours["fork"]), (2, 2));
    assert_eq!(json["pairing"]["unmatched_exits"], 0);
    assert_eq!(json["pairing"]["lost_exits"], 0);
    assert_eq!(json["pairing"]["time_reversals"], 0);

    // The rest of Flowdar reads it unchanged: what each command says holds
    // the calls counted above.
    let t = trace.to_str().unwrap();
    let out_of = |args: &[&str]| run(Command::new(flowdar_bin()).args(args));
    // A diff against itself: every function, as many calls on both sides,
    // nothing changed.
    let diff: serde_json::Value = serde_json::from_str(&out_of(&["diff", "--json", t, t])).unwrap();
    let mut diffed = BTreeMap::new();
    for r in diff.as_array().unwrap() {
        assert_eq!(r["base_calls"], r["test_calls"], "{r}");
        assert!(r["significant"] == false && r["ratio"] == 1.0, "{r}");
        let f = r["function"].as_str().unwrap().to_string();
        diffed.insert(f, r["base_calls"].as_u64().unwrap());
    }
    assert_eq!(diffed, ours, "flowdar diff vs stats");
    // The sequence diagram draws every call, titled with its function and
    // its arguments (`fib(0x1e) [thread N] ...`; returns are titled
    // `fib returned ...`).
    let seq = dir.path().join("s.svg");
    out_of(&["render", t, "-o", seq.to_str().unwrap()]);
    let svg = std::fs::read_to_string(&seq).unwrap();
    for (f, n) in &ours {
        let drawn = svg.matches(&format!("<title>{f}(")).count() as u64;
        assert_eq!(drawn, *n, "{f}: calls drawn in the sequence diagram");
    }
    let flame = dir.path().join("f.svg");
    out_of(&["render", t, "--flame", "-o", flame.to_str().unwrap()]);
    assert!(std::fs::read_to_string(&flame).unwrap().contains("fib"));
    // info: every event, entries and exits per function, intact, from uftrace.
    let info: serde_json::Value = serde_json::from_str(&out_of(&["info", "--json", t])).unwrap();
    assert_eq!(info["events"], 2 * ours.values().sum::<u64>(), "{info}");
    assert!(
        info["finalised"] == true && info["warnings"] == serde_json::json!([]),
        "{info}"
    );
    assert_eq!(info["attach_mode"], "uftrace", "{info}");
    let mut probes = BTreeMap::new();
    for p in info["probes"].as_array().unwrap() {
        assert_eq!(p["entries"], p["exits"], "{p}");
        let f = p["function"].as_str().unwrap().to_string();
        *probes.entry(f).or_insert(0) += p["entries"].as_u64().unwrap();
    }
    assert_eq!(probes, ours, "flowdar info vs stats");
    let text = out_of(&["info", t]);
    assert!(
        text.contains("complete (stopped: imported from uftrace (exit status 0))"),
        "{text}"
    );

    let parquet = dir.path().join("pq");
    let dataset = dir.path().join("lab");
    for args in [
        vec![
            "export",
            t,
            "--format",
            "parquet",
            "-o",
            parquet.to_str().unwrap(),
        ],
        vec![
            "export",
            t,
            "--format",
            "parquet",
            "--dataset",
            dataset.to_str().unwrap(),
            "--host",
            "builder",
            "--run",
            "uftrace",
        ],
    ] {
        out_of(&args);
    }
    assert!(parquet.join("calls.parquet").exists());
    let calls = dataset.join("calls/host=builder/run=uftrace");
    assert!(
        std::fs::read_dir(&calls).is_ok_and(|mut d| d.next().is_some()),
        "{} holds the trace's partition",
        calls.display()
    );
}

#[test]
fn what_is_not_a_uftrace_recording_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out_trace = dir.path().join("t.flowdar");
    std::fs::write(dir.path().join("info"), b"not uftrace").unwrap();
    for (input, says) in [
        (dir.path().join("missing"), "cannot read"),
        (dir.path().to_path_buf(), "not a uftrace data directory"),
    ] {
        let out = flowdar(&[
            "import",
            "uftrace",
            input.to_str().unwrap(),
            "-o",
            out_trace.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(says) && err.lines().count() == 1, "{err}");
    }
    assert!(!out_trace.exists());
}
