//! Chrome trace-event JSON, which the Perfetto UI (ui.perfetto.dev) and
//! chrome://tracing open: one track per thread, nested slices per call with
//! arguments, and flow arrows for hand-offs between threads (sockets, and
//! HTTP/2 streams from the connection's thread to the worker and back).
use std::{collections::BTreeMap, path::Path};

use serde_json::{json, Value};

use super::RenderError;
use crate::{scan, FlowTracker, StreamTracker};

/// The trace as a Chrome trace-event JSON document (deterministic order).
pub fn perfetto_json(path: &Path) -> Result<String, RenderError> {
    let header = flowdar_trace::TraceReader::open(path)?.header().clone();
    let mut flows = FlowTracker::new(&header.probes);
    let mut streams = StreamTracker::new(&header.probes);
    let mut calls = Vec::new();
    let scanned = scan(
        path,
        |e| flows.push(e),
        |c| {
            streams.add(c);
            calls.push(c.clone());
        },
    )?;
    let t0 = scanned.start_ns;
    let us = |ns: u64| ns.saturating_sub(t0) as f64 / 1e3;
    calls.sort_by_key(|c| (c.tid, c.start_ns, c.depth));
    let mut pid_of: BTreeMap<u32, u32> = BTreeMap::new();
    let mut events: Vec<Value> = Vec::new();
    for c in &calls {
        pid_of.insert(c.tid, c.tgid);
        let p = header.probes.get(c.probe_id as usize);
        let kept = p.map_or(3, |p| p.capture.entry_slots());
        let mut args = json!({
            "args": c.args.iter().take(kept).map(|a| format!("{a:#x}")).collect::<Vec<_>>(),
            "in_flight": !c.returned,
        });
        if let (Some(r), true) = (c.ret, p.is_none_or(|p| p.capture.ret)) {
            args["ret"] = json!(format!("{r:#x}"));
        }
        if let Some(src) = p.and_then(|p| p.source.as_ref()) {
            args["source"] = json!(src);
        }
        events.push(json!({
            "name": p.map_or_else(|| format!("probe {}", c.probe_id), |p| p.display_name()),
            "cat": p.map_or_else(String::new, |p| p.object_name()),
            "ph": "X",
            "ts": us(c.start_ns),
            "dur": c.duration_ns() as f64 / 1e3,
            "pid": c.tgid,
            "tid": c.tid,
            "args": args,
        }));
    }
    for (&tid, &pid) in &pid_of {
        events.push(json!({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": format!("thread {tid}")}}));
    }
    for (k, f) in flows.flows.iter().enumerate() {
        let (Some(&from_pid), Some(&to_pid)) = (pid_of.get(&f.from_tid), pid_of.get(&f.to_tid))
        else {
            continue;
        };
        let name = format!("hand-off {:#x}", f.object);
        events.push(json!({"name": name, "cat": "handoff", "ph": "s", "id": k, "ts": us(f.queued_ns), "pid": from_pid, "tid": f.from_tid}));
        events.push(json!({"name": name, "cat": "handoff", "ph": "f", "bp": "e", "id": k, "ts": us(f.queued_ns + f.delay_ns), "pid": to_pid, "tid": f.to_tid}));
    }
    let mut id = flows.flows.len();
    for s in streams.finish() {
        let end = s.start_ns + s.duration_ns;
        let there = s.from_tid.map(|from| (from, s.to_tid, s.start_ns));
        let back = s.back_tid.map(|to| (s.to_tid, to, end));
        for (from_tid, to_tid, at) in there.into_iter().chain(back) {
            let (Some(&from_pid), Some(&to_pid)) = (pid_of.get(&from_tid), pid_of.get(&to_tid))
            else {
                continue;
            };
            let name = format!("stream {:#x}", s.request);
            events.push(json!({"name": name, "cat": "stream", "ph": "s", "id": id, "ts": us(at), "pid": from_pid, "tid": from_tid}));
            events.push(json!({"name": name, "cat": "stream", "ph": "f", "bp": "e", "id": id, "ts": us(at), "pid": to_pid, "tid": to_tid}));
            id += 1;
        }
    }
    Ok(serde_json::to_string_pretty(
        &json!({ "traceEvents": events, "displayTimeUnit": "ns" }),
    )?)
}
