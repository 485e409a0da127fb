//! Recordings of other tracers turned into Flowdar traces, so that `stats`,
//! `diff`, `render` and `export` read them unchanged. One sub-module per
//! tool; each parses the tool's own files and writes through
//! [`crate::store::TraceWriter`], never through the capture stage.
pub mod uftrace;
