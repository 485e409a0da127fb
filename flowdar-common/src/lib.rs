//! Wire types shared by the kernel programs (`flowdar-ebpf`) and user space
//! (`flowdar-user`): the ring-buffer event record and the bounds both sides
//! agree on. Every layout is pinned at compile time.
#![no_std]

/// Bumped whenever [`Event`]'s layout or meaning changes.
pub const WIRE_VERSION: u32 = 1;

/// Probe ids are attach cookies; they index the per-probe drop counters, so
/// they must stay below this bound (the size of the `DROPS` per-CPU array).
pub const MAX_PROBES: u32 = 8192;

/// Default ring-buffer size in bytes (power of two, multiple of the page size).
/// 16 MiB holds ~300k events (48 B each plus the ring's 8-byte record header).
pub const DEFAULT_RING_BYTES: u32 = 16 << 20;

/// Number of argument slots an event carries.
pub const MAX_ARGS: usize = 3;

/// What an [`Event`] records. Numbered explicitly: the numbers are stored in
/// trace files. Gaps leave room per family (calls 1..15, process life 16..).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Function entry (uprobe); `args` holds the first three arguments.
    Entry = 1,
    /// Function exit (uretprobe); `args[0]` holds the return value.
    Exit = 2,
    /// Written by `flowdar simplify`, never by the kernel: the call whose
    /// exit precedes it on its thread stands for `args[0]` identical
    /// consecutive calls lasting `args[1]` ns in all (loop folding).
    Fold = 3,
    /// The client of a connection, read by an entry program whose probe
    /// has a client read (`Capture::client`), once per connection and
    /// whenever it changes: `args[0]` is `port << 48 | conn` (the
    /// connection's address in the server, `conn_rec *`; user addresses
    /// fit 48 bits), `args[1..3]` the 16 address bytes in network order,
    /// as stored (an IPv4 client as `::ffff:a.b.c.d`). Never payload bytes.
    Client = 4,
    /// Never in a trace: a whole system call in one ring record, sent by
    /// the lean capture at its return (its entry sent nothing), which the
    /// drain expands into its entry and exit ([`Event::expand_call`]).
    /// `args[0]`: the fd in the low 32 bits, the call's duration in ns in
    /// the high 32; `args[1]`: the connection id; `args[2]`: the return
    /// value. A call of 2^32 ns or more is sent as entry and exit.
    Call = 5,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Entry),
            2 => Some(Self::Exit),
            3 => Some(Self::Fold),
            4 => Some(Self::Client),
            5 => Some(Self::Call),
            _ => None,
        }
    }
}

/// One probe hit, written to the ring buffer by the kernel programs.
/// `tgid` is the process, `tid` the thread, both in the root pid namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Event {
    pub tgid: u32,
    pub tid: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC, nanoseconds.
    pub ts_ns: u64,
    /// The attach cookie: index into the trace's probe table.
    pub probe_id: u32,
    /// An [`EventKind`] as `u32`.
    pub kind: u32,
    /// Entry: the first three integer arguments. Exit: `args[0]` is the return value.
    pub args: [u64; MAX_ARGS],
}

/// Marks the second half of a trace context ([`Event::trace_context`]): no
/// user pointer has bit 47.
pub const TRACE_CONTEXT_SECOND: u64 = 1 << 47;

/// Half of a request's W3C trace context ([`Event::trace_context`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceContextPart {
    TraceId { request: u64, id: u128 },
    Parent { request: u64, span: u64, flags: u8 },
}

/// Wire size of [`Event`].
pub const EVENT_SIZE: usize = 48;
const _: () = assert!(core::mem::size_of::<Event>() == EVENT_SIZE);
const _: () = assert!(core::mem::align_of::<Event>() == 8);

impl Event {
    /// Decodes one event from its wire bytes; `None` if the length is wrong or
    /// the kind unknown. Never panics on bad input.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != EVENT_SIZE {
            return None;
        }
        let u32_at =
            |o: usize| u32::from_ne_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[o..o + 8]);
            u64::from_ne_bytes(b)
        };
        let ev = Event {
            tgid: u32_at(0),
            tid: u32_at(4),
            ts_ns: u64_at(8),
            probe_id: u32_at(16),
            kind: u32_at(20),
            args: [u64_at(24), u64_at(32), u64_at(40)],
        };
        EventKind::from_u32(ev.kind)?;
        Some(ev)
    }

    /// The entry and exit a [`EventKind::Call`] record stands for: the
    /// entry's slots are the fd and the connection id (the third, a byte
    /// count, is not kept), the exit's the return value. Any other event:
    /// `None`.
    pub fn expand_call(&self) -> Option<[Event; 2]> {
        if self.kind != EventKind::Call as u32 {
            return None;
        }
        let (fd, dur) = (self.args[0] & 0xffff_ffff, self.args[0] >> 32);
        let entry = Event {
            ts_ns: self.ts_ns.wrapping_sub(dur),
            kind: EventKind::Entry as u32,
            args: [fd, self.args[1], 0],
            ..*self
        };
        let exit = Event {
            kind: EventKind::Exit as u32,
            args: [self.args[2], 0, 0],
            ..*self
        };
        Some([entry, exit])
    }

    /// The arguments of a client event for connection `conn` (below bit
    /// 48) and client `addr`: what the kernel programs write, for events
    /// user space makes (connections open before capture).
    pub fn client_args(conn: u64, addr: core::net::SocketAddr) -> [u64; MAX_ARGS] {
        let bytes = match addr.ip() {
            core::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            core::net::IpAddr::V6(v6) => v6.octets(),
        };
        let half = |b: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(b);
            u64::from_ne_bytes(w)
        };
        [
            u64::from(addr.port()) << 48 | (conn & ((1 << 48) - 1)),
            half(&bytes[..8]),
            half(&bytes[8..]),
        ]
    }

    /// A client event's connection (`conn_rec *`) and client address.
    pub fn client(&self) -> Option<(u64, core::net::SocketAddr)> {
        if self.kind != EventKind::Client as u32 || self.args[0] >> 48 == 0 {
            return None;
        }
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.args[1].to_ne_bytes());
        bytes[8..].copy_from_slice(&self.args[2].to_ne_bytes());
        let ip = core::net::Ipv6Addr::from(bytes);
        let port = (self.args[0] >> 48) as u16;
        let addr = match ip.to_ipv4_mapped() {
            Some(v4) => core::net::SocketAddr::new(v4.into(), port),
            None => core::net::SocketAddr::new(ip.into(), port),
        };
        Some((self.args[0] & ((1 << 48) - 1), addr))
    }

    /// A request's W3C trace context, half of it: Client-kind events whose
    /// port is 0 (no TCP client has port 0) carry it, sent by the entry
    /// program of a probe that reads `traceparent` (bounded: the header's
    /// 55 bytes parsed in the kernel, only the ids sent). The first half:
    /// `args[0]` the `request_rec *`, `args[1..3]` the 16-byte trace id
    /// (big-endian halves); the second: `args[0]` the `request_rec *` with
    /// [`TRACE_CONTEXT_SECOND`] set, `args[1]` the parent span id, `args[2]`
    /// the trace flags.
    pub fn trace_context(&self) -> Option<TraceContextPart> {
        if self.kind != EventKind::Client as u32 || self.args[0] >> 48 != 0 {
            return None;
        }
        let request = self.args[0] & !TRACE_CONTEXT_SECOND;
        Some(if self.args[0] & TRACE_CONTEXT_SECOND == 0 {
            TraceContextPart::TraceId {
                request,
                id: (u128::from(self.args[1]) << 64) | u128::from(self.args[2]),
            }
        } else {
            TraceContextPart::Parent {
                request,
                span: self.args[1],
                flags: self.args[2] as u8,
            }
        })
    }

    /// The wire bytes of this event.
    pub fn to_bytes(&self) -> [u8; EVENT_SIZE] {
        let mut b = [0u8; EVENT_SIZE];
        b[0..4].copy_from_slice(&self.tgid.to_ne_bytes());
        b[4..8].copy_from_slice(&self.tid.to_ne_bytes());
        b[8..16].copy_from_slice(&self.ts_ns.to_ne_bytes());
        b[16..20].copy_from_slice(&self.probe_id.to_ne_bytes());
        b[20..24].copy_from_slice(&self.kind.to_ne_bytes());
        b[24..32].copy_from_slice(&self.args[0].to_ne_bytes());
        b[32..40].copy_from_slice(&self.args[1].to_ne_bytes());
        b[40..48].copy_from_slice(&self.args[2].to_ne_bytes());
        b
    }
}

/// Byte offsets of the pid fields in the `sched/sched_process_fork`
/// tracepoint record. They moved between kernels (6.18 turned the comm
/// arrays into `__data_loc` fields), so user space reads them from tracefs
/// and hands them to the kernel program as load-time globals.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ForkLayout {
    pub parent_pid_off: u32,
    pub child_pid_off: u32,
}
const _: () = assert!(core::mem::size_of::<ForkLayout>() == 8);

/// Byte offset of `group_dead` in `sched/sched_process_exit` (`u32::MAX` when
/// the kernel's record has no such field).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ExitLayout {
    pub group_dead_off: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ExitLayout>() == 8);

/// Open calls a thread's shadow stack holds (`record --min-duration`).
/// Deeper calls are sent as they happen, as without a minimum duration.
pub const MAX_SHADOW_DEPTH: usize = 32;
/// Threads with a shadow stack at once (an LRU map, allocated only when a
/// minimum duration is set: ~1.3 KiB each).
pub const MAX_SHADOW_THREADS: u32 = 4096;

/// A call whose entry is held back until it is known to last long enough.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ShadowFrame {
    pub ts_ns: u64,
    pub probe_id: u32,
    pub _pad: u32,
    /// The entry event's arguments, as the entry program read them.
    pub args: [u64; MAX_ARGS],
}
const _: () = assert!(core::mem::size_of::<ShadowFrame>() == 40);

/// One thread's open calls with `record --min-duration`. A call's entry
/// is sent when the call or one of its descendants is found to last at
/// least the minimum: frames below `emitted` have had their entries sent.
/// So every thread's events still reach user space in time order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShadowStack {
    pub tgid: u32,
    pub depth: u32,
    pub emitted: u32,
    /// Calls above [`MAX_SHADOW_DEPTH`], sent as they happen.
    pub overflow: u32,
    pub frames: [ShadowFrame; MAX_SHADOW_DEPTH],
}
const _: () = assert!(core::mem::size_of::<ShadowStack>() == 16 + 40 * MAX_SHADOW_DEPTH);

/// "No argument" in [`ProbeConfig`]'s argument-index fields.
pub const NO_ARG: u8 = 0xff;
/// An out-parameter's value at exit when it is not known: the pointer saved
/// at entry was evicted from the pending map (more calls in flight than it
/// holds), or reading it faulted. Never 0, which is a value.
pub const DEREF_UNKNOWN: u64 = u64::MAX;
/// Out-parameters a probe can dereference at exit (exit slots 1 and 2).
pub const MAX_DEREFS: usize = 2;
/// Where the client address sits, from a `conn_rec *`: `conn_rec.client_addr`
/// (httpd 2.4's public `httpd.h`: after `pool`, `base_server`,
/// `vhost_lookup_data`, `local_addr`) points to an `apr_sockaddr_t` whose
/// `sa` union (APR 1.x's public `apr_network_io.h`, after `pool`,
/// `hostname`, `servname`, `port`, `family`, `salen`, `ipaddr_len`,
/// `addr_str_len`, `ipaddr_ptr`, `next`) holds the `sockaddr_in`/`_in6`.
/// Both layouts are ABI that every binary module is built against.
pub const CONN_CLIENT_ADDR_OFF: u64 = 32;
/// See [`CONN_CLIENT_ADDR_OFF`].
pub const SOCKADDR_SA_OFF: u64 = 64;
/// `request_rec.connection` (after `pool`): the connection a request runs on.
pub const REQUEST_CONNECTION_OFF: u64 = 8;
/// `conn_rec.master`: on a secondary connection (an HTTP/2 stream's, made
/// by mod_http2 as a copy of the client's), the primary connection; NULL on
/// a primary one. httpd 2.4's `httpd.h`, checked against its DWARF by
/// `flowdar-user/tests/offsets.rs`.
pub const CONN_MASTER_OFF: u64 = 192;
/// `AF_INET` and `AF_INET6` on Linux.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
/// Connections whose client is remembered by the kernel so that it is sent
/// once per connection (an LRU: an evicted one is simply sent again).
pub const MAX_CLIENT_CONNS: u32 = 16384;

/// Integer argument registers a probe can read pointers from (x86-64 SysV).
pub const MAX_ARG_INDEX: u8 = 5;

/// Per-probe capture settings, indexed by probe id in the `PROBE_CONFIG`
/// array. The default (all [`NO_ARG`]) captures registers only and reads no
/// user memory. The kernel array starts zeroed, and a zeroed entry would
/// name argument 0 everywhere: only entries with `valid == 1` (written by
/// user space) are obeyed.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Argument indexes whose pointee (a u64) is read at exit into exit
    /// slots 1 and 2: out-parameters. The entry saves the pointers.
    pub deref: [u8; MAX_DEREFS],
    /// Argument index of a pointer to read a u64 from at entry.
    pub read_arg: u8,
    /// Entry slot (0..3) that receives the read value.
    pub read_slot: u8,
    /// Width in bytes (4 or 8) of each out-parameter's pointee.
    pub deref_bytes: [u8; MAX_DEREFS],
    /// 1 when user space wrote this entry; a zeroed entry is ignored.
    pub valid: u8,
    /// Argument index of an Apache `conn_rec *` whose client address is
    /// read at entry ([`EventKind::Client`]).
    pub client_arg: u8,
    /// Byte offset added to the `read_arg` pointer.
    pub read_offset: u64,
    /// A second hop: when [`ProbeConfig::read_hops`] is 2, the value read
    /// is itself a pointer, and the u64 at this offset from it is what
    /// lands in the slot (0 when the first value is NULL).
    pub read_offset2: u64,
    /// 1 or 2: pointers followed by the field read.
    pub read_hops: u8,
    /// 1 when the client comes from the connection the field read names
    /// (an HTTP/2 stream's primary connection) instead of `client_arg`;
    /// nothing is sent when the read yields 0.
    pub client_from_read: u8,
    /// Where a request's headers table is (`request_rec->headers_in`, an
    /// APR table): this byte offset from argument
    /// [`ProbeConfig::traceparent_arg`]; 0 for none. Its W3C `traceparent`
    /// header is read at entry ([`Event::trace_context`]).
    pub traceparent_off: u16,
    pub traceparent_arg: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<ProbeConfig>() == 32);

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            deref: [NO_ARG; MAX_DEREFS],
            read_arg: NO_ARG,
            read_slot: 0,
            deref_bytes: [8; MAX_DEREFS],
            valid: 1,
            client_arg: NO_ARG,
            read_offset: 0,
            read_offset2: 0,
            read_hops: 1,
            client_from_read: 0,
            traceparent_off: 0,
            traceparent_arg: NO_ARG,
            _pad: [0; 3],
        }
    }
}

impl ProbeConfig {
    /// True when the probe reads user memory (entry or exit).
    pub fn reads_memory(&self) -> bool {
        self.valid == 1
            && (self.read_arg != NO_ARG
                || self.client_arg != NO_ARG
                || self.client_from_read == 1
                || self.traceparent_off != 0
                || self.deref.iter().any(|&d| d != NO_ARG))
    }
}

/// Lean capture: what a watched system call does with its arguments, in
/// [`SyscallProbe::role`]. Only calls on sockets the server accepted while
/// traced (or that user space seeded) are sent.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallRole {
    /// `read`, `writev`, `sendfile`...: the first argument is the fd.
    Fd = 1,
    /// `poll`: the first argument points to the `pollfd` array, the second
    /// is its length; watched only with one entry (APR's wait for a socket).
    Poll = 2,
    /// `accept`/`accept4`: the return value is a new connection, whose
    /// peer address the second argument points to. Sent at its exit, as a
    /// [`EventKind::Client`] event and then a call of no length (entry
    /// slots: fd, connection id).
    Accept = 3,
    /// `close`: the fd's connection ends.
    Close = 4,
    /// `shutdown`: the first argument is the fd, and there is no third.
    /// Since calls other than `poll` are sent whole at their exit, with
    /// no third slot, the programs treat it as [`SyscallRole::Fd`].
    FdTwoArgs = 5,
}

/// Lean capture: a watched system call, indexed by syscall number in the
/// `SYSCALL_PROBES` array. `probe_id` 0 means unwatched, so ids are
/// stored plus one.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SyscallProbe {
    pub probe_id_plus_one: u32,
    /// A [`SyscallRole`] as `u32`.
    pub role: u32,
}
const _: () = assert!(core::mem::size_of::<SyscallProbe>() == 8);

/// `SYSCALLS_STATE`: entries and exits sent (from attach until the uprobe
/// entries are gone)...
pub const SYSCALLS_ALL: u32 = 2;
/// ...or nothing (before attach, and from that moment on: a `poll` in
/// progress then stays in flight, its return unseen; any other call in
/// progress, sent whole at its exit, is not in the trace).
pub const SYSCALLS_OFF: u32 = 0;

/// Connection ids user space gives the sockets a server had open when
/// capture began (seeded at attach): [`SOCKET_CONN_BIT`] and this bit, so
/// they never meet the kernel's (a per-CPU counter shifted by 12 above the CPU number: 2^34 connections a CPU before it gets there).
pub const SEEDED_CONN_BIT: u64 = 1 << 46;
/// In a syscall entry's third slot: the call was already in progress when
/// capture began (written by user space at attach from /proc); its
/// duration counts from then, a lower bound.
pub const HELD_AT_ATTACH: u64 = u64::MAX;

/// Whether an entry's arguments are those user space writes at attach for
/// a uprobe call already in progress (a worker blocked reading its client
/// inside `ap_read_request`, from /proc): its first argument is the
/// socket's seeded connection id ([`SOCKET_CONN_BIT`] and
/// [`SEEDED_CONN_BIT`], nothing above them), which no `conn_rec *` or
/// other user pointer is. Only the first slot counts: a trace keeps the
/// slots its probe captures. Its return is never seen (the return probe
/// was not there when it began): readers end it at its thread's next
/// event.
pub fn held_uprobe_at_attach(args: &[u64; MAX_ARGS]) -> bool {
    args[0] >> 46 == (SOCKET_CONN_BIT | SEEDED_CONN_BIT) >> 46
}

/// Syscall numbers the `SYSCALL_PROBES` array covers.
pub const MAX_SYSCALL_NR: u32 = 512;
/// Sockets the kernel knows as connections at once (per traced server).
pub const MAX_CONN_FDS: u32 = 65536;
/// Connection ids made by the kernel for accepted sockets: bit 47 set,
/// which no user pointer on x86-64 or arm64 has (their user halves end
/// below it), so they never collide with a `conn_rec *` in a trace.
pub const SOCKET_CONN_BIT: u64 = 1 << 47;
/// `IN_SYSCALL`'s value for a thread between watched calls (its entry is
/// kept and written in place, not deleted): no probe id is this.
pub const NOT_IN_SYSCALL: u32 = u32::MAX;

/// Lean capture, per thread (`IN_SYSCALL`): its watched call in progress.
/// `conn` 0: the call's entry was sent (a `poll`, or a call user space
/// found in progress at attach), its exit goes alone; otherwise nothing
/// was sent yet and the exit sends the whole call ([`EventKind::Call`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct InSyscall {
    /// The call's probe id, or [`NOT_IN_SYSCALL`] between calls.
    pub probe_id: u32,
    pub fd: u32,
    pub conn: u64,
    pub ts_ns: u64,
}
const _: () = assert!(core::mem::size_of::<InSyscall>() == 24);

/// Where a syscall tracepoint's fields sit (`syscalls/sys_enter_*`:
/// `__syscall_nr` at 8, the arguments from 16; `sys_exit_*`: `ret` at 16),
/// the same on every kernel since syscall tracepoints exist
/// (include/trace/syscall.h, `struct syscall_trace_enter`).
pub const SYSCALL_NR_OFF: usize = 8;
pub const SYSCALL_ARGS_OFF: usize = 16;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: as for `ProbeConfig`.
    unsafe impl aya::Pod for super::SyscallProbe {}
    // SAFETY: repr(C), plain integers, no padding.
    unsafe impl aya::Pod for super::InSyscall {}

    // SAFETY: `repr(C)`, `Copy`, integer fields only and no implicit padding
    // (size asserted above): every bit pattern is a valid value and no byte
    // is uninitialised.
    unsafe impl aya::Pod for super::ProbeConfig {}
    // SAFETY: as for `ProbeConfig`.
    unsafe impl aya::Pod for super::Event {}
    // SAFETY: as for `ProbeConfig`.
    unsafe impl aya::Pod for super::ForkLayout {}
    // SAFETY: as for `ProbeConfig` (`_pad` makes the padding explicit).
    unsafe impl aya::Pod for super::ExitLayout {}
    // SAFETY: as for `ExitLayout`.
    unsafe impl aya::Pod for super::ShadowFrame {}
    // SAFETY: as for `ExitLayout` (frames are 8-aligned after 16 header bytes).
    unsafe impl aya::Pod for super::ShadowStack {}
}
