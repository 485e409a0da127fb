//! What the probes cost the server, estimated. One probed call's cost to
//! the thread that makes it (both traps, both programs, the ring buffer) is
//! measured on this machine, by probing a function of Flowdar's own with the
//! same programs, once per kernel, binary, CPU and attach mechanism (kept in
//! the calibration cache); times the calls recorded, against the CPU time
//! the server's processes used.
//!
//! The call measured is the dear kind: its first instruction is one that
//! x86 uprobes single-step out of line (a second trap), not one they
//! emulate (`push`, `call`, `jmp`). On the development VM the two cost
//! ~10 µs and ~1.1 µs a call (BENCHMARKS.md, "the estimated overhead").
//! Most of Apache's and APR's functions begin with a `push`, some (the
//! `ap_run_*` hooks) with a `mov`, so the estimate is an upper bound for
//! servers, and a budget built on it errs on the side of fewer probes.
use std::{hint::black_box, sync::Mutex, time::Duration};

use aya::maps::{MapData, RingBuf};
use flowdar_common::{Event, EventKind};

use super::{
    calibration_cache, drain::RECORD_BYTES, introspect, loader, proctree, sys::own_code_offset,
    AttachPlan, CaptureError, Mechanism,
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

// The function the calibration probes. Its first instruction, a `lea`,
// is single-stepped out of line by x86 uprobes (a second trap), the dear
// case; the `push` most compiled functions begin with is emulated and
// costs about a tenth. Written in assembly so that no compiler setting
// changes that.
#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    ".pushsection .text.flowdar_calibration_target,\"ax\",@progbits",
    ".globl flowdar_calibration_target",
    ".type flowdar_calibration_target,@function",
    "flowdar_calibration_target:",
    "lea rax, [rdi + 1]",
    "ret",
    ".size flowdar_calibration_target, .-flowdar_calibration_target",
    ".popsection",
);

#[cfg(target_arch = "x86_64")]
unsafe extern "C" {
    safe fn flowdar_calibration_target(x: u64) -> u64;
}

#[cfg(not(target_arch = "x86_64"))]
#[unsafe(no_mangle)]
#[inline(never)]
extern "C" fn flowdar_calibration_target(x: u64) -> u64 {
    black_box(x).wrapping_add(1)
}

/// Calls per timed round, and rounds (the median is kept): a fraction of a
/// second in all at the per-call cost `flowdar kernel` prints.
const CALLS: u64 = 2000;
const ROUNDS: usize = 3;
/// A ring that holds the probed rounds' every entry and return, read once
/// they are done: nothing drains it meanwhile, and a full ring would lose
/// events the check counts.
const RING_BYTES: u32 = (CALLS * ROUNDS as u64 * 2 * RECORD_BYTES).next_power_of_two() as u32;

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

/// Per mechanism, what one probed call was measured to cost (ns).
static MEASURED: Mutex<Vec<(Mechanism, u64)>> = Mutex::new(Vec::new());

/// What one probed call costs the calling thread, in ns, with `mechanism`:
/// remembered for the run, and across runs in the calibration cache
/// ([`calibration_cache`]) for this kernel, binary and CPU; measured when
/// neither has it.
pub fn ns_per_call(mechanism: Mechanism) -> Result<u64, CaptureError> {
    let mut measured = MEASURED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, ns)) = measured.iter().find(|(m, _)| *m == mechanism) {
        return Ok(*ns);
    }
    let key = calibration_cache::Key::here(mechanism);
    let cached = calibration_cache::path()
        .and_then(|f| calibration_cache::lookup(&f, &key, calibration_cache::now_unix()));
    let ns = match cached {
        Some(ns) => ns,
        None => measure_and_store(mechanism, &key)?.0,
    };
    measured.push((mechanism, ns));
    Ok(ns)
}

/// Measures one probed call's cost now, whatever is cached, and caches it;
/// also returns where it was cached, if it was.
pub fn remeasure(mechanism: Mechanism) -> Result<(u64, Option<std::path::PathBuf>), CaptureError> {
    let (ns, stored) = measure_and_store(mechanism, &calibration_cache::Key::here(mechanism))?;
    let mut measured = MEASURED.lock().unwrap_or_else(|e| e.into_inner());
    measured.retain(|(m, _)| *m != mechanism);
    measured.push((mechanism, ns));
    Ok((ns, stored))
}

/// Measures, and caches the figure; the cache file when that worked (a
/// cache that cannot be written only means measuring next time).
fn measure_and_store(
    mechanism: Mechanism,
    key: &calibration_cache::Key,
) -> Result<(u64, Option<std::path::PathBuf>), CaptureError> {
    let ns = measure(mechanism)?;
    let stored =
        calibration_cache::path().filter(|file| calibration_cache::store(file, key, ns).is_ok());
    Ok((ns, stored))
}

fn measure(mechanism: Mechanism) -> Result<u64, CaptureError> {
    let exe = std::fs::read_link("/proc/self/exe").map_err(CalibrationError::Place)?;
    let offset = own_code_offset(flowdar_calibration_target as *const () as usize)
        .map_err(CalibrationError::Place)?;
    let probe = ResolvedProbe::new(flowdar_trace::TraceProbe {
        id: 0,
        function: "flowdar_calibration_target".into(),
        path: exe.clone(),
        attach_path: exe,
        address: 0,
        file_offset: offset,
        capture: Default::default(),
        optional: false,
        source: None,
        params: Vec::new(),
    });
    let plain = median_round();
    let before = introspect::loaded_flowdar_program_ids();
    let mut attached = loader::attach(
        std::process::id(),
        &[probe],
        RING_BYTES,
        mechanism,
        &AttachPlan::default(),
    )?;
    let ring = attached
        .ebpf
        .take_map("EVENTS")
        .ok_or(CaptureError::MissingMap("EVENTS"))
        .and_then(|m| RingBuf::try_from(m).map_err(CaptureError::map));
    let probed = median_round();
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
    let (entries, returns) = seen?;
    let sample = Sample {
        plain,
        probed,
        entries,
        returns,
    };
    Ok(sample.ns_per_call()?)
}

/// Entries and returns of the calibration probe (id 0) in `ring`.
fn count_calls(ring: &mut RingBuf<MapData>) -> (u64, u64) {
    let (mut entries, mut returns) = (0, 0);
    while let Some(item) = ring.next() {
        match Event::from_bytes(&item) {
            Some(ev) if ev.probe_id == 0 && ev.kind == EventKind::Entry as u32 => entries += 1,
            Some(ev) if ev.probe_id == 0 && ev.kind == EventKind::Exit as u32 => returns += 1,
            _ => {}
        }
    }
    (entries, returns)
}

/// The median time of [`ROUNDS`] rounds of [`CALLS`] calls, in this
/// thread's CPU time (user + system, where the traps are accounted): on a
/// busy machine, time spent preempted is not the probes' cost.
fn median_round() -> Duration {
    let mut rounds: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let t = thread_cpu();
            let mut x = 0;
            for i in 0..CALLS {
                x = flowdar_calibration_target(x ^ i);
            }
            black_box(x);
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
        assert!(u64::from(RING_BYTES) >= CALLS * ROUNDS as u64 * 2 * RECORD_BYTES);
        assert!(RING_BYTES.is_power_of_two());
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
