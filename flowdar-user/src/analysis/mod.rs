//! Analysis on trace files alone (no root, no kernel): pairing entries and
//! exits into calls per thread, per-function statistics, Apache sessions
//! and their clients,
//! hand-offs between threads, simplification and run-to-run diffs.
mod calls;
mod calltree;
mod clients;
mod diff;
mod flows;
mod live;
mod scan;
mod sessions;
mod simplify;
mod stats;

pub use calls::{Call, CallPairer, PairingCounts};
pub use calltree::CallTree;
pub use clients::{by_client, ClientBook, ClientRow};
pub use diff::{diff, mann_whitney_p, DiffRow};
pub use flows::{Flow, FlowTracker, ThreadPair};
pub use live::{AlertRule, Interval, LiveView, BLOCKED_BEFORE_ATTACH};
pub use scan::{scan, Scanned};
pub use sessions::{sessions_of, Session, SessionTracker, SessionsError};
pub use simplify::{simplify, SimplifyOptions, SimplifyReport};
pub use stats::{FunctionStats, Stats};
