//! Process-tree following: children and threads of a traced process join the
//! filter when they are forked, and leave it when they exit.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};

use crate::{
    maps::{
        add_target, count_one, is_target, remove_target, EXIT_LAYOUT, FILTER_FULL, FORK_LAYOUT,
    },
    syscalls::{ACCEPTING, IN_SYSCALL},
};

/// `sched/sched_process_fork` runs in the forking task: if it is ours, so is
/// the child (a new process, or a new thread whose tid we add harmlessly).
#[tracepoint]
pub fn flowdar_fork(ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_target(tgid) {
        return 0;
    }
    let off = FORK_LAYOUT.load().child_pid_off as usize;
    // SAFETY: the offset comes from this kernel's tracefs format file.
    if let Ok(child) = unsafe { ctx.read_at::<i32>(off) } {
        if !add_target(child as u32) {
            if let Some(count) = FILTER_FULL.get_ptr_mut(0) {
                count_one(count);
            }
        }
    }
    0
}

/// `sched/sched_process_exit` runs once per exiting thread, in that thread.
#[tracepoint]
pub fn flowdar_exit_task(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // Only ours clear a bit: every thread exit on the machine passes here,
    // and an atomic on a shared word would dirty its cache line for all.
    if tid != tgid && is_target(tid) {
        remove_target(tid);
    }
    if !is_target(tgid) {
        return 0;
    }
    // The lean capture's per-thread state goes with the thread.
    let _ = IN_SYSCALL.remove(tid);
    let _ = ACCEPTING.remove(tid);
    let off = EXIT_LAYOUT.load().group_dead_off;
    let group_dead = if off == u32::MAX {
        // Older kernels lack `group_dead`: take the leader's exit as the end.
        tid == tgid
    } else {
        // SAFETY: the offset comes from this kernel's tracefs format file.
        unsafe { ctx.read_at::<u8>(off as usize) }.unwrap_or(0) != 0
    };
    if group_dead {
        remove_target(tgid);
    }
    0
}
