//! DoS experiments in one command: a server, phases of load with and
//! without a slow-HTTP attack, each phase recorded to its own trace, then
//! the attack phase diffed against the first and reported.
mod report;
mod run;
mod spec;

pub use report::{write as write_report, Report};
pub use run::{run, PhaseResult, RunOptions};
pub use spec::{AttackSpec, Load, Phase, ServerSpec, Spec, DEFAULT_SPEC, SPEC_VERSION};
