//! Flowdar's lab: throwaway servers, clients and slow-HTTP attacks on hosts
//! of their own, and DoS experiments that record, compare and report them.
//!
//! - [`server`]: a throwaway Apache, the load and attack clients, network
//!   namespaces for the client and attacker hosts, and the rule of which
//!   addresses traffic may go to.
//! - [`experiment`]: the experiment spec, its run (variants, phases, the
//!   zoom) and its report.
//! - [`tracer`]: what the lab needs from a tracer. Recording is not the
//!   lab's: the CLI hands it one (flowdar-user's capture).
pub mod experiment;
pub mod server;
pub mod tracer;

pub use tracer::{Recorded, Recording, Selection, Tracer, TracerError};

/// An error and its causes on one line (for failures the lab reports
/// rather than returns: a client that could not run).
pub use flowdar_trace::text::one_line;
