//! On-disk constants and the header/footer records.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::TraceProbe;

pub const MAGIC: &[u8; 8] = b"FLOWDAR\0";
/// Bumped on any incompatible change of the layout below. Version 2 added
/// client events (`EventKind::Client`), which version-1 readers refuse.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest version this build still reads (version-1 files simply have
/// no client events).
pub const OLDEST_READABLE_VERSION: u32 = 1;

pub(crate) const FRAME_HEADER: u8 = 1;
pub(crate) const FRAME_EVENTS: u8 = 2;
pub(crate) const FRAME_FOOTER: u8 = 3;
/// kind + len + crc
pub(crate) const FRAME_PREFIX_LEN: usize = 9;
/// No frame is larger than this; a bigger length means corruption.
pub(crate) const MAX_FRAME_LEN: u32 = 256 << 20;
/// No chunk decodes to more than this many encoded bytes.
pub(crate) const MAX_ENCODED_LEN: usize = 256 << 20;
/// Events per chunk, at most (3 MiB of wire events): the tracer's drain hands
/// the writer batches of this size, and tools that rewrite a trace chunk it
/// the same way. Larger chunks compress better (measured in BENCHMARKS.md).
pub const CHUNK_EVENTS: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open trace {path}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create trace {path}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists (pass --force to overwrite it)")]
    Exists { path: PathBuf },
    #[error("cannot write trace {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is empty: not a flowdar trace")]
    Empty { path: PathBuf },
    #[error("{path} is not a flowdar trace (bad magic bytes)")]
    NotATrace { path: PathBuf },
    #[error("{path} is trace format version {found}; this flowdar reads versions {OLDEST_READABLE_VERSION} to {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("{path}: trace header is damaged ({reason}); nothing can be read")]
    BadHeader { path: PathBuf, reason: String },
    #[error("{path}: trace header is damaged; nothing can be read")]
    HeaderJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot start a thread to read trace {path}")]
    Thread {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read trace {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The first record: describes the run, so a trace reads the same anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceHeader {
    pub tool_version: String,
    pub host: String,
    pub kernel: String,
    pub command_line: Vec<String>,
    /// Wall-clock start, nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    /// CLOCK_MONOTONIC at start: the time base of event timestamps.
    pub start_monotonic_ns: u64,
    pub target_pid: u32,
    /// The probe table; an event's `probe_id` indexes it.
    pub probes: Vec<TraceProbe>,
    /// How the uprobes were attached: `uprobe_multi` or `perf` (empty in
    /// traces written before it was recorded).
    #[serde(default)]
    pub attach_mode: String,
    /// CLOCK_MONOTONIC once every probe was in place: calls entered after
    /// it are all recorded, with their returns (0 in older traces).
    #[serde(default)]
    pub attached_monotonic_ns: u64,
    /// The target as its own PID namespace numbers it (a container's view;
    /// equal to `target_pid` outside containers, 0 in older traces).
    #[serde(default)]
    pub target_ns_pid: u32,
}

/// The last record: counters of the whole run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceFooter {
    pub end_monotonic_ns: u64,
    /// Events written to the file.
    pub events: u64,
    /// Per probe id: events lost in the kernel (ring buffer full).
    pub kernel_drops: Vec<u64>,
    /// Per probe id: events lost in user space (pipeline over its memory bound).
    pub user_drops: Vec<u64>,
    /// Why capture stopped (`duration`, `SIGINT`, `target exited`, ...).
    pub stop_reason: String,
    /// Where each event chunk is, for seeking by time.
    #[serde(default)]
    pub index: Vec<ChunkIndex>,
    /// CLOCK_MONOTONIC when the last entry probe was removed; return probes
    /// stayed until the detach ended (0 in older traces).
    #[serde(default)]
    pub entries_removed_ns: u64,
    /// Runs of the fork/exit tracepoint programs the kernel skipped (its BPF
    /// recursion guard: one of ours was already running on that CPU), so a
    /// fork may have gone unfollowed. `None` in traces from before it was
    /// counted (as for the counters below): unknown, not zero.
    #[serde(default)]
    pub skipped_task_events: Option<u64>,
    /// Ring-buffer records too short to be an event, and events naming a
    /// probe id outside the table: dropped by the drain, counted here.
    #[serde(default)]
    pub malformed: Option<u64>,
    #[serde(default)]
    pub unknown_probe: Option<u64>,
    /// Processes and threads forked by the server whose pids the in-kernel
    /// process filter could not hold: their calls are not in the trace.
    #[serde(default)]
    pub untraced_tasks: Option<u64>,
    /// `record --min-duration`: what the kernel dropped for being short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_duration: Option<MinDuration>,
    /// What the probes are estimated to have cost the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead: Option<OverheadEstimate>,
}

/// Calls shorter than `ns` were not recorded: the kernel timed each call
/// and dropped it at its return. Their time stays in their callers'.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinDuration {
    pub ns: u64,
    /// Per probe id: calls dropped for being shorter than `ns`.
    pub short_calls: Vec<u64>,
}

/// The probes' estimated cost to the traced server over the recording.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverheadEstimate {
    /// Probed calls (entry and return probe both hit), recorded or dropped.
    pub calls: u64,
    /// Measured at start on this machine: what one probed call costs the
    /// thread that makes it (both traps and both programs), in ns.
    pub ns_per_call: u64,
    /// CPU time the server's processes used while recorded (utime + stime
    /// of the processes alive at the end; the probes' cost is part of it).
    pub server_cpu_ns: u64,
    /// System calls recorded from the kernel's hooks (lean capture):
    /// not in `calls`, since they trap into nothing; priced at
    /// `ns_per_syscall`.
    #[serde(default)]
    pub syscalls: u64,
    /// Of `calls`, those of functions that begin with `push REG`, which
    /// x86 uprobes emulate (one trap, no single step): priced at
    /// `ns_per_push_call`, the others at `ns_per_call` (a single-stepped
    /// first instruction: a bound for the kinds not told apart). 0 in
    /// traces from before the kinds were told apart.
    #[serde(default)]
    pub push_calls: u64,
    /// Measured like `ns_per_call`, on a function that begins with a `push`.
    #[serde(default)]
    pub ns_per_push_call: u64,
    /// What one recorded system call costs (both tracepoint programs and
    /// their events), measured like `ns_per_call` on a `read` of a
    /// loopback connection; 0 when not measured (the `syscalls` go
    /// unpriced).
    #[serde(default)]
    pub ns_per_syscall: u64,
    /// How the system calls were hooked: `fentry` or `tracepoint` (None
    /// in traces from before fentry: tracepoints, or no system calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall_hooks: Option<String>,
}

impl OverheadEstimate {
    /// Time the server spent in the probes, in ns.
    pub fn probe_ns(&self) -> u64 {
        let push = self.push_calls.min(self.calls);
        (self.calls - push)
            .saturating_mul(self.ns_per_call)
            .saturating_add(push.saturating_mul(self.ns_per_call_of(true)))
            .saturating_add(self.syscalls.saturating_mul(self.ns_per_syscall))
    }

    /// What one probed call of a function that begins with a `push`
    /// (`push_first`), or otherwise, is priced at.
    pub fn ns_per_call_of(&self, push_first: bool) -> u64 {
        match push_first && self.ns_per_push_call > 0 {
            true => self.ns_per_push_call,
            false => self.ns_per_call,
        }
    }

    /// The share of the server's CPU time spent in the probes, as
    /// estimated: the probes' estimated time over the CPU time measured,
    /// which includes it. Above 1 when the per-call cost overstates this
    /// server's (it is an isolated call's). `None` when the server did too
    /// little for a share to mean anything (< 20 ms of CPU: the kernel
    /// counts a process's CPU time in 10 ms ticks).
    pub fn ratio(&self) -> Option<f64> {
        (self.server_cpu_ns >= 20_000_000)
            .then(|| self.probe_ns() as f64 / self.server_cpu_ns as f64)
    }
}

/// One event chunk's place in the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkIndex {
    /// Byte offset of the chunk's frame.
    pub offset: u64,
    pub events: u64,
    pub first_ts: u64,
    pub last_ts: u64,
}

impl TraceFooter {
    pub fn total_kernel_drops(&self) -> u64 {
        self.kernel_drops.iter().sum()
    }
    pub fn total_user_drops(&self) -> u64 {
        self.user_drops.iter().sum()
    }
}
