//! What the lab asks of a tracer. The lab starts servers, drives load and
//! attacks, and reads the traces; recording belongs to the tracer
//! (`flowdar-user`'s capture implements [`Tracer`]), so the lab builds and
//! its logic is tested without the kernel side.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use flowdar_trace::TraceProbe;

/// Why the tracer could not do what was asked (its own error, kept whole
/// as the source of the lab's).
pub type TracerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Which functions to probe.
#[derive(Debug, Clone, Copy)]
pub enum Selection<'a> {
    /// Built-in profiles and probe specs, as `flowdar record` takes them.
    Named {
        profiles: &'a [String],
        probes: &'a [String],
    },
    /// Functions in the object files that define them (the zoom's levels),
    /// each recorded with its first argument.
    Functions(&'a [(PathBuf, String)]),
}

/// A tracer that records a running server into a trace file.
pub trait Tracer {
    /// Refuses early what could not be recorded at all (privileges, the
    /// kernel), before any server starts; `pid` when the server runs
    /// already.
    fn check(&self, pid: Option<u32>) -> Result<(), TracerError>;
    /// Whether sets of thousands of functions may be attached (the zoom's
    /// discovery windows): they attach and detach in about a second, or
    /// the user accepted minutes of detaching; an error when the kernel
    /// cannot be asked.
    fn allows_wide_sets(&self) -> Result<bool, TracerError>;
    /// The probes of `selection` in process `pid`.
    fn resolve(&self, pid: u32, selection: Selection<'_>) -> Result<Vec<TraceProbe>, TracerError>;
    /// How `functions` functions would be attached (its name), or why they
    /// cannot be.
    fn mechanism(&self, functions: usize) -> Result<String, TracerError>;
    /// Starts recording `probes` in `pid`'s process tree into `trace`.
    fn start(
        &self,
        pid: u32,
        probes: &[TraceProbe],
        trace: &Path,
    ) -> Result<Box<dyn Recording>, TracerError>;
}

/// A recording in progress.
pub trait Recording {
    /// From the start to the probes in place.
    fn attach_time(&self) -> Duration;
    /// Detaches, finishes the trace and says what it holds.
    fn stop(self: Box<Self>, reason: &str) -> Result<Recorded, TracerError>;
}

/// What a finished recording holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub events: u64,
    /// Events lost, in the kernel and in user space.
    pub lost: u64,
    /// How the probes were attached (`uprobe_multi`, `perf`).
    pub mechanism: String,
    /// Functions the kernel refused (skipped and reported).
    pub refused: usize,
    pub detach_time: Duration,
}
