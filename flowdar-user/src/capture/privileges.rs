//! Checking, before anything is loaded, that this process may do everything
//! a recording does, and naming every capability it lacks in one line.
//!
//! Measured on Linux 6.18 as `nobody` with ambient capabilities, against a
//! root-owned Apache (the errors are what each step got without the
//! capability):
//!
//! | capability | needed for | without it |
//! |---|---|---|
//! | `CAP_BPF` | creating maps and loading programs (`unprivileged_bpf_disabled`) | `BPF_MAP_CREATE`: EPERM |
//! | `CAP_PERFMON` | loading uprobe (kprobe-type) programs, the sched tracepoints' perf events | `BPF_PROG_LOAD`: EPERM |
//! | `CAP_DAC_READ_SEARCH` | tracefs (mode 0700, root's): the sched tracepoints' `format` and `id` | EACCES |
//! | `CAP_SYS_PTRACE` | another user's server: its files through `/proc/PID/root`, `/proc/PID/exe` | EACCES |
//! | `CAP_SYS_ADMIN` | perf-event uprobes (`--attach-mode perf`, kernels without uprobe_multi) | `perf_event_open`: EACCES |
//! | `CAP_SYS_ADMIN` | any perf event, the sched tracepoints' included, when `kernel.perf_event_paranoid` is 3 (Debian's kernels: 6.1 and 6.12 under virtme-ng) | `perf_event_open`: EACCES |
//! | `CAP_SYS_ADMIN` | mounting tracefs when it is not mounted | `mount`: EPERM |
//!
//! `CAP_SYS_ADMIN` stands in for `CAP_BPF` and `CAP_PERFMON` (the kernel's
//! `bpf_capable`, `perfmon_capable`) and `CAP_DAC_OVERRIDE` for
//! `CAP_DAC_READ_SEARCH`. uprobe_multi links (Linux 6.6+) need no more than
//! `CAP_BPF` + `CAP_PERFMON`; perf-event uprobes need `CAP_SYS_ADMIN` again
//! since the kernel's "perf: Revert to requiring CAP_SYS_ADMIN for uprobes"
//! (ba677dbe77af, backported to stable kernels in July 2025). Where a step's
//! need can be tried without side effects (tracefs readable, the target's
//! `/proc/PID/root` reachable), it is tried, so a capability that would
//! change nothing is never demanded.
use std::{io::ErrorKind, path::Path};

use super::{attach as multi, features, features::AttachMode};

const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Where tracefs may be, as `tracefs::ensure_mounted` and aya look for it.
const TRACEFS_ROOTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
/// The tracefs files a recording reads (offsets from `format`, and aya's
/// tracepoint attach reads `id`).
const TRACEFS_FILES: [&str; 4] = [
    "events/sched/sched_process_fork/format",
    "events/sched/sched_process_fork/id",
    "events/sched/sched_process_exit/format",
    "events/sched/sched_process_exit/id",
];

#[derive(Debug, thiserror::Error)]
#[error("flowdar {what} needs root, or the capabilities {needed} (missing: {missing}){note}")]
pub struct PrivilegeError {
    what: &'static str,
    needed: String,
    missing: String,
    note: String,
}

/// What a command is about to do, for [`check`]: a name for the message,
/// and optionally the process it attaches to and how it attaches.
///
/// `"kernel"` (from a `&'static str`) loads programs and reads tracefs;
/// `("record", Some(pid), mode)` also reads `pid`'s files and attaches the
/// way `mode` resolves to on this kernel.
#[derive(Debug, Clone, Copy)]
pub struct Task {
    what: &'static str,
    target: Option<u32>,
    mode: Option<AttachMode>,
}

impl From<&'static str> for Task {
    fn from(what: &'static str) -> Self {
        Self {
            what,
            target: None,
            mode: None,
        }
    }
}

impl From<(&'static str, Option<u32>, AttachMode)> for Task {
    fn from((what, target, mode): (&'static str, Option<u32>, AttachMode)) -> Self {
        Self {
            what,
            target,
            mode: Some(mode),
        }
    }
}

impl Task {
    /// Whether the task opens perf events (the sched tracepoints, and
    /// uprobes): every command but `flowdar kernel`, whose feature probes
    /// only load programs and create a uprobe_multi link.
    fn attaches(&self) -> bool {
        self.what != "kernel"
    }
}

/// The effective capability set of this process.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Whether this process can read tracefs as a recording does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tracefs {
    Readable,
    /// Mounted (or possibly mounted) but not readable by us.
    Denied,
    /// Not mounted anywhere we look: mounting it needs CAP_SYS_ADMIN.
    Absent,
}

fn tracefs_access() -> Tracefs {
    let mut denied = false;
    for root in TRACEFS_ROOTS {
        let root = Path::new(root);
        let opened: Result<(), std::io::Error> = std::fs::read_dir(root).and_then(|_| {
            TRACEFS_FILES
                .iter()
                .try_for_each(|f| std::fs::File::open(root.join(f)).map(drop))
        });
        match opened {
            Ok(()) => return Tracefs::Readable,
            Err(e) if e.kind() == ErrorKind::PermissionDenied => denied = true,
            Err(_) => {}
        }
    }
    if denied {
        Tracefs::Denied
    } else {
        Tracefs::Absent
    }
}

/// Whether `pid`'s files are out of our reach through `/proc/PID/root`
/// (the kernel's ptrace read check: another user's process, or one with
/// capabilities we lack). A process that is gone is not a privilege
/// problem: it is reported later as gone.
fn target_denied(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/root"))
        .is_err_and(|e| e.kind() == ErrorKind::PermissionDenied)
}

/// Whether `pid` runs as another user than we do (only used to say that
/// CAP_SYS_PTRACE is needed when we have it and cannot try without it).
fn foreign(pid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let euid = rustix::process::geteuid().as_raw();
    std::fs::metadata(format!("/proc/{pid}"))
        .map(|m| m.uid() != euid)
        .unwrap_or(false)
}

/// `kernel.perf_event_paranoid`; 3 and above (a Debian and Android patch:
/// Debian's own kernels default to 3) refuse every `perf_event_open`,
/// tracepoints included, without CAP_SYS_ADMIN.
fn perf_event_paranoid() -> i32 {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(2)
}

/// Fails with every missing capability named when this process may not do
/// `task`. Root (every capability) always passes.
pub fn check(task: impl Into<Task>) -> Result<(), PrivilegeError> {
    let task = task.into();
    let caps = effective_caps();
    let has = |c: u32| caps & (1 << c) != 0;
    let admin = has(CAP_SYS_ADMIN);
    let loads = admin || (has(CAP_BPF) && has(CAP_PERFMON));
    let dac = has(CAP_DAC_READ_SEARCH) || has(CAP_DAC_OVERRIDE);
    let tracefs = tracefs_access();
    // Listed when it is what lets us read tracefs, or would: with it we
    // cannot tell, and tracefs is root's unless an administrator opened it.
    let dac_listed = match tracefs {
        Tracefs::Denied => true,
        Tracefs::Readable => dac,
        Tracefs::Absent => false,
    };
    let target_needs_ptrace = task.target.is_some_and(|pid| {
        if has(CAP_SYS_PTRACE) {
            foreign(pid)
        } else {
            target_denied(pid)
        }
    });

    // Why CAP_SYS_ADMIN is needed, if it is: it then stands for CAP_BPF and
    // CAP_PERFMON too.
    let mut admin_why: Vec<String> = Vec::new();
    // Whether `auto` resolves to perf-event uprobes is asked of the kernel
    // only once its probes can run (they load programs); through the
    // cached feature detection when tracefs is readable, so that nothing
    // wrong is cached and no mount is tried.
    let perf = match task.mode {
        Some(AttachMode::Perf) => true,
        Some(AttachMode::Auto) if loads => {
            if tracefs == Tracefs::Readable {
                features::detect().uprobe_multi.is_err()
            } else {
                multi::probe_support().is_err()
            }
        }
        _ => false,
    };
    if perf {
        admin_why.push(
            "perf-event uprobes (--attach-mode perf, and kernels without uprobe_multi) need CAP_SYS_ADMIN"
                .into(),
        );
    }
    let paranoid = perf_event_paranoid();
    if task.attaches() && paranoid >= 3 {
        admin_why.push(format!(
            "kernel.perf_event_paranoid is {paranoid}: the sched tracepoints' perf events need CAP_SYS_ADMIN"
        ));
    }
    if tracefs == Tracefs::Absent {
        admin_why.push(format!(
            "tracefs is not mounted on {}: mounting it needs CAP_SYS_ADMIN",
            TRACEFS_ROOTS[0]
        ));
    }

    // (capability, whether we have it or what stands in for it, why it is
    // needed when that is not obvious)
    let mut needed: Vec<(&str, bool, Option<String>)> = Vec::new();
    if admin_why.is_empty() {
        needed.push(("CAP_BPF", has(CAP_BPF) || admin, None));
        needed.push(("CAP_PERFMON", has(CAP_PERFMON) || admin, None));
    } else {
        needed.push(("CAP_SYS_ADMIN", admin, Some(admin_why.join("; "))));
    }
    if dac_listed {
        needed.push((
            "CAP_DAC_READ_SEARCH",
            dac || tracefs == Tracefs::Readable,
            Some(format!(
                "tracefs ({}) is root's: reading the sched tracepoints needs CAP_DAC_READ_SEARCH",
                TRACEFS_ROOTS[0]
            )),
        ));
    }
    if let Some(pid) = task.target.filter(|_| target_needs_ptrace) {
        needed.push((
            "CAP_SYS_PTRACE",
            has(CAP_SYS_PTRACE),
            Some(format!(
                "PID {pid} is another user's process: reading its files needs CAP_SYS_PTRACE"
            )),
        ));
    }

    let missing: Vec<&(&str, bool, Option<String>)> =
        needed.iter().filter(|(_, have, _)| !have).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = needed.iter().map(|(name, _, _)| *name).collect();
    Err(PrivilegeError {
        what: task.what,
        needed: join_and(&names),
        missing: missing
            .iter()
            .map(|(name, _, _)| *name)
            .collect::<Vec<_>>()
            .join(", "),
        note: missing
            .iter()
            .filter_map(|(_, _, why)| why.as_deref())
            .map(|why| format!("; {why}"))
            .collect(),
    })
}

/// "A", "A and B", "A, B and C".
fn join_and(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [only] => (*only).to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_as_sentences() {
        assert_eq!(join_and(&["CAP_BPF"]), "CAP_BPF");
        assert_eq!(
            join_and(&["CAP_BPF", "CAP_PERFMON"]),
            "CAP_BPF and CAP_PERFMON"
        );
        assert_eq!(
            join_and(&["CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE"]),
            "CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE"
        );
    }

    #[test]
    fn own_process_needs_no_ptrace() {
        assert!(!target_denied(std::process::id()));
        assert!(!foreign(std::process::id()));
    }
}
