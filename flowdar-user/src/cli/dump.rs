//! `flowdar dump`: every event of a trace, by function name, indented by
//! call depth per thread.
use std::{io::Write, path::PathBuf};

use clap::Args;
use flowdar_common::EventKind;

use super::format;
use crate::{analysis::CallPairer, probes::Capture, store::TraceReader};

/// Print a trace's events: relative time, pid/tid, calls and returns
/// indented by nesting depth on their thread, with each call's duration.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Trace file written by `flowdar record`.
    pub trace: PathBuf,
    /// Only this thread.
    #[arg(long)]
    pub tid: Option<u32>,
    /// Stop after this many events.
    #[arg(long)]
    pub limit: Option<u64>,
}

pub fn run(args: DumpArgs) -> anyhow::Result<()> {
    let reader = TraceReader::open(&args.trace)?;
    let header = reader.header().clone();
    let names: Vec<&str> = header.probes.iter().map(|p| p.function.as_str()).collect();
    let captures: Vec<&Capture> = header.probes.iter().map(|p| &p.capture).collect();
    let default_capture = Capture::default();
    let t0 = header.start_monotonic_ns;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    writeln!(out, "{:>14} {:>7} {:>7}  event", "time (ms)", "pid", "tid")?;
    let mut pairer = CallPairer::new();
    let mut shown = 0u64;
    let mut io_err = None;
    let reader = reader.for_each_event(|ev| {
        if io_err.is_some() || args.limit.is_some_and(|l| shown >= l) {
            return;
        }
        let name = names.get(ev.probe_id as usize).copied().unwrap_or("?");
        let show = args.tid.is_none_or(|t| t == ev.tid);
        let capture = captures
            .get(ev.probe_id as usize)
            .copied()
            .unwrap_or(&default_capture);
        let line = if let Some((conn, client)) = ev.client() {
            format!(
                "{}   client {client} (connection {conn:#x})",
                "  ".repeat(pairer.depth(ev.tid))
            )
        } else if let Some(part) = ev.trace_context() {
            let depth = "  ".repeat(pairer.depth(ev.tid));
            match part {
                flowdar_common::TraceContextPart::TraceId { request, id } => {
                    format!("{depth}   traceparent of request {request:#x}: trace id {id:032x}")
                }
                flowdar_common::TraceContextPart::Parent {
                    request,
                    span,
                    flags,
                } => format!(
                    "{depth}   traceparent of request {request:#x}: parent span {span:016x}, flags {flags:02x}"
                ),
            }
        } else if ev.kind == EventKind::Fold as u32 {
            let depth = pairer.depth(ev.tid);
            format!(
                "{}   {name} x{} in all ({})",
                "  ".repeat(depth),
                ev.args[0],
                format::ns(ev.args[1])
            )
        } else if ev.kind == EventKind::Entry as u32 {
            let depth = pairer.depth(ev.tid);
            pairer.push(ev, |_| {});
            format!(
                "{}-> {name}({})",
                "  ".repeat(depth),
                entry_values(capture, &ev.args)
            )
        } else {
            let mut took = None;
            pairer.push(ev, |c| took = Some(c.duration_ns()));
            let depth = pairer.depth(ev.tid);
            let took = took.map_or_else(|| "entry not captured".to_string(), format::ns);
            format!(
                "{}<- {name}{}  [{took}]",
                "  ".repeat(depth),
                exit_values(capture, &ev.args)
            )
        };
        if show {
            shown += 1;
            let rel = ev.ts_ns.saturating_sub(t0) as f64 / 1e6;
            if let Err(e) = writeln!(out, "{rel:>14.6} {:>7} {:>7}  {line}", ev.tgid, ev.tid) {
                io_err = Some(e);
            }
        }
    })?;
    if let Err(e) = out.flush() {
        io_err.get_or_insert(e);
    }
    super::report_read_warnings(&reader);
    match io_err {
        // A closed pipe (`| head`) is not an error.
        Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// "0x1, 0x2" for the kept arguments, then "*(arg0+0x10)=0x.." for a field read.
fn entry_values(c: &Capture, args: &[u64; 3]) -> String {
    let mut parts: Vec<String> = args
        .iter()
        .take(usize::from(c.args))
        .map(|a| format!("{a:#x}"))
        .collect();
    if let (Some(r), Some(slot)) = (c.read, c.read_slot()) {
        parts.push(format!(
            "*(arg{}+{:#x})={:#x}",
            r.arg,
            r.offset,
            args[slot.min(2)]
        ));
    }
    parts.join(", ")
}

/// " = 0x0 *arg1=0x7f..": the return value, then out-parameters.
fn exit_values(c: &Capture, args: &[u64; 3]) -> String {
    let mut s = String::new();
    if c.ret {
        s.push_str(&format!(" = {:#x}", args[0]));
    }
    for (i, d) in c.deref.iter().take(2).enumerate() {
        match args[1 + i] {
            flowdar_common::DEREF_UNKNOWN => s.push_str(&format!(" *arg{}=?", d.arg)),
            v => s.push_str(&format!(" *arg{}={v:#x}", d.arg)),
        }
    }
    s
}
