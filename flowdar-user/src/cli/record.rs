//! `flowdar record`: attach to a running server by PID and record calls.
use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context as _};
use clap::Args;

use super::{attach::AttachArgs, format, select::ProbeSelection};
use crate::{
    capture::{self, RecordOptions, RecordSummary, Recording},
    probes::{self, ResolvedProbe},
};

/// Attach to a running server and record every call of the chosen functions.
///
/// Give the PID of the server's parent process: its children and threads,
/// including those forked later, are traced; other processes that map the
/// same binaries are not (filtered in the kernel). Stops on Ctrl-C, SIGTERM,
/// SIGHUP, after --duration, or when the server exits (with --follow, it
/// waits for the server's restart and follows it); every probe is detached
/// on exit. Changes in the server's process tree are reported live.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    flowdar record --pid 1234 --profile apache:request,io -o t.flowdar --duration 30s\n  \
    flowdar record --pid 1234 --probe libapr-1:apr_socket_recv -o t.flowdar\n  \
    flowdar record --pid $(cat /run/apache2/apache2.pid) --profile apache:request --follow -o t.flowdar\n\n\
Probe file format (TOML; see the README):\n  \
    version = 1\n  \
    [[probe]]\n  \
    target = \"/usr/sbin/apache2\"      # a path, or a library short name like \"libapr-1\"\n  \
    functions = [\"ap_read_request\", \"ap_queue_*\"]   # names or globs\n  \
    args = 1                           # leading arguments kept\n\n\
See what a selection attaches to with `flowdar probes --pid PID ...`.")]
pub struct RecordArgs {
    /// PID of the server's parent process.
    #[arg(long, short)]
    pub pid: u32,
    #[command(flatten)]
    pub select: ProbeSelection,
    /// Trace file to write (created with mode 0600).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Stop after this long (e.g. 30s, 2m, 500ms; a bare number is seconds).
    #[arg(long, short, value_parser = crate::units::parse_wall_duration)]
    pub duration: Option<Duration>,
    /// Overwrite the output file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Kernel ring-buffer size in MiB (a power of two).
    #[arg(long, default_value_t = flowdar_common::DEFAULT_RING_BYTES >> 20, value_name = "MIB")]
    pub ring_mib: u32,
    /// Memory bound for events waiting to be written, in MiB; past it events
    /// are dropped and counted, never silently.
    #[arg(long, default_value_t = capture::DEFAULT_BUFFER_BYTES >> 20, value_name = "MIB")]
    pub buffer_mib: usize,
    #[command(flatten)]
    pub attach: AttachArgs,
    /// Pids the in-kernel process filter covers (default: all the kernel
    /// can give), for tests that see a fork refused.
    #[arg(long, hide = true)]
    pub filter_capacity: Option<u32>,
    /// Benchmark floor: attach do-nothing programs at the same places and
    /// record nothing, to measure what the uprobes alone cost.
    #[arg(long, hide = true)]
    pub floor: bool,
    /// Turn on the kernel's BPF statistics while recording and print the
    /// mean time each of Flowdar's kernel programs took per run.
    #[arg(long)]
    pub bpf_stats: bool,
    /// Drop calls shorter than this in the kernel, before they cost a
    /// ring-buffer slot, the drain or the disk (e.g. 100us, 1ms). Each
    /// drop is counted per function; the time stays in the caller's self
    /// time. Calls still open at the end are kept if they have lasted this
    /// long. Tracing the short calls still costs their traps.
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration)]
    pub min_duration: Option<Duration>,
    /// Keep the deepest set of the selected functions whose estimated cost
    /// fits PCT percent of the server's own CPU time: a short window with
    /// every probe measures each function's calls, the hottest are dropped
    /// first (their callers kept), and what was dropped is printed.
    #[arg(long, value_name = "PCT", value_parser = parse_budget)]
    pub budget: Option<f64>,
    /// Length of --budget's estimate window (under the server's usual load).
    #[arg(long, value_name = "D", default_value = "2s", value_parser = crate::units::parse_wall_duration, requires = "budget")]
    pub budget_window: Duration,
    /// When the server exits (crash, stop), keep recording and wait for it
    /// to be restarted (same binary and command line, e.g. by systemd), then
    /// follow the new server. Without it, recording stops when the server
    /// exits.
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub otlp: super::otlp::LiveOtlpArgs,
}

pub fn run(args: RecordArgs) -> anyhow::Result<()> {
    let requests = args.select.requests()?;
    capture::check_privileges(("record", Some(args.pid), args.attach.plan(false).mode))?;
    capture::kernel_features().check_required()?;
    if !capture::is_alive(args.pid) {
        bail!("no process with PID {}", args.pid);
    }
    args.select.check_server(args.pid)?;
    check_output(&args.output, args.force)?;
    let (probes, targets) =
        probes::resolve_with_targets(args.pid, &requests, &args.select.debug_dir)?;
    // Say when a target was found by what it defines, not by its name.
    for (target, path, why) in targets
        .iter()
        .filter(|(_, _, why)| why.starts_with("defines"))
    {
        eprintln!("Target {target} is {} (it {why}).", path.display());
    }
    if args.min_duration.is_some() {
        if let Some(p) = probes
            .iter()
            .find(|p| p.capture.entry_only || p.is_syscall())
        {
            bail!(
                "--min-duration keeps calls by their length, and {} has none the kernel can hold back ({}); leave it out, or choose sets without it",
                p.function,
                if p.is_syscall() { "a system call" } else { "an entry-only probe" }
            );
        }
    }
    let mut opts = RecordOptions {
        pid: args.pid,
        probes,
        output: args.output,
        force: args.force,
        ring_bytes: ring_bytes(args.ring_mib)?,
        buffer_bytes: args.buffer_mib << 20,
        plan: capture::AttachPlan {
            filter_capacity: args.filter_capacity,
            min_duration_ns: args.min_duration.map_or(0, |d| d.as_nanos() as u64),
            ..args.attach.plan(args.floor)
        },
        bpf_stats: args.bpf_stats,
        ..Default::default()
    };
    if let Some(pct) = args.budget {
        opts.probes = super::budget::fit(&opts, pct, args.budget_window)?;
    }
    let table: Vec<crate::store::TraceProbe> = opts
        .probes
        .iter()
        .map(|p| p.trace_probe().clone())
        .collect();
    let (tap, live) = match args.otlp.prepare(args.pid, &opts.output, &table)? {
        Some(plan) => {
            let (tap, live) = crate::otlp::LiveExport::start(plan)?;
            (Some(tap), Some(live))
        }
        None => (None, None),
    };
    let summary = record_until_stopped(opts, args.duration, args.follow, tap)?;
    print_summary(&summary);
    if let Some(live) = live {
        let url = live.url().to_string();
        eprintln!("Sending the last spans to {url}...");
        println!("{}", super::otlp::live_line(&url, &live.finish()));
    }
    Ok(())
}

/// Refuses an output that exists (without --force) or whose directory is
/// missing or not writable, before anything is attached.
pub(crate) fn check_output(path: &std::path::Path, force: bool) -> anyhow::Result<()> {
    use crate::store::StoreError;
    if path.exists() && !force {
        return Err(StoreError::Exists { path: path.into() }.into());
    }
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(StoreError::Create {
            path: path.into(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "it is a symbolic link, which flowdar does not write through",
            ),
        }
        .into());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let problem = if !dir.is_dir() {
        Some(std::io::Error::from(std::io::ErrorKind::NotFound))
    } else {
        rustix::fs::access(dir, rustix::fs::Access::WRITE_OK)
            .err()
            .map(std::io::Error::from)
    };
    match problem {
        Some(source) => Err(StoreError::Create {
            path: path.into(),
            source,
        }
        .into()),
        None => Ok(()),
    }
}

fn parse_budget(s: &str) -> Result<f64, String> {
    match s.trim_end_matches('%').parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("`{s}` is not a percentage above 0 (e.g. 5 or 2.5)")),
    }
}

pub(super) fn ring_bytes(mib: u32) -> anyhow::Result<u32> {
    if !mib.is_power_of_two() || mib > 1024 {
        bail!("--ring-mib must be a power of two up to 1024, not {mib}");
    }
    Ok(mib << 20)
}

/// Starts recording, waits for a signal, the duration or the target's exit
/// (with `follow`, for its restart), then stops and returns the summary.
/// Changes in the server's process tree are reported as they happen.
pub(super) fn record_until_stopped(
    opts: RecordOptions,
    duration: Option<Duration>,
    follow: bool,
    tap: Option<std::sync::mpsc::Sender<Vec<flowdar_common::Event>>>,
) -> anyhow::Result<RecordSummary> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut signals = super::signals::StopSignals::install()?;
        let mut pid = opts.pid;
        let nprobes = opts.probes.len();
        let files = distinct_files(&opts.probes);
        let output = opts.output.clone();
        let identity = capture::ServerIdentity::of(pid);
        let mut recording =
            tokio::task::spawn_blocking(move || Recording::start_with_tap(opts, tap)).await??;
        let started = std::time::Instant::now();
        eprintln!(
            "Recording PID {pid} ({}{}): {nprobes} probes in {files} files, {} processes, attached in {} ({}); writing {}. Ctrl-C to stop.",
            capture::comm(pid).unwrap_or_default(),
            match capture::ns_pid(pid) {
                n if n != pid => format!(", PID {n} in its namespace"),
                _ => String::new(),
            },
            recording.processes_at_start(),
            format::duration(recording.attach_time()),
            attach_mode_label(recording.mechanism(), recording.syscall_hooks()),
            output.display(),
        );
        let elapsed = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(elapsed);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut watch = capture::TreeWatch::new(pid);
        let mut waiting_since: Option<std::time::Instant> = None;
        let mut followed = Vec::new();
        let at = |t: std::time::Instant| format!("[{:>7.1} s]", t.elapsed().as_secs_f64());
        let reason = loop {
            tokio::select! {
                why = signals.recv() => break why,
                _ = &mut elapsed => break "duration reached",
                _ = tick.tick() => {}
            }
            // Alive, and still the same program (not a recycled PID).
            let running = capture::is_alive(pid)
                && (identity.is_none() || capture::ServerIdentity::of(pid) == identity);
            if waiting_since.is_none() && running {
                if let Some(c) = watch.poll(pid) {
                    eprintln!(
                        "{} server processes: {} started, {} exited, {} now{}",
                        at(started),
                        c.started.len(),
                        c.exited.len(),
                        c.now,
                        if c.exited.len() + 1 >= c.now && !c.started.is_empty() {
                            " (children replaced: graceful restart or recycling)"
                        } else {
                            ""
                        }
                    );
                }
                continue;
            }
            if !follow {
                break "target exited";
            }
            let Some(identity) = &identity else {
                break "target exited";
            };
            if waiting_since.is_none() {
                waiting_since = Some(std::time::Instant::now());
                eprintln!(
                    "{} server PID {pid} exited; waiting for it to be restarted (--follow: same binary and command line `{}`). Ctrl-C to stop.",
                    at(started),
                    identity.command()
                );
            }
            match capture::find_restarted(identity, watch.current()) {
                None => {}
                Some(capture::Restarted::OtherBinary(new)) => {
                    eprintln!(
                        "{} PID {new} runs the same command line from a different executable (upgraded?); its code is not probed: run flowdar again.",
                        at(started)
                    );
                    break "target exited; restarted with a different binary";
                }
                Some(capture::Restarted::Same(new)) => {
                    let n = match recording.follow(new) {
                        Ok(n) => n,
                        Err(e) => {
                            eprintln!(
                                "{} cannot follow PID {new}: {}",
                                at(started),
                                crate::errors::chain(&e)
                            );
                            break "target exited; following its restart failed";
                        }
                    };
                    watch.reroot(new);
                    eprintln!(
                        "{} following the restarted server: PID {new}, {n} processes (down for {}).",
                        at(started),
                        format::duration(waiting_since.take().unwrap_or(started).elapsed())
                    );
                    followed.push((pid, new));
                    pid = new;
                }
            }
        };
        if let Some(each) = recording.mechanism().detach_secs_each() {
            if recording.uprobe_count() > 100 {
                eprintln!(
                    "Stopping ({reason}): detaching {} perf-event uprobes one at a time (~{each} s each, {})...",
                    recording.uprobe_count(),
                    capture::PERF_DETACH_SOURCE
                );
            }
        }
        let summary = tokio::task::spawn_blocking(move || recording.stop(reason)).await??;
        if watch.started + watch.exited > 0 || !followed.is_empty() {
            eprintln!(
                "Server processes: {} at start, {} started and {} exited during capture{}.",
                watch.at_start,
                watch.started,
                watch.exited,
                followed
                    .iter()
                    .map(|(a, b)| format!("; followed restart PID {a} -> {b}"))
                    .collect::<String>()
            );
        }
        anyhow::Ok(summary)
    })
    .context("recording failed")
}

/// "attach mode: uprobe_multi", with "; system calls: fentry" when the
/// recording watches system calls, as record, demo and experiment print it.
pub(super) fn attach_mode_label(
    m: capture::Mechanism,
    hooks: Option<capture::SyscallHooks>,
) -> String {
    format!("attach mode: {}", mechanism_label(m, hooks))
}

/// "uprobe_multi", or "uprobe_multi; system calls: fentry".
pub(super) fn mechanism_label(
    m: capture::Mechanism,
    hooks: Option<capture::SyscallHooks>,
) -> String {
    match hooks {
        Some(h) => format!("{m}; system calls: {}", h.name()),
        None => m.to_string(),
    }
}

fn distinct_files(probes: &[ResolvedProbe]) -> usize {
    let mut files: Vec<_> = probes.iter().map(|p| &p.path).collect();
    files.sort();
    files.dedup();
    files.len()
}

/// "Estimated overhead: ...", as record, demo and `info` print it.
pub(super) fn overhead_line(o: &crate::store::OverheadEstimate) -> String {
    let d = |ns: u64| format::duration(std::time::Duration::from_nanos(ns));
    let hooks = match o.syscall_hooks.as_deref() {
        Some(h) if h.starts_with("fentry") => "fentry/fexit programs",
        _ => "the kernel's tracepoints",
    };
    let syscalls = match (o.syscalls, o.ns_per_syscall) {
        (0, _) => String::new(),
        (n, 0) => format!(" + {n} system calls from {hooks} (no trap into user space; not measured here, not priced)"),
        (n, ns) => format!(" + {n} system calls from {hooks} x {} (a recorded `read`, measured here)", d(ns)),
    };
    let push = o.push_calls.min(o.calls);
    let priced = match push {
        0 => format!(
            "{} probed calls x {} (an isolated probed call, measured here)",
            o.calls,
            d(o.ns_per_call)
        ),
        p if p == o.calls => format!(
            "{} probed calls of functions that begin with a push x {} (an isolated such call, measured here)",
            o.calls,
            d(o.ns_per_push_call)
        ),
        _ => format!(
            "{} probed calls: {push} of functions that begin with a push x {}, {} others x {} (isolated probed calls by first instruction, measured here)",
            o.calls,
            d(o.ns_per_push_call),
            o.calls - push,
            d(o.ns_per_call)
        ),
    };
    let cost = format!(
        "{priced}{syscalls} = {} of CPU; the server used {}",
        d(o.probe_ns()),
        d(o.server_cpu_ns)
    );
    // Calls priced as single-stepped bound theirs from above; system calls
    // from below (what the tracepoints cost every other system call is
    // not in it, and an isolated `read` runs warm), or not at all.
    let bound = match (o.calls > push, o.syscalls > 0) {
        (_, true) if o.ns_per_syscall == 0 => "at least",
        (true, false) => "at most",
        (false, true) => "at least",
        _ => "about",
    };
    match o.ratio() {
        Some(r) if r < 1.0 => format!(
            "Estimated overhead: {bound} {:.1}% of the server's CPU time ({cost}).",
            100.0 * r
        ),
        Some(_) => format!(
            "Estimated overhead: {cost}. The bound exceeds what the server used: its probed calls cost less than an isolated one (see BENCHMARKS.md)."
        ),
        None => format!("Estimated overhead: {cost}, too little for a percentage."),
    }
}

/// How the probes went in and out, what was already open at attach, and
/// what they cost: `record`'s and `top`'s end-of-recording lines.
pub(super) fn attach_and_cost(s: &RecordSummary) -> Vec<String> {
    let mut lines = vec![format!(
        "Probes attached in {} ({}{}), detached in {}; {} processes traced at start.",
        format::duration(s.attach_time),
        attach_mode_label(s.mechanism, s.syscall_hooks),
        s.launch_to_attached.map_or(String::new(), |d| format!(
            "; {} from launch to attached",
            format::duration(d)
        )),
        format::duration(s.detach_time),
        s.processes_at_start
    )];
    if s.seeded_connections > 0 {
        lines.push(format!(
            "Open at attach: {} client connections (from /proc), {} workers already waiting on them; in the trace as calls in flight since the attach (their durations count from then).",
            s.seeded_connections, s.held_at_attach
        ));
    }
    lines.push(match &s.overhead {
        Ok(o) => overhead_line(o),
        Err(e) => format!(
            "Estimated overhead: unknown (a probed call's cost could not be measured: {}).",
            crate::errors::chain(e)
        ),
    });
    lines
}

/// The end-of-recording report.
pub(super) fn print_summary(s: &RecordSummary) {
    let events = s.counts.events();
    let lost = s.total_kernel_drops() + s.total_user_drops();
    println!(
        "Recorded {} in {} (stopped: {}): {} events, {} lost, {} on disk ({:.1} B/event)",
        s.output.display(),
        format::duration(s.duration),
        s.stop_reason,
        events,
        lost,
        format::bytes(s.bytes_written),
        if events == 0 {
            0.0
        } else {
            s.bytes_written as f64 / events as f64
        },
    );
    for line in attach_and_cost(s) {
        println!("{line}");
    }
    for (name, runs, ns) in &s.program_times {
        println!(
            "Kernel program {name}: {runs} runs, {:.0} ns per run",
            *ns as f64 / (*runs).max(1) as f64
        );
    }
    if !s.skipped.is_empty() {
        let names: Vec<String> = s
            .skipped
            .iter()
            .take(5)
            .map(|(f, why)| format!("{f} ({why})"))
            .collect();
        println!(
            "{} functions matched by patterns could not be probed: {}{}",
            s.skipped.len(),
            names.join(", "),
            if s.skipped.len() > 5 { ", ..." } else { "" }
        );
    }
    if let Some(m) = &s.min_duration {
        println!(
            "Minimum duration {}: {} shorter calls dropped in the kernel{}.",
            format::duration(std::time::Duration::from_nanos(m.ns)),
            m.short_calls.iter().sum::<u64>(),
            match s.held_open {
                0 => String::new(),
                n => format!("; {n} calls still open at the end kept"),
            }
        );
    }
    println!();
    let short = |i: usize| s.min_duration.as_ref().map(|m| m.short_calls[i]);
    println!(
        "{:<32} {:<16} {:>10} {:>10} {:>12} {:>12}{}",
        "function",
        "object",
        "calls",
        "returns",
        "lost kernel",
        "lost user",
        if s.min_duration.is_some() {
            format!(" {:>10}", "short")
        } else {
            String::new()
        }
    );
    for p in &s.probes {
        let i = p.id as usize;
        println!(
            "{:<32} {:<16} {:>10} {:>10} {:>12} {:>12}{}",
            p.function,
            format::short_object(&p.path),
            s.counts.entries[i],
            s.counts.exits[i],
            s.kernel_drops[i],
            s.counts.user_drops[i],
            short(i).map_or(String::new(), |n| format!(" {n:>10}")),
        );
    }
    if s.counts.malformed + s.counts.unknown_probe > 0 {
        println!(
            "\nwarning: {} ring-buffer records were malformed and {} named an unknown probe: dropped and counted",
            s.counts.malformed, s.counts.unknown_probe
        );
    }
    let orphans: u64 = s
        .probes
        .iter()
        .map(|p| {
            let i = p.id as usize;
            s.counts.exits[i].saturating_sub(s.counts.entries[i])
        })
        .sum();
    if orphans > 0 {
        println!(
            "\nReturns past calls ({orphans} in all) are calls that began while only the return probes were in place (they go in first on attach and come out last on detach, so a recorded call that ends while attached is always paired); analysis counts them as unmatched exits."
        );
    }
    if s.untraced_tasks > 0 {
        println!(
            "\nwarning: {} processes or threads forked by the server could not join the in-kernel process filter (pids past its limit): the processes among them went untraced",
            s.untraced_tasks
        );
    }
    if s.skipped_task_events > 0 {
        println!(
            "\nwarning: the kernel skipped {} runs of Flowdar's fork/exit programs (one of ours was already running on that CPU): forks may have gone unfollowed",
            s.skipped_task_events
        );
    }
    if lost > 0 {
        println!(
            "\nwarning: {lost} events were lost ({} in the kernel ring buffer, {} in user space); try --ring-mib or --buffer-mib",
            s.total_kernel_drops(),
            s.total_user_drops()
        );
    }
}
