//! Zooming in: from "this function is slower under attack" to the chain of
//! callees that explains it, at bounded cost.
//!
//! 1. **Discovery**: one short window with a wide probe set (`apache:full`)
//!    under the normal load records the dynamic call tree (who calls whom,
//!    how often per request). Hooks, filters and bucket types are called
//!    through pointers, so only a dynamic tree sees them. The window costs
//!    a second or two of degraded service, reported on its own.
//! 2. **Levels**: each level probes what the tree has below the chain's
//!    current tail (up to [`MAX_DEPTH`] calls down), within an overhead
//!    budget, runs the spec's first and last phases with that set (each at
//!    most [`ZoomOptions::max_phase`] long), and diffs them. Significant callees extend the chain; the next level
//!    starts from the new tail. It stops at a leaf, when nothing below the
//!    tail is significant, or after the levels asked for.
//!
//! **Budget**: a probed call (an entry and a return: two uprobe hits) costs
//! a roughly fixed share of a request's work, so a set costs its calls per
//! request times that share. The share comes from level 0 (the spec's
//! profile against the untraced run) when level 0 probes enough calls per
//! request to measure it, and is never taken below [`PRIOR_COST_PER_CALL`].
//! Callers go in before their callees, and within a depth the functions
//! whose calls take longest: time per call is what a probe can explain per
//! unit of cost, so the hot short functions (`apr_pool_*`, `apr_table_*`)
//! are the ones dropped. A function that does not fit is skipped for
//! cheaper ones deeper down (the nearest probed caller stands in for it in
//! the tree), and every drop is reported. When nothing probed below a tail
//! changed, the next level probes the tail's functions not tried yet.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use flowdar_analysis::{diff, CallTree, DiffRow};

use super::{
    error::{create_dir, ExperimentError, Result},
    phase::{drive_client, run_phase, start_attack, Target},
    progress::Progress,
    results::{CallCost, Discovery, Level, PhaseResult, Row, Zoom},
    spec::Phase,
};
use crate::tracer::Selection;

mod cost;
mod walk;
use cost::{calls_per_request, cost_per_call, normal_functions, ratio};
use walk::Walk;

/// How far below the tail one level looks.
pub const MAX_DEPTH: usize = 3;
/// The smallest share of a request's work assumed per probed call: what
/// BENCHMARKS.md row b's `request` and `io` profiles lost per probed call
/// on the development VM (row h gives their calls per request). Not
/// measured where Flowdar runs: the report says when the budget used it
/// ([`PRIOR_SOURCE`]).
pub const PRIOR_COST_PER_CALL: f64 = 0.05;
/// Where [`PRIOR_COST_PER_CALL`] comes from, as the report says it.
pub const PRIOR_SOURCE: &str = "the prior measured on a 2-core VM: BENCHMARKS.md row b";
/// Level 0 calibrates the cost only with at least this many calls per
/// request: fewer move throughput less than run-to-run noise does.
const CALIBRATION_CALLS: f64 = 3.0;
/// The wide set of the discovery windows.
pub const DISCOVERY_PROFILE: &str = "apache:full";

/// What `--zoom` asks for.
#[derive(Debug, Clone, Copy)]
pub struct ZoomOptions {
    /// Levels after level 0 (the spec's own profile).
    pub levels: usize,
    /// Overhead allowed per level, in percent of untraced throughput.
    pub budget_pct: f64,
    /// The discovery window's length.
    pub window: Duration,
    /// Each level's phases are cut to this: stuck calls show within
    /// seconds, and a level reruns two phases.
    pub max_phase: Duration,
}

impl Default for ZoomOptions {
    fn default() -> Self {
        Self {
            levels: 6,
            budget_pct: 20.0,
            window: Duration::from_secs(1),
            max_phase: Duration::from_secs(12),
        }
    }
}

/// Where the zoom runs: the variant's server, its first (normal) and last
/// (attack) phases and their level-0 results.
pub(super) struct Ground<'a> {
    pub target: Target<'a>,
    pub normal: (&'a Phase, &'a PhaseResult),
    pub attack: (&'a Phase, &'a PhaseResult),
    pub untraced_rps: Option<f64>,
    /// Phase lengths, as the experiment ran them.
    pub durations: (Duration, Duration),
}

pub(super) fn run(
    ground: &Ground<'_>,
    dir: &Path,
    opts: &ZoomOptions,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<Zoom> {
    create_dir(dir)?;
    let (level0, rows0, budget, call_cost) = level_zero(ground, opts)?;
    let mut levels = vec![level0];
    let significant = slower(&rows0);
    if significant.is_empty() {
        let stopped = "nothing in the spec's profile got significantly slower under attack";
        return finish(
            dir,
            Zoom {
                levels,
                chain: Vec::new(),
                discovery: None,
                attack_discovery: None,
                stopped: stopped.into(),
                call_cost,
            },
        );
    }
    let discovery = discover(ground, dir, opts.window, false, progress)?;
    let attack_discovery = discover(ground, dir, opts.window, true, progress)?;
    let mut walk = Walk::new(&discovery, &attack_discovery, &significant, budget)?;
    let mut stopped = format!("{} levels done", opts.levels);
    for level in 1..=opts.levels {
        let (set, dropped, estimate) = match walk.next_set() {
            Ok(next) => next,
            Err(why) => {
                stopped = why;
                break;
            }
        };
        progress(&Progress::ZoomLevel {
            level,
            tail: walk.tail(),
            functions: set.len(),
            dropped: dropped.len(),
        });
        let results = run_level(ground, &walk.shape, &set, level, dir, opts, progress)?;
        let rows = diff(&results[0].trace, &results[1].trace)?;
        walk.advance(&rows);
        levels.push(Level {
            level,
            functions: set,
            throughput_ratio: ratio(&results[0], ground.untraced_rps),
            estimated_calls_per_request: estimate,
            budget_calls_per_request: budget,
            rows: rows.iter().map(Row::from).collect(),
            dropped,
            traces: [results[0].trace.clone(), results[1].trace.clone()],
        });
    }
    finish(
        dir,
        Zoom {
            levels,
            chain: walk.chain,
            discovery: Some(discovery),
            attack_discovery: Some(attack_discovery),
            stopped,
            call_cost,
        },
    )
}

/// Level 0: the spec's own profile, as the experiment's phases measured
/// it; its diff rows; and the budget in probed calls per request that its
/// observer effect allows the levels below, with the per-call cost it
/// rests on.
fn level_zero(
    ground: &Ground<'_>,
    opts: &ZoomOptions,
) -> Result<(Level, Vec<DiffRow>, f64, CallCost)> {
    let (normal, attack) = (ground.normal.1, ground.attack.1);
    let rows0 = diff(&normal.trace, &attack.trace)?;
    let ratio0 = ratio(normal, ground.untraced_rps);
    let cost = cost_per_call(normal, ratio0);
    let budget = (1.0 / (1.0 - opts.budget_pct / 100.0) - 1.0) / cost.share;
    let level = Level {
        level: 0,
        functions: normal_functions(&rows0),
        throughput_ratio: ratio0,
        estimated_calls_per_request: calls_per_request(normal),
        budget_calls_per_request: budget,
        rows: rows0.iter().map(Row::from).collect(),
        dropped: Vec::new(),
        traces: [normal.trace.clone(), attack.trace.clone()],
    };
    Ok((level, rows0, budget, cost))
}

/// The rows that got significantly slower, most affected first.
fn slower(rows: &[DiffRow]) -> Vec<&DiffRow> {
    let mut significant: Vec<&DiffRow> = rows
        .iter()
        .filter(|r| r.significant && r.ratio > 1.0)
        .collect();
    significant.sort_by(|a, b| b.impact_ns_per_s.total_cmp(&a.impact_ns_per_s));
    significant
}

/// One level: the spec's first and last phases again (each at most
/// `opts.max_phase`), with `set` probed, into `dir/level-N`.
fn run_level(
    ground: &Ground<'_>,
    shape: &CallTree,
    set: &[String],
    level: usize,
    dir: &Path,
    opts: &ZoomOptions,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<Vec<PhaseResult>> {
    let functions: Vec<(PathBuf, String)> = set
        .iter()
        .filter_map(|f| Some((shape.objects.get(f)?.clone(), f.clone())))
        .collect();
    let resolved = ground
        .target
        .tracer
        .resolve(ground.target.pid, Selection::Functions(&functions))?;
    let target = Target {
        probes: &resolved,
        ..ground.target
    };
    let ldir = dir.join(format!("level-{level}"));
    create_dir(&ldir)?;
    let label = format!("zoom {level}");
    let mut results = Vec::new();
    for ((phase, _), duration) in [
        (ground.normal, ground.durations.0.min(opts.max_phase)),
        (ground.attack, ground.durations.1.min(opts.max_phase)),
    ] {
        progress(&Progress::PhaseStart {
            variant: &label,
            index: results.len(),
            of: 2,
            phase,
            duration,
            lab: target.lab,
        });
        let trace = ldir.join(format!("{}.flowdar", phase.name));
        let r = run_phase(&target, phase, duration, &trace)?;
        progress(&Progress::PhaseDone(&r));
        results.push(r);
    }
    Ok(results)
}

/// Writes `DIR/zoom.json`.
fn finish(dir: &Path, zoom: Zoom) -> Result<Zoom> {
    let path = dir.join("zoom.json");
    flowdar_trace::private::write(&path, serde_json::to_string_pretty(&zoom)?)
        .map_err(|source| ExperimentError::Write { path, source })?;
    Ok(zoom)
}

/// The discovery window: the wide set for `window`, under the normal load
/// (`attack` false: who calls whom, how often per request, how long) or
/// under the attack alone (where the attack's connections hold workers:
/// the calls still running when the window closes).
fn discover(
    ground: &Ground<'_>,
    dir: &Path,
    window: Duration,
    attack: bool,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<Discovery> {
    let t = &ground.target;
    let resolved = t.tracer.resolve(
        t.pid,
        Selection::Named {
            profiles: &[DISCOVERY_PROFILE.into()],
            probes: &[],
        },
    )?;
    t.tracer
        .mechanism(resolved.len())
        .map_err(ExperimentError::tracer(format!(
            "the zoom's discovery window attaches {DISCOVERY_PROFILE} ({} functions)",
            resolved.len()
        )))?;
    let under = if attack {
        "the attack"
    } else {
        "the normal load"
    };
    progress(&Progress::Discovery {
        profile: DISCOVERY_PROFILE,
        functions: resolved.len(),
        window,
        under,
    });
    let refused = |m: &str| ExperimentError::Refused(m.into());
    let load = ground.normal.0.load.as_ref();
    let load = load.ok_or_else(|| refused("the zoom needs a normal phase with a load"))?;
    let attack_spec = if attack {
        let spec = ground.attack.0.attack.as_ref();
        Some(spec.ok_or_else(|| refused("the zoom needs an attack in the spec's last phase"))?)
    } else {
        None
    };
    let trace = dir.join(if attack {
        "discovery-attack.flowdar"
    } else {
        "discovery.flowdar"
    });
    let functions = resolved.len();
    let recording = t.tracer.start(t.pid, &resolved, &trace)?;
    let attach = recording.attach_time();
    // Under attack, the attack starts once the probes are in place: the
    // window sees its connections take the workers, from the first call
    // of each to where it is stuck when the window closes.
    let mut running = None;
    let client = if let Some(spec) = attack_spec {
        start_attack(t, spec, window + Duration::from_secs(2)).map(|a| {
            running = Some(a);
            std::thread::sleep(window);
            None
        })
    } else {
        drive_client(t, load, window).and_then(|(client, client_error)| {
            client.map(Some).ok_or_else(|| {
                ExperimentError::Refused(format!(
                    "no client figures for the discovery window: {}",
                    client_error.unwrap_or_default()
                ))
            })
        })
    };
    // Stopped whatever happened: detached in order, the trace finished.
    let summary = recording.stop("discovery window over");
    let client = client?;
    let summary = summary?;
    if let Some(mut a) = running {
        a.stop();
        // Let the server release the attack's connections before what follows.
        std::thread::sleep(Duration::from_secs(2));
    }
    let d = Discovery {
        under: under.into(),
        functions: functions - summary.refused,
        refused: summary.refused,
        window_s: window.as_secs_f64(),
        attach_s: attach.as_secs_f64(),
        detach_s: summary.detach_time.as_secs_f64(),
        degraded_s: (attach + window + summary.detach_time).as_secs_f64(),
        requests_per_s: client.as_ref().map(|c| c.requests_per_s),
        requests: client.as_ref().map_or(0, |c| c.requests),
        trace,
    };
    progress(&Progress::DiscoveryDone(&d));
    Ok(d)
}
