//! Lean capture's socket calls through fentry/fexit programs on the
//! kernel's x86-64 syscall entry points (`__x64_sys_read`...), when user
//! space asks for them (`--syscall-hooks fentry`): the same work as the tracepoint programs of `syscalls`, but a
//! call of another process pays a BPF trampoline instead of a tracepoint
//! record, and no other system call of any process takes the tracepoints'
//! slow path (BENCHMARKS.md, "fentry in place of the syscall
//! tracepoints", opt-in). One program per call and side: a tracing program is
//! loaded for one kernel function. Each knows its call's number, which
//! picks its probe id and role in `SYSCALL_PROBES` as the tracepoints'
//! `__syscall_nr` does.
//!
//! An fexit program never sees the return of a call that began before it
//! was attached: a worker already waiting in `poll` at attach has its
//! return inferred at its next call (`syscalls::enter`), and user space
//! keeps the `accept` exit tracepoints for prefork children already
//! blocked in `accept` (`capture/syscalls.rs`).
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};

use crate::syscalls::{enter, exit, running, watched};

/// `struct pt_regs` on x86-64: where the first and second arguments of a
/// system call are (`di`, `si`), as the syscall wrappers receive them.
const REGS_DI: u64 = 112;
const REGS_SI: u64 = 104;

/// A u64 of the kernel's `pt_regs` at `regs + off`, 0 if unreadable.
#[inline(always)]
fn reg(regs: u64, off: u64) -> u64 {
    // SAFETY: a kernel pointer the trampoline handed over; the helper
    // faults safely.
    unsafe { bpf_probe_read_kernel((regs + off) as *const u64) }.unwrap_or(0)
}

/// The work of every entry program, one BPF function they all call (not
/// inlined: 28 copies of it made the object, embedded in the binary,
/// 0.9 MB bigger). `regs`: the wrapper's `pt_regs`.
#[inline(never)]
fn on_entry(regs: u64, nr: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !running(pid_tgid) {
        return;
    }
    let Some((probe_id, role)) = watched(nr) else {
        return;
    };
    enter(pid_tgid, probe_id, role, reg(regs, REGS_DI), || {
        reg(regs, REGS_SI)
    });
}

/// The work of every exit program, shared likewise.
#[inline(never)]
fn on_exit(ret: i64, nr: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !running(pid_tgid) {
        return;
    }
    let Some((probe_id, role)) = watched(nr) else {
        return;
    };
    exit(pid_tgid, probe_id, role, ret);
}

/// An fentry and an fexit program for each x86-64 system call of
/// `probes/syscalls.rs`' table: number, program names, kernel function.
macro_rules! hooks {
    ($($nr:literal $entry:ident $exit:ident $function:literal;)*) => {$(
        #[fentry(function = $function)]
        pub fn $entry(ctx: FEntryContext) -> u32 {
            on_entry(ctx.arg(0), $nr);
            0
        }

        // The wrappers take one argument (the registers): the return
        // value follows it.
        #[fexit(function = $function)]
        pub fn $exit(ctx: FExitContext) -> u32 {
            on_exit(ctx.arg(1), $nr);
            0
        }
    )*};
}

hooks! {
    0 flowdar_fe_read flowdar_fx_read "__x64_sys_read";
    1 flowdar_fe_write flowdar_fx_write "__x64_sys_write";
    3 flowdar_fe_close flowdar_fx_close "__x64_sys_close";
    7 flowdar_fe_poll flowdar_fx_poll "__x64_sys_poll";
    19 flowdar_fe_readv flowdar_fx_readv "__x64_sys_readv";
    20 flowdar_fe_writev flowdar_fx_writev "__x64_sys_writev";
    40 flowdar_fe_sendfile flowdar_fx_sendfile "__x64_sys_sendfile64";
    43 flowdar_fe_accept flowdar_fx_accept "__x64_sys_accept";
    44 flowdar_fe_sendto flowdar_fx_sendto "__x64_sys_sendto";
    45 flowdar_fe_recvfrom flowdar_fx_recvfrom "__x64_sys_recvfrom";
    46 flowdar_fe_sendmsg flowdar_fx_sendmsg "__x64_sys_sendmsg";
    47 flowdar_fe_recvmsg flowdar_fx_recvmsg "__x64_sys_recvmsg";
    48 flowdar_fe_shutdown flowdar_fx_shutdown "__x64_sys_shutdown";
    288 flowdar_fe_accept4 flowdar_fx_accept4 "__x64_sys_accept4";
}
