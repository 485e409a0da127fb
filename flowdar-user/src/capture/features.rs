//! Kernel features capture depends on, detected once per run by asking the
//! kernel (the way libbpf's `libbpf_probes.c` does), never by its release
//! string. A missing feature is one sentence naming the kernel and what it
//! lacks, or a fallback: it is never reported as the kernel refusing one of
//! the functions the user asked for.
//!
//! | feature | since | without it |
//! |---|---|---|
//! | uprobes (perf `uprobe` PMU, `retprobe` format bit) | 4.17 | refused |
//! | BPF ring buffer map | 5.8 | refused |
//! | `bpf_get_attach_cookie` from uprobe programs | 5.15 | refused |
//! | uprobe_multi links | 6.6 | perf-event uprobes (slow detach) |
//! | `sched_process_fork` pid fields in tracefs | any | refused |
//! | BPF run-time statistics (`BPF_ENABLE_STATS`) | 5.8 | `--bpf-stats` refused |
use std::sync::OnceLock;

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_helper_supported, is_map_supported},
};
use aya_obj::generated::bpf_func_id::BPF_FUNC_get_attach_cookie;

use super::{attach as multi, tracefs};

/// How uprobes are to be attached (what the user asks for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// uprobe_multi links where the kernel creates them (6.6+, detected at
    /// start), else perf events.
    #[default]
    Auto,
    /// One uprobe_multi link per program and file (fast detach).
    Multi,
    /// One perf-event uprobe per probe and program (any kernel with uprobes;
    /// each detach waits a grace period).
    Perf,
}

/// The attach mechanism a run really used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// One uprobe_multi link per program and file (Linux 6.6+).
    UprobeMulti,
    /// One perf-event uprobe per probe and program.
    PerfEvent,
}

impl Mechanism {
    /// The name written into traces and printed (`uprobe_multi`, `perf`).
    pub fn name(self) -> &'static str {
        match self {
            Self::UprobeMulti => "uprobe_multi",
            Self::PerfEvent => "perf",
        }
    }
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What this kernel was found to have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFeatures {
    pub release: String,
    /// The perf `uprobe` event source, with its `retprobe` bit.
    pub uprobes: bool,
    pub uretprobes: bool,
    pub ring_buffer: bool,
    pub attach_cookie: bool,
    /// `Err` holds why uprobe_multi links could not be created.
    pub uprobe_multi: Result<(), String>,
    /// The fork tracepoint's pid offsets, or why they could not be read.
    pub fork_layout: Result<(u32, u32), String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FeatureError {
    #[error("this kernel ({release}) lacks {what}, which flowdar needs ({why})")]
    Missing {
        release: String,
        what: &'static str,
        why: &'static str,
    },
    #[error("this kernel ({release}) has no uprobe_multi links ({reason}; they came in Linux 6.6): use --attach-mode auto or perf")]
    NoUprobeMulti { release: String, reason: String },
    #[error("this kernel ({release}): {reason}")]
    Tracepoint { release: String, reason: String },
}

/// Probes the kernel once per process; later calls return the same answer.
pub fn detect() -> &'static KernelFeatures {
    static FEATURES: OnceLock<KernelFeatures> = OnceLock::new();
    FEATURES.get_or_init(probe_kernel)
}

fn probe_kernel() -> KernelFeatures {
    let pmu = std::path::Path::new("/sys/bus/event_source/devices/uprobe");
    let fork_layout = tracefs::ensure_mounted()
        .map_err(|e| crate::errors::chain(&e))
        .and_then(|root| tracefs::fork_layout(&root).map_err(|e| crate::errors::chain(&e)))
        .map(|l| (l.parent_pid_off, l.child_pid_off));
    KernelFeatures {
        release: release(),
        uprobes: pmu.join("type").exists(),
        uretprobes: pmu.join("format/retprobe").exists(),
        ring_buffer: is_map_supported(MapType::RingBuf).unwrap_or(false),
        attach_cookie: is_helper_supported(ProgramType::KProbe, BPF_FUNC_get_attach_cookie)
            .unwrap_or(false),
        uprobe_multi: multi::probe_support(),
        fork_layout,
    }
}

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown release".into())
}

impl KernelFeatures {
    /// Everything capture needs whatever the attach mode, or what is missing.
    pub fn check_required(&self) -> Result<(), FeatureError> {
        let missing = |what, why| FeatureError::Missing {
            release: self.release.clone(),
            what,
            why,
        };
        if !self.uprobes {
            return Err(missing(
                "uprobes",
                "CONFIG_UPROBES and the perf `uprobe` event source, /sys/bus/event_source/devices/uprobe",
            ));
        }
        if !self.uretprobes {
            return Err(missing(
                "return uprobes",
                "the `retprobe` bit of the perf uprobe event source, to see functions return",
            ));
        }
        if !self.ring_buffer {
            return Err(missing(
                "the BPF ring buffer",
                "BPF_MAP_TYPE_RINGBUF, Linux 5.8+: events reach user space through it",
            ));
        }
        if !self.attach_cookie {
            return Err(missing(
                "bpf_get_attach_cookie for uprobes",
                "Linux 5.15+: one program serves every probe by its cookie",
            ));
        }
        if let Err(reason) = &self.fork_layout {
            return Err(FeatureError::Tracepoint {
                release: self.release.clone(),
                reason: format!("{reason} (the process-tree filter follows forks through it)"),
            });
        }
        Ok(())
    }

    /// The mechanism a requested mode resolves to on this kernel: `auto`
    /// takes uprobe_multi where the kernel creates such links, perf events
    /// otherwise; `multi` on a kernel without them is refused up front.
    pub fn mechanism(&self, requested: AttachMode) -> Result<Mechanism, FeatureError> {
        self.check_required()?;
        match (requested, &self.uprobe_multi) {
            (AttachMode::Perf, _) | (AttachMode::Auto, Err(_)) => Ok(Mechanism::PerfEvent),
            (AttachMode::Auto | AttachMode::Multi, Ok(())) => Ok(Mechanism::UprobeMulti),
            (AttachMode::Multi, Err(reason)) => Err(FeatureError::NoUprobeMulti {
                release: self.release.clone(),
                reason: reason.clone(),
            }),
        }
    }

    /// One line per feature, for `flowdar kernel`.
    pub fn report(&self) -> Vec<(&'static str, String)> {
        let yes_no = |b: bool| {
            if b {
                "yes".to_string()
            } else {
                "MISSING".into()
            }
        };
        vec![
            ("kernel", self.release.clone()),
            ("uprobes", yes_no(self.uprobes)),
            ("return uprobes", yes_no(self.uretprobes)),
            ("BPF ring buffer", yes_no(self.ring_buffer)),
            ("attach cookies", yes_no(self.attach_cookie)),
            (
                "uprobe_multi links",
                match &self.uprobe_multi {
                    Ok(()) => "yes".into(),
                    Err(e) => format!("no ({e}): perf-event uprobes are used"),
                },
            ),
            (
                "fork tracepoint",
                match &self.fork_layout {
                    Ok((p, c)) => format!("parent_pid at {p}, child_pid at {c}"),
                    Err(e) => format!("MISSING ({e})"),
                },
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feature sets as the kernels of the matrix have them (see README,
    /// "Kernels"): 6.12 and 6.18 have everything, Debian 12's 6.1 and
    /// Ubuntu 22.04's 5.15 lack uprobe_multi, 5.10 lacks attach cookies.
    fn kernel(release: &str, multi: bool, cookie: bool) -> KernelFeatures {
        KernelFeatures {
            release: release.into(),
            uprobes: true,
            uretprobes: true,
            ring_buffer: true,
            attach_cookie: cookie,
            uprobe_multi: if multi {
                Ok(())
            } else {
                Err(
                    "BPF_LINK_CREATE of a uprobe_multi link fails: Invalid argument (os error 22)"
                        .into(),
                )
            },
            fork_layout: Ok((24, 44)),
        }
    }

    #[test]
    fn auto_takes_uprobe_multi_where_the_kernel_creates_the_links() {
        let k = kernel("6.12.100+deb12-amd64", true, true);
        assert_eq!(k.mechanism(AttachMode::Auto), Ok(Mechanism::UprobeMulti));
        assert_eq!(k.mechanism(AttachMode::Multi), Ok(Mechanism::UprobeMulti));
        assert_eq!(k.mechanism(AttachMode::Perf), Ok(Mechanism::PerfEvent));
    }

    #[test]
    fn auto_falls_back_to_perf_events_on_6_1_and_5_15() {
        for release in ["6.1.0-50-amd64", "5.15.0-91-generic"] {
            let k = kernel(release, false, true);
            assert_eq!(k.mechanism(AttachMode::Auto), Ok(Mechanism::PerfEvent));
            assert_eq!(k.mechanism(AttachMode::Perf), Ok(Mechanism::PerfEvent));
            let err = k.mechanism(AttachMode::Multi).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("this kernel ({release}) has no uprobe_multi links (BPF_LINK_CREATE of a uprobe_multi link fails: Invalid argument (os error 22); they came in Linux 6.6): use --attach-mode auto or perf")
            );
        }
    }

    #[test]
    fn a_kernel_without_attach_cookies_is_refused_in_one_sentence() {
        let k = kernel("5.10.0-28-amd64", false, false);
        assert_eq!(
            k.mechanism(AttachMode::Auto).unwrap_err().to_string(),
            "this kernel (5.10.0-28-amd64) lacks bpf_get_attach_cookie for uprobes, which flowdar needs (Linux 5.15+: one program serves every probe by its cookie)"
        );
    }

    #[test]
    fn missing_ring_buffer_uprobes_and_tracepoint_are_named() {
        let mut k = kernel("5.4.0", false, true);
        k.ring_buffer = false;
        assert!(k
            .check_required()
            .unwrap_err()
            .to_string()
            .contains("lacks the BPF ring buffer"));
        k.ring_buffer = true;
        k.uretprobes = false;
        assert!(k
            .check_required()
            .unwrap_err()
            .to_string()
            .contains("lacks return uprobes"));
        k.uretprobes = true;
        k.fork_layout = Err("tracepoint format X has no field `child_pid`".into());
        assert_eq!(
            k.check_required().unwrap_err().to_string(),
            "this kernel (5.4.0): tracepoint format X has no field `child_pid` (the process-tree filter follows forks through it)"
        );
    }

    /// Root: the probes run against the real kernel, whichever it is: it
    /// can trace, and `auto` picks what it found.
    #[test]
    fn this_machine_can_trace_and_auto_follows_what_it_has() {
        if !nix_is_root() {
            return;
        }
        let k = detect();
        assert_eq!(k.check_required(), Ok(()), "{k:?}");
        let want = match k.uprobe_multi {
            Ok(()) => Mechanism::UprobeMulti,
            Err(_) => Mechanism::PerfEvent,
        };
        assert_eq!(k.mechanism(AttachMode::Auto), Ok(want));
    }

    fn nix_is_root() -> bool {
        rustix::process::geteuid().is_root()
    }
}
