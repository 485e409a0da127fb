//! Lean capture's kernel side: the probe table's system calls attached
//! either to fentry/fexit programs on the kernel's x86-64 syscall entry
//! points (`__x64_sys_NAME`, one program per call and side; where the
//! kernel has BTF) or to the kernel's syscall tracepoints
//! (`syscalls/sys_enter_NAME` and `sys_exit_NAME`, one entry and one exit
//! program for all of them), and the table by syscall number that tells
//! the programs which probe id each is. The links live in aya's programs
//! and close with the `Ebpf`; as fd links, they go even when the tracer is
//! killed.
use aya::{
    maps::{Array as BpfArray, MapData},
    programs::{FEntry, FExit, TracePoint},
    Btf, Ebpf,
};
use flowdar_common::SyscallProbe;

use super::{attach::program, CaptureError};
use crate::probes::{syscall_role, syscall_tracepoint, ResolvedProbe};

const ENTER: &str = "flowdar_sys_enter";
const EXIT: &str = "flowdar_sys_exit";

/// How the system calls are hooked. The tracepoints by default: fentry is
/// opt-in until it has run under load on hardware (the only kernels here
/// that load it run under QEMU's TCG, where patching a busy syscall entry
/// point crashed the guest: README, "Kernels").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyscallHooks {
    /// The syscall tracepoints: every system call of every process takes
    /// the kernel's slower syscall path while they are attached.
    #[default]
    Tracepoint,
    /// fentry/fexit programs: a call of another process costs a BPF
    /// trampoline; other system calls cost nothing.
    Fentry,
    /// fentry/fexit where this kernel allows them (x86-64, BTF), else
    /// tracepoints.
    Auto,
    /// What fentry became when threads were already blocked in `accept`
    /// at attach: its exit tracepoint too, for the recording (every system
    /// call takes the slow path again while it is attached).
    FentryAcceptTracepoint,
}

impl SyscallHooks {
    /// `fentry` or `tracepoint`, as printed.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Fentry => "fentry",
            Self::Tracepoint => "tracepoint",
            Self::FentryAcceptTracepoint => "fentry, accept tracepoint",
        }
    }
}

/// Attaches every system call of `probes` the way `hooks` says; returns
/// the way used (None: no system calls). `tree`: the server's processes,
/// whose threads already blocked in `accept` keep its exit tracepoint
/// under fexit (which sees no call that began before it).
pub(super) fn attach(
    ebpf: &mut Ebpf,
    probes: &[&ResolvedProbe],
    hooks: SyscallHooks,
    tree: &[u32],
) -> Result<Option<SyscallHooks>, CaptureError> {
    if probes.is_empty() {
        return Ok(None);
    }
    {
        let mut table: BpfArray<&mut MapData, SyscallProbe> = BpfArray::try_from(
            ebpf.map_mut("SYSCALL_PROBES")
                .ok_or(CaptureError::MissingMap("SYSCALL_PROBES"))?,
        )
        .map_err(CaptureError::map)?;
        for p in probes {
            let nr = p.address as u32;
            let role = syscall_role(nr).ok_or_else(|| CaptureError::Attach {
                function: p.function.clone(),
                path: p.path.clone(),
                source: Box::new(aya::programs::ProgramError::UnexpectedProgramType),
            })?;
            let value = SyscallProbe {
                probe_id_plus_one: p.id + 1,
                role: role as u32,
            };
            table.set(nr, value, 0).map_err(CaptureError::map)?;
        }
    }
    let used = match hooks {
        SyscallHooks::Tracepoint => attach_tracepoints(ebpf, probes, &["sys_enter", "sys_exit"])?,
        SyscallHooks::Fentry | SyscallHooks::FentryAcceptTracepoint => {
            attach_fentry(ebpf, probes, tree)?
        }
        // A kernel with BTF may still refuse tracing programs (no ftrace
        // direct calls, or a policy that forbids function tracing: this
        // project's CI machines): then the tracepoints, as before.
        SyscallHooks::Auto => match attach_fentry(ebpf, probes, tree) {
            Ok(used) => used,
            Err(_) => {
                unload_fentry(ebpf, probes);
                attach_tracepoints(ebpf, probes, &["sys_enter", "sys_exit"])?
            }
        },
    };
    set_state(ebpf, flowdar_common::SYSCALLS_ALL)?;
    Ok(Some(used))
}

/// The kernel's BTF, where fentry programs can use it (x86-64 only: the
/// programs name x86-64's syscall entry points).
fn fentry_btf() -> Option<Btf> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    Btf::from_sys_fs().ok()
}

/// `probes` on the tracepoints of `sides` (`sys_enter`, `sys_exit`).
fn attach_tracepoints(
    ebpf: &mut Ebpf,
    probes: &[&ResolvedProbe],
    sides: &[&str],
) -> Result<SyscallHooks, CaptureError> {
    for side in sides {
        let prog = if *side == "sys_enter" { ENTER } else { EXIT };
        let tp: &mut TracePoint = program(ebpf, prog)?;
        if tp.fd().is_err() {
            tp.load().map_err(|e| CaptureError::program(prog, e))?;
        }
        for p in probes {
            let name = syscall_tracepoint(&p.function);
            tp.attach("syscalls", &format!("{side}_{name}"))
                .map_err(|e| attach_error(p, e))?;
        }
    }
    Ok(SyscallHooks::Tracepoint)
}

fn attach_error(p: &ResolvedProbe, e: aya::programs::ProgramError) -> CaptureError {
    CaptureError::Attach {
        function: p.function.clone(),
        path: p.path.clone(),
        source: Box::new(e),
    }
}

/// The fentry and fexit programs of system call `name`
/// (flowdar-ebpf/src/syscall_fentry.rs).
fn fentry_programs(name: &str) -> Option<(&'static str, &'static str)> {
    const PROGRAMS: &[(&str, &str, &str)] = &[
        ("read", "flowdar_fe_read", "flowdar_fx_read"),
        ("write", "flowdar_fe_write", "flowdar_fx_write"),
        ("close", "flowdar_fe_close", "flowdar_fx_close"),
        ("poll", "flowdar_fe_poll", "flowdar_fx_poll"),
        ("readv", "flowdar_fe_readv", "flowdar_fx_readv"),
        ("writev", "flowdar_fe_writev", "flowdar_fx_writev"),
        ("sendfile", "flowdar_fe_sendfile", "flowdar_fx_sendfile"),
        ("accept", "flowdar_fe_accept", "flowdar_fx_accept"),
        ("sendto", "flowdar_fe_sendto", "flowdar_fx_sendto"),
        ("recvfrom", "flowdar_fe_recvfrom", "flowdar_fx_recvfrom"),
        ("sendmsg", "flowdar_fe_sendmsg", "flowdar_fx_sendmsg"),
        ("recvmsg", "flowdar_fe_recvmsg", "flowdar_fx_recvmsg"),
        ("shutdown", "flowdar_fe_shutdown", "flowdar_fx_shutdown"),
        ("accept4", "flowdar_fe_accept4", "flowdar_fx_accept4"),
    ];
    PROGRAMS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|&(_, entry, exit)| (entry, exit))
}

/// Detaches and unloads whatever [`attach_fentry`] loaded of `probes`'
/// programs (and the accept exit tracepoint it may have added).
fn unload_fentry(ebpf: &mut Ebpf, probes: &[&ResolvedProbe]) {
    for p in probes {
        if let Some((entry, exit)) = fentry_programs(&p.function) {
            if let Ok(f) = program::<FEntry>(ebpf, entry) {
                let _ = f.unload();
            }
            if let Ok(f) = program::<FExit>(ebpf, exit) {
                let _ = f.unload();
            }
        }
    }
    if let Ok(tp) = program::<TracePoint>(ebpf, EXIT) {
        let _ = tp.unload();
    }
}

/// `probes` on fentry/fexit programs, every fexit first (the programs do
/// nothing until user space sets `SYSCALLS_STATE` after them all, which
/// is what keeps an entry from going without its return; the order only
/// narrows the calls in progress at that moment). Threads of `tree`
/// already inside `accept` get its exit tracepoint as well (their return
/// is the connection's birth, and fexit never sees it); the tracepoint
/// program finds nothing to do for accepts that fexit handled.
fn attach_fentry(
    ebpf: &mut Ebpf,
    probes: &[&ResolvedProbe],
    tree: &[u32],
) -> Result<SyscallHooks, CaptureError> {
    let btf = fentry_btf().ok_or(CaptureError::NoFentry {
        why: "no BTF at /sys/kernel/btf/vmlinux, or not x86-64".into(),
    })?;
    for exits in [true, false] {
        for p in probes {
            let (entry, exit) =
                fentry_programs(&p.function).ok_or(CaptureError::MissingProgram("flowdar_fe_*"))?;
            let function = format!("__x64_sys_{}", syscall_tracepoint(&p.function));
            let result = if exits {
                let f: &mut FExit = program(ebpf, exit)?;
                f.load(&function, &btf).and_then(|()| f.attach().map(drop))
            } else {
                let f: &mut FEntry = program(ebpf, entry)?;
                f.load(&function, &btf).and_then(|()| f.attach().map(drop))
            };
            result.map_err(|e| CaptureError::NoFentry {
                why: format!("{function}: {}", crate::errors::chain(&e)),
            })?;
        }
    }
    let accepts: Vec<&ResolvedProbe> = probes
        .iter()
        .copied()
        .filter(|p| syscall_role(p.address as u32) == Some(flowdar_common::SyscallRole::Accept))
        .collect();
    if !accepts.is_empty() && tree.iter().any(|&pid| super::seed::accepting_now(pid)) {
        attach_tracepoints(ebpf, &accepts, &["sys_exit"])?;
        return Ok(SyscallHooks::FentryAcceptTracepoint);
    }
    Ok(SyscallHooks::Fentry)
}

/// Switches the syscall programs (see `SYSCALLS_STATE` in flowdar-ebpf):
/// instantly, where closing their links waits a grace period each.
pub(super) fn set_state(ebpf: &mut Ebpf, state: u32) -> Result<(), CaptureError> {
    let mut map: BpfArray<&mut MapData, u32> = BpfArray::try_from(
        ebpf.map_mut("SYSCALLS_STATE")
            .ok_or(CaptureError::MissingMap("SYSCALLS_STATE"))?,
    )
    .map_err(CaptureError::map)?;
    map.set(0, state, 0).map_err(CaptureError::map)
}
