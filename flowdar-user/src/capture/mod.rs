//! Capture: privileges, loading and attaching the kernel programs to a live
//! server, and the pipeline ring buffer -> drain thread -> writer thread ->
//! trace file.
mod attach;
mod blocked;
mod budget;
mod calibration_cache;
mod drain;
mod features;
mod filter;
mod introspect;
mod loader;
mod overhead;
mod privileges;
mod proctree;
mod seed;
mod shadow;
mod sys;
mod syscalls;
mod tracefs;

use std::{
    path::PathBuf,
    sync::{atomic::AtomicBool, mpsc, Arc},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use flowdar_common::Event;

pub use attach::Mechanism;
pub use attach::{MAX_QUICK_PERF_UPROBES, PERF_DETACH_SECS_EACH, PERF_DETACH_SOURCE};
pub use blocked::{blocked_on_sockets, BlockedThread};
pub use budget::{choose as choose_within_budget, BudgetChoice, ProbeLoad};
pub use calibration_cache::path as calibration_cache_path;
pub use drain::{DrainCounts, BATCH_EVENTS};
pub use features::{detect as kernel_features, AttachMode, FeatureError, KernelFeatures};
pub use introspect::{loaded_flowdar_links, loaded_flowdar_programs};
pub use loader::{AttachPlan, PROGRAM_PREFIX};
pub use overhead::{
    ns_per_call, remeasure as remeasure_ns_per_call, tree_cpu_ns, CalibrationError, CallCosts,
    FirstInstruction,
};
pub use privileges::{check as check_privileges, PrivilegeError};
pub use proctree::{
    comm, descendants, find_restarted, is_alive, ns_pid, Restarted, ServerIdentity, TreeChange,
    TreeWatch,
};
pub use syscalls::SyscallHooks;

use crate::{
    probes::ResolvedProbe,
    store::{MinDuration, OverheadEstimate, StoreError, TraceFooter, TraceHeader, TraceWriter},
};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    #[error(transparent)]
    Kernel(#[from] FeatureError),
    #[error("no process with PID {pid}")]
    NoSuchProcess { pid: u32 },
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error("loading the eBPF programs failed")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("eBPF program {name}")]
    Program {
        name: &'static str,
        source: Box<aya::programs::ProgramError>,
    },
    #[error("the kernel's verifier rejected eBPF program {name}: {reason} (full log: {log})")]
    Verifier {
        name: &'static str,
        reason: String,
        log: String,
    },
    #[error("this kernel refuses fentry/fexit programs ({why}); use --syscall-hooks tracepoint (the default)")]
    NoFentry { why: String },
    #[error("the eBPF object has no program {0} (build mismatch)")]
    MissingProgram(&'static str),
    #[error("the eBPF object has no map {0} (build mismatch)")]
    MissingMap(&'static str),
    #[error("eBPF map")]
    Map(#[source] Box<aya::maps::MapError>),
    #[error("attaching to {function} in {path}")]
    Attach {
        function: String,
        path: PathBuf,
        source: Box<aya::programs::ProgramError>,
    },
    #[error("attaching to {function} in {path}")]
    AttachFile {
        function: String,
        path: PathBuf,
        source: attach::LinkError,
    },
    #[error("uprobe_multi")]
    Multi(#[from] attach::MultiError),
    #[error("{count} probes requested; at most {max} fit the probe table")]
    TooManyProbes { count: usize, max: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the {0} thread panicked (the trace keeps what was written before)")]
    ThreadPanicked(&'static str),
    #[error("cannot start the {thread} thread")]
    Spawn {
        thread: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{why}: detaching {uprobes} perf-event uprobes would take about {minutes:.0} min (one kernel grace period each, ~{each} s {}); select fewer functions, or pass --slow-detach to proceed anyway", attach::PERF_DETACH_SOURCE)]
    SlowDetach {
        why: String,
        uprobes: usize,
        minutes: f64,
        each: f64,
    },
    #[error("cannot turn on the kernel's BPF run-time statistics (BPF_ENABLE_STATS, Linux 5.8+)")]
    BpfStats(#[source] std::io::Error),
    #[error(transparent)]
    BeyondFilter(#[from] filter::BeyondFilter),
    #[error("cannot map the in-kernel process filter")]
    FilterMap(#[source] std::io::Error),
    #[error(transparent)]
    Calibration(#[from] CalibrationError),
}

impl CaptureError {
    fn program(name: &'static str, source: aya::programs::ProgramError) -> Self {
        // The verifier's log is pages long: keep its verdict, save the rest.
        if let aya::programs::ProgramError::LoadError { verifier_log, .. } = &source {
            let text = verifier_log.to_string();
            let reason = text
                .lines()
                .take_while(|l| !l.starts_with("verification time"))
                .filter(|l| !l.trim().is_empty())
                .last()
                .unwrap_or("no verifier output")
                .to_string();
            let log = std::env::temp_dir().join(format!("flowdar-verifier-{name}.log"));
            let _ = std::fs::write(&log, &text);
            return Self::Verifier {
                name,
                reason,
                log: log.display().to_string(),
            };
        }
        Self::Program {
            name,
            source: Box::new(source),
        }
    }

    fn map(source: aya::maps::MapError) -> Self {
        Self::Map(Box::new(source))
    }
}

/// How to record.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    pub pid: u32,
    pub probes: Vec<ResolvedProbe>,
    pub output: PathBuf,
    pub force: bool,
    /// Kernel ring-buffer size in bytes (power of two, >= page size).
    pub ring_bytes: u32,
    /// Bound on events waiting for the writer, in bytes.
    pub buffer_bytes: usize,
    pub command_line: Vec<String>,
    /// How to attach, and whether to attach the do-nothing floor programs.
    pub plan: AttachPlan,
    /// Turn on the kernel's BPF run-time statistics while recording and
    /// report each program's mean run time (costs ~2 clock reads per run).
    pub bpf_stats: bool,
}

/// Default memory bound for events waiting to be written.
pub const DEFAULT_BUFFER_BYTES: usize = 256 << 20;

impl Default for RecordOptions {
    /// No target and no probes yet; the kernel's default ring buffer, a
    /// 256 MiB pipeline, automatic attach, this process's command line.
    fn default() -> Self {
        Self {
            pid: 0,
            probes: Vec::new(),
            output: PathBuf::new(),
            force: false,
            ring_bytes: flowdar_common::DEFAULT_RING_BYTES,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            command_line: std::env::args().collect(),
            plan: AttachPlan::default(),
            bpf_stats: false,
        }
    }
}

/// What a finished recording did.
#[derive(Debug, Clone)]
pub struct RecordSummary {
    pub probes: Vec<ResolvedProbe>,
    pub counts: DrainCounts,
    pub kernel_drops: Vec<u64>,
    pub duration: Duration,
    pub attach_time: Duration,
    /// Time to detach every probe (the kernel waits for in-flight hits).
    pub detach_time: Duration,
    /// How the uprobes were attached.
    pub mechanism: Mechanism,
    /// How the system calls were hooked (None: none watched).
    pub syscall_hooks: Option<SyscallHooks>,
    /// Fork/exit tracepoint runs the kernel skipped (recursion guard).
    pub skipped_task_events: u64,
    /// Tasks forked by the server whose pids the process filter could not hold.
    pub untraced_tasks: u64,
    pub processes_at_start: usize,
    /// Functions from patterns the kernel would not probe, and why.
    pub skipped: Vec<(String, String)>,
    pub bytes_written: u64,
    pub stop_reason: String,
    pub output: PathBuf,
    /// With `bpf_stats`: (program, runs, total ns in the program).
    pub program_times: Vec<(String, u64, u64)>,
    /// With a minimum duration: what the kernel dropped for being short.
    pub min_duration: Option<MinDuration>,
    /// Calls still open at the end whose entries the kernel held back
    /// (minimum duration), written to the trace at the end.
    pub held_open: u64,
    /// Lean capture: connections open at attach (seeded from /proc), and
    /// workers already waiting on them, in the trace since the attach.
    pub seeded_connections: usize,
    pub held_at_attach: usize,
    /// From the tracer's launch to its probes attached and the trace
    /// seeded (10 ms resolution), when /proc tells.
    pub launch_to_attached: Option<Duration>,
    /// What the probes are estimated to have cost the server, or why a
    /// probed call's cost could not be measured (the trace is complete
    /// all the same; its footer then has no estimate).
    pub overhead: Result<OverheadEstimate, Arc<CaptureError>>,
}

impl RecordSummary {
    pub fn total_kernel_drops(&self) -> u64 {
        self.kernel_drops.iter().sum()
    }
    pub fn total_user_drops(&self) -> u64 {
        self.counts.user_drops.iter().sum()
    }
}

/// A capture in progress: probes attached, drain and writer running.
pub struct Recording {
    attached: loader::Attached,
    drops: PerCpuArray<MapData, u64>,
    short: PerCpuArray<MapData, u64>,
    /// For events the recording adds after the drain: entries the kernel
    /// held back for calls still open at the end (minimum duration).
    late_tx: mpsc::SyncSender<Vec<Event>>,
    /// Probed calls' measured costs (or why not), and the server's CPU
    /// time at start.
    ns_per_call: Result<CallCosts, Arc<CaptureError>>,
    cpu_at_start: u64,
    filter_full: aya::maps::Array<MapData, u64>,
    stop: Arc<AtomicBool>,
    drain: std::thread::JoinHandle<DrainCounts>,
    writer: std::thread::JoinHandle<Result<u64, StoreError>>,
    footer_tx: mpsc::Sender<TraceFooter>,
    opts: RecordOptions,
    started_mono: u64,
    /// Keeps kernel BPF statistics on while held.
    stats: Option<std::os::fd::OwnedFd>,
    /// Lean capture: connections open at attach, and calls already
    /// waiting on them (written to the trace as in flight since then).
    seeded_connections: usize,
    held_at_attach: usize,
    launch_to_attached: Option<Duration>,
}

impl Recording {
    /// Checks privileges and the target, creates the trace file, attaches
    /// every probe and starts draining. Returns once events can flow.
    pub fn start(opts: RecordOptions) -> Result<Self, CaptureError> {
        Self::start_with_tap(opts, None)
    }

    /// [`Recording::start`], and every batch, once written to the trace,
    /// is also sent to `tap` (a live view): what it sees is exactly what
    /// the trace holds. The channel is unbounded: the bound on memory is
    /// the writer's, and a live view consumes faster than the writer
    /// compresses. The sender goes away when the trace is finished.
    pub fn start_with_tap(
        opts: RecordOptions,
        tap: Option<mpsc::Sender<Vec<Event>>>,
    ) -> Result<Self, CaptureError> {
        privileges::check("record")?;
        let mechanism = attach_mechanism(&opts.plan, opts.probes.len())?;
        if !proctree::is_alive(opts.pid) {
            return Err(CaptureError::NoSuchProcess { pid: opts.pid });
        }
        // Cached per kernel, binary, CPU and attach mechanism, else measured
        // before our probes go in: measured on a thread beside the capture, its million
        // calls took a core from the server for the first phase of an
        // experiment (level 0's observer effect fell from ~0.7 to 0.42x and
        // the zoom's budget with it). A failed measurement costs the
        // recording its estimate only.
        let ns_per_call =
            overhead::ns_per_call(mechanism, opts.plan.syscall_hooks).map_err(Arc::new);
        let started_mono = monotonic_ns();
        let mut header = TraceHeader {
            tool_version: env!("CARGO_PKG_VERSION").into(),
            host: hostname(),
            kernel: kernel_release(),
            command_line: opts.command_line.clone(),
            start_unix_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            start_monotonic_ns: started_mono,
            target_pid: opts.pid,
            probes: opts
                .probes
                .iter()
                .map(|p| p.trace_probe().clone())
                .collect(),
            attach_mode: mechanism.name().into(),
            attached_monotonic_ns: 0,
            target_ns_pid: proctree::ns_pid(opts.pid),
        };
        let stats = if opts.bpf_stats {
            Some(
                aya::sys::enable_stats(aya::sys::Stats::RunTime)
                    .map_err(|e| CaptureError::BpfStats(e.io_error))?,
            )
        } else {
            None
        };
        // Attach before creating the file: a bad probe leaves no empty trace.
        let mut attached = loader::attach(
            opts.pid,
            &opts.probes,
            opts.ring_bytes,
            mechanism,
            &opts.plan,
        )?;
        header.attached_monotonic_ns = monotonic_ns();
        // Lean capture: the connections already open and the workers
        // already waiting on them, into the kernel's maps and the trace.
        let seeded = seed::seed(
            &mut attached.ebpf,
            opts.pid,
            &opts.probes,
            header.attached_monotonic_ns,
        );
        let seeded = match seeded {
            // A uprobe trace: the workers already reading their clients.
            Ok(s) if s.events.is_empty() => {
                seed::seed_readers(opts.pid, &opts.probes, header.attached_monotonic_ns)
            }
            Ok(s) => s,
            Err(e) => {
                attached.detach();
                return Err(e);
            }
        };
        let mut writer = TraceWriter::create(&opts.output, &header, opts.force)?;

        let ebpf = &mut attached.ebpf;
        let ring = RingBuf::try_from(
            ebpf.take_map("EVENTS")
                .ok_or(CaptureError::MissingMap("EVENTS"))?,
        )
        .map_err(CaptureError::map)?;
        let drops = PerCpuArray::try_from(
            ebpf.take_map("DROPS")
                .ok_or(CaptureError::MissingMap("DROPS"))?,
        )
        .map_err(CaptureError::map)?;
        // Read after the detach: forks keep coming until the tracepoints go.
        let filter_full: aya::maps::Array<MapData, u64> = aya::maps::Array::try_from(
            ebpf.take_map("FILTER_FULL")
                .ok_or(CaptureError::MissingMap("FILTER_FULL"))?,
        )
        .map_err(CaptureError::map)?;
        let short = PerCpuArray::try_from(
            ebpf.take_map("SHORT")
                .ok_or(CaptureError::MissingMap("SHORT"))?,
        )
        .map_err(CaptureError::map)?;

        let capacity = (opts.buffer_bytes / (BATCH_EVENTS * flowdar_common::EVENT_SIZE)).max(2);
        let (tx, rx) = mpsc::sync_channel::<Vec<Event>>(capacity);
        let late_tx = tx.clone();
        let (seeded_connections, held_at_attach) = (seeded.connections, seeded.held);
        let launch_to_attached = since_launch();
        if !seeded.events.is_empty() {
            // First in the file: stamped at attach, before every event of
            // the threads they name.
            let _ = tx.send(seeded.events);
        }
        let flush_after = if tap.is_some() {
            drain::LIVE_FLUSH_AFTER
        } else {
            drain::FLUSH_AFTER
        };
        let (footer_tx, footer_rx) = mpsc::channel::<TraceFooter>();
        let writer = std::thread::Builder::new()
            .name("flowdar-writer".into())
            .spawn(move || {
                for batch in rx {
                    writer.write_chunk(&batch)?;
                    if let Some(tap) = &tap {
                        let _ = tap.send(batch);
                    }
                }
                let footer = footer_rx.recv().unwrap_or_default();
                writer.finish(footer)
            })
            .map_err(|source| CaptureError::Spawn {
                thread: "writer",
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let drain = drain::spawn(
            ring,
            tx,
            stop.clone(),
            opts.probes.len(),
            flush_after,
            opts.ring_bytes,
        )
        .map_err(|source| CaptureError::Spawn {
            thread: "drain",
            source,
        })?;
        Ok(Self {
            cpu_at_start: overhead::tree_cpu_ns(opts.pid),
            attached,
            drops,
            short,
            late_tx,
            ns_per_call,
            filter_full,
            stop,
            drain,
            writer,
            footer_tx,
            opts,
            started_mono,
            stats,
            seeded_connections,
            held_at_attach,
            launch_to_attached,
        })
    }

    /// Adds `pid`'s process tree to the in-kernel filter (a restarted
    /// server being followed); forks from it are then followed in the
    /// kernel. The probes are on the files, so nothing is re-attached.
    pub fn follow(&mut self, pid: u32) -> Result<usize, CaptureError> {
        let limit = self.attached.pid_limit;
        Ok(loader::seed_filter(&mut self.attached.ebpf, pid, limit)?.len())
    }

    pub fn processes_at_start(&self) -> usize {
        self.attached.seeded
    }

    pub fn attach_time(&self) -> Duration {
        self.attached.attach_time
    }

    /// Uprobes attached (two per probed function).
    pub fn uprobe_count(&self) -> usize {
        self.attached.uprobe_count()
    }

    /// How the uprobes were attached.
    pub fn mechanism(&self) -> Mechanism {
        self.attached.mechanism
    }

    /// How the system calls were hooked (None: none watched).
    pub fn syscall_hooks(&self) -> Option<SyscallHooks> {
        self.attached.syscall_hooks
    }

    /// Detaches every probe, drains what is left, writes the footer.
    pub fn stop(self, reason: &str) -> Result<RecordSummary, CaptureError> {
        let program_times = if self.stats.is_some() {
            introspect::program_run_times()
        } else {
            Vec::new()
        };
        drop(self.stats);
        let (seeded, attach_time) = (self.attached.seeded, self.attached.attach_time);
        let skipped = self.attached.skipped.clone();
        let mechanism = self.attached.mechanism;
        let syscall_hooks = self.attached.syscall_hooks;
        let skipped_task_events = self.attached.skipped_task_events();
        let server_cpu_ns = overhead::tree_cpu_ns(self.opts.pid).saturating_sub(self.cpu_at_start);
        // Dropping the programs closes their perf links: no probe stays.
        let end_mono = monotonic_ns();
        let min_ns = self.opts.plan.min_duration_ns;
        let mut attached = self.attached;
        let stacks = attached.ebpf.take_map("SHADOW");
        let detached = attached.detach();
        // The calls still open whose entries the kernel held back: after
        // the detach, the shadow stacks no longer change.
        let held = match stacks {
            Some(map) if min_ns > 0 => {
                shadow::held_entries(map, end_mono, min_ns, self.opts.probes.len())
            }
            _ => Vec::new(),
        };
        let held_open = held.len() as u64;
        let untraced_tasks = self.filter_full.get(&0, 0).unwrap_or(0);
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        let counts = self
            .drain
            .join()
            .map_err(|_| CaptureError::ThreadPanicked("drain"))?;
        // After the drain's last batch: these entries are the newest
        // events of their threads.
        if !held.is_empty() {
            let _ = self.late_tx.send(held);
        }
        drop(self.late_tx);
        let per_probe = |map: &PerCpuArray<MapData, u64>| -> Vec<u64> {
            (0..self.opts.probes.len() as u32)
                .map(|i| map.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0))
                .collect()
        };
        let kernel_drops = per_probe(&self.drops);
        let min_duration = (min_ns > 0).then(|| MinDuration {
            ns: min_ns,
            short_calls: per_probe(&self.short),
        });
        let probed = probed_calls(
            &self.opts.probes,
            &counts,
            min_duration.as_ref(),
            &first_instruction,
        );
        let overhead = self.ns_per_call.map(|costs| OverheadEstimate {
            calls: probed.calls,
            ns_per_call: costs.stepped_ns,
            server_cpu_ns,
            syscalls: probed.syscalls,
            push_calls: probed.push_calls,
            ns_per_push_call: costs.push_ns,
            ns_per_syscall: costs.syscall_ns.unwrap_or(0),
            syscall_hooks: syscall_hooks.map(|h| h.name().into()),
        });
        let footer = TraceFooter {
            end_monotonic_ns: end_mono,
            events: 0,
            kernel_drops: kernel_drops.clone(),
            user_drops: counts.user_drops.clone(),
            stop_reason: reason.into(),
            index: Vec::new(),
            entries_removed_ns: detached.entries_removed_ns,
            skipped_task_events: Some(skipped_task_events),
            malformed: Some(counts.malformed),
            unknown_probe: Some(counts.unknown_probe),
            untraced_tasks: Some(untraced_tasks),
            min_duration: min_duration.clone(),
            overhead: overhead.clone().ok(),
        };
        let _ = self.footer_tx.send(footer);
        let bytes_written = self
            .writer
            .join()
            .map_err(|_| CaptureError::ThreadPanicked("writer"))??;
        Ok(RecordSummary {
            probes: self.opts.probes,
            counts,
            kernel_drops,
            duration: Duration::from_nanos(end_mono.saturating_sub(self.started_mono)),
            attach_time,
            detach_time: detached.took,
            mechanism,
            syscall_hooks,
            skipped_task_events,
            untraced_tasks,
            processes_at_start: seeded,
            skipped,
            bytes_written,
            stop_reason: reason.into(),
            output: self.opts.output,
            program_times,
            min_duration,
            held_open,
            overhead,
            seeded_connections: self.seeded_connections,
            held_at_attach: self.held_at_attach,
            launch_to_attached: self.launch_to_attached,
        })
    }
}

/// How long this process has run: /proc/self/stat's start time (in clock
/// ticks since boot) against /proc/uptime.
fn since_launch() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name's closing parenthesis; start time is
    // field 22 of the whole line, the 20th after it.
    let start: u64 = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let ticks = rustix::param::clock_ticks_per_second();
    (ticks > 0).then(|| Duration::from_secs_f64((uptime - start as f64 / ticks as f64).max(0.0)))
}

/// Calls that hit both uprobes: those recorded (the more of entries and
/// returns: one side may be cut by attach or detach) and those dropped in
/// the kernel for being short; of them, those of functions that begin with
/// a `push` (priced apart: [`overhead::FirstInstruction`]); and apart, the
/// system calls recorded from tracepoints.
#[derive(Debug, Default, PartialEq)]
struct ProbedCalls {
    calls: u64,
    push_calls: u64,
    syscalls: u64,
}

fn probed_calls(
    probes: &[ResolvedProbe],
    counts: &DrainCounts,
    min: Option<&MinDuration>,
    first: &dyn Fn(&ResolvedProbe) -> FirstInstruction,
) -> ProbedCalls {
    let mut c = ProbedCalls::default();
    for (i, p) in probes.iter().enumerate() {
        let side = |v: &[u64]| v.get(i).copied().unwrap_or(0);
        let recorded = side(&counts.entries).max(side(&counts.exits));
        if p.is_syscall() {
            c.syscalls += recorded;
            continue;
        }
        let n = recorded + min.map_or(0, |m| side(&m.short_calls));
        c.calls += n;
        if n > 0 && first(p) == FirstInstruction::Push {
            c.push_calls += n;
        }
    }
    c
}

/// How a probed function begins, read from its file (where the probe was
/// attached, else its path on the host).
pub fn first_instruction(p: &ResolvedProbe) -> FirstInstruction {
    FirstInstruction::read(&p.attach_path, p.file_offset)
        .or_else(|| FirstInstruction::read(&p.path, p.file_offset))
        .unwrap_or(FirstInstruction::Other)
}

/// The mechanism `plan` resolves to on this kernel (probed once per run),
/// refusing up front what this kernel cannot do, or cannot undo quickly.
pub fn attach_mechanism(plan: &AttachPlan, functions: usize) -> Result<Mechanism, CaptureError> {
    let kernel = features::detect();
    let mechanism = kernel.mechanism(plan.mode)?;
    let uprobes = 2 * functions;
    if let Some(each) = mechanism.detach_secs_each() {
        if uprobes > MAX_QUICK_PERF_UPROBES && !plan.slow_detach_ok {
            return Err(CaptureError::SlowDetach {
                why: match kernel.uprobe_multi {
                    Ok(()) => "--attach-mode perf".into(),
                    Err(_) => format!("this kernel ({}) has no uprobe_multi links", kernel.release),
                },
                uprobes,
                minutes: uprobes as f64 * each / 60.0,
                each,
            });
        }
    }
    Ok(mechanism)
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// This machine's name, as the kernel has it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().into())
        .unwrap_or_default()
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().into())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(id: u32, function: &str, path: &str) -> ResolvedProbe {
        ResolvedProbe::new(flowdar_trace::TraceProbe {
            id,
            function: function.into(),
            path: path.into(),
            attach_path: path.into(),
            address: 0,
            file_offset: 0,
            capture: Default::default(),
            optional: false,
            source: None,
            params: Vec::new(),
        })
    }

    #[test]
    fn probed_calls_are_priced_by_how_their_functions_begin() {
        let probes = [
            probe(0, "ap_process_request_internal", "/usr/sbin/apache2"),
            probe(1, "ap_run_handler", "/usr/sbin/apache2"),
            probe(2, "read", flowdar_trace::KERNEL_PATH),
            probe(3, "apr_palloc", "/usr/lib/libapr-1.so.0"),
        ];
        let counts = DrainCounts {
            entries: vec![100, 40, 500, 0],
            // One return cut by the detach; the syscall's exits.
            exits: vec![99, 40, 480, 0],
            ..Default::default()
        };
        let min = MinDuration {
            ns: 1000,
            short_calls: vec![0, 10, 0, 7],
        };
        let first = |p: &ResolvedProbe| match p.function.as_str() {
            "ap_run_handler" => FirstInstruction::Other,
            _ => FirstInstruction::Push,
        };
        assert_eq!(
            probed_calls(&probes, &counts, Some(&min), &first),
            ProbedCalls {
                calls: 100 + 50 + 7,
                push_calls: 100 + 7,
                syscalls: 500,
            }
        );
    }
}
