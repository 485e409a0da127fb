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
use std::sync::{Arc, OnceLock};

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_helper_supported, is_map_supported},
};
use aya_obj::generated::bpf_func_id::BPF_FUNC_get_attach_cookie;

use crate::errors::chain;

use super::{
    attach::{self as multi, Mechanism, Unavailable},
    tracefs::{self, TracefsError},
};

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

/// What this kernel was found to have.
#[derive(Debug, Clone)]
pub struct KernelFeatures {
    pub release: String,
    /// The perf `uprobe` event source, with its `retprobe` bit.
    pub uprobes: bool,
    pub uretprobes: bool,
    pub ring_buffer: bool,
    pub attach_cookie: bool,
    /// `Err` holds why uprobe_multi links could not be created.
    pub uprobe_multi: Result<(), Arc<Unavailable>>,
    /// The fork tracepoint's pid offsets, or why they could not be read.
    pub fork_layout: Result<(u32, u32), Arc<TracefsError>>,
}

#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("this kernel ({release}) lacks {what}, which flowdar needs ({why})")]
    Missing {
        release: String,
        what: &'static str,
        why: &'static str,
    },
    #[error("this kernel ({release}) has no uprobe_multi links (they came in Linux 6.6; use --attach-mode auto or perf)")]
    NoUprobeMulti {
        release: String,
        #[source]
        reason: Arc<Unavailable>,
    },
    #[error("this kernel ({release}): the process-tree filter cannot follow forks through the sched_process_fork tracepoint")]
    Tracepoint {
        release: String,
        #[source]
        reason: Arc<TracefsError>,
    },
}

/// Probes the kernel once per process; later calls return the same answer.
pub fn detect() -> &'static KernelFeatures {
    static FEATURES: OnceLock<KernelFeatures> = OnceLock::new();
    FEATURES.get_or_init(probe_kernel)
}

fn probe_kernel() -> KernelFeatures {
    let pmu = std::path::Path::new("/sys/bus/event_source/devices/uprobe");
    let fork_layout = tracefs::ensure_mounted()
        .and_then(|root| tracefs::fork_layout(&root))
        .map(|l| (l.parent_pid_off, l.child_pid_off))
        .map_err(Arc::new);
    KernelFeatures {
        release: release(),
        uprobes: pmu.join("type").exists(),
        uretprobes: pmu.join("format/retprobe").exists(),
        ring_buffer: is_map_supported(MapType::RingBuf).unwrap_or(false),
        attach_cookie: is_helper_supported(ProgramType::KProbe, BPF_FUNC_get_attach_cookie)
            .unwrap_or(false),
        uprobe_multi: multi::probe_support().map_err(Arc::new),
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
                reason: reason.clone(),
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
                    Err(e) => format!("no ({}): perf-event uprobes are used", chain(&**e)),
                },
            ),
            (
                "fork tracepoint",
                match &self.fork_layout {
                    Ok((p, c)) => format!("parent_pid at {p}, child_pid at {c}"),
                    Err(e) => format!("MISSING ({})", chain(&**e)),
                },
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use aya_obj::generated::bpf_cmd;

    use super::*;
    use crate::capture::sys::{fake, Syscall, SyscallError};

    /// Why a 6.1 kernel has no uprobe_multi: it loads the program but
    /// refuses the link.
    fn refused_link() -> Arc<Unavailable> {
        Arc::new(Unavailable::Link(SyscallError {
            call: "bpf(BPF_LINK_CREATE)",
            io_error: std::io::Error::from_raw_os_error(libc::EINVAL),
        }))
    }

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
            uprobe_multi: if multi { Ok(()) } else { Err(refused_link()) },
            fork_layout: Ok((24, 44)),
        }
    }

    #[test]
    fn auto_takes_uprobe_multi_where_the_kernel_creates_the_links() {
        let k = kernel("6.12.100+deb12-amd64", true, true);
        assert_eq!(
            k.mechanism(AttachMode::Auto).unwrap(),
            Mechanism::UprobeMulti
        );
        assert_eq!(
            k.mechanism(AttachMode::Multi).unwrap(),
            Mechanism::UprobeMulti
        );
        assert_eq!(k.mechanism(AttachMode::Perf).unwrap(), Mechanism::PerfEvent);
    }

    #[test]
    fn auto_falls_back_to_perf_events_on_6_1_and_5_15() {
        for release in ["6.1.0-50-amd64", "5.15.0-91-generic"] {
            let k = kernel(release, false, true);
            assert_eq!(k.mechanism(AttachMode::Auto).unwrap(), Mechanism::PerfEvent);
            assert_eq!(k.mechanism(AttachMode::Perf).unwrap(), Mechanism::PerfEvent);
            let err = k.mechanism(AttachMode::Multi).unwrap_err();
            assert_eq!(
                crate::errors::chain(&err),
                format!("this kernel ({release}) has no uprobe_multi links (they came in Linux 6.6; use --attach-mode auto or perf): a uprobe_multi link is refused: bpf(BPF_LINK_CREATE): Invalid argument (os error 22)")
            );
        }
    }

    /// The probe itself, against a fake kernel that loads the program and
    /// answers the link with `link_errno` (0: creates it).
    fn probed(link_errno: i32) -> Result<(), Arc<Unavailable>> {
        let _kernel = fake::install(move |call| {
            let Syscall::Bpf { cmd, .. } = call;
            match cmd {
                bpf_cmd::BPF_LINK_CREATE if link_errno != 0 => fake::errno(link_errno),
                _ => fake::fd(),
            }
        });
        multi::probe_support().map_err(Arc::new)
    }

    #[test]
    fn a_kernel_refusing_the_probe_link_with_einval_is_run_with_perf_events() {
        let mut k = kernel("6.1.0-50-amd64", true, true);
        k.uprobe_multi = probed(libc::EINVAL);
        assert_eq!(k.mechanism(AttachMode::Auto).unwrap(), Mechanism::PerfEvent);
        let err = k.mechanism(AttachMode::Multi).unwrap_err();
        assert!(
            matches!(&err, FeatureError::NoUprobeMulti { reason, .. } if matches!(**reason, Unavailable::Link(ref e) if e.raw_os_error() == Some(libc::EINVAL))),
            "{err:?}"
        );
        let report = k.report();
        let (_, multi) = report
            .iter()
            .find(|(what, _)| *what == "uprobe_multi links")
            .unwrap();
        assert_eq!(
            multi,
            "no (a uprobe_multi link is refused: bpf(BPF_LINK_CREATE): Invalid argument (os error 22)): perf-event uprobes are used"
        );
    }

    #[test]
    fn a_kernel_creating_the_probe_links_is_run_with_uprobe_multi() {
        let mut k = kernel("6.12.100+deb12-amd64", false, true);
        k.uprobe_multi = probed(0);
        assert_eq!(
            k.mechanism(AttachMode::Auto).unwrap(),
            Mechanism::UprobeMulti
        );
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
        k.fork_layout = Err(Arc::new(TracefsError::Field {
            path: "X".into(),
            field: "child_pid".into(),
        }));
        assert_eq!(
            crate::errors::chain(&k.check_required().unwrap_err()),
            "this kernel (5.4.0): the process-tree filter cannot follow forks through the sched_process_fork tracepoint: tracepoint format X has no field `child_pid`"
        );
    }
}
