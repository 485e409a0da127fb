//! Function entry (uprobe) and exit (uretprobe) programs. One program of each
//! kind serves every probe: the probe id arrives as the attach cookie. User
//! memory is read only where the probe's `PROBE_CONFIG` entry asks for it.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated::bpf_get_attach_cookie},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
    EbpfContext,
};
use flowdar_common::{EventKind, ProbeConfig, DEREF_UNKNOWN, MAX_DEREFS, NO_ARG};

use crate::{
    emit::emit,
    maps::{is_target, PENDING_DEREFS, PROBE_CONFIG},
    shadow,
};

#[uprobe]
pub fn flowdar_entry(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    let probe_id = cookie(&ctx);
    let regs = arg_regs(&ctx);
    let mut args = [regs[0], regs[1], regs[2]];
    if let Some(cfg) = PROBE_CONFIG.get(probe_id).filter(|c| c.valid == 1) {
        let mut read = 0;
        if cfg.read_arg != NO_ARG {
            read = field(pick(&regs, cfg.read_arg), cfg.read_offset);
            if cfg.read_hops == 2 && read != DEREF_UNKNOWN {
                read = field(read, cfg.read_offset2);
            }
            match cfg.read_slot {
                0 => args[0] = read,
                1 => args[1] = read,
                _ => args[2] = read,
            }
        }
        save_out_pointers(&regs, cfg, pid_tgid, probe_id);
        if cfg.client_from_read == 1 {
            if read != DEREF_UNKNOWN {
                crate::client::send_if_new(pid_tgid, probe_id, read);
            }
        } else if cfg.client_arg != NO_ARG {
            crate::client::send_if_new(pid_tgid, probe_id, pick(&regs, cfg.client_arg));
        }
        if cfg.traceparent_off != 0 {
            crate::traceparent::send(
                pid_tgid,
                probe_id,
                pick(&regs, cfg.traceparent_arg),
                u64::from(cfg.traceparent_off),
            );
        }
    }
    if shadow::min_duration() != 0 && shadow::hold_entry(pid_tgid, probe_id, args) {
        return 0;
    }
    emit(pid_tgid, probe_id, EventKind::Entry, args);
    0
}

#[uretprobe]
pub fn flowdar_exit(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    let probe_id = cookie(&ctx);
    let mut args = [ctx.ret::<u64>(), 0, 0];
    if let Some(cfg) = PROBE_CONFIG
        .get(probe_id)
        .filter(|c| c.valid == 1 && c.deref[0] != NO_ARG)
    {
        let key = pending_key(pid_tgid, probe_id);
        // SAFETY: read-only copy of the value; removed right after.
        match unsafe { PENDING_DEREFS.get(key) } {
            Some(ptrs) => {
                let ptrs = *ptrs;
                args[1] = read_user(ptrs[0], cfg.deref_bytes[0]);
                args[2] = read_user(ptrs[1], cfg.deref_bytes[1]);
                let _ = PENDING_DEREFS.remove(key);
            }
            // Evicted (LRU) or never saved: unknown, not 0.
            None => {
                args[1] = DEREF_UNKNOWN;
                if cfg.deref[1] != NO_ARG {
                    args[2] = DEREF_UNKNOWN;
                }
            }
        }
    }
    if shadow::min_duration() != 0 && shadow::complete(pid_tgid, probe_id, args) {
        return 0;
    }
    emit(pid_tgid, probe_id, EventKind::Exit, args);
    0
}

#[inline(always)]
fn cookie<C: EbpfContext>(ctx: &C) -> u32 {
    // SAFETY: `ctx` is the live probe context handed to the program.
    unsafe { bpf_get_attach_cookie(ctx.as_ptr()) as u32 }
}

/// The u64 at `offset` bytes from user pointer `base`: 0 for a NULL base,
/// [`DEREF_UNKNOWN`] when the read faults.
#[inline(always)]
fn field(base: u64, offset: u64) -> u64 {
    if base == 0 {
        0
    } else {
        read_user(base.wrapping_add(offset), 8)
    }
}

/// A 4- or 8-byte value at a user address: 0 for a null pointer (no
/// out-parameter), [`DEREF_UNKNOWN`] when the read faults.
#[inline(always)]
fn read_user(addr: u64, bytes: u8) -> u64 {
    if addr == 0 {
        return 0;
    }
    // SAFETY: user pointers; the helper faults safely.
    unsafe {
        if bytes == 4 {
            bpf_probe_read_user(addr as *const u32).map_or(DEREF_UNKNOWN, u64::from)
        } else {
            bpf_probe_read_user(addr as *const u64).unwrap_or(DEREF_UNKNOWN)
        }
    }
}

#[inline(always)]
fn pending_key(pid_tgid: u64, probe_id: u32) -> u64 {
    (pid_tgid << 32) | u64::from(probe_id)
}

/// The six integer argument registers, each read at a constant context
/// offset: the verifier refuses a context pointer moved by a variable.
#[inline(always)]
fn arg_regs(ctx: &ProbeContext) -> [u64; 6] {
    [
        ctx.arg::<u64>(0).unwrap_or(0),
        ctx.arg::<u64>(1).unwrap_or(0),
        ctx.arg::<u64>(2).unwrap_or(0),
        ctx.arg::<u64>(3).unwrap_or(0),
        ctx.arg::<u64>(4).unwrap_or(0),
        ctx.arg::<u64>(5).unwrap_or(0),
    ]
}

/// Argument `n` (0..=5) from [`arg_regs`]' copy on the stack.
#[inline(always)]
pub(crate) fn pick(regs: &[u64; 6], n: u8) -> u64 {
    regs[usize::from(n).min(5)]
}

#[inline(always)]
fn save_out_pointers(regs: &[u64; 6], cfg: &ProbeConfig, pid_tgid: u64, probe_id: u32) {
    if cfg.deref[0] == NO_ARG {
        return;
    }
    let mut ptrs = [0u64; MAX_DEREFS];
    ptrs[0] = pick(regs, cfg.deref[0]);
    if cfg.deref[1] != NO_ARG {
        ptrs[1] = pick(regs, cfg.deref[1]);
    }
    let _ = PENDING_DEREFS.insert(pending_key(pid_tgid, probe_id), ptrs, 0);
}

/// The benchmark floor: an entry program that does nothing, attached where
/// `flowdar_entry` would be (`record --floor`), to measure the cost of the
/// uprobe trap alone.
#[uprobe]
pub fn flowdar_nop_in(_ctx: ProbeContext) -> u32 {
    0
}

/// The exit-side twin of [`flowdar_nop_in`].
#[uretprobe]
pub fn flowdar_nop_out(_ctx: RetProbeContext) -> u32 {
    0
}
