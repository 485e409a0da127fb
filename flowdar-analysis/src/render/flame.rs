//! Flame graphs of inclusive time (inferno), and differential ones for two
//! runs. Stacks are the probed calls' nesting per thread, merged across
//! threads; calls still running at the end count with their time so far.
use std::{collections::BTreeMap, io::Write, path::Path};

use flowdar_common::EventKind;
use inferno::flamegraph::{self, Options};

use super::RenderError;
use flowdar_trace::TraceReader;

/// Folded stacks ("outer;inner self_ns") of a trace, sorted.
pub fn folded(path: &Path) -> Result<Vec<String>, RenderError> {
    let reader = TraceReader::open(path)?;
    let names: Vec<String> = reader
        .header()
        .probes
        .iter()
        .map(|p| p.display_name())
        .collect();
    let mut stacks: BTreeMap<String, u64> = BTreeMap::new();
    // Per thread: (probe, start, time in children).
    let mut threads: BTreeMap<u32, Vec<(u32, u64, u64)>> = BTreeMap::new();
    let mut last = reader.header().start_monotonic_ns;
    let close = |stack: &mut Vec<(u32, u64, u64)>, end: u64, stacks: &mut BTreeMap<String, u64>| {
        let Some((probe, start, children)) = stack.pop() else {
            return;
        };
        let total = end.saturating_sub(start);
        let key: Vec<&str> = stack
            .iter()
            .map(|f| names.get(f.0 as usize).map_or("?", String::as_str))
            .chain(std::iter::once(
                names.get(probe as usize).map_or("?", String::as_str),
            ))
            .collect();
        *stacks.entry(key.join(";")).or_default() += total.saturating_sub(children);
        if let Some(parent) = stack.last_mut() {
            parent.2 += total;
        }
    };
    let reader = reader.for_each_event(|e| {
        last = last.max(e.ts_ns);
        if e.kind == EventKind::Entry as u32 && flowdar_common::held_uprobe_at_attach(&e.args) {
            return; // held since attach, its return never seen: no frame
        }
        let stack = threads.entry(e.tid).or_default();
        if e.kind == EventKind::Entry as u32 {
            stack.push((e.probe_id, e.ts_ns, 0));
        } else if e.kind == EventKind::Exit as u32 {
            if let Some(pos) = stack.iter().rposition(|f| f.0 == e.probe_id) {
                while stack.len() > pos + 1 {
                    close(stack, e.ts_ns, &mut stacks);
                }
                close(stack, e.ts_ns, &mut stacks);
            }
        }
    })?;
    let end = reader
        .footer()
        .map_or(last, |f| f.end_monotonic_ns.max(last));
    for stack in threads.values_mut() {
        while !stack.is_empty() {
            close(stack, end, &mut stacks);
        }
    }
    Ok(stacks
        .into_iter()
        .filter(|&(_, v)| v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect())
}

fn options(title: &str) -> Options<'static> {
    let mut o = Options::default();
    o.title = title.to_string();
    o.count_name = "ns".into();
    o.deterministic = true;
    o
}

/// An inclusive-time flame graph of `path`.
pub fn flamegraph(path: &Path, title: &str, out: impl Write) -> Result<(), RenderError> {
    let lines = folded(path)?;
    if lines.is_empty() {
        return Err(RenderError::Empty(path.display().to_string()));
    }
    flamegraph::from_lines(&mut options(title), lines.iter().map(String::as_str), out)
        .map_err(RenderError::Flame)
}

/// A differential flame graph: widths from `test`, colours by the change
/// from `base` (red: more time, blue: less).
pub fn differential(
    base: &Path,
    test: &Path,
    title: &str,
    out: impl Write,
) -> Result<(), RenderError> {
    let (b, t) = (folded(base)?.join("\n"), folded(test)?.join("\n"));
    let mut diffed = Vec::new();
    inferno::differential::from_readers(
        Default::default(),
        b.as_bytes(),
        t.as_bytes(),
        &mut diffed,
    )
    .map_err(RenderError::Flame)?;
    let text = String::from_utf8_lossy(&diffed);
    if text.trim().is_empty() {
        return Err(RenderError::Empty(test.display().to_string()));
    }
    flamegraph::from_lines(&mut options(title), text.lines(), out).map_err(RenderError::Flame)
}
