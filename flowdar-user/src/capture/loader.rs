//! Loading the kernel programs, following the target's process tree, and
//! attaching one uprobe + one uretprobe per probe (probe id as cookie).
use std::{os::fd::AsFd, time::Instant};

use aya::{
    maps::{Array as BpfArray, MapData},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use flowdar_common::MAX_PROBES;

use super::{
    attach::Mechanism,
    attach::{self, program, Closing, Detaching, Links},
    features::AttachMode,
    filter::{self, PidFilter},
    proctree,
    syscalls::SyscallHooks,
    tracefs, CaptureError,
};
use crate::probes::ResolvedProbe;

/// The compiled kernel programs (built by build.rs from flowdar-ebpf).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowdar-ebpf"));

/// Program names, as in flowdar-ebpf. The kernel truncates them to 15 bytes;
/// all start with [`PROGRAM_PREFIX`], which is how tests find leftovers.
const ENTRY: &str = "flowdar_entry";
const EXIT: &str = "flowdar_exit";
/// Do-nothing programs at the same places: the benchmark floor.
const NOP_ENTRY: &str = "flowdar_nop_in";
const NOP_EXIT: &str = "flowdar_nop_out";
const FORK: &str = "flowdar_fork";
const TASK_EXIT: &str = "flowdar_exit_task";
pub const PROGRAM_PREFIX: &str = "flowdar_";

/// What the attach uses: which programs and how.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttachPlan {
    pub mode: AttachMode,
    /// Attach the do-nothing programs instead of the recording ones.
    pub floor: bool,
    /// Attach thousands of perf-event uprobes even though detaching them
    /// takes minutes (kernels without uprobe_multi).
    pub slow_detach_ok: bool,
    /// Pids the in-kernel process filter covers (tests
    /// shrink it to see a fork refused); `None`: every pid.
    pub filter_capacity: Option<u32>,
    /// `record --min-duration` in ns: calls shorter than this are dropped
    /// in the kernel (counted per probe). 0: every call is sent.
    pub min_duration_ns: u64,
    /// How system calls (lean capture) are hooked.
    pub syscall_hooks: SyscallHooks,
}

/// Programs loaded and attached to a live target.
pub struct Attached {
    pub ebpf: Ebpf,
    /// How the uprobes were attached.
    pub mechanism: Mechanism,
    /// How the system calls were hooked (None: none watched).
    pub syscall_hooks: Option<SyscallHooks>,
    /// The uprobes, held the way their strategy attached them.
    links: Box<dyn Links>,
    /// Functions from patterns that the kernel would not probe, and why.
    pub skipped: Vec<(String, String)>,
    /// Processes in the filter when capture began.
    pub seeded: usize,
    /// Pids the process filter covers.
    pub pid_limit: u32,
    pub attach_time: std::time::Duration,
}

/// How long return probes stay after the entry probes are gone.
const RETURN_SETTLE: std::time::Duration = std::time::Duration::from_millis(100);

/// Threads closing perf-event uprobe links at once. Each close unregisters
/// one uprobe and waits for a grace period; the kernel serialises them
/// (see [`MAX_QUICK_PERF_UPROBES`]), so threads help little.
const DETACH_THREADS: usize = 64;

impl Attached {
    /// Uprobes attached (two per probed function).
    pub fn uprobe_count(&self) -> usize {
        self.links.uprobes()
    }

    /// Runs of the fork/exit tracepoint programs that the kernel skipped
    /// because one of our programs was already running on that CPU
    /// (`bpf_prog_info.recursion_misses`): a fork not followed, maybe.
    /// Uprobe programs have no such guard (kernel/trace/bpf_trace.c,
    /// `uprobe_prog_run`), so they never count here.
    pub fn skipped_task_events(&self) -> u64 {
        [FORK, TASK_EXIT]
            .into_iter()
            .filter_map(|name| self.ebpf.program(name)?.fd().ok())
            .filter_map(|fd| super::sys::recursion_misses(fd.as_fd()).ok())
            .sum()
    }

    /// Detaches every probe and unloads the programs. Entry probes go
    /// first, then return probes: a call entered before the entries went
    /// can still return into the trace while the returns are in place.
    pub fn detach(self) -> Detached {
        let started = Instant::now();
        let mut ebpf = self.ebpf;
        let Detaching { entries, returns } = self.links.detach(&mut ebpf);
        // The syscall programs stop, both sides at once, when the uprobe
        // entries are gone (a map write: their links close with `ebpf`, a
        // grace period per link). Not before: a lean trace counted
        // requests (an entry uprobe) while the entry links closed and no
        // longer saw their writes, so `top` showed those workers in their
        // handler at the end. Not their exits after: a system call's
        // return with its next call unseen misstates what the thread
        // does at the end (see `SYSCALLS_STATE` in flowdar-ebpf).
        close_all(entries);
        let _ = super::syscalls::set_state(&mut ebpf, flowdar_common::SYSCALLS_OFF);
        let entries_removed_ns = super::monotonic_ns();
        // Calls that entered just before their entry probe went can still
        // return into the trace: give them a moment before the return
        // probes go (before 6.12 closing a uprobe_multi link does not even
        // wait for handlers in progress: `uprobe_unregister_sync` came then).
        std::thread::sleep(RETURN_SETTLE);
        close_all(returns);
        drop(ebpf);
        Detached {
            entries_removed_ns,
            took: started.elapsed(),
        }
    }
}

/// What detaching did.
#[derive(Debug, Clone, Copy)]
pub struct Detached {
    /// CLOCK_MONOTONIC when the last entry probe was gone (return probes
    /// were still in place until the detach ended).
    pub entries_removed_ns: u64,
    pub took: std::time::Duration,
}

/// Closes links from several threads: each close waits its own grace
/// period, and uprobe_multi links' waits overlap.
fn close_all(mut links: Closing) {
    let per_thread = links.len().div_ceil(DETACH_THREADS).max(1);
    std::thread::scope(|s| {
        while !links.is_empty() {
            let batch: Vec<_> = links.drain(..per_thread.min(links.len())).collect();
            s.spawn(move || drop(batch));
        }
    });
}

/// Loads the programs with this kernel's settings, follows `pid`'s process
/// tree and attaches every probe. Nothing stays attached if this fails: the
/// links die with the returned (or dropped) `Ebpf`.
pub fn attach(
    pid: u32,
    probes: &[ResolvedProbe],
    ring_bytes: u32,
    mechanism: Mechanism,
    plan: &AttachPlan,
) -> Result<Attached, CaptureError> {
    let floor = plan.floor;
    if probes.len() as u32 > MAX_PROBES {
        return Err(CaptureError::TooManyProbes {
            count: probes.len(),
            max: MAX_PROBES,
        });
    }
    let started = Instant::now();
    let root = tracefs::ensure_mounted()?;
    let fork = tracefs::fork_layout(&root)?;
    let exit = tracefs::exit_layout(&root)?;
    raise_fd_limit();
    let mut loader = EbpfLoader::new();
    let pid_limit = filter::pid_limit(plan.filter_capacity);
    loader.map_max_entries("TARGETS", filter::words_for(pid_limit));
    if plan.min_duration_ns > 0 {
        loader.map_max_entries("SHADOW", flowdar_common::MAX_SHADOW_THREADS);
    }
    let mut ebpf = loader
        .override_global("FORK_LAYOUT", &fork, true)
        .override_global("EXIT_LAYOUT", &exit, true)
        .override_global("PID_LIMIT", &pid_limit, true)
        .override_global("MIN_DURATION_NS", &plan.min_duration_ns, true)
        .map_max_entries("EVENTS", ring_bytes)
        .load(EBPF_OBJECT)
        .map_err(|e| CaptureError::Load(Box::new(e)))?;

    // Follow forks before reading /proc, so no child slips between the two.
    for (prog, event) in [
        (FORK, "sched_process_fork"),
        (TASK_EXIT, "sched_process_exit"),
    ] {
        let tp: &mut TracePoint = program(&mut ebpf, prog)?;
        tp.load().map_err(|e| CaptureError::program(prog, e))?;
        tp.attach("sched", event)
            .map_err(|e| CaptureError::program(prog, e))?;
    }
    let tree = seed_filter(&mut ebpf, pid, pid_limit)?;
    if !proctree::is_alive(pid) {
        return Err(CaptureError::NoSuchProcess { pid });
    }
    {
        let mut config: BpfArray<&mut MapData, flowdar_common::ProbeConfig> = BpfArray::try_from(
            ebpf.map_mut("PROBE_CONFIG")
                .ok_or(CaptureError::MissingMap("PROBE_CONFIG"))?,
        )
        .map_err(CaptureError::map)?;
        for p in probes
            .iter()
            .filter(|p| p.capture.to_kernel().reads_memory())
        {
            config
                .set(p.id, p.capture.to_kernel(), 0)
                .map_err(CaptureError::map)?;
        }
    }

    let programs = if floor {
        [NOP_ENTRY, NOP_EXIT]
    } else {
        [ENTRY, EXIT]
    };
    // The mechanism was chosen by probing the kernel (features.rs): a
    // failure here is about the functions, not about the kernel.
    // System calls (lean capture) go to the kernel's syscall hooks
    // (tracepoints, or fentry/fexit when asked), the rest to the uprobe
    // strategy. The floor measures uprobes alone.
    let (kernel, user): (Vec<&ResolvedProbe>, Vec<&ResolvedProbe>) =
        probes.iter().partition(|p| p.is_syscall());
    let user: Vec<ResolvedProbe> = user.into_iter().cloned().collect();
    // The syscall hooks first: a request counted by a uprobe while the
    // system calls were not yet watched would miss its reads and writes
    // (a lean `top` started under load counted 272 requests without their
    // response this way).
    let syscalls = if floor {
        Ok(None)
    } else {
        super::syscalls::attach(&mut ebpf, &kernel, plan.syscall_hooks, &tree)
    };
    let (syscall_hooks, syscalls) = match syscalls {
        Ok(used) => (used, Ok(())),
        Err(e) => (None, Err(e)),
    };
    let strategy = attach::strategy(mechanism, EBPF_OBJECT);
    let user: &[ResolvedProbe] = if syscalls.is_ok() { &user } else { &[] };
    let (attachment, result) = strategy.attach(&mut ebpf, user, programs);
    let result = syscalls.and(result);
    let mut attached = Attached {
        ebpf,
        mechanism,
        syscall_hooks,
        links: attachment.links,
        skipped: attachment.skipped,
        seeded: tree.len(),
        pid_limit,
        attach_time: Default::default(),
    };
    if let Err(e) = result {
        attached.detach();
        return Err(e);
    }
    attached.attach_time = started.elapsed();
    Ok(attached)
}

/// Puts `root`'s process tree in the in-kernel filter so that no process
/// slips through: see [`proctree::seed`].
pub(super) fn seed_filter(
    ebpf: &mut Ebpf,
    root: u32,
    pid_limit: u32,
) -> Result<Vec<u32>, CaptureError> {
    let map = match ebpf.map("TARGETS") {
        Some(aya::maps::Map::Array(data)) => data,
        _ => return Err(CaptureError::MissingMap("TARGETS")),
    };
    let targets = PidFilter::map(map, pid_limit).map_err(CaptureError::FilterMap)?;
    let tree = proctree::seed(root, &mut |p| targets.add(p))?;
    // A process that exited before it was added never met the exit
    // tracepoint: take it out, or its PID, once reused, would be traced.
    for p in tree.iter().filter(|p| !proctree::is_alive(**p)) {
        targets.remove(*p);
    }
    Ok(tree)
}

/// Two perf-event fds per probe: the `full` profile needs thousands. The
/// soft limit goes up to the hard one (`None`: unlimited), if it can.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let below_hard = match (lim.current, lim.maximum) {
        (Some(soft), Some(hard)) => soft < hard,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if below_hard {
        let raised = Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        // Best effort, as before: on failure the soft limit stays.
        let _ = setrlimit(Resource::Nofile, raised);
    }
}
