//! What a picture shows: the calls of a selection (a session, a time
//! window, or the whole trace), laid on lifelines (components or threads),
//! with the hand-offs between threads inside it. Built from a trace file.
use std::{collections::HashMap, path::Path};

use serde::Serialize;

use flowdar_trace::{StoreError, TraceHeader};

use super::{names::Named, names::Names, windows::Windows};
use crate::{scan, simplify, Call, FlowTracker, SessionTracker, SimplifyOptions, StreamTracker};

/// Lifelines by component (Apache core, modules, APR) or by thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lanes {
    #[default]
    Component,
    Thread,
}

#[derive(Debug, Clone)]
pub struct SceneOptions {
    pub lanes: Lanes,
    /// Only this session's calls.
    pub session: Option<u64>,
    /// Only calls starting in this window (ns from the start of capture).
    pub window: Option<(u64, u64)>,
    /// Simplification applied before drawing.
    pub simplify: SimplifyOptions,
    /// At most this many calls are drawn (the earliest).
    pub max_calls: usize,
}

impl Default for SceneOptions {
    fn default() -> Self {
        Self {
            lanes: Lanes::Component,
            session: None,
            window: None,
            simplify: SimplifyOptions::default(),
            max_calls: 400,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SceneCall {
    pub function: String,
    /// Lane of the callee.
    pub lane: usize,
    /// Lane of the caller (the thread's lane for an outermost call).
    pub from_lane: usize,
    pub tid: u32,
    pub pid: u32,
    /// ns from the start of capture.
    pub start_ns: u64,
    pub duration_ns: u64,
    pub in_flight: bool,
    pub depth: u32,
    /// Arguments as shown: short names for addresses (`conn 3`), hex for
    /// the rest; the legend says which address each name stands for.
    pub args: Vec<String>,
    pub ret: Option<String>,
    pub source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SceneHandoff {
    pub object: String,
    pub from_lane: usize,
    pub to_lane: usize,
    pub from_tid: u32,
    pub to_tid: u32,
    pub queued_ns: u64,
    pub popped_ns: u64,
}

/// Everything a renderer needs, and nothing it has to look up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scene {
    pub title: String,
    pub lanes: Vec<String>,
    pub calls: Vec<SceneCall>,
    pub handoffs: Vec<SceneHandoff>,
    /// The addresses behind the names in `args`, `ret` and hand-offs.
    pub legend: Vec<Named>,
    /// Calls in the selection beyond `max_calls`, not drawn.
    pub truncated: usize,
}

/// The component a probed file belongs to.
pub fn component(object: &str) -> String {
    if object == "apache2" || object == "httpd" {
        "Apache core".into()
    } else if let Some(m) = object.strip_prefix("mod_") {
        format!("mod_{}", m.trim_end_matches(".so"))
    } else if object.starts_with("libaprutil-1") {
        "APR-util".into()
    } else if object.starts_with("libapr-1") {
        "APR".into()
    } else {
        object.into()
    }
}

/// Builds the scene of `path` (a trace) under `opts`.
pub fn build(path: &Path, title: &str, opts: &SceneOptions) -> Result<Scene, StoreError> {
    // Simplify into a temporary trace first when asked: same reader after.
    let simplified;
    let path = if opts.simplify.min_duration_ns > 0
        || opts.simplify.max_depth.is_some()
        || !opts.simplify.collapse.is_empty()
        || opts.simplify.fold_loops
    {
        simplified = tempfile::Builder::new()
            .prefix("flowdar-simplified-")
            .tempfile()
            .map_err(|source| StoreError::Create {
                path: path.into(),
                source,
            })?;
        simplify(path, simplified.path(), &opts.simplify, true)?;
        simplified.path()
    } else {
        path
    };
    let header = flowdar_trace::TraceReader::open(path)?.header().clone();
    // Pass 1: sessions (for --session) and hand-offs.
    let sessions = std::cell::RefCell::new(SessionTracker::new(&header.probes));
    let mut flows = FlowTracker::new(&header.probes);
    let streams = std::cell::RefCell::new(StreamTracker::new(&header.probes));
    // Client events too: sessions are numbered as `flowdar sessions` does.
    let clients = std::cell::RefCell::new(crate::ClientBook::default());
    let scanned = scan(
        path,
        |e| {
            flows.push(e);
            clients.borrow_mut().add(e);
            sessions.borrow_mut().add_event(e);
        },
        |c| {
            sessions.borrow_mut().add_with(c, &clients.borrow());
            streams.borrow_mut().add(c);
        },
    )?;
    let sessions = sessions.into_inner();
    // HTTP/2 streams are hand-offs too: from the connection's thread to
    // the worker, and back for the response.
    let mut stream_flows = Vec::new();
    for s in streams.into_inner().finish() {
        let end = s.start_ns + s.duration_ns;
        let there = s.from_tid.map(|from| (from, s.to_tid, s.start_ns));
        let back = s.back_tid.map(|to| (s.to_tid, to, end));
        for (from_tid, to_tid, at) in there.into_iter().chain(back) {
            stream_flows.push((
                s.pid,
                crate::Flow {
                    object: s.request,
                    from_tid,
                    to_tid,
                    queued_ns: at,
                    delay_ns: 0,
                    connection: Some(s.connection),
                },
            ));
        }
    }
    let t0 = scanned.start_ns;
    let mut session_conn = None;
    let windows: Option<Windows> = match opts.session {
        Some(id) => {
            let s = sessions
                .finish(&clients.borrow())
                .into_iter()
                .find(|s| s.id == id);
            session_conn = s
                .as_ref()
                .map(|s| (s.pid, s.connection, s.start_ns, s.start_ns + s.duration_ns));
            Some(Windows::new(s.map(|s| s.windows).unwrap_or_default()))
        }
        None => None,
    };
    let wanted_at = |tid: u32, ts: u64| match (&windows, opts.window) {
        (Some(w), _) => w.contains(tid, ts),
        (None, Some((a, b))) => (t0 + a..=t0 + b).contains(&ts),
        (None, None) => true,
    };
    let wanted = |c: &Call| wanted_at(c.tid, c.start_ns);
    // Hand-offs that lead into the selection: popped by one of its threads
    // just before or inside one of its windows.
    let selected_flows: Vec<crate::Flow> = flows
        .flows
        .iter()
        .filter(|f| {
            let popped = f.queued_ns + f.delay_ns;
            match &windows {
                Some(w) => w.open_within(f.to_tid, popped, 5_000_000),
                None => wanted_at(f.to_tid, popped),
            }
        })
        .cloned()
        .chain(
            // A session's own streams; in a window, those that start or
            // end in it.
            stream_flows
                .into_iter()
                .filter(|(pid, f)| match session_conn {
                    // Its connection, in its time: addresses are recycled.
                    Some((p, conn, start, end)) => {
                        *pid == p
                            && f.connection == Some(conn)
                            && (start..=end).contains(&f.queued_ns)
                    }
                    None if windows.is_some() => false,
                    None => wanted_at(f.to_tid, f.queued_ns),
                })
                .map(|(_, f)| f),
        )
        .collect();
    // Pass 2: the selected calls.
    let mut calls: Vec<Call> = Vec::new();
    scan(
        path,
        |_| {},
        |c| {
            if wanted(c) {
                calls.push(c.clone());
            }
        },
    )?;
    calls.sort_by_key(|c| (c.start_ns, c.depth));
    let truncated = calls.len().saturating_sub(opts.max_calls);
    calls.truncate(opts.max_calls);
    Ok(assemble(
        &header,
        title,
        opts.lanes,
        t0,
        calls,
        &selected_flows,
        truncated,
    ))
}

fn assemble(
    header: &TraceHeader,
    title: &str,
    lanes_by: Lanes,
    t0: u64,
    calls: Vec<Call>,
    flows: &[crate::Flow],
    truncated: usize,
) -> Scene {
    let mut lanes: Vec<String> = Vec::new();
    let lane_of =
        |name: String, lanes: &mut Vec<String>| match lanes.iter().position(|l| *l == name) {
            Some(i) => i,
            None => {
                lanes.push(name);
                lanes.len() - 1
            }
        };
    let probe_component: Vec<String> = header
        .probes
        .iter()
        .map(|p| component(&p.object_name()))
        .collect();
    // Component lanes: threads enter on the left.
    if lanes_by == Lanes::Component {
        lanes.push("threads".into());
    }
    let mut parents: HashMap<u32, Vec<(u64, u64, usize)>> = HashMap::new();
    let (start, end) = calls.iter().fold((u64::MAX, 0), |(a, b), c| {
        (a.min(c.start_ns), b.max(c.end_ns))
    });
    let mut out = Vec::with_capacity(calls.len());
    let mut names = Names::default();
    for c in &calls {
        let p = header.probes.get(c.probe_id as usize);
        let lane = match lanes_by {
            Lanes::Component => lane_of(
                probe_component
                    .get(c.probe_id as usize)
                    .cloned()
                    .unwrap_or_default(),
                &mut lanes,
            ),
            Lanes::Thread => lane_of(format!("thread {}", c.tid), &mut lanes),
        };
        let stack = parents.entry(c.tid).or_default();
        while stack.last().is_some_and(|&(_, e, _)| e < c.start_ns) {
            stack.pop();
        }
        let from_lane = match (lanes_by, stack.last()) {
            (Lanes::Component, Some(&(_, _, l))) => l,
            (Lanes::Component, None) => 0,
            (Lanes::Thread, _) => lane,
        };
        stack.push((c.start_ns, c.end_ns, lane));
        let kept = p.map_or(3, |p| p.capture.entry_slots());
        let function = p.map_or_else(|| format!("probe {}", c.probe_id), |p| p.display_name());
        let params = p.map_or(&[][..], |p| &p.params[..]);
        let args = c
            .args
            .iter()
            .take(kept)
            .enumerate()
            .map(|(i, &a)| names.arg(&function, params, Some(i), a, c.start_ns))
            .collect();
        let ret = c
            .ret
            .filter(|_| p.is_none_or(|p| p.capture.ret))
            .map(|r| names.arg(&function, params, None, r, c.end_ns));
        out.push(SceneCall {
            function,
            lane,
            from_lane,
            tid: c.tid,
            pid: c.tgid,
            start_ns: c.start_ns - t0,
            duration_ns: c.duration_ns(),
            in_flight: !c.returned,
            depth: c.depth,
            args,
            ret,
            source: p.and_then(|p| p.source.clone()),
        });
    }
    let mut handoffs = Vec::new();
    for f in flows {
        let popped = f.queued_ns + f.delay_ns;
        if calls.is_empty() || popped + 5_000_000 < start || f.queued_ns > end {
            continue;
        }
        let (from_lane, to_lane) = match lanes_by {
            Lanes::Thread => (
                lane_of(format!("thread {}", f.from_tid), &mut lanes),
                lane_of(format!("thread {}", f.to_tid), &mut lanes),
            ),
            // The listener (in Apache core) hands the socket to a worker
            // thread, which enters on the threads lane.
            Lanes::Component => (lane_of("Apache core".into(), &mut lanes), 0),
        };
        handoffs.push(SceneHandoff {
            object: names.object(f.object, f.queued_ns),
            from_lane,
            to_lane,
            from_tid: f.from_tid,
            to_tid: f.to_tid,
            queued_ns: f.queued_ns - t0,
            popped_ns: popped - t0,
        });
    }
    Scene {
        title: title.into(),
        lanes,
        calls: out,
        handoffs,
        legend: names.into_legend(),
        truncated,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn components() {
        assert_eq!(super::component("apache2"), "Apache core");
        assert_eq!(super::component("mod_mpm_event.so"), "mod_mpm_event");
        assert_eq!(super::component("libapr-1.so.0.7.2"), "APR");
        assert_eq!(super::component("libaprutil-1.so.0"), "APR-util");
    }
}
