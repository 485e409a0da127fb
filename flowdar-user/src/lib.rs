//! Flowdar: an eBPF tracer for network servers.
//!
//! The crate is a pipeline, one module per stage; data flows one way:
//! `probes` (what to trace) -> `capture` (kernel programs, ring-buffer
//! drain) -> `store` (trace files) -> `analysis` (calls, stats) -> the
//! `cli` that prints them. `server` starts throwaway Apache servers and
//! bounded loopback load for demos and tests.
pub mod analysis;
pub mod capture;
pub mod cli;
pub mod errors;
pub mod experiment;
pub mod import;
pub mod probes;
pub mod render;
pub mod server;
/// The trace file (its own crate, `flowdar-trace`: the bottom floor).
pub use flowdar_trace as store;
pub mod symbols;
pub mod units;
