//! Trace-store benchmark (not a test: it prints figures, it does not judge).
//!
//! `cargo bench -p flowdar-trace --bench store -- [TRACE...]`: for a synthetic
//! deep-recursion trace and for each recorded trace given, the bytes per
//! event on disk, the encode rate (codec + zstd + write, on the calling
//! thread: `TraceWriter` uses no other) and the decode rate (read + zstd +
//! codec) twice: on the calling thread alone, and as `TraceReader::
//! for_each_event` does it (a reader thread and up to 4 decoder threads
//! handing chunks back to the caller), measured side by side in this run.
//! `cargo xtask bench store` records a real Apache trace and runs this.
#![expect(clippy::print_stdout, reason = "a benchmark prints its figures")]
use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use flowdar_common::{Event, EventKind, EVENT_SIZE};
use flowdar_trace::{TraceFooter, TraceHeader, TraceProbe, TraceReader, TraceWriter, CHUNK_EVENTS};

/// Events per chunk, as the recorder's drain batches them.
const CHUNK: usize = CHUNK_EVENTS;
/// Repeat each measurement and keep the best: the machine is shared.
const ROUNDS: usize = 5;

fn header(probes: Vec<TraceProbe>) -> TraceHeader {
    TraceHeader {
        tool_version: env!("CARGO_PKG_VERSION").into(),
        host: "bench".into(),
        kernel: "bench".into(),
        command_line: vec![],
        start_unix_ns: 0,
        start_monotonic_ns: 0,
        target_pid: 1,
        probes,
        attach_mode: "uprobe_multi".into(),
        attached_monotonic_ns: 0,
        target_ns_pid: 0,
    }
}

/// 4 threads each recursing 64 deep through 4 functions, 2 M events; stack
/// pointers, depths and noisy 50-500 ns gaps as arguments and timestamps.
fn deep_recursion() -> (TraceHeader, Vec<Event>) {
    let probes = (0..4)
        .map(|id| TraceProbe {
            id,
            function: format!("recurse_{id}"),
            path: "/bench".into(),
            attach_path: "/bench".into(),
            address: 0x1000 + u64::from(id) * 0x40,
            file_offset: 0x1000 + u64::from(id) * 0x40,
            capture: Default::default(),
            optional: false,
            source: None,
            params: Vec::new(),
        })
        .collect();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut events = Vec::with_capacity(2_000_000);
    let mut ts = [1_000_000_000u64; 4];
    while events.len() < 2_000_000 {
        let t = (next() % 4) as usize;
        let tid = 1000 + t as u32;
        for depth in 0..64u64 {
            ts[t] += 50 + next() % 450;
            let args = [0x7ffd_0000_0000 - depth * 0x60, depth, 0x5555_0000_1000];
            events.push(Event {
                tgid: 1000,
                tid,
                ts_ns: ts[t],
                probe_id: (depth % 4) as u32,
                kind: EventKind::Entry as u32,
                args,
            });
        }
        for depth in (0..64u64).rev() {
            ts[t] += 50 + next() % 450;
            events.push(Event {
                tgid: 1000,
                tid,
                ts_ns: ts[t],
                probe_id: (depth % 4) as u32,
                kind: EventKind::Exit as u32,
                args: [depth, 0, 0],
            });
        }
    }
    (header(probes), events)
}

fn read_trace(path: &Path) -> (TraceHeader, Vec<Event>) {
    // FLOWDAR_BENCH_DUMP=FILE: also write the events as raw wire records
    // (to compare codec variants on the same events).
    let mut events = Vec::new();
    let r = TraceReader::open(path)
        .expect("open trace")
        .for_each_event(|e| events.push(*e))
        .expect("read");
    // FLOWDAR_BENCH_KEEP_ARGS=N: keep only N entry arguments (what a probe
    // set with `args = N` would record), to see what the rest cost.
    if let Some(n) = std::env::var("FLOWDAR_BENCH_KEEP_ARGS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        for e in events
            .iter_mut()
            .filter(|e| e.kind == EventKind::Entry as u32)
        {
            e.args.iter_mut().skip(n).for_each(|a| *a = 0);
        }
    }
    if let Some(dump) = std::env::var_os("FLOWDAR_BENCH_DUMP") {
        let raw: Vec<u8> = events.iter().flat_map(|e| e.to_bytes()).collect();
        std::fs::write(dump, raw).unwrap();
    }
    (r.header().clone(), events)
}

struct Row {
    name: String,
    events: usize,
    bytes_per_event: f64,
    encode_meps: f64,
    /// Decoding on the calling thread only.
    decode_one_meps: f64,
    /// Decoding as `for_each_event` does, with its helper threads.
    decode_meps: f64,
}

/// Best time over the rounds of reading every event of `path` with
/// `decoders` decoding threads (0: the calling thread alone).
fn best_decode(path: &Path, decoders: usize, events: usize) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let mut n = 0usize;
        let mut sum = 0u64;
        TraceReader::open(path)
            .unwrap()
            .for_each_event_on(decoders, |e| {
                n += 1;
                sum = sum.wrapping_add(e.ts_ns);
            })
            .unwrap();
        std::hint::black_box(sum);
        assert_eq!(n, events);
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn measure(name: &str, header: &TraceHeader, events: &[Event], dir: &Path) -> Row {
    let path = dir.join(format!("{name}.flowdar"));
    let mut best_enc = f64::MAX;
    let mut size = 0;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let mut w = TraceWriter::create(&path, header, true).unwrap();
        for c in events.chunks(CHUNK) {
            w.write_chunk(c).unwrap();
        }
        size = w.finish(TraceFooter::default()).unwrap();
        best_enc = best_enc.min(t.elapsed().as_secs_f64());
    }
    let best_one = best_decode(&path, 0, events.len());
    let best_dec = best_decode(&path, TraceReader::default_decoders(), events.len());
    Row {
        name: name.into(),
        events: events.len(),
        bytes_per_event: size as f64 / events.len() as f64,
        encode_meps: events.len() as f64 / best_enc / 1e6,
        decode_one_meps: events.len() as f64 / best_one / 1e6,
        decode_meps: events.len() as f64 / best_dec / 1e6,
    }
}

fn main() {
    let traces: Vec<PathBuf> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    let (h, ev) = deep_recursion();
    rows.push(measure("synthetic deep recursion", &h, &ev, dir.path()));
    for t in &traces {
        let (h, ev) = read_trace(t);
        // Replicate small traces so timings are not dominated by noise.
        let mut big = ev.clone();
        while big.len() < 1_000_000 && !ev.is_empty() {
            big.extend_from_slice(&ev);
        }
        let name = t.file_stem().unwrap().to_string_lossy().into_owned();
        let live = std::fs::metadata(t).unwrap().len() as f64 / ev.len().max(1) as f64;
        println!(
            "{name}: {live:.2} B/event as recorded live ({} events)",
            ev.len()
        );
        let mut row = measure(&name, &h, &big, dir.path());
        row.events = ev.len();
        rows.push(row);
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let decoders = TraceReader::default_decoders();
    println!(
        "\nstore benchmark: best of {ROUNDS}, chunks of {CHUNK} events, raw wire event = {EVENT_SIZE} B; \
         {cpus} CPUs; encode on 1 thread; decode on 1 thread, and as TraceReader::for_each_event \
         ({decoders} decoder threads + 1 reader thread + the caller)"
    );
    println!(
        "{:<34} {:>10} {:>9} {:>9} {:>13} {:>14} {:>14}",
        "trace", "events", "B/event", "vs wire", "encode Mev/s", "decode 1 thr", "decode reader"
    );
    for r in &rows {
        println!(
            "{:<34} {:>10} {:>9.2} {:>8.1}x {:>13.1} {:>14.1} {:>14.1}",
            r.name,
            r.events,
            r.bytes_per_event,
            EVENT_SIZE as f64 / r.bytes_per_event,
            r.encode_meps,
            r.decode_one_meps,
            r.decode_meps
        );
    }
}
