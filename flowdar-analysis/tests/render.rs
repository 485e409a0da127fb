//! Renderers and exporters on a small fixture trace, pinned with insta
//! snapshots: the sequence-diagram SVG, the HTML page's data, the Perfetto
//! JSON; the Parquet/CSV tables' row counts; and the mode of every file
//! and directory an export makes (owner-only, as the trace).
use std::path::{Path, PathBuf};

use flowdar_analysis::render::{self, Lanes, SceneOptions};
use flowdar_common::{Event, EventKind};
use flowdar_trace::{Capture, Deref, TraceFooter, TraceHeader, TraceProbe, TraceWriter};

/// A trace header for `probes`, its monotonic clock starting at 1 ms.
fn header(probes: Vec<TraceProbe>) -> TraceHeader {
    TraceHeader {
        tool_version: "test".into(),
        host: "h".into(),
        kernel: "k".into(),
        command_line: vec![],
        start_unix_ns: 0,
        start_monotonic_ns: 1_000_000,
        target_pid: 1,
        probes,
        attach_mode: "uprobe_multi".into(),
        attached_monotonic_ns: 0,
        target_ns_pid: 0,
    }
}

fn probe(id: u32, function: &str, object: &str, capture: Capture) -> TraceProbe {
    TraceProbe {
        id,
        function: function.into(),
        path: PathBuf::from(object),
        attach_path: PathBuf::from(object),
        address: 0x1000 + u64::from(id),
        file_offset: 0x1000 + u64::from(id),
        capture,
        optional: false,
        source: None,
        params: Vec::new(),
    }
}

const CONN: u64 = 0xc0;
const REQ: u64 = 0x7e;
const SOCK: u64 = 0x50;

/// A listener (tid 2) hands a socket to a worker (tid 3), which serves one
/// request on it: read (with a socket read inside), process, close.
pub fn fixture(path: &Path) {
    use EventKind::{Entry as In, Exit as Out};
    let one = Capture {
        args: 1,
        ..Default::default()
    };
    let probes = vec![
        probe(
            0,
            "ap_queue_push_socket",
            "/usr/sbin/apache2",
            Capture {
                args: 2,
                ..Default::default()
            },
        ),
        probe(
            1,
            "ap_queue_pop_something",
            "/usr/sbin/apache2",
            Capture {
                args: 0,
                deref: vec![Deref { arg: 1, bytes: 8 }],
                ..Default::default()
            },
        ),
        probe(
            2,
            "ap_run_process_connection",
            "/usr/sbin/apache2",
            one.clone(),
        ),
        probe(3, "ap_read_request", "/usr/sbin/apache2", one.clone()),
        probe(
            4,
            "apr_socket_recv",
            "/usr/lib/x86_64-linux-gnu/libapr-1.so.0.7.2",
            one.clone(),
        ),
        probe(5, "ap_process_async_request", "/usr/sbin/apache2", one),
    ];
    let header = header(probes);
    let ev = |tid, us: u64, p, kind: EventKind, args| Event {
        tgid: 1,
        tid,
        ts_ns: 1_000_000 + us * 1000,
        probe_id: p,
        kind: kind as u32,
        args,
    };
    let mut w = TraceWriter::create(path, &header, true).unwrap();
    w.write_chunk(&[
        ev(2, 10, 0, In, [0xf0, SOCK, 0]),
        ev(2, 15, 0, Out, [0, 0, 0]),
        ev(3, 5, 1, In, [0, 0, 0]),
        ev(3, 40, 1, Out, [0, SOCK, 0]),
        ev(3, 50, 2, In, [CONN, 0, 0]),
        ev(3, 60, 3, In, [CONN, 0, 0]),
        ev(3, 70, 4, In, [SOCK, 0, 0]),
        ev(3, 1_270, 4, Out, [0, 0, 0]),
        ev(3, 1_300, 3, Out, [REQ, 0, 0]),
        ev(3, 1_310, 5, In, [REQ, 0, 0]),
        ev(3, 3_900, 5, Out, [0, 0, 0]),
        ev(3, 4_000, 3, In, [CONN, 0, 0]),
        ev(3, 4_050, 3, Out, [0, 0, 0]),
        ev(3, 4_100, 2, Out, [0, 0, 0]),
    ])
    .unwrap();
    w.finish(TraceFooter {
        end_monotonic_ns: 1_000_000 + 5_000_000,
        kernel_drops: vec![0; 6],
        user_drops: vec![0; 6],
        ..Default::default()
    })
    .unwrap();
}

fn scene(path: &Path, lanes: Lanes) -> render::Scene {
    render::build_scene(
        path,
        "fixture",
        &SceneOptions {
            lanes,
            session: Some(1),
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn sequence_svg_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.flowdar");
    fixture(&path);
    let s = scene(&path, Lanes::Component);
    assert_eq!(s.lanes, ["threads", "Apache core", "APR"]);
    assert_eq!(s.calls.len(), 5, "the session's calls");
    assert_eq!(s.handoffs.len(), 1, "the listener's hand-off into it");
    insta::assert_snapshot!("sequence_svg", render::sequence_svg(&s, 500_000, "seq0"));
}

#[test]
fn html_data_snapshot_and_page() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.flowdar");
    fixture(&path);
    let (a, b) = (scene(&path, Lanes::Thread), scene(&path, Lanes::Component));
    insta::assert_snapshot!("html_data", render::data_json(&[&a, &b]));
    let page = render::page(&[&a, &b], 500_000);
    assert!(page.contains("id=\"flowdar-data\"") && page.matches("<svg").count() == 2);
    assert_eq!(
        page.matches("http").count(),
        page.matches("http://www.w3.org/2000/svg").count(),
        "no URL but the SVG namespace"
    );
    assert!(
        !page.contains("<script src") && !page.contains("<link"),
        "self-contained: no fetches"
    );
}

#[test]
fn perfetto_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.flowdar");
    fixture(&path);
    insta::assert_snapshot!("perfetto", render::perfetto_json(&path).unwrap());
}

#[test]
fn flame_graph_has_the_nested_stacks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.flowdar");
    fixture(&path);
    let folded = render::folded(&path).unwrap();
    assert!(
        folded.contains(
            &"ap_run_process_connection;ap_read_request;apr_socket_recv 1200000".to_string()
        ),
        "{folded:?}"
    );
    let mut svg = Vec::new();
    render::flamegraph(&path, "fixture", &mut svg).unwrap();
    assert!(String::from_utf8(svg).unwrap().contains("apr_socket_recv"));
}

#[test]
fn tables_have_a_row_per_event_and_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.flowdar");
    fixture(&path);
    for format in [render::TableFormat::Parquet, render::TableFormat::Csv] {
        let out = dir.path().join(format!("{format:?}"));
        assert_eq!(render::export_tables(&path, &out, format).unwrap(), (14, 7));
    }
    let csv = std::fs::read_to_string(dir.path().join("Csv/calls.csv")).unwrap();
    assert_eq!(csv.lines().count(), 8);
    assert!(
        csv.lines()
            .any(|l| l.starts_with("apr_socket_recv,libapr-1.so.0.7.2,1,3,1,")),
        "{csv}"
    );
}

/// Every file below `dir` with its mode bits, and every directory.
fn modes(dir: &Path, out: &mut Vec<(PathBuf, u32)>) {
    use std::os::unix::fs::PermissionsExt as _;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        out.push((path.clone(), meta.permissions().mode() & 0o777));
        if meta.is_dir() {
            modes(&path, out);
        }
    }
}

#[test]
fn every_export_is_owner_only_like_the_trace_whatever_the_umask() {
    use render::{Exporter, TableFormat::*};
    // What a shell usually has: new files 0644 and directories 0755 unless
    // the exporter says otherwise.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.flowdar");
    fixture(&trace);
    // A file already there with a wider mode is replaced, not kept.
    std::fs::write(dir.path().join("s.svg"), "old").unwrap();
    let opts = render::ExportOptions {
        unit_ns: 500_000,
        title: "fixture".into(),
        ..Default::default()
    };
    let exports: [(&dyn Exporter, &str); 6] = [
        (&render::SequenceSvg, "s.svg"),
        (&render::SequenceHtml, "s.html"),
        (&render::FlameGraph, "f.svg"),
        (&render::Perfetto, "p.json"),
        (&render::Tables(Parquet), "parquet"),
        (&render::Tables(Csv), "csv/nested"),
    ];
    for (exporter, out) in exports {
        let out = dir.path().join(out);
        exporter.export(&trace, &out, &opts).unwrap();
        assert!(out.exists(), "{} wrote {}", exporter.name(), out.display());
    }
    let partition = render::Partition {
        host: "h".into(),
        run: "r".into(),
        phase: "all".into(),
    };
    render::append_to_dataset(&trace, &dir.path().join("lab/data"), &partition).unwrap();
    let mut made = Vec::new();
    modes(dir.path(), &mut made);
    let files = made.iter().filter(|(p, _)| p.is_file()).count();
    assert_eq!(
        files, 11,
        "the trace, 4 files, 2 x 2 tables, a dataset's 2: {made:#?}"
    );
    for (path, mode) in made {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} is {mode:o}", path.display());
    }
}

/// 3.5 s of a server: requests answered at 0.4 s, 1.3 s and 1.5 s, and a
/// worker that enters `ap_read_request` at 0.5 s and is still in it when
/// the capture ends (a Slowloris connection).
fn seconds_fixture(path: &Path) {
    use EventKind::{Entry as In, Exit as Out};
    let one = Capture {
        args: 1,
        ret: true,
        ..Default::default()
    };
    let probes = vec![
        probe(0, "ap_read_request", "/usr/sbin/apache2", one.clone()),
        probe(1, "ap_process_async_request", "/usr/sbin/apache2", one),
    ];
    let header = header(probes);
    let ms = |t: u64| 1_000_000 + t * 1_000_000;
    let ev = |tid, t: u64, p, kind: EventKind, args| Event {
        tgid: 1,
        tid,
        ts_ns: ms(t),
        probe_id: p,
        kind: kind as u32,
        args,
    };
    let mut w = TraceWriter::create(path, &header, true).unwrap();
    w.write_chunk(&[
        ev(3, 200, 0, In, [CONN, 0, 0]),
        ev(3, 300, 0, Out, [REQ, 0, 0]),
        ev(3, 310, 1, In, [REQ, 0, 0]),
        ev(3, 400, 1, Out, [0, 0, 0]),
        ev(4, 500, 0, In, [CONN + 1, 0, 0]),
        ev(5, 1_200, 1, In, [REQ, 0, 0]),
        ev(5, 1_300, 1, Out, [0, 0, 0]),
        ev(5, 1_400, 1, In, [REQ, 0, 0]),
        ev(5, 1_500, 1, Out, [0, 0, 0]),
    ])
    .unwrap();
    w.finish(TraceFooter {
        end_monotonic_ns: ms(3_500),
        kernel_drops: vec![0; 2],
        user_drops: vec![0; 2],
        ..Default::default()
    })
    .unwrap();
}

#[test]
fn a_trace_timeline_counts_answers_and_held_workers_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.flowdar");
    seconds_fixture(&path);
    let t = render::trace_timeline(&path, "t.flowdar").unwrap();
    assert_eq!(t.segments.len(), 1);
    let s = &t.segments[0];
    assert_eq!(s.seconds, 3, "whole seconds of the 3.5 s capture");
    assert_eq!(
        s.client.as_ref().unwrap().ok,
        [1, 2, 0],
        "answers by the second they ended in"
    );
    assert_eq!(
        s.held.as_ref().unwrap(),
        &[1, 1, 1],
        "the held worker at each second's end"
    );
    assert!(
        t.requests_from.contains("ap_process_async_request"),
        "{}",
        t.requests_from
    );
    let svg = render::timeline_svg(&t, render::timeline_scales(std::slice::from_ref(&t)));
    assert!(
        svg.contains("data-series=\"requests\" data-points=\"3\""),
        "{svg}"
    );
    assert!(
        svg.contains("data-series=\"held\" data-points=\"3\""),
        "{svg}"
    );
}
