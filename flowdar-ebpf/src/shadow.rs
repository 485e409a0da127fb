//! `record --min-duration`: calls shorter than a minimum are dropped in the
//! kernel. An entry is held on a per-thread shadow stack; at the exit the
//! call's duration is known and the call is either counted as short
//! ([`SHORT`]) or sent, entry then exit. Before a call is sent, the entries
//! of its open ancestors that were held back are sent first, so each
//! thread's events still arrive in time order and nest.
use aya_ebpf::helpers::bpf_ktime_get_ns;
use flowdar_common::{EventKind, ShadowFrame, ShadowStack, MAX_ARGS, MAX_SHADOW_DEPTH};

use crate::{
    emit::emit_at,
    maps::{count_one, MIN_DURATION_NS, SHADOW, SHADOW_ZERO, SHORT},
};

/// The minimum duration in ns, 0 when none is set.
#[inline(always)]
pub fn min_duration() -> u64 {
    MIN_DURATION_NS.load()
}

/// This thread's shadow stack, created on its first call.
#[inline(always)]
fn stack(pid_tgid: u64) -> Option<&'static mut ShadowStack> {
    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    if let Some(p) = SHADOW.get_ptr_mut(tid) {
        // SAFETY: a live map value, touched only by this thread's programs.
        let s = unsafe { &mut *p };
        if s.tgid != tgid {
            // A recycled tid: the old thread's frames died with it.
            s.tgid = tgid;
            s.depth = 0;
            s.emitted = 0;
            s.overflow = 0;
        }
        return Some(s);
    }
    let zero = SHADOW_ZERO.get_ptr(0)?;
    // A reference, not a copy: 1.3 KiB does not fit the 512-byte BPF stack.
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "the borrow is the point: a copy would not fit the stack"
    )]
    // SAFETY: a live per-CPU map value, used as the source of the copy.
    SHADOW.insert(tid, unsafe { &*zero }, 0).ok()?;
    let p = SHADOW.get_ptr_mut(tid)?;
    // SAFETY: as above.
    let s = unsafe { &mut *p };
    s.tgid = tgid;
    Some(s)
}

/// Holds a call's entry back. False when it must be sent now: no stack
/// could be made, or the stack is full (its held ancestors are sent first).
#[inline(always)]
pub fn hold_entry(pid_tgid: u64, probe_id: u32, args: [u64; MAX_ARGS]) -> bool {
    let Some(s) = stack(pid_tgid) else {
        return false;
    };
    let depth = s.depth as usize;
    if s.overflow > 0 || depth >= MAX_SHADOW_DEPTH {
        send_held(pid_tgid, s, depth);
        s.overflow += 1;
        return false;
    }
    let Some(frame) = s.frames.get_mut(depth) else {
        return false;
    };
    *frame = ShadowFrame {
        // SAFETY: plain helper call without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        probe_id,
        _pad: 0,
        args,
    };
    s.depth = depth as u32 + 1;
    true
}

/// Handles a call's exit. False when the exit must be sent as it is: the
/// thread has no stack, or no open call of this probe (it began before the
/// probes were in place, or above the stack's depth).
#[inline(always)]
pub fn complete(pid_tgid: u64, probe_id: u32, exit_args: [u64; MAX_ARGS]) -> bool {
    let tid = pid_tgid as u32;
    let Some(p) = SHADOW.get_ptr_mut(tid) else {
        return false;
    };
    // SAFETY: a live map value, touched only by this thread's programs.
    let s = unsafe { &mut *p };
    if s.overflow > 0 {
        s.overflow -= 1;
        return false;
    }
    // The innermost frame, by an unsigned compare after the subtraction:
    // the verifier of Linux 6.1 learns nothing from `depth != 0`, so it
    // saw `depth - 1` as possibly -1 and refused the frame's address
    // ("R1 min value is outside of the allowed memory range"). An empty
    // stack wraps to u32::MAX and leaves here.
    let found = s.depth.wrapping_sub(1) as usize;
    if found >= MAX_SHADOW_DEPTH {
        return false;
    }
    // The innermost open call must be this probe's. If it is not, a
    // longjmp (or the kernel's return-probe depth limit) left calls whose
    // return probes never fire: the stack no longer says what is open, so
    // it is dropped (held entries unsent; sent ones stay open calls) and
    // the exit is sent as it is (analysis counts it unmatched). Frames are
    // not searched: a search down the stack multiplies the verifier's
    // paths past its limit.
    if s.frames.get(found).is_none_or(|f| f.probe_id != probe_id) {
        s.depth = 0;
        s.emitted = 0;
        return false;
    }
    let Some(frame) = s.frames.get(found).copied() else {
        return false;
    };
    s.depth = found as u32;
    // SAFETY: plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if found < s.emitted as usize {
        s.emitted = found as u32;
        emit_at(pid_tgid, now, probe_id, EventKind::Exit, exit_args);
        return true;
    }
    if now.wrapping_sub(frame.ts_ns) < min_duration() {
        if let Some(count) = SHORT.get_ptr_mut(probe_id) {
            count_one(count);
        }
        return true;
    }
    send_held(pid_tgid, s, found);
    emit_at(
        pid_tgid,
        frame.ts_ns,
        probe_id,
        EventKind::Entry,
        frame.args,
    );
    emit_at(pid_tgid, now, probe_id, EventKind::Exit, exit_args);
    true
}

/// Sends the held entries of frames below `upto`, oldest first.
#[inline(always)]
fn send_held(pid_tgid: u64, s: &mut ShadowStack, upto: usize) {
    let from = s.emitted as usize;
    for i in 0..MAX_SHADOW_DEPTH {
        if i >= upto {
            break;
        }
        if i < from {
            continue;
        }
        if let Some(f) = s.frames.get(i) {
            emit_at(pid_tgid, f.ts_ns, f.probe_id, EventKind::Entry, f.args);
        }
    }
    if upto > from {
        s.emitted = upto as u32;
    }
}
