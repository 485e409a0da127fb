//! What the no-root CLI tests share: the `flowdar` binary, and a small
//! trace made here.
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use flowdar::store::{TraceFooter, TraceHeader, TraceProbe, TraceWriter};
use flowdar_common::{Event, EventKind};

pub fn flowdar() -> Command {
    Command::cargo_bin("flowdar").unwrap()
}

fn probe(id: u32, function: &str) -> TraceProbe {
    TraceProbe {
        id,
        function: function.into(),
        path: PathBuf::from("/usr/sbin/apache2"),
        attach_path: PathBuf::from("/usr/sbin/apache2"),
        address: 0x1000 * (id as u64 + 1),
        file_offset: 0x1000 * (id as u64 + 1),
        capture: Default::default(),
        optional: false,
        source: None,
        params: Vec::new(),
    }
}

fn ev(tid: u32, ts: u64, probe_id: u32, kind: EventKind, a0: u64) -> Event {
    Event {
        tgid: 100,
        tid,
        ts_ns: ts,
        probe_id,
        kind: kind as u32,
        args: [a0, 0, 0],
    }
}

/// A small trace: two threads, nested calls, a NULL return, one call still
/// running at the end of capture.
pub fn fixture(path: &Path) {
    use EventKind::{Entry as In, Exit as Out};
    let header = TraceHeader {
        tool_version: "test".into(),
        host: "h".into(),
        kernel: "k".into(),
        command_line: vec![],
        start_unix_ns: 0,
        start_monotonic_ns: 1_000_000,
        target_pid: 100,
        probes: vec![
            probe(0, "ap_process_async_request"),
            probe(1, "ap_read_request"),
        ],
        attach_mode: "uprobe_multi".into(),
        attached_monotonic_ns: 0,
        target_ns_pid: 0,
    };
    let mut w = TraceWriter::create(path, &header, false).unwrap();
    w.write_chunk(&[
        ev(101, 1_000_000, 0, In, 0),
        ev(101, 1_010_000, 1, In, 0),
        ev(101, 1_030_000, 1, Out, 0xabc),
        ev(101, 1_100_000, 0, Out, 0),
        ev(102, 1_200_000, 1, In, 0),
        ev(102, 1_260_000, 1, Out, 0),
        ev(103, 1_300_000, 1, In, 0),
    ])
    .unwrap();
    w.finish(TraceFooter {
        end_monotonic_ns: 2_300_000,
        kernel_drops: vec![0, 0],
        user_drops: vec![0, 0],
        ..Default::default()
    })
    .unwrap();
}
