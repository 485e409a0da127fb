//! Lean capture: the server's socket I/O seen from the kernel's own syscall
//! tracepoints (`syscalls/sys_enter_*`, `sys_exit_*`), no trap into user
//! space. One entry and one exit program serve every watched call; the
//! syscall number picks its probe id and role (`SYSCALL_PROBES`). Their
//! work ([`enter`], [`exit`]) is shared with the fentry/fexit programs of
//! `syscall_fentry`, used instead when user space asks for them. (The raw
//! `raw_syscalls/sys_enter` and `sys_exit` would spare the watched calls
//! their record but run a program for every system call of every
//! process: dearer in all, measured in BENCHMARKS.md, "Beneath the
//! uprobe floor".)
//!
//! A call that cannot wait (everything but `poll`: APR's sockets are
//! non-blocking, it waits in `poll`) sends nothing at its entry and one
//! record at its exit, the whole call ([`EventKind::Call`], expanded by
//! the drain); a `poll` sends its entry at once, so that a worker waiting
//! for a client shows in flight.
//!
//! A socket becomes a connection when the server accepts it (its peer
//! address goes out as a client event, keyed by a connection id the kernel
//! makes) or when user space seeds it at attach; calls on other fds (files,
//! pipes, the listener) are not sent. Entry slots: fd, connection id, and
//! for `poll` the events waited for (0 for the others); exit slot 0: the
//! return value.
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_user,
    },
    macros::{map, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::TracePointContext,
    EbpfContext as _,
};
use flowdar_common::{
    EventKind, InSyscall, SyscallProbe, SyscallRole, AF_INET, AF_INET6, MAX_CONN_FDS,
    MAX_SYSCALL_NR, SOCKET_CONN_BIT, SYSCALL_ARGS_OFF, SYSCALL_NR_OFF,
};

use crate::{
    emit::{emit, emit_at, emit_weighing},
    maps::is_target,
};

const SYSCALLS_ALL: u32 = flowdar_common::SYSCALLS_ALL;

#[inline(always)]
fn state() -> u32 {
    SYSCALLS_STATE.get(0).copied().unwrap_or(0)
}

/// Watched syscalls by number (written by user space at attach).
#[map]
static SYSCALL_PROBES: Array<SyscallProbe> = Array::with_max_entries(MAX_SYSCALL_NR, 0);

/// Key `tgid << 32 | fd`: the connection id of an accepted socket.
#[map]
static CONN_FDS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(MAX_CONN_FDS, 0);

/// Per thread: its watched call in progress ([`InSyscall`]: its exit is
/// sent only when the call is known), `probe_id` [`NOT_IN_SYSCALL`]
/// between calls. A thread's entry stays and is written in place (an
/// insert and a delete of an LRU hash entry for every call cost the entry
/// program about half of its time: BENCHMARKS.md, "What the lean
/// capture's events cost"), and goes when the thread exits
/// (`tree::flowdar_exit_task`), so that dead threads never crowd out a
/// worker held in a call.
#[map]
pub(crate) static IN_SYSCALL: LruHashMap<u32, InSyscall> = LruHashMap::with_max_entries(16384, 0);

const NOT_IN_SYSCALL: u32 = flowdar_common::NOT_IN_SYSCALL;

/// Per thread: the peer-address buffer of an `accept` in progress.
#[map]
pub(crate) static ACCEPTING: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16384, 0);

/// What runs, set by user space: [`SYSCALLS_ALL`] from attach; at detach,
/// `SYSCALLS_OFF`, entries and exits at once, when the uprobe entries are
/// gone (so that the trace ends for both together). Not exits for a while
/// after the entries, as the return uprobes do: a Slowloris connection's
/// poll that its next header line ended then, with the read and poll that
/// followed unseen, looked like a finished read, and a connection still
/// held looked released. A `poll` in progress at that moment stays in
/// flight; any other call in progress (microseconds, on APR's
/// non-blocking sockets) is not sent. Closing a tracepoint link waits a
/// grace period per link, so the links themselves go one by one, long
/// after.
#[map]
pub static SYSCALLS_STATE: Array<u32> = Array::with_max_entries(1, 0);

/// Per CPU: connections it numbered (see [`accepted`]).
#[map]
static NEXT_CONN: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[tracepoint]
pub fn flowdar_sys_enter(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !running(pid_tgid) {
        return 0;
    }
    // SAFETY: `__syscall_nr` sits at a fixed offset in every syscall record.
    let nr = unsafe { record::<i32>(&ctx, SYSCALL_NR_OFF) };
    let Some((probe_id, role)) = watched(nr as u32) else {
        return 0;
    };
    // The arguments sit at fixed offsets in every syscall tracepoint's
    // record (flowdar_common::SYSCALL_ARGS_OFF). The first is read
    // directly (every watched call has one); the second through the
    // helper, as `close` has no second (see [`record`]). A slot past the
    // call's own arguments holds whatever the kernel's stack held: never
    // read one.
    // SAFETY: the first argument, in every watched call's record.
    let first = unsafe { record::<u64>(&ctx, SYSCALL_ARGS_OFF) };
    // SAFETY: a bounded kernel read, asked only of calls that have a second.
    let second = || unsafe { ctx.read_at::<u64>(SYSCALL_ARGS_OFF + 8) }.unwrap_or(0);
    enter(pid_tgid, probe_id, role, first, second);
    0
}

/// Whether the syscall programs run (user space switches them at attach
/// and detach), for a thread of the traced server.
#[inline(always)]
pub(crate) fn running(pid_tgid: u64) -> bool {
    is_target((pid_tgid >> 32) as u32) && state() == SYSCALLS_ALL
}

/// A watched call begins, with its first argument and a way to read its
/// second (asked only of calls that have one). A poll sends its entry;
/// any other call is kept for its exit, which sends it whole. A call of
/// the thread's whose entry went out and whose return was never seen
/// (one in progress at attach, under fexit programs: they see only calls
/// that began after them) ends here, as its thread goes on.
#[inline(always)]
pub(crate) fn enter(pid_tgid: u64, probe_id: u32, role: u32, first: u64, second: impl Fn() -> u64) {
    let tgid = pid_tgid >> 32;
    let (fd, third) = match role {
        r if r == SyscallRole::Accept as u32 => {
            let _ = ACCEPTING.insert(pid_tgid as u32, second(), 0);
            return;
        }
        r if r == SyscallRole::Poll as u32 => {
            if second() != 1 {
                return;
            }
            // The one `struct pollfd`: fd, then the events it waits for
            // (POLLIN: the client's bytes; POLLOUT: room to send to it).
            // SAFETY: a user pointer; the helper faults safely.
            match unsafe { bpf_probe_read_user(first as *const u64) } {
                Ok(pfd) => (pfd & 0xffff_ffff, (pfd >> 32) & 0xffff),
                Err(_) => return,
            }
        }
        _ => (first & 0xffff_ffff, 0),
    };
    let key = tgid << 32 | fd;
    // SAFETY: read-only copy of the value.
    let Some(conn) = (unsafe { CONN_FDS.get(key) }).copied() else {
        return;
    };
    if role == SyscallRole::Close as u32 {
        let _ = CONN_FDS.remove(key);
    }
    // SAFETY: plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let poll = role == SyscallRole::Poll as u32;
    let tid = pid_tgid as u32;
    let slot = IN_SYSCALL.get_ptr_mut(tid);
    if let Some(p) = slot {
        // SAFETY: `p` points into the thread's live map value.
        let open = unsafe { *p };
        if open.probe_id != NOT_IN_SYSCALL && open.conn == 0 {
            // Its return value is inferred: ready (1) when the thread
            // goes on reading or writing the same socket, else 0.
            let ret = u64::from(open.fd == fd as u32 && role == SyscallRole::Fd as u32);
            emit_at(pid_tgid, now, open.probe_id, EventKind::Exit, [ret, 0, 0]);
        }
    }
    // A wait: its entry now, so that it shows in flight.
    if poll && !emit_at(pid_tgid, now, probe_id, EventKind::Entry, [fd, conn, third]) {
        if let Some(p) = slot {
            // SAFETY: as above.
            unsafe { (*p).probe_id = NOT_IN_SYSCALL };
        }
        return;
    }
    let call = InSyscall {
        probe_id,
        fd: fd as u32,
        conn: if poll { 0 } else { conn },
        ts_ns: now,
    };
    match slot {
        // SAFETY: `p` points into the thread's live map value.
        Some(p) => unsafe { *p = call },
        None => {
            let _ = IN_SYSCALL.insert(tid, call, 0);
        }
    }
}

#[tracepoint]
pub fn flowdar_sys_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !running(pid_tgid) {
        return 0;
    }
    // SAFETY: `__syscall_nr` sits at a fixed offset in every syscall record.
    let nr = unsafe { record::<i32>(&ctx, SYSCALL_NR_OFF) };
    let Some((probe_id, role)) = watched(nr as u32) else {
        return 0;
    };
    // SAFETY: `ret` sits at a fixed offset in every sys_exit record.
    let ret = unsafe { record::<i64>(&ctx, SYSCALL_ARGS_OFF) };
    exit(pid_tgid, probe_id, role, ret);
    0
}

/// A watched call returns `ret`.
#[inline(always)]
pub(crate) fn exit(pid_tgid: u64, probe_id: u32, role: u32, ret: i64) {
    let tid = pid_tgid as u32;
    if role == SyscallRole::Accept as u32 {
        // SAFETY: read-only copy of the value.
        let Some(addr) = (unsafe { ACCEPTING.get(tid) }).copied() else {
            return;
        };
        let _ = ACCEPTING.remove(tid);
        if ret >= 0 {
            accepted(pid_tgid, probe_id, ret as u64, addr);
        }
        return;
    }
    let Some(p) = IN_SYSCALL.get_ptr_mut(tid) else {
        return;
    };
    // SAFETY: `p` points into the thread's live map value.
    let call = unsafe {
        if (*p).probe_id != probe_id {
            return;
        }
        let call = *p;
        (*p).probe_id = NOT_IN_SYSCALL;
        call
    };
    if call.conn == 0 {
        emit(pid_tgid, probe_id, EventKind::Exit, [ret as u64, 0, 0]);
        return;
    }
    // SAFETY: plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let took = now.saturating_sub(call.ts_ns);
    let fd = u64::from(call.fd);
    if took >> 32 == 0 {
        emit_weighing(
            2,
            pid_tgid,
            now,
            probe_id,
            EventKind::Call,
            [fd | took << 32, call.conn, ret as u64],
        );
    } else if emit_at(
        pid_tgid,
        call.ts_ns,
        probe_id,
        EventKind::Entry,
        [fd, call.conn, 0],
    ) {
        emit_at(pid_tgid, now, probe_id, EventKind::Exit, [ret as u64, 0, 0]);
    }
}

/// A field of the tracepoint's record, read directly: the verifier lets a
/// tracepoint program load any aligned field past the common header,
/// where `read_at` pays a `bpf_probe_read_kernel` call for each. The
/// kernel refuses to attach a program to a tracepoint whose record is
/// shorter than the furthest field it loads directly (`EACCES`): the
/// shared programs load only `__syscall_nr`, the first argument and
/// `ret`, within every syscall's record.
///
/// # Safety
/// `offset` must lie in the record, past its first 8 bytes, aligned to `T`.
#[inline(always)]
unsafe fn record<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: the caller's contract; the verifier checks the access.
    unsafe { *(ctx.as_ptr().cast::<u8>().add(offset).cast::<T>()) }
}

/// The probe id and role of system call `nr`, if watched.
#[inline(always)]
pub(crate) fn watched(nr: u32) -> Option<(u32, u32)> {
    let p = SYSCALL_PROBES.get(nr)?;
    (p.probe_id_plus_one != 0).then(|| (p.probe_id_plus_one - 1, p.role))
}

/// A new connection on `fd`: its id, and its peer (from the address the
/// kernel wrote to `addr`) as a client event.
#[inline(always)]
fn accepted(pid_tgid: u64, probe_id: u32, fd: u64, addr: u64) {
    // A per-CPU counter and the CPU's number: unique without an atomic
    // that returns a value (BPF_FETCH needs a newer CPU version than the
    // object is built for). Tracepoint programs do not nest on a CPU;
    // fexit programs run with migration disabled only, so on a fully
    // preemptible kernel an `accept` and an `accept4` returning on one
    // CPU could interleave here and share an id (Debian's kernels
    // preempt voluntarily: not there).
    // SAFETY: plain helper call without arguments.
    let cpu = u64::from(unsafe { bpf_get_smp_processor_id() }) & 0xfff;
    let Some(next) = NEXT_CONN.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: `next` points into this CPU's live map value.
    let n = unsafe {
        *next += 1;
        *next
    };
    let conn = SOCKET_CONN_BIT | ((n << 12 | cpu) & (SOCKET_CONN_BIT - 1));
    let _ = CONN_FDS.insert((pid_tgid >> 32) << 32 | fd, conn, 0);
    if addr == 0 {
        return;
    }
    // SAFETY: a user pointer the kernel just wrote; the helper faults safely.
    let Ok(sa) = (unsafe { bpf_probe_read_user(addr as *const [u64; 3]) }) else {
        return;
    };
    let family = (sa[0] & 0xffff) as u16;
    let port = ((sa[0] >> 16) & 0xff) << 8 | ((sa[0] >> 24) & 0xff);
    let head = port << 48 | conn;
    let args = match family {
        AF_INET => [head, 0, 0xffff_0000 | (sa[0] >> 32) << 32],
        AF_INET6 => [head, sa[1], sa[2]],
        _ => return,
    };
    emit(pid_tgid, probe_id, EventKind::Client, args);
    // The accept itself, as a call of no length on the listener: the
    // connection's first moment, counted by `stats`.
    if emit(pid_tgid, probe_id, EventKind::Entry, [fd, conn, 0]) {
        emit(pid_tgid, probe_id, EventKind::Exit, [fd, 0, 0]);
    }
}
