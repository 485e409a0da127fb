//! Lean capture's kernel side: the probe table's system calls attached to
//! the kernel's syscall tracepoints (`syscalls/sys_enter_NAME` and
//! `sys_exit_NAME`), one entry and one exit program for all of them, and
//! the table by syscall number that tells the programs which probe id each
//! is. The links live in aya's programs and close with the `Ebpf`; as fd
//! links, they go even when the tracer is killed.
use aya::{
    maps::{Array as BpfArray, MapData},
    programs::TracePoint,
    Ebpf,
};
use flowdar_common::SyscallProbe;

use super::{attach::program, CaptureError};
use crate::probes::{syscall_role, syscall_tracepoint, ResolvedProbe};

const ENTER: &str = "flowdar_sys_enter";
const EXIT: &str = "flowdar_sys_exit";

/// Attaches every system call of `probes`; returns how many.
pub(super) fn attach(ebpf: &mut Ebpf, probes: &[&ResolvedProbe]) -> Result<usize, CaptureError> {
    if probes.is_empty() {
        return Ok(0);
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
    for (prog, side) in [(ENTER, "sys_enter"), (EXIT, "sys_exit")] {
        let tp: &mut TracePoint = program(ebpf, prog)?;
        tp.load().map_err(|e| CaptureError::program(prog, e))?;
        for p in probes {
            let name = syscall_tracepoint(&p.function);
            tp.attach("syscalls", &format!("{side}_{name}"))
                .map_err(|e| CaptureError::Attach {
                    function: p.function.clone(),
                    path: p.path.clone(),
                    source: Box::new(e),
                })?;
        }
    }
    set_state(ebpf, flowdar_common::SYSCALLS_ALL)?;
    Ok(probes.len())
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
