//! Loading the kernel programs, following the target's process tree, and
//! attaching one uprobe + one uretprobe per probe (probe id as cookie).
use std::time::Instant;

use aya::{
    maps::{Array as BpfArray, HashMap as BpfHashMap, MapData},
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
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
    /// Processes in the filter when capture began.
    pub seeded: usize,
    pub attach_time: std::time::Duration,
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

    for name in [ENTRY, EXIT] {
        let prog: &mut UProbe = program(&mut ebpf, name)?;
        prog.load().map_err(|e| CaptureError::program(name, e))?;
        for p in probes {
            let point = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(p.file_offset),
                cookie: Some(u64::from(p.id)),
            };
            prog.attach(point, &p.attach_path, UProbeScope::AllProcesses)
                .map_err(|source| CaptureError::Attach {
                    function: p.function.clone(),
                    path: p.path.clone(),
                    source: Box::new(source),
                })?;
        }
    }
    Ok(Attached {
        ebpf,
        seeded: tree.len(),
        attach_time: started.elapsed(),
    })
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
