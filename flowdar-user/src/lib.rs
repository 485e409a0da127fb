//! Flowdar: an eBPF tracer for network servers.
//!
//! This crate is the tracer and its command line: `symbols` (ELF, DWARF)
//! -> `probes` (what to trace, resolved to file offsets) -> `capture`
//! (kernel programs, attach, ring-buffer drain, trace writing), `import`
//! (uftrace traces), and the `cli` on top. The stages after capture are
//! crates of their own, re-exported here under their old paths:
//! `flowdar-trace` (`store`: the trace file), `flowdar-analysis`
//! (`analysis`, `render`, `units`) and `flowdar-lab` (`server`,
//! `experiment`: throwaway servers, load, attacks and DoS experiments,
//! which record through the `Tracer` the CLI hands them).
pub mod capture;
#[expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the CLI is where Flowdar prints: the library returns values and errors"
)]
pub mod cli;
pub mod errors;
pub mod import;
pub mod otlp;
pub mod probes;
/// Analysis and pictures of traces (their own crate, `flowdar-analysis`).
pub use flowdar_analysis as analysis;
pub use flowdar_analysis::{render, units};
/// Throwaway servers, load, attacks and experiments (`flowdar-lab`).
pub use flowdar_lab::{experiment, server};
/// The trace file (its own crate, `flowdar-trace`: the bottom floor).
pub use flowdar_trace as store;
pub mod symbols;
