//! Loading the kernel programs, following the target's process tree, and
//! attaching one uprobe + one uretprobe per probe (probe id as cookie).
use std::time::Instant;

use aya::{
    maps::{Array as BpfArray, HashMap as BpfHashMap, MapData},
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
        TracePoint, UProbe,
    },
    Ebpf, EbpfLoader,
};
use flowdar_common::MAX_PROBES;

use super::{proctree, tracefs, CaptureError};
use crate::probes::ResolvedProbe;

/// The compiled kernel programs (built by build.rs from flowdar-ebpf).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowdar-ebpf"));

/// Program names, as in flowdar-ebpf. The kernel truncates them to 15 bytes;
/// all start with [`PROGRAM_PREFIX`], which is how tests find leftovers.
const ENTRY: &str = "flowdar_entry";
const EXIT: &str = "flowdar_exit";
const FORK: &str = "flowdar_fork";
const TASK_EXIT: &str = "flowdar_exit_task";
pub const PROGRAM_PREFIX: &str = "flowdar_";

/// Programs loaded and attached to a live target.
pub struct Attached {
    pub ebpf: Ebpf,
    /// Every uprobe link, to detach many at a time.
    links: Vec<(&'static str, UProbeLinkId)>,
    /// Functions from patterns that the kernel would not probe, and why.
    pub skipped: Vec<(String, String)>,
    /// Processes in the filter when capture began.
    pub seeded: usize,
    pub attach_time: std::time::Duration,
}

/// Threads closing uprobe links at once. Each close unregisters one uprobe
/// and waits for a grace period (~0.09 s measured here); the kernel mostly
/// serialises them (perf's uprobe teardown holds `event_mutex`), so threads
/// help little: 28 links take ~2.5 s, the `full` profile's 2876 ~5 minutes.
/// The real fix is one uprobe_multi link per file (BENCHMARKS.md).
const DETACH_THREADS: usize = 64;

impl Attached {
    /// Uprobe links attached (two per probed function).
    pub fn link_count(&self) -> usize {
        self.links.len()
    }
}

impl Attached {
    /// Detaches every probe and unloads the programs; returns how long it took.
    pub fn detach(mut self) -> std::time::Duration {
        let started = Instant::now();
        let mut owned = Vec::with_capacity(self.links.len());
        for (name, id) in std::mem::take(&mut self.links) {
            if let Ok(prog) = program::<UProbe>(&mut self.ebpf, name) {
                if let Ok(link) = prog.take_link(id) {
                    owned.push(link);
                }
            }
        }
        let per_thread = owned.len().div_ceil(DETACH_THREADS).max(1);
        std::thread::scope(|s| {
            while !owned.is_empty() {
                let batch: Vec<_> = owned.drain(..per_thread.min(owned.len())).collect();
                s.spawn(move || drop(batch));
            }
        });
        drop(self.ebpf);
        started.elapsed()
    }
}

/// Loads the programs with this kernel's settings, follows `pid`'s process
/// tree and attaches every probe. Nothing stays attached if this fails: the
/// links die with the returned (or dropped) `Ebpf`.
pub fn attach(
    pid: u32,
    probes: &[ResolvedProbe],
    ring_bytes: u32,
) -> Result<Attached, CaptureError> {
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
    let wakeup_bytes = u64::from(ring_bytes / 4);
    raise_fd_limit();
    let mut ebpf = EbpfLoader::new()
        .override_global("FORK_LAYOUT", &fork, true)
        .override_global("EXIT_LAYOUT", &exit, true)
        .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
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
    let tree = proctree::descendants(pid);
    {
        let mut targets: BpfHashMap<&mut MapData, u32, u8> = BpfHashMap::try_from(
            ebpf.map_mut("TARGETS")
                .ok_or(CaptureError::MissingMap("TARGETS"))?,
        )
        .map_err(CaptureError::map)?;
        for p in &tree {
            targets.insert(p, 1, 0).map_err(CaptureError::map)?;
        }
    }
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

    let mut attached = Attached {
        ebpf,
        links: Vec::new(),
        skipped: Vec::new(),
        seeded: tree.len(),
        attach_time: Default::default(),
    };
    if let Err(e) = attach_uprobes(&mut attached, probes) {
        attached.detach();
        return Err(e);
    }
    attached.attach_time = started.elapsed();
    Ok(attached)
}

fn attach_uprobes(attached: &mut Attached, probes: &[ResolvedProbe]) -> Result<(), CaptureError> {
    for name in [ENTRY, EXIT] {
        let prog: &mut UProbe = program(&mut attached.ebpf, name)?;
        prog.load().map_err(|e| CaptureError::program(name, e))?;
    }
    for p in probes {
        match attach_pair(&mut attached.ebpf, p) {
            Ok(ids) => attached.links.extend(ids),
            // A function matched by a pattern may sit where the kernel
            // refuses a uprobe (e.g. ENOTSUPP on some first instructions):
            // skip it and say so; a function asked for by name must attach.
            Err(e) if p.optional => attached
                .skipped
                .push((p.function.clone(), error_reason(&e))),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Attaches the entry and exit probes of one function, or neither.
fn attach_pair(
    ebpf: &mut Ebpf,
    p: &ResolvedProbe,
) -> Result<[(&'static str, UProbeLinkId); 2], CaptureError> {
    let attach = |ebpf: &mut Ebpf, name: &'static str| {
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(p.file_offset),
            cookie: Some(u64::from(p.id)),
        };
        let prog: &mut UProbe = program(ebpf, name)?;
        prog.attach(point, &p.attach_path, UProbeScope::AllProcesses)
            .map_err(|source| CaptureError::Attach {
                function: p.function.clone(),
                path: p.path.clone(),
                source: Box::new(source),
            })
    };
    let entry = attach(ebpf, ENTRY)?;
    match attach(ebpf, EXIT) {
        Ok(exit) => Ok([(ENTRY, entry), (EXIT, exit)]),
        Err(e) => {
            if let Ok(prog) = program::<UProbe>(ebpf, ENTRY) {
                let _ = prog.detach(entry);
            }
            Err(e)
        }
    }
}

/// The innermost cause of an attach error, for a compact report.
fn error_reason(e: &CaptureError) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            // ENOTSUPP (524) is kernel-internal: libc has no name for it.
            if io.raw_os_error() == Some(524) {
                return "ENOTSUPP: the kernel cannot place a uprobe on its first instruction"
                    .into();
            }
        }
        msg = s.to_string();
        source = s.source();
    }
    msg
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, CaptureError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or(CaptureError::MissingProgram(name))?;
    prog.try_into().map_err(|e| CaptureError::program(name, e))
}

/// Two perf-event fds per probe: the `full` profile needs thousands.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Names of loaded kernel programs that are ours (for leak checks).
pub fn loaded_flowdar_programs() -> Vec<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| p.name_as_str().map(str::to_string))
        .filter(|n| n.starts_with(PROGRAM_PREFIX))
        .collect()
}
