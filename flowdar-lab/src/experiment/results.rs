//! What an experiment found, as the report and `experiment.json` /
//! `zoom.json` read it: plain data, filled in by the run and the zoom.
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use serde::Serialize;

use flowdar_analysis::DiffRow;

use crate::server::ClientReport;

/// What one phase did, client and tracer side.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    pub name: String,
    pub trace: PathBuf,
    pub duration_s: f64,
    pub client: Option<ClientReport>,
    /// Why the client produced no report, if it did not.
    pub client_error: Option<String>,
    pub attack: Option<String>,
    /// What the TLS and HTTP/2 attack client says it sent.
    pub attack_report: Option<crate::server::AttackReport>,
    pub events: u64,
    pub lost: u64,
    /// How the phase's uprobes were attached (`uprobe_multi`, `perf`).
    pub attach_mode: String,
}

/// One variant's run: its server settings and its phases.
#[derive(Debug, Clone, Serialize)]
pub struct VariantResult {
    pub name: String,
    pub config: String,
    pub server_pid: u32,
    /// The normal load once more with nothing attached: what the phases'
    /// throughput is measured against to state the observer effect.
    pub untraced: Option<Untraced>,
    pub phases: Vec<PhaseResult>,
}

/// The untraced run of the normal load (first phase with a load and no
/// attack), same client settings and length, no probe attached.
#[derive(Debug, Clone, Serialize)]
pub struct Untraced {
    /// The phase whose load it repeats.
    pub phase: String,
    pub client: Option<ClientReport>,
    pub client_error: Option<String>,
}

impl VariantResult {
    /// Traced throughput of `phase` over the untraced run's, when both exist.
    pub fn throughput_ratio(&self, phase: &PhaseResult) -> Option<f64> {
        let untraced = self.untraced.as_ref()?.client.as_ref()?.requests_per_s;
        let traced = phase.client.as_ref()?.requests_per_s;
        (untraced > 0.0).then(|| traced / untraced)
    }
}

/// Who sent what to where.
#[derive(Debug, Clone, Serialize)]
pub struct Hosts {
    /// The address the client and the attacker sent to.
    pub server: SocketAddr,
    /// The legitimate client's address and namespace (None: this host).
    pub client: Option<(IpAddr, String)>,
    pub attacker: Option<(IpAddr, String)>,
    /// Why clients ran on this host, when the lab was asked for.
    pub note: Option<String>,
}

/// Everything the report needs.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub variants: Vec<VariantResult>,
    pub hosts: Hosts,
    /// The first variant's zoom, when asked for...
    pub zoom: Option<Zoom>,
    /// ...or why it failed.
    pub zoom_error: Option<String>,
}

/// `zoom.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Zoom {
    pub levels: Vec<Level>,
    /// Outermost first; every link significant in the level that probed it.
    pub chain: Vec<String>,
    /// The windows (none when level 0 found nothing to zoom into).
    pub discovery: Option<Discovery>,
    pub attack_discovery: Option<Discovery>,
    /// Why the zoom stopped.
    pub stopped: String,
    /// What the budget took a probed call to cost.
    pub call_cost: CallCost,
}

/// The share of a request's work one probed call was taken to cost, and
/// where that figure comes from: measured by level 0, or the prior from
/// the development VM.
#[derive(Debug, Clone, Serialize)]
pub struct CallCost {
    pub share: f64,
    /// One line, e.g. "measured here by level 0 (7.1 probed calls per
    /// request, 0.67x untraced)".
    pub from: String,
}

/// One level's set and what its diff said.
#[derive(Debug, Clone, Serialize)]
pub struct Level {
    pub level: usize,
    pub functions: Vec<String>,
    /// Traced normal-phase throughput over the untraced run's (the one
    /// measured again beside the level when there is one).
    pub throughput_ratio: Option<f64>,
    /// The untraced load measured again beside this level (requests/s),
    /// when its normal phase looked over budget against the experiment's
    /// baseline; its ratios are against it.
    pub untraced_again_rps: Option<f64>,
    /// Why the level's normal phase stayed over its budget, when it did
    /// (measured against the baseline beside it).
    pub over_budget: Option<RerunsEnded>,
    /// The set's estimated probed calls per request, and the budget's.
    pub estimated_calls_per_request: f64,
    pub budget_calls_per_request: f64,
    /// Diff rows of the level's functions (`ratio` null: infinite, never
    /// called in the normal phase).
    pub rows: Vec<Row>,
    /// Left out for the budget, hottest first.
    pub dropped: Vec<Dropped>,
    /// Normal phases run again with fewer functions, because the one
    /// before served less than the budget allows (what each measured).
    pub reruns: Vec<Rerun>,
    pub traces: [PathBuf; 2],
}

/// Why a level kept a normal phase that served less than its budget
/// allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RerunsEnded {
    /// A rerun with fewer functions served no more than the run before it
    /// (by more than the noise): the shortfall is not the probes'.
    Noise,
    /// The reruns allowed were spent.
    MaxReruns,
    /// One function left: nothing to drop.
    OneFunction,
    /// The refitted set was the same, or empty: nothing to learn from.
    NothingToDrop,
}

impl RerunsEnded {
    /// As the report says it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Noise => "a rerun with fewer functions served no more than the run before it: the shortfall is noise, not the probes' cost, and the budget stands",
            Self::MaxReruns => "the two reruns allowed were spent",
            Self::OneFunction => "one function was left, nothing to drop",
            Self::NothingToDrop => "refitting the set by what it measured dropped nothing (or everything)",
        }
    }
}

/// A level's normal phase that served less than the budget allows, and
/// what it measured: the figures the smaller set after it was chosen by.
#[derive(Debug, Clone, Serialize)]
pub struct Rerun {
    pub functions: usize,
    pub throughput_ratio: f64,
    /// Entries recorded and lost, over requests served.
    pub measured_calls_per_request: f64,
    /// The share of a request's work one probed call took here.
    pub cost_per_call: f64,
    /// The calls per request that cost allows within the budget.
    pub budget_calls_per_request: f64,
    /// The walk's budget before this rerun lowered it (restored when the
    /// rerun served no more).
    #[serde(skip)]
    pub walk_budget: f64,
    pub trace: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub function: String,
    pub ratio: f64,
    pub significant: bool,
    pub base_mean_ns: u64,
    pub test_mean_ns: u64,
    pub in_flight: u64,
    pub p_value: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Dropped {
    pub function: String,
    pub calls_per_request: f64,
    /// Its mean duration in the discovery window (the value it was ranked by).
    pub mean_ns: u64,
}

/// A discovery window and what it cost.
#[derive(Debug, Clone, Serialize)]
pub struct Discovery {
    /// `the normal load` or `the attack`.
    pub under: String,
    /// Functions attached (the kernel refused `refused` more, skipped).
    pub functions: usize,
    pub refused: usize,
    pub window_s: f64,
    pub attach_s: f64,
    pub detach_s: f64,
    /// Attach + window + detach: the time the server ran probed this widely.
    pub degraded_s: f64,
    /// The legitimate client's throughput during the window (none runs
    /// during the attack's window).
    pub requests_per_s: Option<f64>,
    pub requests: u64,
    pub trace: PathBuf,
}

impl From<&DiffRow> for Row {
    fn from(r: &DiffRow) -> Self {
        Self {
            function: r.function.clone(),
            ratio: r.ratio,
            significant: r.significant,
            base_mean_ns: r.base_mean_ns,
            test_mean_ns: r.test_mean_ns,
            in_flight: r.in_flight,
            p_value: r.p_value,
        }
    }
}
