//! DoS experiments in one command: a lab of client and attacker hosts, a
//! server per variant (server settings compared side by side), phases of
//! load with and without a slow-HTTP attack, each phase recorded to its own
//! trace, then the attack phase diffed against the first and reported.
mod error;
mod held;
mod phase;
mod progress;
mod report;
mod results;
mod run;
mod setup;
mod spec;
mod zoom;

pub use error::ExperimentError;
pub use progress::Progress;
pub use report::{write as write_report, Report};
pub use results::{
    CallCost, Discovery, Dropped, Hosts, Level, Outcome, PhaseResult, Row, Untraced, VariantResult,
    Zoom,
};
pub use run::{run, RunOptions};
pub use spec::{
    AttackSpec, LabSpec, Load, Phase, ServerSpec, Spec, SpecError, Variant, DEFAULT_SPEC, H2_SPECS,
    SPEC_VERSION,
};
pub use zoom::ZoomOptions;
