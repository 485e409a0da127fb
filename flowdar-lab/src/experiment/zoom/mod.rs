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
//!
//! **Measured, beside the level**: a level whose normal phase serves less
//! than its budget allows first measures the untraced load again (the
//! experiment's baseline is minutes old, and throughput drifts), then
//! reruns with a refitted set; a rerun that serves no more than the noise
//! above the run before ends the reruns and gives the budget back.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use flowdar_analysis::{diff, CallTree, DiffRow};

use super::{
    error::{create_dir, ExperimentError, Result},
    phase::{drive_client, run_phase, run_untraced_load, start_attack, Target},
    progress::Progress,
    results::{CallCost, Discovery, Dropped, Level, PhaseResult, Rerun, RerunsEnded, Row, Zoom},
    spec::Phase,
};
use crate::tracer::Selection;

mod cost;
mod walk;
use cost::{calls_per_request, cost_per_call, measured_per_request, normal_functions, ratio};
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
/// A level's normal phase is rerun with fewer functions when it served
/// more than this below what the budget allows (run-to-run noise of the
/// untraced ratio on the development VM: about 0.05).
const RERUN_MARGIN: f64 = 0.05;
/// Reruns of a level's normal phase, at most.
const MAX_RERUNS: usize = 2;
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
        let run = LevelRun::new(ground, opts, dir, level)?;
        let fitted = normal_within_budget(&run, &mut walk, set, progress)?;
        let mut dropped = dropped;
        dropped.extend(fitted.dropped);
        let (set, normal) = (fitted.set, fitted.normal);
        let attack = run.phase(&walk.shape, &set, Which::Attack, progress)?;
        let rows = diff(&normal.trace, &attack.trace)?;
        walk.advance(&rows);
        levels.push(Level {
            level,
            functions: set,
            throughput_ratio: ratio(&normal, fitted.untraced_rps),
            untraced_again_rps: fitted.untraced_again_rps,
            over_budget: fitted.ended,
            estimated_calls_per_request: fitted.estimate.unwrap_or(estimate),
            budget_calls_per_request: budget,
            rows: rows.iter().map(Row::from).collect(),
            dropped,
            reruns: fitted.reruns,
            traces: [normal.trace.clone(), attack.trace.clone()],
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
        untraced_again_rps: None,
        over_budget: None,
        estimated_calls_per_request: calls_per_request(normal),
        budget_calls_per_request: budget,
        rows: rows0.iter().map(Row::from).collect(),
        dropped: Vec::new(),
        reruns: Vec::new(),
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

/// A level's normal phase, run again with fewer functions while it
/// serves less than the budget allows: the estimate it was chosen by came
/// from the discovery window, under another load and a wider set, and the
/// cost per call from level 0 or the prior; the phase measures both.
struct Fitted {
    set: Vec<String>,
    normal: PhaseResult,
    /// Left out by the reruns.
    dropped: Vec<Dropped>,
    /// The last set's calls per request as measured, when it was refitted.
    estimate: Option<f64>,
    reruns: Vec<Rerun>,
    /// The untraced load measured again beside the level, when its first
    /// normal phase looked over budget against the experiment's baseline.
    untraced_again_rps: Option<f64>,
    /// The baseline the level's ratios are against: the one measured
    /// beside it, else the experiment's.
    untraced_rps: Option<f64>,
    /// Why the level kept a normal phase that served less than its budget
    /// allows.
    ended: Option<RerunsEnded>,
}

fn normal_within_budget(
    run: &LevelRun<'_>,
    walk: &mut Walk,
    mut set: Vec<String>,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<Fitted> {
    let floor = 1.0 - run.opts.budget_pct / 100.0;
    let mut untraced = run.ground.untraced_rps;
    let mut fitted = Fitted {
        set: Vec::new(),
        normal: run.phase(&walk.shape, &set, Which::Normal(0), progress)?,
        dropped: Vec::new(),
        estimate: None,
        reruns: Vec::new(),
        untraced_again_rps: None,
        untraced_rps: None,
        ended: None,
    };
    let mut rebaselined = false;
    loop {
        let normal = &fitted.normal;
        let calls = calls_per_request(normal);
        let Some((served, cost, budget)) = over_budget(ratio(normal, untraced), calls, floor)
        else {
            break;
        };
        // The baseline is minutes old: on a busy machine its throughput
        // drifts by more than a level's probes cost. Measured again beside
        // the level (once) before fewer functions are tried; without
        // client figures the experiment's stays.
        if !rebaselined {
            rebaselined = true;
            fitted.untraced_again_rps = run.untraced(progress)?.filter(|u| *u > 0.0);
            untraced = fitted.untraced_again_rps.or(untraced);
            continue;
        }
        // A rerun with fewer functions that served no more than the run
        // before it (by more than the noise) shows noise, not the probes'
        // cost: the budget it lowered is restored for the levels after,
        // and no more reruns.
        if let Some(before) = fitted.reruns.last() {
            if served < before.throughput_ratio + RERUN_MARGIN {
                walk.restore_budget(before.walk_budget, &fitted.dropped);
                fitted.ended = Some(RerunsEnded::Noise);
                break;
            }
        }
        if fitted.reruns.len() == MAX_RERUNS {
            fitted.ended = Some(RerunsEnded::MaxReruns);
            break;
        }
        if set.len() == 1 {
            fitted.ended = Some(RerunsEnded::OneFunction);
            break;
        }
        let walk_budget = walk.budget();
        let measured = measured_per_request(normal)?;
        let (fit, out, estimate) =
            walk.refit(&set, budget, &|f| measured.get(f).copied().unwrap_or(0.0));
        // Nothing smaller fits, or everything does: no rerun to learn from.
        if fit.is_empty() || fit.len() == set.len() {
            walk.probed_after_all(&out);
            fitted.ended = Some(RerunsEnded::NothingToDrop);
            break;
        }
        fitted.reruns.push(Rerun {
            functions: set.len(),
            throughput_ratio: served,
            measured_calls_per_request: calls,
            cost_per_call: cost,
            budget_calls_per_request: budget,
            walk_budget,
            trace: normal.trace.clone(),
        });
        set = fit;
        fitted.dropped.extend(out);
        fitted.estimate = Some(estimate);
        let again = Which::Normal(fitted.reruns.len());
        fitted.normal = run.phase(&walk.shape, &set, again, progress)?;
    }
    fitted.set = set;
    fitted.untraced_rps = untraced;
    Ok(fitted)
}

/// When a normal phase served more than [`RERUN_MARGIN`] below `floor`
/// (its share of untraced throughput) with `calls` probed calls per
/// request: the share served, the cost of one call it measures, and the
/// calls per request that cost allows at `floor`.
fn over_budget(served: Option<f64>, calls: f64, floor: f64) -> Option<(f64, f64, f64)> {
    let served = served.filter(|r| *r > 0.0 && *r < floor - RERUN_MARGIN && calls > 0.0)?;
    let cost = (1.0 / served - 1.0) / calls;
    Some((served, cost, (1.0 / floor - 1.0) / cost))
}

/// Which of a level's phases: the spec's first (the normal load; `n` > 0
/// for its reruns) or its last (the attack).
#[derive(Clone, Copy)]
enum Which {
    Normal(usize),
    Attack,
}

/// Where and how a level runs its phases: `dir/level-N`.
struct LevelRun<'a> {
    ground: &'a Ground<'a>,
    opts: &'a ZoomOptions,
    dir: PathBuf,
    level: usize,
}

impl<'a> LevelRun<'a> {
    fn new(
        ground: &'a Ground<'a>,
        opts: &'a ZoomOptions,
        dir: &Path,
        level: usize,
    ) -> Result<Self> {
        let dir = dir.join(format!("level-{level}"));
        create_dir(&dir)?;
        Ok(Self {
            ground,
            opts,
            dir,
            level,
        })
    }

    /// One of the level's phases (at most `opts.max_phase`) with `set`
    /// probed.
    fn phase(
        &self,
        shape: &CallTree,
        set: &[String],
        which: Which,
        progress: &mut dyn FnMut(&Progress<'_>),
    ) -> Result<PhaseResult> {
        let ground = self.ground;
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
        let (normal, attack) = (ground.normal.0, ground.attack.0);
        let (phase, duration, index, name) = match which {
            Which::Normal(n) => {
                let name = match n {
                    0 => normal.name.clone(),
                    n => format!("{}-rerun-{n}", normal.name),
                };
                (normal, ground.durations.0, 0, name)
            }
            Which::Attack => (attack, ground.durations.1, 1, attack.name.clone()),
        };
        let duration = duration.min(self.opts.max_phase);
        let label = format!("zoom {}", self.level);
        progress(&Progress::PhaseStart {
            variant: &label,
            index,
            of: 2,
            phase,
            duration,
            lab: target.lab,
        });
        let trace = self.dir.join(format!("{name}.flowdar"));
        let r = run_phase(&target, phase, duration, &trace)?;
        progress(&Progress::PhaseDone(&r));
        Ok(r)
    }
}

impl LevelRun<'_> {
    /// The normal phase's load once more with nothing attached, beside the
    /// level: its requests per second, if the client gave figures.
    fn untraced(&self, progress: &mut dyn FnMut(&Progress<'_>)) -> Result<Option<f64>> {
        let (phase, duration) = (self.ground.normal.0, self.ground.durations.0);
        let load = phase.load.as_ref().ok_or_else(|| {
            ExperimentError::Refused("the zoom needs a normal phase with a load".into())
        })?;
        let label = format!("zoom {}", self.level);
        let duration = duration.min(self.opts.max_phase);
        let u = run_untraced_load(&self.ground.target, phase, load, duration, &label, progress)?;
        Ok(u.client.map(|c| c.requests_per_s))
    }
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
        drive_client(t, load, window, false).and_then(|(client, client_error)| {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_within_its_budget_or_its_noise_is_not_run_again() {
        assert_eq!(over_budget(Some(0.95), 4.5, 0.8), None);
        assert_eq!(over_budget(Some(0.76), 4.5, 0.8), None);
        assert_eq!(over_budget(None, 4.5, 0.8), None);
        assert_eq!(over_budget(Some(0.5), 0.0, 0.8), None);
    }

    #[test]
    fn a_level_over_its_budget_measures_its_cost_per_call() {
        // 12 calls per request served at 0.6x: each call costs
        // (1/0.6 - 1)/12 = 0.0556 of a request; 0.8x allows 0.25/0.0556
        // = 4.5 calls per request.
        let (served, cost, budget) = over_budget(Some(0.6), 12.0, 0.8).unwrap();
        assert_eq!(served, 0.6);
        assert!((cost - 0.05556).abs() < 1e-4, "{cost}");
        assert!((budget - 4.5).abs() < 1e-9, "{budget}");
    }
}
