//! `flowdar import uftrace`: a `uftrace record` directory (uftrace.data)
//! as a Flowdar trace. Each function uftrace saw becomes a probe of the
//! trace's table, each entry/exit record an event on its thread; the
//! threads' streams are merged in time order. Kept: names, modules, pids,
//! tids, nanosecond times, nesting. Not kept: arguments and return values
//! (such recordings are refused), uftrace's schedule, kernel and SDT
//! events, and lost-record markers (counted instead).
mod data;
mod inherit;
mod symbols;

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    path::{Path, PathBuf},
};

use flowdar_common::{Event, EventKind};

use crate::{
    store::{Capture, TraceProbe},
    store::{StoreError, TraceFooter, TraceHeader, TraceWriter},
};
use data::{RecordKind, TaskStream};
use symbols::{Function, Symbolizer};

/// Events per written chunk.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UftraceError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: cannot import {what}")]
    Unsupported { path: PathBuf, what: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an import wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    pub threads: usize,
    pub functions: usize,
    pub events: u64,
    /// Records uftrace itself marked as lost (its buffers overflowed).
    pub lost: u64,
    /// uftrace EVENT records (SDT, schedule, ...) left out.
    pub skipped_events: u64,
}

/// Converts the uftrace data directory `dir` into the trace `out`.
pub fn import(dir: &Path, out: &Path, force: bool) -> Result<Imported, UftraceError> {
    let info = data::read_info(dir)?;
    let tasks = data::read_tasks(dir)?;
    let first = &tasks.sessions[0];
    let mut symbolizer = Symbolizer::new(dir, info.features);
    let mut probes: Vec<TraceProbe> = Vec::new();
    let mut ids: HashMap<(String, u64), u32> = HashMap::new();
    let mut by_function: HashMap<Function, u32> = HashMap::new();
    let mut summary = Imported::default();
    let mut end_ns = first.ts_ns;
    let mut inherited = inherit::Inherited::default();

    // Pass 1 names every function (the header, with the probe table, comes
    // first in the file); pass 2 writes the events. Both stream the files.
    let session = |pid: u32, ts: u64| {
        tasks
            .session_of(pid, ts)
            .map_or(first.sid.clone(), |s| s.sid.clone())
    };
    summary.threads = merge(dir, &tasks, |pid, tid, r| {
        inherited.observe(pid, tasks.parents.get(&pid).copied(), tid, r);
        match r.kind {
            RecordKind::Entry | RecordKind::Exit => {}
            RecordKind::Lost => {
                summary.lost += r.addr;
                return Ok(());
            }
            RecordKind::Event => {
                summary.skipped_events += 1;
                return Ok(());
            }
        }
        end_ns = end_ns.max(r.ts_ns);
        let key = (session(pid, r.ts_ns), r.addr);
        if let std::collections::hash_map::Entry::Vacant(slot) = ids.entry(key) {
            let f = symbolizer.resolve(&slot.key().0, r.addr)?;
            let id = *by_function.entry(f.clone()).or_insert_with(|| {
                probes.push(probe(probes.len() as u32, &f));
                probes.len() as u32 - 1
            });
            slot.insert(id);
        }
        Ok(())
    })?;
    summary.functions = probes.len();

    let header = TraceHeader {
        tool_version: format!(
            "{} (imported from uftrace {})",
            env!("CARGO_PKG_VERSION"),
            info.field("uftrace_version").unwrap_or("?").trim()
        ),
        host: info.field("osinfo:hostname").unwrap_or("").to_string(),
        kernel: info
            .field("osinfo:kernel")
            .map_or("", |k| k.trim_start_matches("Linux "))
            .to_string(),
        command_line: info
            .field("cmdline")
            .unwrap_or("")
            .split(' ')
            .map(str::to_string)
            .collect(),
        start_unix_ns: start_unix_ns(dir, &info),
        start_monotonic_ns: first.ts_ns,
        target_pid: first.pid,
        probes,
        attach_mode: "uftrace".into(),
        attached_monotonic_ns: first.ts_ns,
        target_ns_pid: first.pid,
    };
    let n_probes = header.probes.len();
    let mut writer = TraceWriter::create(out, &header, force)?;
    let mut events: Vec<Event> = Vec::with_capacity(CHUNK);
    let mut started = std::collections::HashSet::new();
    merge(dir, &tasks, |pid, tid, r| {
        if started.insert(tid) {
            for f in inherited.take(tid) {
                events.push(Event {
                    tgid: pid,
                    tid,
                    ts_ns: f.began,
                    // Named in pass 1 as its exit was.
                    probe_id: ids[&(session(pid, f.returned), f.addr)],
                    kind: EventKind::Entry as u32,
                    args: [0; 3],
                });
            }
        }
        let kind = match r.kind {
            RecordKind::Entry => EventKind::Entry,
            RecordKind::Exit => EventKind::Exit,
            _ => return Ok(()),
        };
        events.push(Event {
            tgid: pid,
            tid,
            ts_ns: r.ts_ns,
            probe_id: ids[&(session(pid, r.ts_ns), r.addr)],
            kind: kind as u32,
            args: [0; 3],
        });
        if events.len() >= CHUNK {
            writer.write_chunk(&events)?;
            events.clear();
        }
        Ok(())
    })?;
    writer.write_chunk(&events)?;
    summary.events = writer.events_written();
    let mut user_drops = vec![0; n_probes];
    if let Some(d) = user_drops.first_mut() {
        *d = summary.lost;
    }
    writer.finish(TraceFooter {
        end_monotonic_ns: end_ns,
        kernel_drops: vec![0; n_probes],
        user_drops,
        stop_reason: format!(
            "imported from uftrace (exit status {})",
            info.field("exit_status").unwrap_or("?")
        ),
        // Every record was checked and named: none malformed or unknown.
        malformed: Some(0),
        unknown_probe: Some(0),
        ..Default::default()
    })?;
    Ok(summary)
}

/// Calls `on_record(pid, tid, record)` for every record of every thread,
/// in time order (each `<tid>.dat` is in time order: a k-way merge).
/// Returns how many threads had records.
fn merge(
    dir: &Path,
    tasks: &data::Tasks,
    mut on_record: impl FnMut(u32, u32, &data::Record) -> Result<(), UftraceError>,
) -> Result<usize, UftraceError> {
    let mut streams = Vec::new();
    for &tid in tasks.threads.keys() {
        match TaskStream::open(dir, tid) {
            Ok(s) => streams.push(s),
            // A thread that never called a traced function has no file.
            Err(UftraceError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    // Ties keep thread order: (time, stream index) is the heap key.
    let mut heap = BinaryHeap::new();
    let mut pending = Vec::with_capacity(streams.len());
    for (i, s) in streams.iter_mut().enumerate() {
        let r = s.next_record()?;
        if let Some(r) = &r {
            heap.push(Reverse((r.ts_ns, i)));
        }
        pending.push(r);
    }
    while let Some(Reverse((_, i))) = heap.pop() {
        let r = pending[i]
            .take()
            .expect("a record is pending for every heap entry");
        let tid = streams[i].tid;
        on_record(tasks.threads.get(&tid).copied().unwrap_or(tid), tid, &r)?;
        pending[i] = streams[i].next_record()?;
        if let Some(next) = &pending[i] {
            heap.push(Reverse((next.ts_ns, i)));
        }
    }
    Ok(streams.len())
}

/// A probe-table row for a function uftrace recorded: no arguments, no
/// return value (uftrace records neither by default).
fn probe(id: u32, f: &Function) -> TraceProbe {
    TraceProbe {
        id,
        function: f.name.clone(),
        path: f.module.clone().into(),
        attach_path: f.module.clone().into(),
        address: f.address,
        file_offset: 0,
        capture: Capture {
            args: 0,
            ret: false,
            ..Default::default()
        },
        optional: false,
        source: None,
        params: Vec::new(),
    }
}

/// Wall-clock start: uftrace keeps only a textual date, so the `info`
/// file's modification time (written at the end) minus the elapsed time.
fn start_unix_ns(dir: &Path, info: &data::Info) -> u64 {
    let written = std::fs::metadata(dir.join("info"))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    let elapsed = info
        .field("elapsed_time")
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0, |s| (s * 1e9) as u64);
    written.saturating_sub(elapsed)
}
