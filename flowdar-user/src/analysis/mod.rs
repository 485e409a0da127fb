//! Analysis on trace files alone (no root, no kernel): pairing entries and
//! exits into calls per thread, and per-function statistics.
mod calls;
mod stats;

pub use calls::{Call, CallPairer, PairingCounts};
pub use stats::{FunctionStats, Stats};
