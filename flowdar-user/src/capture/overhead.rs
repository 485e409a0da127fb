//! What the probes cost the server, estimated. One probed call's cost to
//! the thread that makes it (both traps, both programs, the ring buffer) is
//! measured on this machine, by probing functions of Flowdar's own with the
//! same programs, once per kernel, binary, CPU and attach mechanism (kept in
//! the calibration cache); times the calls recorded, against the CPU time
//! the server's processes used.
//!
//! A call's cost depends on how its function begins: x86 uprobes emulate a
//! `push` (one trap) and single-step most other first instructions out of
//! line (a second trap). On the development VM the two cost ~0.9 µs and
//! ~17 µs a call (BENCHMARKS.md, "Beneath the uprobe floor"); on a kernel
//! that does not emulate `push`, both measure alike. So two kinds are
//! measured ([`CallCosts`]), and each probed function is priced by its
//! first instruction ([`FirstInstruction`]): most of Apache's and APR's
//! functions begin with a `push`, the `ap_run_*` hooks with a `mov`. The
//! kinds not told apart are priced as single-stepped: an upper bound.
//!
//! The same attach prices the lean capture's system calls: a loopback
//! connection accepted under the syscall programs, and non-blocking
//! `read`s of it that find nothing, without and with them.
use std::{hint::black_box, sync::Mutex, time::Duration};

use aya::maps::{MapData, RingBuf};
use flowdar_common::{Event, EventKind};

use super::{
    calibration_cache, drain::RECORD_BYTES, introspect, loader, proctree, sys::own_code_offset,
    AttachPlan, CaptureError, Mechanism, SyscallHooks,
};
use crate::probes::ResolvedProbe;

/// Why a probed call's cost was not measured. A recording goes on without
/// its overhead estimate (`RecordSummary::overhead` holds this instead).
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    #[error("cannot place the probe that measures a probed call's cost")]
    Place(#[source] std::io::Error),
    #[error("the calibration probe fired on {entries} entries and {returns} returns of {calls} calls, so a probed call's cost was not measured")]
    Missed {
        calls: u64,
        entries: u64,
        returns: u64,
    },
    #[error("probed calls took {probed_ns} ns of CPU each and unprobed ones {plain_ns} ns, so the probes' cost did not show")]
    NoCost { plain_ns: u64, probed_ns: u64 },
}

// The functions the calibration probes. The first begins with a `lea`,
// which x86 uprobes single-step out of line (a second trap): the dear
// kind. The second begins with the `push` most compiled functions begin
// with, which they emulate (where the kernel does). Written in assembly so
// that no compiler setting changes that.
#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    ".pushsection .text.flowdar_calibration_target,\"ax\",@progbits",
    ".globl flowdar_calibration_target",
    ".type flowdar_calibration_target,@function",
    "flowdar_calibration_target:",
    "lea rax, [rdi + 1]",
    "ret",
    ".size flowdar_calibration_target, .-flowdar_calibration_target",
    ".globl flowdar_calibration_target_push",
    ".type flowdar_calibration_target_push,@function",
    "flowdar_calibration_target_push:",
    "push rbx",
    "lea rax, [rdi + 1]",
    "pop rbx",
    "ret",
    ".size flowdar_calibration_target_push, .-flowdar_calibration_target_push",
    ".popsection",
);

#[cfg(target_arch = "x86_64")]
unsafe extern "C" {
    safe fn flowdar_calibration_target(x: u64) -> u64;
    safe fn flowdar_calibration_target_push(x: u64) -> u64;
}

#[cfg(not(target_arch = "x86_64"))]
#[unsafe(no_mangle)]
#[inline(never)]
extern "C" fn flowdar_calibration_target(x: u64) -> u64 {
    black_box(x).wrapping_add(1)
}

#[cfg(not(target_arch = "x86_64"))]
#[unsafe(no_mangle)]
#[inline(never)]
extern "C" fn flowdar_calibration_target_push(x: u64) -> u64 {
    black_box(x).wrapping_add(2)
}

/// How a probed function begins, as far as a uprobe's cost goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstInstruction {
    /// `push REG` (x86-64: `50+r`, or `41 50+r` for r8-r15).
    Push,
    /// Anything else, or unknown: priced as single-stepped.
    Other,
}

impl FirstInstruction {
    /// From a function's first bytes.
    pub fn of_bytes(b: &[u8]) -> Self {
        match b {
            [0x50..=0x57, ..] | [0x41, 0x50..=0x57, ..] if cfg!(target_arch = "x86_64") => {
                Self::Push
            }
            _ => Self::Other,
        }
    }

    /// From the first bytes at `file_offset` in `path`, if readable.
    pub fn read(path: &std::path::Path, file_offset: u64) -> Option<Self> {
        use std::os::unix::fs::FileExt;
        let mut b = [0u8; 2];
        let f = std::fs::File::open(path).ok()?;
        f.read_exact_at(&mut b, file_offset).ok()?;
        Some(Self::of_bytes(&b))
    }
}

/// What one probed call costs the thread that makes it, in ns, by how its
/// function begins; and one system call the lean capture records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallCosts {
    /// A single-stepped first instruction (the dear kind, and the price of
    /// every kind not told apart).
    pub stepped_ns: u64,
    /// A function that begins with `push REG`.
    pub push_ns: u64,
    /// A recorded system call: a non-blocking `read` on an accepted
    /// loopback socket, both tracepoint programs and their events. `None`
    /// when it could not be measured (the calls go unpriced).
    pub syscall_ns: Option<u64>,
}

/// Calls per timed round, and rounds (the median is kept): a fraction of a
/// second in all at the per-call cost `flowdar kernel` prints.
const CALLS: u64 = 2000;
const ROUNDS: usize = 3;
/// A calibration target's signature.
type Target = extern "C" fn(u64) -> u64;
/// The calibration's targets, by probe id: single-stepped, then `push`.
const TARGETS: [(&str, Target); 2] = [
    ("flowdar_calibration_target", flowdar_calibration_target),
    (
        "flowdar_calibration_target_push",
        flowdar_calibration_target_push,
    ),
];
/// The calibration's system call probes, by probe id after the targets:
/// the accept that makes its socket a connection, and the call measured.
const SYSCALLS: [&str; 2] = ["accept4", "read"];
/// A ring that holds the probed rounds' every entry and return of both
/// targets and of the system call, read once they are done: nothing drains
/// it meanwhile, and a full ring would lose events the check counts (and
/// the accept's few).
const RING_BYTES: u32 = ((CALLS * ROUNDS as u64 * 2 * (TARGETS.len() as u64 + 1) + 16)
    * RECORD_BYTES)
    .next_power_of_two() as u32;

/// What a calibration saw: the median CPU time of [`CALLS`] calls without
/// and with the probes, and the events the probed rounds sent.
#[derive(Debug, Clone, Copy)]
struct Sample {
    plain: Duration,
    probed: Duration,
    entries: u64,
    returns: u64,
}

impl Sample {
    /// One probed call's cost in ns, once the sample shows that the probes
    /// fired on every call and cost something.
    fn ns_per_call(&self) -> Result<u64, CalibrationError> {
        let calls = CALLS * ROUNDS as u64;
        if self.entries < calls || self.returns < calls {
            return Err(CalibrationError::Missed {
                calls,
                entries: self.entries,
                returns: self.returns,
            });
        }
        let each = |d: Duration| (d.as_nanos() / u128::from(CALLS)) as u64;
        match each(self.probed.saturating_sub(self.plain)) {
            0 => Err(CalibrationError::NoCost {
                plain_ns: each(self.plain),
                probed_ns: each(self.probed),
            }),
            ns => Ok(ns),
        }
    }
}

/// Per mechanism, what probed calls were measured to cost.
static MEASURED: Mutex<Vec<((Mechanism, SyscallHooks), CallCosts)>> = Mutex::new(Vec::new());

/// The calibration cache's keys for `mechanism`: single-stepped, `push`,
/// a recorded system call.
fn keys(mechanism: Mechanism, hooks: SyscallHooks) -> [calibration_cache::Key; 3] {
    use calibration_cache::{Key, Kind};
    [
        Key::here(mechanism, Kind::Stepped),
        Key::here(mechanism, Kind::Push),
        Key::here(mechanism, Kind::Syscall(hooks)),
    ]
}

/// What probed calls cost the calling thread with `mechanism`: remembered
/// for the run, and across runs in the calibration cache
/// ([`calibration_cache`]) for this kernel, binary and CPU; measured when
/// neither has both kinds.
pub fn ns_per_call(mechanism: Mechanism, hooks: SyscallHooks) -> Result<CallCosts, CaptureError> {
    let mut measured = MEASURED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, c)) = measured.iter().find(|(m, _)| *m == (mechanism, hooks)) {
        return Ok(*c);
    }
    let [stepped, push, syscall] = keys(mechanism, hooks);
    let file = calibration_cache::path();
    let now = calibration_cache::now_unix();
    let cached = |key: &calibration_cache::Key| {
        file.as_deref()
            .and_then(|f| calibration_cache::lookup(f, key, now))
    };
    // The system call's figure, or that it could not be measured here:
    // either way nothing to measure again before the entry ages out.
    let cached_syscall = file
        .as_deref()
        .and_then(|f| calibration_cache::lookup_or_unmeasured(f, &syscall, now));
    let costs = match (cached(&stepped), cached(&push), cached_syscall) {
        (Some(stepped_ns), Some(push_ns), Some(syscall_ns)) => CallCosts {
            stepped_ns,
            push_ns,
            syscall_ns,
        },
        _ => measure_and_store(mechanism, hooks)?.0,
    };
    measured.push(((mechanism, hooks), costs));
    Ok(costs)
}

/// Measures probed calls' costs now, whatever is cached, and caches them;
/// also returns where they were cached, if they were.
pub fn remeasure(
    mechanism: Mechanism,
    hooks: SyscallHooks,
) -> Result<(CallCosts, Option<std::path::PathBuf>), CaptureError> {
    let (costs, stored) = measure_and_store(mechanism, hooks)?;
    let mut measured = MEASURED.lock().unwrap_or_else(|e| e.into_inner());
    measured.retain(|(m, _)| *m != (mechanism, hooks));
    measured.push(((mechanism, hooks), costs));
    Ok((costs, stored))
}

/// Measures, and caches the figures; the cache file when that worked (a
/// cache that cannot be written only means measuring next time).
fn measure_and_store(
    mechanism: Mechanism,
    hooks: SyscallHooks,
) -> Result<(CallCosts, Option<std::path::PathBuf>), CaptureError> {
    let costs = measure(mechanism, hooks)?;
    let [stepped, push, syscall] = keys(mechanism, hooks);
    // A system call figure that could not be measured is cached as such
    // (`flowdar kernel` measures again), so that every recording does not
    // spend its start failing at it.
    let stored = calibration_cache::path().filter(|file| {
        calibration_cache::store(file, &stepped, costs.stepped_ns).is_ok()
            && calibration_cache::store(file, &push, costs.push_ns).is_ok()
            && calibration_cache::store(file, &syscall, costs.syscall_ns.unwrap_or(0)).is_ok()
    });
    Ok((costs, stored))
}

fn measure(mechanism: Mechanism, hooks: SyscallHooks) -> Result<CallCosts, CaptureError> {
    let exe = std::fs::read_link("/proc/self/exe").map_err(CalibrationError::Place)?;
    let mut probes = Vec::new();
    for (id, (name, f)) in TARGETS.iter().enumerate() {
        let offset = own_code_offset(*f as *const () as usize).map_err(CalibrationError::Place)?;
        probes.push(ResolvedProbe::new(flowdar_trace::TraceProbe {
            id: id as u32,
            function: (*name).into(),
            path: exe.clone(),
            attach_path: exe.clone(),
            address: 0,
            file_offset: offset,
            capture: Default::default(),
            optional: false,
            source: None,
            params: Vec::new(),
        }));
    }
    // A loopback connection whose server side this process accepts once
    // the programs are in: the kernel then records its calls as a
    // connection's. Without one, system calls go unpriced.
    let mut socket = Loopback::open().ok();
    let syscalls: Option<Vec<(u32, &str)>> = SYSCALLS
        .iter()
        .map(|name| Some((crate::probes::syscall_lookup(name)?.0, *name)))
        .collect();
    if let (Some(_), Some(syscalls)) = (&socket, syscalls) {
        for (nr, name) in syscalls {
            let id = probes.len() as u32;
            probes.push(ResolvedProbe::new(flowdar_trace::TraceProbe::syscall(
                id,
                name,
                nr,
                Default::default(),
            )));
        }
    } else {
        socket = None;
    }
    let plain = TARGETS.map(|(_, f)| median_round(f));
    let plain_read = socket.as_ref().map(|s| s.median_read_round(&s.plain));
    let before = introspect::loaded_flowdar_program_ids();
    let attach = |probes: &[ResolvedProbe]| {
        loader::attach(
            std::process::id(),
            probes,
            RING_BYTES,
            mechanism,
            &AttachPlan {
                syscall_hooks: hooks,
                ..AttachPlan::default()
            },
        )
    };
    // Where the system calls cannot be hooked as asked (no tracepoints,
    // or a kernel that refuses fentry), the probed calls are still priced
    // (the system calls go unpriced).
    let mut attached = match attach(&probes) {
        Ok(a) => a,
        Err(_) if socket.is_some() => {
            socket = None;
            attach(&probes[..TARGETS.len()])?
        }
        Err(e) => return Err(e),
    };
    let ring = attached
        .ebpf
        .take_map("EVENTS")
        .ok_or(CaptureError::MissingMap("EVENTS"))
        .and_then(|m| RingBuf::try_from(m).map_err(CaptureError::map));
    let probed = TARGETS.map(|(_, f)| median_round(f));
    let probed_read = socket
        .as_ref()
        .and_then(|s| Some(s.median_read_round(&s.accept().ok()?)));
    let seen = ring.map(|mut r| count_calls(&mut r));
    attached.detach();
    // The kernel frees closed links and their programs after a grace
    // period: wait, so that the recording that follows shows only its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !introspect::loaded_flowdar_program_ids().is_subset(&before)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let seen = seen?;
    let sample = |plain: Duration, probed: Duration, id: usize| Sample {
        plain,
        probed,
        entries: seen.get(id).map_or(0, |s| s.0),
        returns: seen.get(id).map_or(0, |s| s.1),
    };
    let read_id = TARGETS.len() + SYSCALLS.iter().position(|n| *n == "read").unwrap_or(0);
    Ok(CallCosts {
        stepped_ns: sample(plain[0], probed[0], 0).ns_per_call()?,
        push_ns: sample(plain[1], probed[1], 1).ns_per_call()?,
        syscall_ns: plain_read
            .zip(probed_read)
            .and_then(|(p, q)| sample(p, q, read_id).ns_per_call().ok()),
    })
}

/// Loopback TCP connections made by the calibration, to time `read`s
/// that find nothing (`EAGAIN`, as a keep-alive server's last read of a
/// request does) on a server-side socket: one accepted before the programs
/// (not a connection to them), one accepted under them.
struct Loopback {
    listener: std::net::TcpListener,
    plain: std::net::TcpStream,
    /// The clients' ends, kept open while the calibration reads.
    _clients: [std::net::TcpStream; 2],
}

impl Loopback {
    fn open() -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
        let connect = || std::net::TcpStream::connect(listener.local_addr()?);
        let first = connect()?;
        let plain = Self::accept_from(&listener)?;
        let second = connect()?;
        Ok(Self {
            listener,
            plain,
            _clients: [first, second],
        })
    }

    fn accept_from(listener: &std::net::TcpListener) -> std::io::Result<std::net::TcpStream> {
        let (s, _) = listener.accept()?;
        s.set_nonblocking(true)?;
        Ok(s)
    }

    /// The second connection's server side, accepted now (with `accept4`:
    /// under the programs, a connection to them), non-blocking.
    fn accept(&self) -> std::io::Result<std::net::TcpStream> {
        Self::accept_from(&self.listener)
    }

    /// [`median_round`] for [`CALLS`] `read` system calls on `s` (as
    /// APR makes them; std's sockets would `recvfrom`).
    fn median_read_round(&self, s: &std::net::TcpStream) -> Duration {
        median_of(|| {
            let mut buf = [0u8; 64];
            for _ in 0..CALLS {
                let _ = black_box(rustix::io::read(s, &mut buf));
            }
        })
    }
}

/// Entries and returns of each calibration probe (by id) in `ring`.
fn count_calls(ring: &mut RingBuf<MapData>) -> [(u64, u64); TARGETS.len() + SYSCALLS.len()] {
    let mut seen = [(0, 0); TARGETS.len() + SYSCALLS.len()];
    while let Some(item) = ring.next() {
        let Some(ev) = Event::from_bytes(&item) else {
            continue;
        };
        let Some(s) = seen.get_mut(ev.probe_id as usize) else {
            continue;
        };
        match ev.kind {
            k if k == EventKind::Entry as u32 => s.0 += 1,
            k if k == EventKind::Exit as u32 => s.1 += 1,
            k if k == EventKind::Call as u32 => *s = (s.0 + 1, s.1 + 1),
            _ => {}
        }
    }
    seen
}

/// The median time of [`ROUNDS`] rounds of [`CALLS`] calls of `target`, in
/// this thread's CPU time (user + system, where the traps are accounted):
/// on a busy machine, time spent preempted is not the probes' cost.
fn median_round(target: Target) -> Duration {
    median_of(|| {
        let mut x = 0;
        for i in 0..CALLS {
            x = target(black_box(x ^ i));
        }
        black_box(x);
    })
}

/// The median of [`ROUNDS`] runs of `round`, in this thread's CPU time.
fn median_of(mut round: impl FnMut()) -> Duration {
    let mut rounds: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let t = thread_cpu();
            round();
            thread_cpu().saturating_sub(t)
        })
        .collect();
    rounds.sort();
    rounds[ROUNDS / 2]
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// CPU time (user + system) the live processes of `root`'s tree have used
/// since they started, in ns. Processes that exit take theirs with them.
pub fn tree_cpu_ns(root: u32) -> u64 {
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    proctree::descendants(root)
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| cpu_ticks(&stat))
        .map(|t| t.saturating_mul(1_000_000_000) / ticks)
        .sum()
}

/// utime + stime from a `/proc/PID/stat` line (fields 14 and 15; the
/// command name before them may hold spaces and parentheses).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_reads_utime_and_stime_past_an_odd_command_name() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 1 0 5 0 0";
        assert_eq!(cpu_ticks(stat), Some(287));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    /// A calibration like the development VM's (BENCHMARKS.md, "the
    /// estimated overhead": ~10 µs a probed call of this `lea` function).
    fn sample() -> Sample {
        Sample {
            plain: Duration::from_micros(2),
            probed: Duration::from_micros(20_002),
            entries: CALLS * ROUNDS as u64,
            returns: CALLS * ROUNDS as u64,
        }
    }

    #[test]
    fn a_calibration_that_saw_every_call_gives_its_cost() {
        assert_eq!(sample().ns_per_call().unwrap(), 10_000);
    }

    #[test]
    fn a_probe_that_missed_calls_measures_nothing() {
        let s = Sample {
            entries: 0,
            returns: 0,
            ..sample()
        };
        assert_eq!(
            s.ns_per_call().unwrap_err().to_string(),
            "the calibration probe fired on 0 entries and 0 returns of 6000 calls, so a probed call's cost was not measured"
        );
        // One return lost (a full ring) is enough to refuse.
        let s = Sample {
            returns: CALLS * ROUNDS as u64 - 1,
            ..sample()
        };
        assert!(matches!(
            s.ns_per_call(),
            Err(CalibrationError::Missed { returns: 5999, .. })
        ));
    }

    #[test]
    fn probed_calls_no_dearer_than_plain_ones_measure_nothing() {
        // What the clamp to 1 ns used to turn into an estimate.
        let s = Sample {
            probed: Duration::from_micros(2),
            ..sample()
        };
        assert_eq!(
            s.ns_per_call().unwrap_err().to_string(),
            "probed calls took 1 ns of CPU each and unprobed ones 1 ns, so the probes' cost did not show"
        );
        // Less than 1 ns a call more: below what the rounds resolve.
        let s = Sample {
            probed: Duration::from_nanos(2000 + CALLS - 1),
            ..sample()
        };
        assert!(matches!(
            s.ns_per_call(),
            Err(CalibrationError::NoCost { .. })
        ));
        let s = Sample {
            probed: Duration::ZERO,
            ..sample()
        };
        assert!(s.ns_per_call().is_err());
    }

    #[test]
    fn the_ring_holds_every_event_of_the_probed_rounds() {
        assert!(u64::from(RING_BYTES) >= CALLS * ROUNDS as u64 * 2 * 3 * RECORD_BYTES);
        assert!(RING_BYTES.is_power_of_two());
    }

    #[test]
    fn a_function_that_begins_with_a_push_is_told_apart() {
        use FirstInstruction::*;
        // push rbp; push r15 (REX.B); lea; mov (an ap_run_* hook); endbr64.
        assert_eq!(FirstInstruction::of_bytes(&[0x55, 0x48]), Push);
        assert_eq!(FirstInstruction::of_bytes(&[0x41, 0x57]), Push);
        assert_eq!(FirstInstruction::of_bytes(&[0x48, 0x8d]), Other);
        assert_eq!(FirstInstruction::of_bytes(&[0x48, 0x8b]), Other);
        assert_eq!(FirstInstruction::of_bytes(&[0xf3, 0x0f]), Other);
        assert_eq!(FirstInstruction::of_bytes(&[0x41, 0x8b]), Other);
        assert_eq!(FirstInstruction::of_bytes(&[]), Other);
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_calibration_targets_begin_as_they_should() {
        // Read from this very binary, as a probe's first bytes are.
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let first = |f: Target| {
            FirstInstruction::read(&exe, own_code_offset(f as *const () as usize).unwrap()).unwrap()
        };
        assert_eq!(first(TARGETS[0].1), FirstInstruction::Other);
        assert_eq!(first(TARGETS[1].1), FirstInstruction::Push);
        assert_eq!(flowdar_calibration_target_push(1), 2);
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        // CPU time, not wall time: on a busy machine 30 ms of wall time
        // can be less than the one clock tick /proc counts in.
        let t = thread_cpu();
        while thread_cpu().saturating_sub(t) < Duration::from_millis(30) {
            black_box(flowdar_calibration_target(1));
        }
        assert!(tree_cpu_ns(std::process::id()) > 0);
    }
}
