//! Round trips, truncation at every byte, corruption and bad files.
use std::path::PathBuf;

use flowdar_common::{Event, EventKind};

use super::*;

pub(crate) fn header(nprobes: u32) -> TraceHeader {
    TraceHeader {
        tool_version: "test".into(),
        host: "h".into(),
        kernel: "k".into(),
        command_line: vec!["flowdar".into()],
        start_unix_ns: 1,
        start_monotonic_ns: 1_000,
        target_pid: 7,
        probes: (0..nprobes)
            .map(|id| TraceProbe {
                id,
                function: format!("f{id}"),
                path: PathBuf::from("/bin/x"),
                attach_path: PathBuf::from("/bin/x"),
                address: 0x1000 + id as u64,
                file_offset: 0x1000 + id as u64,
                capture: Default::default(),
                optional: false,
                source: None,
                params: Vec::new(),
            })
            .collect(),
        attach_mode: "uprobe_multi".into(),
        attached_monotonic_ns: 0,
        target_ns_pid: 0,
    }
}

fn events(n: u64) -> Vec<Event> {
    (0..n)
        .map(|i| Event {
            tgid: 7,
            tid: 7 + (i % 3) as u32,
            ts_ns: 1_000 + i * 10,
            probe_id: (i % 2) as u32,
            kind: if i % 4 < 2 {
                EventKind::Entry
            } else {
                EventKind::Exit
            } as u32,
            // Exits carry only a return value: no out-parameters captured.
            args: if i % 4 < 2 {
                [i, i * 2, i * 3]
            } else {
                [i, 0, 0]
            },
        })
        .collect()
}

fn write(path: &std::path::Path, chunks: &[Vec<Event>], finish: bool) {
    let mut w = TraceWriter::create(path, &header(2), true).unwrap();
    for c in chunks {
        w.write_chunk(c).unwrap();
    }
    if finish {
        w.finish(TraceFooter {
            kernel_drops: vec![1, 2],
            user_drops: vec![0, 3],
            ..Default::default()
        })
        .unwrap();
    }
}

fn read_all(path: &std::path::Path) -> (Vec<Event>, TraceReader) {
    let mut out = Vec::new();
    let r = TraceReader::open(path)
        .unwrap()
        .for_each_event(|e| out.push(*e))
        .unwrap();
    (out, r)
}

#[test]
fn round_trip_keeps_every_event_and_the_counters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.flowdar");
    let evs = events(1000);
    write(&path, &[evs[..400].to_vec(), evs[400..].to_vec()], true);
    let (back, r) = read_all(&path);
    assert_eq!(back, evs);
    assert_eq!(r.header(), &header(2));
    let f = r.footer().unwrap();
    assert_eq!(
        (f.events, f.total_kernel_drops(), f.total_user_drops()),
        (1000, 3, 3)
    );
    assert!(r.warnings().is_empty(), "{:?}", r.warnings());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn existing_file_is_not_overwritten_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.flowdar");
    std::fs::write(&path, b"precious").unwrap();
    let err = TraceWriter::create(&path, &header(1), false).err().unwrap();
    assert!(matches!(err, StoreError::Exists { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn a_cut_at_any_byte_reads_every_complete_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.flowdar");
    let chunks: Vec<Vec<Event>> = events(30).chunks(10).map(|c| c.to_vec()).collect();
    write(&full, &chunks, true);
    let bytes = std::fs::read(&full).unwrap();
    // Where each chunk ends, found by writing prefixes of the trace.
    let mut ends = Vec::new();
    for k in 0..=chunks.len() {
        let p = dir.path().join(format!("p{k}"));
        write(&p, &chunks[..k], false);
        ends.push(std::fs::metadata(&p).unwrap().len() as usize);
    }
    let cut = dir.path().join("cut.flowdar");
    for len in 0..bytes.len() {
        std::fs::write(&cut, &bytes[..len]).unwrap();
        match TraceReader::open(&cut) {
            Err(e) => assert!(len < ends[0], "cut at {len} lost the header: {e}"),
            Ok(r) => {
                assert!(len >= ends[0], "cut at {len} should not open");
                let mut n = 0;
                let r = r.for_each_event(|_| n += 1).unwrap();
                let complete = ends.iter().filter(|&&e| e <= len).count() - 1;
                assert_eq!(n, complete * 10, "cut at {len}");
                assert!(r.footer().is_none());
                assert!(
                    r.warnings().contains(&ReadWarning::NoFooter),
                    "cut at {len}"
                );
            }
        }
    }
}

#[test]
fn a_corrupt_chunk_is_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.flowdar");
    let chunks: Vec<Vec<Event>> = events(30).chunks(10).map(|c| c.to_vec()).collect();
    write(&path, &chunks, true);
    let mut bytes = std::fs::read(&path).unwrap();
    // Flip a byte in the middle chunk's compressed payload.
    let p1 = dir.path().join("p1");
    write(&p1, &chunks[..1], false);
    let start = std::fs::metadata(&p1).unwrap().len() as usize;
    bytes[start + 20] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let (back, r) = read_all(&path);
    assert_eq!(back.len(), 20);
    assert_eq!(&back[..10], &chunks[0][..]);
    assert_eq!(&back[10..], &chunks[2][..]);
    assert!(
        matches!(r.warnings(), [ReadWarning::CorruptChunk { offset, .. }] if *offset == start as u64)
    );
    assert!(r.footer().is_some());
}

/// A chunk whose checksum holds but which does not decode, then a cut
/// before the footer: the parallel reader gives what the sequential one
/// gives, events and warnings in file order.
#[test]
fn parallel_and_sequential_reading_agree_on_a_damaged_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.flowdar");
    let chunks: Vec<Vec<Event>> = events(60).chunks(10).map(|c| c.to_vec()).collect();
    write(&path, &chunks, true);
    let mut bytes = std::fs::read(&path).unwrap();
    let p2 = dir.path().join("p2");
    write(&p2, &chunks[..2], false);
    let start = std::fs::metadata(&p2).unwrap().len() as usize;
    // Frame: kind (1), length (4), CRC (4), payload. Garble the payload and
    // make the checksum agree, so only decoding can tell.
    let len = u32::from_le_bytes(bytes[start + 1..start + 5].try_into().unwrap()) as usize;
    let payload = start + 9..start + 9 + len;
    for b in &mut bytes[payload.start + 4..payload.end] {
        *b ^= 0x5a;
    }
    let crc = crc32fast::hash(&bytes[payload.clone()]);
    bytes[start + 5..start + 9].copy_from_slice(&crc.to_le_bytes());
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&path, &bytes).unwrap();

    let read = |decoders| {
        let mut out = Vec::new();
        let r = TraceReader::open(&path)
            .unwrap()
            .for_each_event_on(decoders, |e| out.push(*e))
            .unwrap();
        (out, r.warnings().to_vec(), r.chunks_read())
    };
    let (seq, seq_warnings, seq_chunks) = read(0);
    assert_eq!(seq.len(), 50, "the garbled chunk alone is lost");
    assert!(
        matches!(
            seq_warnings.as_slice(),
            [ReadWarning::CorruptChunk { offset, .. }, ReadWarning::Truncated { .. }, ReadWarning::NoFooter]
                if *offset == start as u64
        ),
        "{seq_warnings:?}"
    );
    for decoders in [1, 3] {
        let (par, par_warnings, par_chunks) = read(decoders);
        assert_eq!(par, seq, "{decoders} decoders");
        assert_eq!(par_warnings, seq_warnings, "{decoders} decoders");
        assert_eq!(par_chunks, seq_chunks, "{decoders} decoders");
    }
}

#[test]
fn bad_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x");
    std::fs::write(&p, b"").unwrap();
    assert!(matches!(
        TraceReader::open(&p),
        Err(StoreError::Empty { .. })
    ));
    std::fs::write(&p, b"GIF89a, definitely").unwrap();
    assert!(matches!(
        TraceReader::open(&p),
        Err(StoreError::NotATrace { .. })
    ));
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&99u32.to_le_bytes());
    std::fs::write(&p, &v).unwrap();
    let err = TraceReader::open(&p).err().unwrap();
    assert!(
        matches!(err, StoreError::Version { found: 99, .. }),
        "{err}"
    );
    assert!(matches!(
        TraceReader::open(&dir.path().join("missing")),
        Err(StoreError::Open { .. })
    ));
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_events_in_any_chunking_read_back_identically(
            raw in prop::collection::vec((0u32..3, any::<u64>(), 0u32..2, prop::bool::ANY, any::<[u64; 3]>()), 0..300),
            cuts in prop::collection::vec(1usize..80, 1..10),
        ) {
            let events: Vec<Event> = raw
                .into_iter()
                .map(|(t, ts, p, exit, args)| Event {
                    tgid: 7,
                    tid: 7 + t,
                    ts_ns: ts,
                    probe_id: p,
                    kind: if exit { EventKind::Exit } else { EventKind::Entry } as u32,
                    args: if exit { [args[0], 0, 0] } else { args },
                })
                .collect();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.flowdar");
            let mut w = TraceWriter::create(&path, &header(2), false).unwrap();
            let mut rest = &events[..];
            for c in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (head, tail) = rest.split_at((*c).min(rest.len()));
                w.write_chunk(head).unwrap();
                rest = tail;
            }
            w.finish(TraceFooter::default()).unwrap();
            let (back, r) = read_all(&path);
            prop_assert_eq!(back, events);
            prop_assert!(r.warnings().is_empty());
            prop_assert_eq!(r.footer().unwrap().index.iter().map(|c| c.events).sum::<u64>(), r.footer().unwrap().events);
        }
    }
}

#[test]
fn force_over_a_world_readable_file_leaves_the_trace_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.flowdar");
    std::fs::write(&path, b"old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let w = TraceWriter::create(&path, &header(1), true).unwrap();
    drop(w);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn force_never_writes_through_a_symbolic_link() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("precious");
    std::fs::write(&target, b"keep me").unwrap();
    let link = dir.path().join("t.flowdar");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = TraceWriter::create(&link, &header(1), true)
        .err()
        .expect("refused");
    // The context names the file, the cause (ELOOP from O_NOFOLLOW) the link.
    assert!(matches!(err, StoreError::Create { .. }), "{err}");
    let cause = std::error::Error::source(&err)
        .expect("a cause")
        .to_string();
    assert!(cause.contains("symbolic link"), "{cause}");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    // Without --force the link is an existing file, refused as such.
    assert!(matches!(
        TraceWriter::create(&link, &header(1), false),
        Err(StoreError::Exists { .. })
    ));
}

/// The header and footer as version 2 writes them, every field set. If this
/// fails, the on-disk shape changed: bump `FORMAT_VERSION` (and keep reading
/// the old shape) before updating the expected JSON.
#[test]
fn header_shape_is_format_version_2() {
    assert_eq!(FORMAT_VERSION, 2, "update the expected shapes below too");
    let mut h = header(1);
    h.probes[0].capture = Capture {
        args: 2,
        ret: true,
        deref: vec![Deref { arg: 1, bytes: 4 }],
        read: Some(FieldRead {
            arg: 0,
            offset: 8,
            then: None,
        }),
        errors: Some(ErrorRule::Nonzero),
        client: Some(ClientRead {
            arg: Some(0),
            read: false,
        }),
        entry_only: false,
        traceparent: None,
    };
    h.probes[0].optional = true;
    h.probes[0].source = Some("x.c:1".into());
    h.probes[0].params = vec!["r".into()];
    let footer = TraceFooter {
        end_monotonic_ns: 9,
        events: 8,
        kernel_drops: vec![1],
        user_drops: vec![2],
        stop_reason: "SIGINT".into(),
        index: vec![ChunkIndex {
            offset: 17,
            events: 8,
            first_ts: 3,
            last_ts: 4,
        }],
        entries_removed_ns: 5,
        skipped_task_events: Some(6),
        malformed: Some(0),
        unknown_probe: Some(0),
        untraced_tasks: None,
        min_duration: Some(MinDuration {
            ns: 10,
            short_calls: vec![11],
        }),
        overhead: Some(OverheadEstimate {
            calls: 12,
            ns_per_call: 13,
            server_cpu_ns: 14,
            syscalls: 15,
            push_calls: 16,
            ns_per_push_call: 17,
            ns_per_syscall: 18,
            syscall_hooks: Some("fentry".into()),
        }),
    };
    assert_eq!(
        serde_json::to_string(&h).unwrap(),
        EXPECTED_HEADER,
        "the trace header changed shape"
    );
    assert_eq!(
        serde_json::to_string(&footer).unwrap(),
        EXPECTED_FOOTER,
        "the trace footer changed shape"
    );
}

const EXPECTED_HEADER: &str = r#"{"tool_version":"test","host":"h","kernel":"k","command_line":["flowdar"],"start_unix_ns":1,"start_monotonic_ns":1000,"target_pid":7,"probes":[{"id":0,"function":"f0","path":"/bin/x","attach_path":"/bin/x","address":4096,"file_offset":4096,"capture":{"args":2,"ret":true,"deref":[{"arg":1,"bytes":4}],"read":{"arg":0,"offset":8},"errors":"nonzero","client":{"arg":0}},"optional":true,"source":"x.c:1","params":["r"]}],"attach_mode":"uprobe_multi","attached_monotonic_ns":0,"target_ns_pid":0}"#;
const EXPECTED_FOOTER: &str = r#"{"end_monotonic_ns":9,"events":8,"kernel_drops":[1],"user_drops":[2],"stop_reason":"SIGINT","index":[{"offset":17,"events":8,"first_ts":3,"last_ts":4}],"entries_removed_ns":5,"skipped_task_events":6,"malformed":0,"unknown_probe":0,"untraced_tasks":null,"min_duration":{"ns":10,"short_calls":[11]},"overhead":{"calls":12,"ns_per_call":13,"server_cpu_ns":14,"syscalls":15,"push_calls":16,"ns_per_push_call":17,"ns_per_syscall":18,"syscall_hooks":"fentry"}}"#;

#[test]
fn the_overhead_prices_each_call_by_how_its_function_begins() {
    let o = OverheadEstimate {
        calls: 10,
        ns_per_call: 17_000,
        server_cpu_ns: 1_000_000_000,
        syscalls: 100,
        push_calls: 8,
        ns_per_push_call: 900,
        ns_per_syscall: 400,
        syscall_hooks: None,
    };
    assert_eq!(o.probe_ns(), 2 * 17_000 + 8 * 900 + 100 * 400);
    assert_eq!(o.ns_per_call_of(true), 900);
    assert_eq!(o.ns_per_call_of(false), 17_000);
    // A footer from before the kinds were told apart: every call at the
    // single-stepped price.
    let old: OverheadEstimate = serde_json::from_str(
        r#"{"calls":10,"ns_per_call":17000,"server_cpu_ns":1000000000,"syscalls":5}"#,
    )
    .unwrap();
    assert_eq!(old.probe_ns(), 170_000);
    assert_eq!(old.ns_per_call_of(true), 17_000);
}
