//! Maps and load-time settings shared by every program family.
use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    Global,
};
use flowdar_common::{
    ExitLayout, ForkLayout, ProbeConfig, ShadowStack, DEFAULT_RING_BYTES, MAX_DEREFS, MAX_PROBES,
};

/// Calls with out-parameters in flight: pointers saved at entry, read at
/// exit. LRU so that calls whose exit never comes (longjmp, the tracer
/// attached mid-call) age out instead of filling the map. 16k concurrent
/// calls is far above Apache's thread count.
pub const MAX_PENDING_DEREFS: u32 = 16384;

/// Per-probe capture settings (out-parameters, field reads), by probe id.
#[map]
pub static PROBE_CONFIG: Array<ProbeConfig> = Array::with_max_entries(MAX_PROBES, 0);

/// Key: `tid << 32 | probe id`. A recursive call of the same function on
/// the same thread overwrites the outer call's pointers (documented limit).
#[map]
pub static PENDING_DEREFS: LruHashMap<u64, [u64; MAX_DEREFS]> =
    LruHashMap::with_max_entries(MAX_PENDING_DEREFS, 0);

/// Call events to user space. Resized at load time (`EbpfLoader::set_max_entries`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// Events that found the ring buffer full, per CPU and per probe id.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_PROBES, 0);

/// Tasks forked by the server that could not join [`TARGETS`] (a pid at or
/// past [`PID_LIMIT`], which only tests lower): the processes among them go
/// untraced, and this says how many tasks.
#[map]
pub static FILTER_FULL: Array<u64> = Array::with_max_entries(1, 0);

/// The traced server's process tree, a bitmap over pids: bit `pid % 64` of
/// word `pid / 64`. It holds tgids (and, because the fork tracepoint cannot
/// tell a thread from a process, tids of live threads, which never collide
/// with a live tgid). Seeded by user space through a shared mapping
/// (`BPF_F_MMAPABLE`), grown on fork, shrunk on exit, all with atomic bit
/// operations, so a recycled pid never points at a stranger. An array
/// lookup is inlined by the verifier: the check costs no hash (BENCHMARKS
/// "What cost what"). Sized at load time for every pid the kernel can give.
#[map]
pub static TARGETS: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Pids [`TARGETS`] may hold: all (`PID_MAX_LIMIT`), or fewer for tests
/// that see a fork refused.
#[unsafe(no_mangle)]
pub static PID_LIMIT: Global<u32> = Global::new(0);

/// `record --min-duration` in ns; 0: every call is sent as it happens.
#[unsafe(no_mangle)]
pub static MIN_DURATION_NS: Global<u64> = Global::new(0);

/// Per thread (tid): its open calls while a minimum duration is set.
/// Sized at load time: one entry when no minimum is set.
#[map]
pub static SHADOW: LruHashMap<u32, ShadowStack> = LruHashMap::with_max_entries(1, 0);

/// A zeroed [`ShadowStack`] to create a thread's entry from: a value too big
/// for the BPF stack.
#[map]
pub static SHADOW_ZERO: PerCpuArray<ShadowStack> = PerCpuArray::with_max_entries(1, 0);

/// Calls that returned sooner than [`MIN_DURATION_NS`] and were not sent,
/// per CPU and per probe id.
#[map]
pub static SHORT: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_PROBES, 0);

/// Where the pids sit in `sched/sched_process_fork` on this kernel.
#[unsafe(no_mangle)]
pub static FORK_LAYOUT: Global<ForkLayout> = Global::new(ForkLayout {
    parent_pid_off: 12,
    child_pid_off: 20,
});

/// Where `group_dead` sits in `sched/sched_process_exit` (`u32::MAX`: absent).
#[unsafe(no_mangle)]
pub static EXIT_LAYOUT: Global<ExitLayout> = Global::new(ExitLayout {
    group_dead_off: u32::MAX,
    _pad: 0,
});

/// True when `tgid` belongs to the traced server.
#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    TARGETS
        .get(tgid >> 6)
        .is_some_and(|word| word & (1u64 << (tgid & 63)) != 0)
}

/// Puts `pid` in the filter; false when it lies beyond [`PID_LIMIT`].
#[inline(always)]
pub fn add_target(pid: u32) -> bool {
    if pid >= PID_LIMIT.load() {
        return false;
    }
    let Some(word) = TARGETS.get_ptr_mut(pid >> 6) else {
        return false;
    };
    // SAFETY: `word` points into a live map value; the add is atomic
    // against other CPUs and user space's shared mapping.
    unsafe {
        core::intrinsics::atomic_or::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            word,
            1u64 << (pid & 63),
        );
    }
    true
}

/// Takes `pid` out of the filter.
#[inline(always)]
pub fn remove_target(pid: u32) {
    if let Some(word) = TARGETS.get_ptr_mut(pid >> 6) {
        // SAFETY: as in [`add_target`].
        unsafe {
            core::intrinsics::atomic_and::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                word,
                !(1u64 << (pid & 63)),
            );
        }
    }
}

/// Adds one to a counter with the BPF atomic add, even in a per-CPU slot:
/// uprobe_multi programs run with migration disabled, not preemption
/// (kernel/trace/bpf_trace.c, `uprobe_prog_run`), so another run on the
/// same CPU can interleave with a plain load-add-store and lose a count.
#[inline(always)]
pub fn count_one(count: *mut u64) {
    count_n(count, 1);
}

/// [`count_one`], `n` at once.
#[inline(always)]
pub fn count_n(count: *mut u64, n: u64) {
    // SAFETY: `count` points into a live map value for the program's run.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            count, n,
        );
    }
}
