//! Attaching a probe table to the loaded call programs: one interface
//! ([`Strategy`]), two strategies, each returning what it attached.
//!
//! - [`perf`]: one perf-event uprobe per function and program, through aya
//!   (any kernel with uprobes; each detach waits a grace period).
//! - [`multi`]: one uprobe_multi link per program and file (Linux 6.6+;
//!   attaching and detaching thousands of functions takes well under a
//!   second). A shim until aya can be upgraded on this toolchain: aya 0.15+
//!   has uprobe_multi itself (`programs/uprobe.rs`) but needs rustc 1.98.
//!
//! Both put a function's return probe in place before its entry probe, so
//! every recorded entry can see its return, and both skip a function the
//! kernel refuses when a pattern matched it (reported), but fail when it
//! was asked for by name. What they attached is returned even on failure,
//! so that the caller detaches it.
mod multi;
mod perf;

use std::os::fd::OwnedFd;

use aya::{programs::uprobe::UProbeLinkId, Ebpf};

pub use multi::{probe_support, MultiError};

use super::CaptureError;
use crate::probes::ResolvedProbe;

/// The entry side or the return side of a probed function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::capture) enum Side {
    Entry,
    Exit,
}

/// The attached uprobes, by mechanism.
pub(in crate::capture) enum Links {
    /// aya perf-event links: the program each belongs to and its side.
    Perf(Vec<(&'static str, Side, UProbeLinkId)>),
    /// uprobe_multi link fds (entry and return links apart, so that
    /// entries can go first on detach) and the programs they hold.
    Multi {
        entries: Vec<OwnedFd>,
        exits: Vec<OwnedFd>,
        programs: Vec<OwnedFd>,
    },
}

/// What a strategy attached: the links, the uprobes they hold, and the
/// functions skipped because the kernel refused them (with why).
pub(in crate::capture) struct Attachment {
    pub links: Links,
    pub uprobes: usize,
    pub skipped: Vec<(String, String)>,
}

impl Attachment {
    fn empty(links: Links) -> Self {
        Self {
            links,
            uprobes: 0,
            skipped: Vec::new(),
        }
    }
}

/// Links to close, whatever their kind.
pub(in crate::capture) type Closing = Vec<Box<dyn Send>>;

impl Links {
    /// The entry links and the return links, to be closed in that order.
    pub fn into_closing(self, ebpf: &mut Ebpf) -> (Closing, Closing) {
        match self {
            Links::Multi {
                entries,
                exits,
                programs,
            } => {
                let boxed = |v: Vec<OwnedFd>| -> Closing {
                    v.into_iter()
                        .map(|l| Box::new(l) as Box<dyn Send>)
                        .collect()
                };
                let out = (boxed(entries), boxed(exits));
                drop(programs);
                out
            }
            Links::Perf(links) => {
                let mut entries: Closing = Vec::new();
                let mut exits: Closing = Vec::new();
                for (name, side, id) in links {
                    if let Ok(prog) = program::<aya::programs::UProbe>(ebpf, name) {
                        if let Ok(link) = prog.take_link(id) {
                            match side {
                                Side::Entry => entries.push(Box::new(link)),
                                Side::Exit => exits.push(Box::new(link)),
                            }
                        }
                    }
                }
                (entries, exits)
            }
        }
    }
}

/// How a probe table gets attached to the `[entry, exit]` programs.
pub(in crate::capture) trait Strategy {
    /// Attaches `probes`; returns what was attached, with the first error
    /// that stopped it (if any).
    fn attach(
        &self,
        ebpf: &mut Ebpf,
        probes: &[ResolvedProbe],
        programs: [&'static str; 2],
    ) -> (Attachment, Result<(), CaptureError>);
}

/// Perf-event uprobes.
pub(in crate::capture) fn perf() -> Box<dyn Strategy> {
    Box::new(perf::Perf)
}

/// uprobe_multi links; `object` is the eBPF object file, which the shim
/// loads its programs from itself.
pub(in crate::capture) fn multi(object: &'static [u8]) -> Box<dyn Strategy> {
    Box::new(multi::Multi { object })
}

/// Program `name` of `ebpf` as its kind `T`.
pub(in crate::capture) fn program<'a, T>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut T, CaptureError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or(CaptureError::MissingProgram(name))?;
    prog.try_into().map_err(|e| CaptureError::program(name, e))
}
