//! The query pack (queries/*.sql) over a dataset of two hosts' traces, in
//! DuckDB and in Spark (local mode): both engines give the numbers of
//! `flowdar stats --json`, `flowdar diff --json` and `flowdar sessions
//! --json` on the same traces, counts and nanosecond sums exactly.
//! Two "hosts" are two labels (`--host`) on traces recorded from one
//! throwaway Apache: a normal phase (requests on fresh connections) and an
//! attack phase (the same plus slow clients holding half-sent headers, so
//! calls are still in flight when capture ends).
#![expect(
    clippy::print_stderr,
    reason = "the test shows what it measured next to its assertion"
)]
use std::{
    collections::BTreeMap,
    io::Write as _,
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use flowdar::server::{ApacheOptions, ThrowawayApache};
use flowdar_tests::*;
use serde_json::Value;

/// (host label, requests in each phase, slow clients in the attack phase).
const HOSTS: [(&str, usize, usize); 2] = [("alpha", 12, 3), ("beta", 20, 5)];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One phase recorded with the `request` profile into `out`.
fn record_phase(apache: &ThrowawayApache, out: &Path, requests: usize, slow: usize) {
    let pid = apache.pid().to_string();
    let rec = start_recorder(&[
        "--pid",
        &pid,
        "--profile",
        "apache:request",
        "-o",
        out.to_str().unwrap(),
    ]);
    // Slow clients: a request line and one header, never finished.
    let held: Vec<TcpStream> = (0..slow)
        .map(|_| {
            let mut s = TcpStream::connect(apache.addr()).expect("connect");
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    fresh_connections(apache, requests);
    std::thread::sleep(Duration::from_millis(800));
    let (code, o, e) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{o}\n{e}");
    drop(held);
}

fn json_of(args: &[&str]) -> Value {
    let out = flowdar(args);
    assert!(
        out.status.success(),
        "flowdar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn run_pack(python: &Path, engine: &str, dataset: &Path) -> Value {
    let out = Command::new(python)
        .arg(root().join("queries/run.py"))
        .arg(engine)
        .arg(dataset)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask setup`)", python.display()));
    assert!(
        out.status.success(),
        "query pack in {engine}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the runner prints JSON")
}

type Row = BTreeMap<String, Value>;

/// The rows of `query`, keyed by the values of `key` columns.
fn rows(pack: &Value, query: &str, key: &[&str]) -> BTreeMap<String, Row> {
    pack[query]
        .as_array()
        .unwrap_or_else(|| panic!("no {query} in {pack}"))
        .iter()
        .map(|r| {
            let row: Row = serde_json::from_value(r.clone()).unwrap();
            let k: Vec<String> = key.iter().map(|c| row[*c].to_string()).collect();
            (k.join("/"), row)
        })
        .collect()
}

fn num(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{v} is not a whole number"))
}

#[test]
fn duckdb_and_spark_give_flowdars_own_numbers() {
    require_root();
    let spark_python = root().join("target/pyspark/bin/python");
    assert!(
        spark_python.exists(),
        "{} is missing: run `cargo xtask setup`",
        spark_python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let dataset = dir.path().join("lab");
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let mut traces = Vec::new();
    for (host, requests, slow) in HOSTS {
        for (phase, slow) in [("normal", 0), ("attack", slow)] {
            let t = dir.path().join(format!("{host}-{phase}.flowdar"));
            record_phase(&apache, &t, requests, slow);
            let out = flowdar(&[
                "export",
                t.to_str().unwrap(),
                "--format",
                "parquet",
                "--dataset",
                dataset.to_str().unwrap(),
                "--host",
                host,
                "--run",
                "r1",
                "--phase",
                phase,
            ]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            traces.push((host, phase, t));
        }
    }
    // A trace goes in once, under whatever labels.
    let (_, _, first) = &traces[0];
    let again = flowdar(&[
        "export",
        first.to_str().unwrap(),
        "--format",
        "parquet",
        "--dataset",
        dataset.to_str().unwrap(),
        "--host",
        "gamma",
    ]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "{err}");
    assert!(err.contains("already in the dataset"), "{err}");

    // What flowdar says, trace by trace.
    let mut want_stats: BTreeMap<String, [u64; 5]> = BTreeMap::new();
    let mut want_sessions: BTreeMap<String, u64> = BTreeMap::new();
    let mut any_in_flight = 0;
    for (host, phase, t) in &traces {
        let stats = json_of(&["stats", "--json", t.to_str().unwrap()]);
        for f in stats["functions"].as_array().unwrap() {
            let k = format!("\"{host}\"/{}/{}", f["function"], f["object"]);
            let w = want_stats.entry(k).or_default();
            w[0] += num(&f["calls"]);
            w[1] += num(&f["in_flight"]);
            w[2] += num(&f["total_ns"]);
            w[3] += num(&f["self_ns"]);
            w[4] = w[4].max(num(&f["max_ns"]));
            any_in_flight += num(&f["in_flight"]);
        }
        let sessions = json_of(&["sessions", "--json", t.to_str().unwrap()]);
        for s in sessions.as_array().unwrap() {
            // The client's IP address ("ip:port" in sessions --json).
            let ip = s["client"].as_str().map_or("null".to_string(), |c| {
                let addr: std::net::SocketAddr = c.parse().expect("ip:port");
                format!("\"{}\"", addr.ip())
            });
            *want_sessions
                .entry(format!("\"{host}\"/\"r1\"/\"{phase}\"/{ip}"))
                .or_default() += 1;
        }
    }
    assert!(any_in_flight > 0, "the slow clients leave calls in flight");
    let mut want_diff: BTreeMap<String, Value> = BTreeMap::new();
    for pair in traces.chunks(2) {
        let (host, base, test) = (pair[0].0, &pair[0].2, &pair[1].2);
        let diff = json_of(&[
            "diff",
            "--json",
            base.to_str().unwrap(),
            test.to_str().unwrap(),
        ]);
        for r in diff.as_array().unwrap() {
            want_diff.insert(format!("\"{host}\"/\"r1\"/{}", r["function"]), r.clone());
        }
    }

    assert!(
        want_stats.len() >= 10 && want_diff.len() >= 10,
        "{want_stats:?}"
    );
    eprintln!(
        "{} host/function rows, {} diff rows, sessions {want_sessions:?}, {any_in_flight} calls in flight",
        want_stats.len(),
        want_diff.len()
    );
    let duck = run_pack(Path::new("python3"), "duckdb", &dataset);
    let spark = run_pack(&spark_python, "spark", &dataset);
    assert_eq!(duck, spark, "DuckDB and Spark disagree");

    let got = rows(
        &duck,
        "function_stats_by_host",
        &["host", "function", "object"],
    );
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want_stats.keys().collect::<Vec<_>>(),
        "functions per host"
    );
    for (k, w) in &want_stats {
        let g = &got[k];
        let cols = ["calls", "in_flight", "total_ns", "self_ns", "max_ns"];
        let g: Vec<u64> = cols.iter().map(|c| num(&g[*c])).collect();
        assert_eq!(g, w.to_vec(), "{k}: {cols:?}");
    }

    let got = rows(&duck, "normal_vs_attack", &["host", "run", "function"]);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want_diff.keys().collect::<Vec<_>>()
    );
    for (k, w) in &want_diff {
        for col in [
            "base_calls",
            "test_calls",
            "base_in_flight",
            "in_flight",
            "base_mean_ns",
            "test_mean_ns",
        ] {
            assert_eq!(num(&got[k][col]), num(&w[col]), "{k}: {col}");
        }
    }

    let got = rows(
        &duck,
        "sessions_per_client",
        &["host", "run", "phase", "client"],
    );
    let got: BTreeMap<String, u64> = got
        .into_iter()
        .map(|(k, r)| (k, num(&r["sessions"])))
        .collect();
    assert_eq!(
        got, want_sessions,
        "sessions per host, run, phase and client"
    );
    // Each phase's sessions: at least its fresh connections (and the slow
    // clients, when seen), never fewer.
    for (host, requests, _) in HOSTS {
        let prefix = format!("\"{host}\"/\"r1\"/\"normal\"/");
        let n: u64 = got
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, n)| n)
            .sum();
        assert!(
            n >= requests as u64,
            "{host}: {n} sessions for {requests} connections"
        );
    }
}
