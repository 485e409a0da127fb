//! Flowdar's analysis and pictures, on trace files alone: no root, no
//! kernel, no nightly toolchain (it depends on `flowdar-trace` and
//! `flowdar-common` only).
//!
//! - At the crate root, the analysis: pairing entries and exits into calls
//!   per thread, per-function statistics, Apache sessions and their
//!   clients, hand-offs between threads, HTTP/2 streams, simplification, run-to-run diffs,
//!   and the live view behind `flowdar top`.
//! - [`render`]: sequence diagrams, flame graphs, Perfetto and table exports.
//! - [`units`]: durations and sizes as people read them.
#![deny(clippy::unwrap_used, clippy::expect_used)]
mod addresses;
mod calls;
mod calltree;
mod clients;
mod diff;
mod flows;
mod h2;
mod inside;
mod lean;
mod live;
mod phases;
mod reads;
mod scan;
mod sessions;
mod simplify;
mod spans;
mod stats;
mod streams;
mod tls;

pub mod render;
pub mod units;

pub use addresses::ClientBook;
pub use calls::{Call, CallPairer, PairingCounts};
pub use calltree::CallTree;
pub use clients::{by_client, ClientRow};
pub use diff::{backend_verdict, diff, mann_whitney_p, DiffRow};
pub use flows::{Flow, FlowTracker, ThreadPair};
pub use h2::{h2_streams, H2Streams};
pub use inside::{
    held_per_second, inside_per_second, read_waits_per_second, InsidePerSecond, READ_WAITS,
};
pub use lean::{is_lean, LEAN_LIMITS};
pub use live::{AlertRule, BlockedWorker, Interval, LiveView, BLOCKED_BEFORE_ATTACH};
pub use phases::Phase;
pub use reads::{ReadWait, ReadWaits};
pub use scan::{scan, Scanned};
pub use sessions::{sessions_of, Session, SessionTracker, SessionsError, LEAN_REQUEST};
pub use simplify::{simplify, SimplifyOptions, SimplifyReport};
pub use spans::{spans_of, ChildSpan, RequestSpan, SpanBuilder, SpanKind, SpansError, TraceParent};
pub use stats::{FunctionStats, Stats};
pub use streams::{StreamFlow, StreamTracker};
