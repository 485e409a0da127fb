//! `flowdar export --dataset`: the hive layout, the schema version in each
//! file's metadata, defaults from the trace and from an experiment
//! directory, a second append refused, bad labels and flags refused with
//! one line and status 1. On a small trace written here (no root).
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use flowdar::{
    store::{Capture, TraceProbe},
    store::{TraceFooter, TraceHeader, TraceWriter},
};
use flowdar_common::{Event, EventKind};

/// A trace of host `web7`: two calls of `f`, one of them still running.
fn trace(path: &Path, start_unix_ns: u64) {
    let probe = TraceProbe {
        id: 0,
        function: "f".into(),
        path: "/usr/lib/libx.so".into(),
        attach_path: "/usr/lib/libx.so".into(),
        address: 0x1000,
        file_offset: 0x1000,
        capture: Capture::default(),
        optional: false,
        source: None,
        params: Vec::new(),
    };
    let header = TraceHeader {
        tool_version: "test".into(),
        host: "web7".into(),
        kernel: "6.18".into(),
        command_line: vec!["flowdar".into()],
        start_unix_ns,
        start_monotonic_ns: 1000,
        target_pid: 10,
        probes: vec![probe],
        attach_mode: "perf".into(),
        attached_monotonic_ns: 1000,
        target_ns_pid: 10,
    };
    let ev = |ts, kind: EventKind| Event {
        tgid: 10,
        tid: 11,
        ts_ns: ts,
        probe_id: 0,
        kind: kind as u32,
        args: [0; 3],
    };
    let mut w = TraceWriter::create(path, &header, false).unwrap();
    w.write_chunk(&[
        ev(1100, EventKind::Entry),
        ev(1500, EventKind::Exit),
        ev(1600, EventKind::Entry),
    ])
    .unwrap();
    w.finish(TraceFooter {
        end_monotonic_ns: 2000,
        kernel_drops: vec![0],
        user_drops: vec![0],
        stop_reason: "test".into(),
        ..Default::default()
    })
    .unwrap();
}

fn flowdar(args: &[&str]) -> std::process::Output {
    Command::cargo_bin("flowdar")
        .unwrap()
        .args(args)
        .output()
        .unwrap()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(files(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

fn refused(args: &[&str], says: &str) {
    let out = flowdar(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(
        err.contains(says) && err.lines().count() == 1,
        "{args:?}: {err}"
    );
}

#[test]
fn traces_append_once_under_host_run_and_phase() {
    let dir = tempfile::tempdir().unwrap();
    let (t, lab) = (dir.path().join("night.flowdar"), dir.path().join("lab"));
    trace(&t, 1);
    let (ts, labs) = (t.to_str().unwrap(), lab.to_str().unwrap());
    let out = flowdar(&["export", ts, "--format", "parquet", "--dataset", labs]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = files(&lab);
    let rel: Vec<String> = written
        .iter()
        .map(|p| p.strip_prefix(&lab).unwrap().display().to_string())
        .collect();
    assert_eq!(rel.len(), 2, "{rel:?}");
    assert!(rel[0].starts_with("calls/host=web7/run=night/phase=all/calls-"));
    assert!(rel[1].starts_with("events/host=web7/run=night/phase=all/events-"));
    let id = rel[0]
        .rsplit_once("calls-")
        .unwrap()
        .1
        .trim_end_matches(".parquet");
    assert_eq!(id.len(), 16, "{id}");

    // Every file says which schema it follows.
    use parquet::file::reader::{FileReader, SerializedFileReader};
    for f in &written {
        let r = SerializedFileReader::new(std::fs::File::open(f).unwrap()).unwrap();
        let kv = r.metadata().file_metadata().key_value_metadata().unwrap();
        let v = kv.iter().find(|k| k.key == "flowdar.schema_version");
        assert_eq!(v.and_then(|k| k.value.as_deref()), Some("2"), "{f:?}");
    }
    let calls = SerializedFileReader::new(std::fs::File::open(&written[0]).unwrap()).unwrap();
    assert_eq!(
        calls.metadata().file_metadata().num_rows(),
        2,
        "a returned and an in-flight call"
    );

    // Again, under any labels: refused, nothing written.
    refused(
        &[
            "export",
            ts,
            "--format",
            "parquet",
            "--dataset",
            labs,
            "--host",
            "other",
        ],
        "already in the dataset",
    );
    assert_eq!(files(&lab), written);

    // A trace in an experiment directory: run = the directory, phase = the file.
    let exp = dir.path().join("exp42");
    std::fs::create_dir(&exp).unwrap();
    std::fs::write(exp.join("report.md"), "# report").unwrap();
    let attack = exp.join("attack.flowdar");
    trace(&attack, 2);
    let out = flowdar(&[
        "export",
        attack.to_str().unwrap(),
        "--format",
        "parquet",
        "--dataset",
        labs,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(lab.join("calls/host=web7/run=exp42/phase=attack").is_dir());
    assert_eq!(files(&lab).len(), 4);

    // A trace of one of its variants: run = directory-variant.
    std::fs::create_dir(exp.join("reqtimeout")).unwrap();
    let variant = exp.join("reqtimeout/normal.flowdar");
    trace(&variant, 3);
    let out = flowdar(&[
        "export",
        variant.to_str().unwrap(),
        "--format",
        "parquet",
        "--dataset",
        labs,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(lab
        .join("calls/host=web7/run=exp42-reqtimeout/phase=normal")
        .is_dir());
}

#[test]
fn bad_labels_and_flags_are_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.flowdar");
    trace(&t, 3);
    let (ts, lab) = (t.to_str().unwrap(), dir.path().join("lab"));
    let labs = lab.to_str().unwrap();
    for (extra, says) in [
        (vec!["--host", "a/b"], "cannot name a partition"),
        (vec!["--run", ".hidden"], "cannot name a partition"),
        (vec!["--phase", ""], "cannot name a partition"),
    ] {
        let mut args = vec!["export", ts, "--format", "parquet", "--dataset", labs];
        args.extend(extra);
        refused(&args, says);
    }
    refused(
        &["export", ts, "--format", "csv", "--dataset", labs],
        "--dataset writes Parquet",
    );
    let out = dir.path().join("out");
    refused(
        &[
            "export",
            ts,
            "--format",
            "parquet",
            "-o",
            out.to_str().unwrap(),
            "--host",
            "h",
        ],
        "add --dataset DIR",
    );
    assert!(!lab.exists() && !out.exists());
}
