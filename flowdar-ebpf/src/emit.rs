//! Sending events to user space through the ring buffer: the one place
//! that reserves, fills and submits a record, shared by the call programs
//! (`calls`), connection clients (`client`) and held entries (`shadow`).
use aya_ebpf::{bindings::BPF_RB_NO_WAKEUP, helpers::bpf_ktime_get_ns};
use flowdar_common::{Event, EventKind, MAX_ARGS};

use crate::maps::{count_n, DROPS, EVENTS};

/// Sends one event stamped now; false when the ring buffer was full (counted).
#[inline(always)]
pub fn emit(pid_tgid: u64, probe_id: u32, kind: EventKind, args: [u64; MAX_ARGS]) -> bool {
    // SAFETY: plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    emit_at(pid_tgid, now, probe_id, kind, args)
}

/// Sends one event stamped `ts_ns`; false when the ring buffer was full (counted).
#[inline(always)]
pub fn emit_at(
    pid_tgid: u64,
    ts_ns: u64,
    probe_id: u32,
    kind: EventKind,
    args: [u64; MAX_ARGS],
) -> bool {
    emit_weighing(1, pid_tgid, ts_ns, probe_id, kind, args)
}

/// [`emit_at`] for a record that stands for `events` events (a whole
/// call: [`EventKind::Call`]), counted as that many when the ring is full.
#[inline(always)]
pub fn emit_weighing(
    events: u64,
    pid_tgid: u64,
    ts_ns: u64,
    probe_id: u32,
    kind: EventKind,
    args: [u64; MAX_ARGS],
) -> bool {
    match EVENTS.reserve::<Event>(0) {
        Some(mut slot) => {
            slot.write(Event {
                tgid: (pid_tgid >> 32) as u32,
                tid: pid_tgid as u32,
                ts_ns,
                probe_id,
                kind: kind as u32,
                args,
            });
            // Never a wakeup: user space drains on a timer sized to the
            // ring (capture/drain.rs), and asking how full the ring is
            // costs each event a read of the consumer's cache line
            // (BENCHMARKS.md, "What cost what").
            slot.submit(BPF_RB_NO_WAKEUP as u64);
            true
        }
        None => {
            if let Some(count) = DROPS.get_ptr_mut(probe_id) {
                count_n(count, events);
            }
            false
        }
    }
}
