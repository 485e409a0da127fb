//! The perf-event uprobe path (any kernel with uprobes; the fallback when
//! uprobe_multi links are missing, or `--attach-mode perf`): one aya
//! `UProbe` link per function and program. Each detach waits a grace period.
use aya::{
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
        UProbe,
    },
    Ebpf,
};

use super::{program, Attachment, Closing, Detaching, Links, Side, Strategy};
use crate::{
    capture::{
        sys::{io_reason, ENOTSUPP},
        CaptureError,
    },
    probes::ResolvedProbe,
};

/// Perf-event uprobes beyond which the detach time is worth a refusal:
/// each one's removal waits a grace period under the kernel's
/// `event_mutex` (kernel/trace/trace_event_perf.c, `perf_trace_event_unreg`
/// calls `tracepoint_synchronize_unregister`), so they cannot overlap.
pub const MAX_QUICK_PERF_UPROBES: usize = 400;
/// Seconds one perf-event uprobe's detach takes, for the estimates printed:
/// `full`'s detach over its uprobes on the development VM (BENCHMARKS.md,
/// "Perf-event uprobes"). It varies with the machine and is not measured
/// where Flowdar runs (that would take a grace period per uprobe), so every
/// message that uses it names its source, [`PERF_DETACH_SOURCE`].
pub const PERF_DETACH_SECS_EACH: f64 = 0.113;
/// Where [`PERF_DETACH_SECS_EACH`] comes from, as messages say it.
pub const PERF_DETACH_SOURCE: &str =
    "measured on a 2-core VM: BENCHMARKS.md, \"Perf-event uprobes\"";

/// One aya perf-event link per function and program.
pub(super) struct Perf;

/// aya perf-event links: the program each belongs to (which owns it until
/// detach) and its side.
struct PerfLinks(Vec<(&'static str, Side, UProbeLinkId)>);

impl Links for PerfLinks {
    fn uprobes(&self) -> usize {
        self.0.len()
    }

    fn detach(self: Box<Self>, ebpf: &mut Ebpf) -> Detaching {
        let mut entries: Closing = Vec::new();
        let mut returns: Closing = Vec::new();
        for (name, side, id) in self.0 {
            if let Ok(prog) = program::<UProbe>(ebpf, name) {
                if let Ok(link) = prog.take_link(id) {
                    match side {
                        Side::Entry => entries.push(Box::new(link)),
                        Side::Exit => returns.push(Box::new(link)),
                    }
                }
            }
        }
        Detaching { entries, returns }
    }
}

impl Strategy for Perf {
    fn attach(
        &self,
        ebpf: &mut Ebpf,
        probes: &[ResolvedProbe],
        [entry, exit]: [&'static str; 2],
    ) -> (Attachment, Result<(), CaptureError>) {
        for name in [entry, exit] {
            let loaded = program::<UProbe>(ebpf, name)
                .and_then(|prog| prog.load().map_err(|e| CaptureError::program(name, e)));
            if let Err(e) = loaded {
                let nothing = Attachment {
                    links: Box::new(PerfLinks(Vec::new())),
                    skipped: Vec::new(),
                };
                return (nothing, Err(e));
            }
        }
        let name = |side| match side {
            Side::Entry => entry,
            Side::Exit => exit,
        };
        // The link and unlink functions need the Ebpf in turn: share it.
        let ebpf = std::cell::RefCell::new(ebpf);
        let (links, skipped, result) = attach_each(
            probes,
            &mut |side, p| {
                let point = UProbeAttachPoint {
                    location: UProbeAttachLocation::AbsoluteOffset(p.file_offset),
                    cookie: Some(u64::from(p.id)),
                };
                let mut ebpf = ebpf.borrow_mut();
                let prog: &mut UProbe = program(&mut ebpf, name(side))?;
                prog.attach(point, &p.attach_path, UProbeScope::AllProcesses)
                    .map_err(|source| CaptureError::Attach {
                        function: p.function.clone(),
                        path: p.path.clone(),
                        source: Box::new(source),
                    })
            },
            &mut |side, id| {
                let mut ebpf = ebpf.borrow_mut();
                if let Ok(prog) = program::<UProbe>(&mut ebpf, name(side)) {
                    let _ = prog.detach(id);
                }
            },
        );
        let links = links
            .into_iter()
            .map(|(side, id)| (name(side), side, id))
            .collect();
        let attachment = Attachment {
            links: Box::new(PerfLinks(links)),
            skipped,
        };
        (attachment, result)
    }
}

/// The links made, in order; the skipped functions with why; the error
/// that stopped the attach.
type Made<L> = (
    Vec<(Side, L)>,
    Vec<(String, String)>,
    Result<(), CaptureError>,
);

/// Attaches every probe's return side and then its entry side through
/// `link` (an entry that fails takes its return side back through
/// `unlink`). A probe matched by a pattern that fails is skipped and
/// reported (the kernel refuses some first instructions, e.g. ENOTSUPP); one
/// asked for by name stops the attach.
fn attach_each<L>(
    probes: &[ResolvedProbe],
    link: &mut dyn FnMut(Side, &ResolvedProbe) -> Result<L, CaptureError>,
    unlink: &mut dyn FnMut(Side, L),
) -> Made<L> {
    let mut links = Vec::new();
    let mut skipped = Vec::new();
    for p in probes {
        if p.capture.entry_only {
            match link(Side::Entry, p) {
                Ok(entry) => links.push((Side::Entry, entry)),
                Err(e) if p.optional => skipped.push((p.function.clone(), error_reason(&e))),
                Err(e) => return (links, skipped, Err(e)),
            }
            continue;
        }
        let pair = link(Side::Exit, p).and_then(|exit| match link(Side::Entry, p) {
            Ok(entry) => Ok((exit, entry)),
            Err(e) => {
                unlink(Side::Exit, exit);
                Err(e)
            }
        });
        match pair {
            Ok((exit, entry)) => links.extend([(Side::Exit, exit), (Side::Entry, entry)]),
            Err(e) if p.optional => skipped.push((p.function.clone(), error_reason(&e))),
            Err(e) => return (links, skipped, Err(e)),
        }
    }
    (links, skipped, Ok(()))
}

/// The innermost cause of an attach error, for a compact report.
fn error_reason(e: &CaptureError) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.raw_os_error() == Some(ENOTSUPP) {
                return io_reason(io);
            }
        }
        msg = s.to_string();
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(id: u32, function: &str, optional: bool) -> ResolvedProbe {
        ResolvedProbe::new(flowdar_trace::TraceProbe {
            id,
            function: function.into(),
            path: "/usr/sbin/apache2".into(),
            attach_path: "/usr/sbin/apache2".into(),
            address: 0x1000,
            file_offset: 0x1000,
            capture: Default::default(),
            optional,
            source: None,
            params: Vec::new(),
        })
    }

    /// What aya returns when the kernel will not place a uprobe.
    fn refused(function: &str) -> CaptureError {
        CaptureError::Attach {
            function: function.into(),
            path: "/usr/sbin/apache2".into(),
            source: Box::new(aya::programs::ProgramError::SyscallError(
                aya::sys::SyscallError {
                    call: "perf_event_open",
                    io_error: std::io::Error::from_raw_os_error(ENOTSUPP),
                },
            )),
        }
    }

    /// Runs `attach_each` with a link function that refuses the entry side
    /// of `refuse`, recording every link and unlink in order.
    fn run(probes: &[ResolvedProbe], refuse: &str) -> (Vec<String>, Made<u32>) {
        let log = std::cell::RefCell::new(Vec::new());
        let mut next = 0;
        let made = attach_each(
            probes,
            &mut |side, p| {
                log.borrow_mut()
                    .push(format!("link {side:?} {}", p.function));
                if side == Side::Entry && p.function == refuse {
                    return Err(refused(&p.function));
                }
                next += 1;
                Ok(next)
            },
            &mut |side, id| log.borrow_mut().push(format!("unlink {side:?} #{id}")),
        );
        (log.into_inner(), made)
    }

    #[test]
    fn returns_go_in_before_entries_and_a_refused_pattern_match_is_skipped() {
        let probes = [
            probe(0, "a", false),
            probe(1, "b", true),
            probe(2, "c", false),
        ];
        let (log, (links, skipped, result)) = run(&probes, "b");
        assert_eq!(
            log,
            [
                "link Exit a",
                "link Entry a",
                "link Exit b",
                "link Entry b",
                "unlink Exit #3",
                "link Exit c",
                "link Entry c",
            ]
        );
        assert_eq!(
            links,
            [
                (Side::Exit, 1),
                (Side::Entry, 2),
                (Side::Exit, 4),
                (Side::Entry, 5)
            ]
        );
        assert_eq!(
            skipped,
            [(
                "b".to_string(),
                "ENOTSUPP: the kernel cannot place a uprobe on its first instruction".to_string()
            )]
        );
        assert!(result.is_ok());
    }

    #[test]
    fn a_refused_function_asked_for_by_name_stops_and_returns_what_was_attached() {
        let probes = [
            probe(0, "a", false),
            probe(1, "b", false),
            probe(2, "c", false),
        ];
        let (log, (links, skipped, result)) = run(&probes, "b");
        assert_eq!(log.last().unwrap(), "unlink Exit #3");
        assert_eq!(
            links,
            [(Side::Exit, 1), (Side::Entry, 2)],
            "a's pair, to detach"
        );
        assert!(skipped.is_empty());
        assert!(
            matches!(result, Err(CaptureError::Attach { ref function, .. }) if function == "b")
        );
    }
}
