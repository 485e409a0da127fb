//! What the probes cost the server, estimated. One probed call's cost to
//! the thread that makes it (both traps, both programs, the ring buffer) is
//! measured once per run and attach mechanism on this machine, by probing a
//! function of Flowdar's own with the same programs; times the calls
//! recorded, against the CPU time the server's processes used.
//!
//! The call measured is the dear kind: its first instruction is one that
//! x86 uprobes single-step out of line (a second trap), not one they
//! emulate (`push`, `call`, `jmp`). On the development VM the two cost
//! ~10 µs and ~1.1 µs a call (BENCHMARKS.md, "the estimated overhead").
//! Most of Apache's and APR's functions begin with a `push`, some (the
//! `ap_run_*` hooks) with a `mov`, so the estimate is an upper bound for
//! servers, and a budget built on it errs on the side of fewer probes.
use std::{hint::black_box, sync::Mutex, time::Duration};

use super::{
    introspect, loader, proctree, sys::own_code_offset, AttachPlan, CaptureError, Mechanism,
};
use crate::probes::ResolvedProbe;

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

/// Per mechanism, what one probed call was measured to cost (ns).
static MEASURED: Mutex<Vec<(Mechanism, u64)>> = Mutex::new(Vec::new());

/// What one probed call costs the calling thread, in ns, with `mechanism`:
/// measured on the first call, then remembered for the run.
pub fn ns_per_call(mechanism: Mechanism) -> Result<u64, CaptureError> {
    let mut measured = MEASURED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, ns)) = measured.iter().find(|(m, _)| *m == mechanism) {
        return Ok(*ns);
    }
    let ns = measure(mechanism)?;
    measured.push((mechanism, ns));
    Ok(ns)
}

fn measure(mechanism: Mechanism) -> Result<u64, CaptureError> {
    let exe = std::fs::read_link("/proc/self/exe").map_err(CaptureError::Calibrate)?;
    let offset = own_code_offset(flowdar_calibration_target as *const () as usize)
        .map_err(CaptureError::Calibrate)?;
    let probe = ResolvedProbe {
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
    };
    let plain = median_round();
    let before = introspect::loaded_flowdar_program_ids();
    let attached = loader::attach(
        std::process::id(),
        &[probe],
        1 << 20,
        mechanism,
        &AttachPlan::default(),
    )?;
    let probed = median_round();
    attached.detach();
    // The kernel frees closed links and their programs after a grace
    // period: wait, so that the recording that follows shows only its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !introspect::loaded_flowdar_program_ids().is_subset(&before)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok((probed.saturating_sub(plain).as_nanos() as u64 / CALLS).max(1))
}

/// The median time of [`ROUNDS`] rounds of [`CALLS`] calls, in this
/// thread's CPU time (user + system, where the traps are accounted): on a
/// busy machine, time spent preempted is not the probes' cost.
fn median_round() -> Duration {
    let cpu = || {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    };
    let mut rounds: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let t = cpu();
            let mut x = 0;
            for i in 0..CALLS {
                x = flowdar_calibration_target(x ^ i);
            }
            black_box(x);
            cpu().saturating_sub(t)
        })
        .collect();
    rounds.sort();
    rounds[ROUNDS / 2]
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

    #[test]
    fn this_process_has_used_some_cpu() {
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(30) {
            black_box(flowdar_calibration_target(1));
        }
        assert!(tree_cpu_ns(std::process::id()) > 0);
    }
}
