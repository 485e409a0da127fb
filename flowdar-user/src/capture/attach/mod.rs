//! Attaching a probe table to the loaded call programs: one interface
//! ([`Strategy`]), one file (or folder) per strategy, each returning the
//! links it made as its own type behind [`Links`].
//!
//! - [`perf`]: one perf-event uprobe per function and program, through aya
//!   (any kernel with uprobes; each detach waits a grace period).
//! - [`multi`]: one uprobe_multi link per program and file (Linux 6.6+;
//!   attaching and detaching thousands of functions takes well under a
//!   second). A shim until aya can be upgraded on this toolchain: aya 0.15+
//!   has uprobe_multi itself (`programs/uprobe.rs`) but needs rustc 1.98.
//!
//! Each puts a function's return probe in place before its entry probe, so
//! every recorded entry can see its return, and each skips a function the
//! kernel refuses when a pattern matched it (reported), but fails when it
//! was asked for by name. What they attached is returned even on failure,
//! so that the caller detaches it. A new mechanism is a new module here,
//! one line in [`strategy`] and a [`Mechanism`] variant (with its name, and
//! when `features` picks it).
mod multi;
mod perf;

use aya::Ebpf;

pub use multi::{probe_support, LinkError, MultiError, Unavailable};
pub use perf::{MAX_QUICK_PERF_UPROBES, PERF_DETACH_SECS_EACH, PERF_DETACH_SOURCE};

use super::CaptureError;
use crate::probes::ResolvedProbe;

/// The attach mechanism a run really used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// One uprobe_multi link per program and file (Linux 6.6+).
    UprobeMulti,
    /// One perf-event uprobe per probe and program.
    PerfEvent,
}

impl Mechanism {
    /// Seconds each uprobe's detach waits for a kernel grace period of its
    /// own where the mechanism makes it wait (perf events; uprobe_multi
    /// closes a file's whole link at once), as measured on the development
    /// VM ([`PERF_DETACH_SOURCE`]).
    pub fn detach_secs_each(self) -> Option<f64> {
        match self {
            Self::UprobeMulti => None,
            Self::PerfEvent => Some(PERF_DETACH_SECS_EACH),
        }
    }

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

/// The entry side or the return side of a probed function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::capture) enum Side {
    Entry,
    Exit,
}

/// Links to close, whatever their kind: dropping one closes it.
pub(in crate::capture) type Closing = Vec<Box<dyn Send>>;

/// The links of a detach, apart so that the caller closes the entry links
/// first, then (after in-flight calls have returned) the return links.
pub(in crate::capture) struct Detaching {
    pub entries: Closing,
    pub returns: Closing,
}

/// The uprobes one strategy attached, in its own terms.
pub(in crate::capture) trait Links: Send {
    /// Uprobes attached (entry + exit per function).
    fn uprobes(&self) -> usize;
    /// Gives up the links, entry links and return links apart (some
    /// strategies' links are held by aya's programs in `ebpf`).
    fn detach(self: Box<Self>, ebpf: &mut Ebpf) -> Detaching;
}

/// What a strategy attached: its links, and the functions skipped because
/// the kernel refused them (with why).
pub(in crate::capture) struct Attachment {
    pub links: Box<dyn Links>,
    pub skipped: Vec<(String, String)>,
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

/// The strategy of `mechanism`; `object` is the eBPF object file, for
/// strategies that load their programs themselves.
pub(in crate::capture) fn strategy(
    mechanism: Mechanism,
    object: &'static [u8],
) -> Box<dyn Strategy> {
    match mechanism {
        Mechanism::PerfEvent => Box::new(perf::Perf),
        Mechanism::UprobeMulti => Box::new(multi::Multi { object }),
    }
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
