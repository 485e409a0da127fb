//! Function entry (uprobe) and exit (uretprobe) programs. One program of each
//! kind serves every probe: the probe id arrives as the attach cookie.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated::bpf_get_attach_cookie},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
    EbpfContext,
};
use flowdar_common::{Event, EventKind, MAX_ARGS};

use crate::maps::{is_target, DROPS, EVENTS, WAKEUP_BYTES};

#[uprobe]
pub fn flowdar_entry(ctx: ProbeContext) -> u32 {
    let mut args = [0u64; MAX_ARGS];
    // Unrolled by hand: the verifier wants constant argument indexes.
    args[0] = ctx.arg::<u64>(0).unwrap_or(0);
    args[1] = ctx.arg::<u64>(1).unwrap_or(0);
    args[2] = ctx.arg::<u64>(2).unwrap_or(0);
    emit(&ctx, EventKind::Entry, args);
    0
}

#[uretprobe]
pub fn flowdar_exit(ctx: RetProbeContext) -> u32 {
    emit(&ctx, EventKind::Exit, [ctx.ret::<u64>(), 0, 0]);
    0
}

#[inline(always)]
fn emit<C: EbpfContext>(ctx: &C, kind: EventKind, args: [u64; MAX_ARGS]) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_target(tgid) {
        return;
    }
    // SAFETY: `ctx` is the live probe context handed to the program.
    let probe_id = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) } as u32;
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES.load() {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    } as u64;
    match EVENTS.reserve::<Event>(0) {
        Some(mut slot) => {
            slot.write(Event {
                tgid,
                tid: pid_tgid as u32,
                // SAFETY: plain helper call without arguments.
                ts_ns: unsafe { bpf_ktime_get_ns() },
                probe_id,
                kind: kind as u32,
                args,
            });
            slot.submit(flags);
        }
        None => {
            if let Some(count) = DROPS.get_ptr_mut(probe_id) {
                // SAFETY: per-CPU slot, no concurrent writer on this CPU.
                unsafe { *count += 1 };
            }
        }
    }
}
