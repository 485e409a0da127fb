//! `flowdar info`: what a trace file holds and whether it is intact.
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use flowdar_common::{EventKind, EVENT_SIZE};
use serde::Serialize;

use super::format;
use crate::store::{TraceReader, FORMAT_VERSION};

/// Describe a trace: the run (tool, host, kernel, command line, start),
/// duration, events, size on disk and compression against the raw wire
/// events, per-probe counts and losses, and chunk integrity.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Trace file written by `flowdar record`.
    pub trace: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct ProbeInfo {
    id: u32,
    function: String,
    object: String,
    file_offset: u64,
    entries: u64,
    exits: u64,
    kernel_drops: Option<u64>,
    user_drops: Option<u64>,
    /// With `record --min-duration`: calls dropped in the kernel for being short.
    #[serde(skip_serializing_if = "Option::is_none")]
    short_calls: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Info {
    path: String,
    format_version: u32,
    tool_version: String,
    host: String,
    kernel: String,
    /// `uprobe_multi` or `perf` ("unknown" in traces from before it was kept).
    attach_mode: String,
    command_line: Vec<String>,
    start: String,
    target_pid: u32,
    /// The target's PID in its own PID namespace (a container's view).
    target_ns_pid: u32,
    duration_ns: u64,
    events: u64,
    file_bytes: u64,
    bytes_per_event: f64,
    /// Raw wire size (48 bytes an event) over the file size.
    compression_ratio: f64,
    chunks_intact: u64,
    finalised: bool,
    stop_reason: Option<String>,
    kernel_drops: Option<u64>,
    user_drops: Option<u64>,
    /// Fork/exit tracepoint runs the kernel skipped (recursion guard).
    skipped_task_events: Option<u64>,
    /// Records the drain could not decode, and events of unknown probes.
    malformed: Option<u64>,
    unknown_probe: Option<u64>,
    /// Tasks forked by the server whose pids the process filter could not hold.
    untraced_tasks: Option<u64>,
    /// `record --min-duration` in ns (absent: every call was recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    min_duration_ns: Option<u64>,
    /// What the probes were estimated to cost the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    overhead: Option<OverheadInfo>,
    warnings: Vec<String>,
    probes: Vec<ProbeInfo>,
}

#[derive(Debug, Serialize)]
struct OverheadInfo {
    #[serde(flatten)]
    estimate: crate::store::OverheadEstimate,
    /// Probe time over the server's own CPU time (`null`: too little work).
    ratio: Option<f64>,
}

pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    let file_bytes = std::fs::metadata(&args.trace)
        .with_context(|| format!("cannot open trace {}", args.trace.display()))?
        .len();
    let reader = TraceReader::open(&args.trace)?;
    let h = reader.header().clone();
    let mut entries = vec![0u64; h.probes.len()];
    let mut exits = vec![0u64; h.probes.len()];
    let mut last_ts = h.start_monotonic_ns;
    let mut events = 0u64;
    let reader = reader.for_each_event(|e| {
        events += 1;
        last_ts = last_ts.max(e.ts_ns);
        let counts = if e.kind == EventKind::Entry as u32 {
            &mut entries
        } else if e.kind == EventKind::Exit as u32 {
            &mut exits
        } else {
            return;
        };
        if let Some(c) = counts.get_mut(e.probe_id as usize) {
            *c += 1;
        }
    })?;
    let footer = reader.footer().cloned();
    let end = footer
        .as_ref()
        .map_or(last_ts, |f| f.end_monotonic_ns.max(last_ts));
    let start = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(h.start_unix_ns);
    let info = Info {
        path: args.trace.display().to_string(),
        format_version: FORMAT_VERSION,
        tool_version: h.tool_version,
        host: h.host,
        kernel: h.kernel,
        attach_mode: if h.attach_mode.is_empty() {
            "unknown".into()
        } else {
            h.attach_mode
        },
        command_line: h.command_line,
        start: humantime::format_rfc3339_seconds(start).to_string(),
        target_pid: h.target_pid,
        target_ns_pid: h.target_ns_pid,
        duration_ns: end.saturating_sub(h.start_monotonic_ns),
        events,
        file_bytes,
        bytes_per_event: if events == 0 {
            0.0
        } else {
            file_bytes as f64 / events as f64
        },
        compression_ratio: (events * EVENT_SIZE as u64) as f64 / file_bytes.max(1) as f64,
        chunks_intact: reader.chunks_read(),
        finalised: footer.is_some(),
        stop_reason: footer.as_ref().map(|f| f.stop_reason.clone()),
        kernel_drops: footer.as_ref().map(|f| f.total_kernel_drops()),
        user_drops: footer.as_ref().map(|f| f.total_user_drops()),
        skipped_task_events: footer.as_ref().and_then(|f| f.skipped_task_events),
        malformed: footer.as_ref().and_then(|f| f.malformed),
        unknown_probe: footer.as_ref().and_then(|f| f.unknown_probe),
        untraced_tasks: footer.as_ref().and_then(|f| f.untraced_tasks),
        min_duration_ns: footer
            .as_ref()
            .and_then(|f| f.min_duration.as_ref())
            .map(|m| m.ns),
        overhead: footer
            .as_ref()
            .and_then(|f| f.overhead.clone())
            .map(|estimate| OverheadInfo {
                ratio: estimate.ratio(),
                estimate,
            }),
        warnings: reader.warnings().iter().map(ToString::to_string).collect(),
        probes: h
            .probes
            .iter()
            .map(|p| {
                let i = p.id as usize;
                ProbeInfo {
                    id: p.id,
                    function: p.function.clone(),
                    object: p.path.display().to_string(),
                    file_offset: p.file_offset,
                    entries: entries.get(i).copied().unwrap_or(0),
                    exits: exits.get(i).copied().unwrap_or(0),
                    kernel_drops: footer.as_ref().and_then(|f| f.kernel_drops.get(i).copied()),
                    user_drops: footer.as_ref().and_then(|f| f.user_drops.get(i).copied()),
                    short_calls: footer
                        .as_ref()
                        .and_then(|f| f.min_duration.as_ref())
                        .and_then(|m| m.short_calls.get(i).copied()),
                }
            })
            .collect(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        print_text(&info);
    }
    Ok(())
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "unknown".into(), |v| v.to_string())
}

fn print_text(i: &Info) {
    println!("trace        {}", i.path);
    println!(
        "format       version {}, written by flowdar {}",
        i.format_version, i.tool_version
    );
    println!("host         {} (Linux {})", i.host, i.kernel);
    println!("attach mode  {}", i.attach_mode);
    println!("command      {}", i.command_line.join(" "));
    let ns = if i.target_ns_pid != 0 && i.target_ns_pid != i.target_pid {
        format!(" (PID {} in its PID namespace)", i.target_ns_pid)
    } else {
        String::new()
    };
    println!("started      {}, target PID {}{ns}", i.start, i.target_pid);
    println!("duration     {}", format::ns(i.duration_ns));
    println!(
        "events       {} in {} ({:.2} B/event, {:.1}x smaller than {}-byte wire events)",
        i.events,
        format::bytes(i.file_bytes),
        i.bytes_per_event,
        i.compression_ratio,
        EVENT_SIZE
    );
    println!(
        "lost         {} in the kernel, {} in user space; {} fork/exit events skipped by the kernel, {} malformed records, {} of unknown probes",
        opt(i.kernel_drops),
        opt(i.user_drops),
        opt(i.skipped_task_events),
        opt(i.malformed),
        opt(i.unknown_probe)
    );
    if let Some(n) = i.untraced_tasks.filter(|n| *n > 0) {
        println!("untraced     {n} processes or threads forked by the server could not join the process filter (the processes among them went untraced)");
    }
    let state = if i.finalised {
        format!(
            "complete (stopped: {})",
            i.stop_reason.as_deref().unwrap_or("")
        )
    } else {
        "NOT finalised: the tracer did not finish".into()
    };
    println!("integrity    {} intact chunks; {state}", i.chunks_intact);
    if let Some(ns) = i.min_duration_ns {
        let short: u64 = i.probes.iter().filter_map(|p| p.short_calls).sum();
        println!(
            "min duration {}: {short} shorter calls dropped in the kernel (per function: short)",
            format::ns(ns)
        );
    }
    if let Some(o) = &i.overhead {
        println!("overhead     {}", super::record::overhead_line(&o.estimate));
    }
    for w in &i.warnings {
        println!("             warning: {w}");
    }
    println!();
    let short_col = i.min_duration_ns.is_some();
    println!(
        "{:>4} {:<32} {:<18} {:>10} {:>10} {:>10} {:>8} {:>8}{}",
        "id",
        "function",
        "object",
        "offset",
        "entries",
        "exits",
        "lost-k",
        "lost-u",
        if short_col {
            format!(" {:>10}", "short")
        } else {
            String::new()
        }
    );
    for p in &i.probes {
        println!(
            "{:>4} {:<32} {:<18} {:>#10x} {:>10} {:>10} {:>8} {:>8}{}",
            p.id,
            p.function,
            format::short_object(std::path::Path::new(&p.object)),
            p.file_offset,
            p.entries,
            p.exits,
            opt(p.kernel_drops),
            opt(p.user_drops),
            if short_col {
                format!(" {:>10}", opt(p.short_calls))
            } else {
                String::new()
            }
        );
    }
}
