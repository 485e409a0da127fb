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
use std::{collections::BTreeSet, path::Path, time::Duration};

use anyhow::Context as _;

use super::{
    phase::{drive_client, run_phase, start_attack, Target},
    progress::Progress,
    results::{Discovery, Dropped, Level, PhaseResult, Row, Zoom},
    spec::Phase,
};
use crate::{
    analysis::{diff, CallTree, DiffRow},
    capture::{RecordOptions, Recording},
    probes::{self, Capture, ProbeRequest},
};

/// How far below the tail one level looks.
pub const MAX_DEPTH: usize = 3;
/// The smallest share of a request's work assumed per probed call: what
/// BENCHMARKS.md row b's `request` and `io` profiles lost per probed call
/// on the development VM (row h gives their calls per request).
pub const PRIOR_COST_PER_CALL: f64 = 0.05;
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
) -> anyhow::Result<Zoom> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (normal, attack) = (ground.normal.1, ground.attack.1);
    let rows0 = diff(&normal.trace, &attack.trace)?;
    let ratio0 = ratio(normal, ground.untraced_rps);
    let cost = cost_per_call(normal, ratio0);
    let budget = (1.0 / (1.0 - opts.budget_pct / 100.0) - 1.0) / cost;
    let mut levels = vec![Level {
        level: 0,
        functions: normal_functions(&rows0),
        throughput_ratio: ratio0,
        estimated_calls_per_request: calls_per_request(normal),
        budget_calls_per_request: budget,
        rows: rows0.iter().map(Row::from).collect(),
        dropped: Vec::new(),
        traces: [normal.trace.clone(), attack.trace.clone()],
    }];
    // The chain starts at the most affected function of level 0 that got
    // slower (preferring one the discovery sees calling something).
    let mut significant: Vec<&DiffRow> = rows0
        .iter()
        .filter(|r| r.significant && r.ratio > 1.0)
        .collect();
    significant.sort_by(|a, b| b.impact_ns_per_s.total_cmp(&a.impact_ns_per_s));
    if significant.is_empty() {
        return finish(
            dir,
            Zoom {
                levels,
                chain: Vec::new(),
                discovery: None,
                attack_discovery: None,
                stopped: "nothing in the spec's profile got significantly slower under attack"
                    .into(),
            },
        );
    }
    let discovery = discover(ground, dir, opts.window, false, progress)?;
    let attack_discovery = discover(ground, dir, opts.window, true, progress)?;
    let tree = CallTree::of(&discovery.trace)?;
    let held = CallTree::of(&attack_discovery.trace)?;
    // Who calls whom: both windows' edges (the attack's connections take
    // paths the normal load may not); rates and times: the normal load's.
    let mut shape = tree.clone();
    shape.add_edges(&held);
    let held_now = |f: &str| held.open_at_end.get(f).copied().unwrap_or(0);
    let per_request =
        |f: &str| tree.calls.get(f).copied().unwrap_or(0) as f64 / discovery.requests.max(1) as f64;
    let start = significant
        .iter()
        .find(|r| !shape.callees(&r.function).is_empty())
        .unwrap_or(&significant[0]);
    let mut chain = vec![start.function.clone()];
    let mut stopped = format!("{} levels done", opts.levels);
    // Functions below the current tail already probed (or over the budget
    // on their own): a tail is searched in batches until none is left.
    let mut tried: BTreeSet<String> = BTreeSet::new();
    for level in 1..=opts.levels {
        let tail = chain.last().expect("chain starts non-empty").clone();
        // Near the tail, and at any depth what the attack held workers in.
        let below: Vec<(String, usize)> = shape
            .below(&tail, usize::MAX)
            .into_iter()
            .filter(|(f, d)| (*d <= MAX_DEPTH || held_now(f) > 0) && !tried.contains(f))
            .collect();
        if below.is_empty() {
            stopped = if tried.is_empty() {
                format!("`{tail}` called no probed function in the discovery window (a leaf)")
            } else {
                format!(
                    "nothing below `{tail}` (up to {MAX_DEPTH} calls down, or where the attack held workers) got significantly slower under attack"
                )
            };
            break;
        }
        let (set, dropped, estimate) = within_budget(
            &below,
            budget,
            &per_request,
            &|f| tree.mean_ns(f),
            &held_now,
        );
        if set.is_empty() {
            stopped = format!(
                "what lies below `{tail}` costs more than the budget ({budget:.1} probed calls per request)"
            );
            break;
        }
        tried.extend(set.iter().cloned());
        // What cannot fit even alone will never be probed.
        tried.extend(
            dropped
                .iter()
                .filter(|d| d.calls_per_request > budget)
                .map(|d| d.function.clone()),
        );
        progress(&Progress::ZoomLevel {
            level,
            tail: &tail,
            functions: set.len(),
            dropped: dropped.len(),
        });
        let requests: Vec<ProbeRequest> = set
            .iter()
            .filter_map(|f| {
                let object = shape.objects.get(f)?;
                Some(ProbeRequest {
                    target: object.to_string_lossy().into_owned(),
                    function: f.clone(),
                    exclude: Vec::new(),
                    capture: Capture {
                        args: 1,
                        ..Default::default()
                    },
                    overrides: Default::default(),
                    defines: None,
                })
            })
            .collect();
        let resolved = probes::resolve(
            ground.target.pid,
            &requests,
            Path::new(crate::symbols::DEBUG_ROOT),
        )?;
        let target = Target {
            probes: &resolved,
            ..ground.target
        };
        let ldir = dir.join(format!("level-{level}"));
        std::fs::create_dir_all(&ldir).with_context(|| format!("creating {}", ldir.display()))?;
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
        let rows = diff(&results[0].trace, &results[1].trace)?;
        let before = chain.len();
        extend(&mut chain, &rows, &shape);
        levels.push(Level {
            level,
            functions: set.clone(),
            throughput_ratio: ratio(&results[0], ground.untraced_rps),
            estimated_calls_per_request: estimate,
            budget_calls_per_request: budget,
            rows: rows.iter().map(Row::from).collect(),
            dropped,
            traces: [results[0].trace.clone(), results[1].trace.clone()],
        });
        if chain.len() > before {
            // A new tail: what was probed below it already needs no rerun.
            let tail = chain.last().expect("non-empty chain");
            tried.retain(|f| shape.distance(tail, f).is_some());
        }
    }
    finish(
        dir,
        Zoom {
            levels,
            chain,
            discovery: Some(discovery),
            attack_discovery: Some(attack_discovery),
            stopped,
        },
    )
}

/// Writes `DIR/zoom.json`.
fn finish(dir: &Path, zoom: Zoom) -> anyhow::Result<Zoom> {
    let path = dir.join("zoom.json");
    std::fs::write(&path, serde_json::to_string_pretty(&zoom)?)
        .with_context(|| format!("writing {}", path.display()))?;
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
) -> anyhow::Result<Discovery> {
    let t = &ground.target;
    let resolved = probes::resolve(
        t.pid,
        &probes::profile_requests(DISCOVERY_PROFILE)?,
        Path::new(crate::symbols::DEBUG_ROOT),
    )?;
    crate::capture::attach_mechanism(&t.plan, resolved.len()).with_context(|| {
        format!(
            "the zoom's discovery window attaches {DISCOVERY_PROFILE} ({} functions)",
            resolved.len()
        )
    })?;
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
    let load = ground
        .normal
        .0
        .load
        .as_ref()
        .context("the zoom needs a normal phase with a load")?;
    let attack_spec = if attack {
        let spec = ground.attack.0.attack.as_ref();
        Some(spec.context("the zoom needs an attack in the spec's last phase")?)
    } else {
        None
    };
    let trace = dir.join(if attack {
        "discovery-attack.flowdar"
    } else {
        "discovery.flowdar"
    });
    let functions = resolved.len();
    let recording = Recording::start(RecordOptions {
        pid: t.pid,
        probes: resolved,
        output: trace.clone(),
        force: true,
        plan: t.plan,
        ..Default::default()
    })?;
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
            client.map(Some).with_context(|| {
                format!(
                    "no client figures for the discovery window: {}",
                    client_error.unwrap_or_default()
                )
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
        functions: functions - summary.skipped.len(),
        refused: summary.skipped.len(),
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

/// The functions below a tail that fit the budget (the tail itself was
/// measured by the level that found it). First those the attack held
/// workers in (nearest first), then the others nearest first, the longest
/// calls first within a depth; one that does not fit is skipped for the
/// cheaper ones after it.
fn within_budget(
    below: &[(String, usize)],
    budget: f64,
    per_request: &dyn Fn(&str) -> f64,
    mean_ns: &dyn Fn(&str) -> u64,
    held: &dyn Fn(&str) -> u64,
) -> (Vec<String>, Vec<Dropped>, f64) {
    let mut set = Vec::new();
    let mut spent = 0.0;
    let mut dropped = Vec::new();
    let mut ranked: Vec<(&str, bool, usize, f64, u64)> = below
        .iter()
        .map(|(f, d)| (f.as_str(), held(f) == 0, *d, per_request(f), mean_ns(f)))
        .collect();
    ranked.sort_by(|a, b| {
        (a.1, a.2)
            .cmp(&(b.1, b.2))
            .then(b.4.cmp(&a.4))
            .then(a.0.cmp(b.0))
    });
    for (f, _, _, calls, mean) in ranked {
        if spent + calls <= budget {
            spent += calls;
            set.push(f.to_string());
        } else {
            dropped.push(Dropped {
                function: f.to_string(),
                calls_per_request: calls,
                mean_ns: mean,
            });
        }
    }
    dropped.sort_by(|a, b| b.calls_per_request.total_cmp(&a.calls_per_request));
    (set, dropped, spent)
}

/// Appends to `chain` the significant functions of `rows` below its tail,
/// nearest first (by the discovered tree), the most affected among equals.
fn extend(chain: &mut Vec<String>, rows: &[DiffRow], tree: &CallTree) {
    loop {
        let tail = chain.last().expect("non-empty chain").clone();
        let taken: BTreeSet<&String> = chain.iter().collect();
        let next = rows
            .iter()
            // Slower under attack: what got faster explains nothing here.
            .filter(|r| r.significant && r.ratio > 1.0 && !taken.contains(&r.function))
            .filter_map(|r| Some((tree.distance(&tail, &r.function)?, r)))
            .min_by(|(da, a), (db, b)| {
                da.cmp(db)
                    .then(b.impact_ns_per_s.total_cmp(&a.impact_ns_per_s))
            })
            .map(|(_, r)| r.function.clone());
        match next {
            Some(f) => chain.push(f),
            None => return,
        }
    }
}

fn ratio(p: &PhaseResult, untraced_rps: Option<f64>) -> Option<f64> {
    let u = untraced_rps.filter(|u| *u > 0.0)?;
    Some(p.client.as_ref()?.requests_per_s / u)
}

/// Probed calls (entries: half the events) per request served in a phase.
fn calls_per_request(p: &PhaseResult) -> f64 {
    let requests = p.client.as_ref().map_or(0, |c| c.requests).max(1);
    (p.events / 2) as f64 / requests as f64
}

/// The share of a request's work one probed call costs: from level 0's
/// observer effect when it probed enough to measure one, never below the
/// prior.
fn cost_per_call(normal: &PhaseResult, ratio0: Option<f64>) -> f64 {
    let c0 = calls_per_request(normal);
    match ratio0 {
        Some(r) if r > 0.0 && r < 1.0 && c0 >= CALIBRATION_CALLS => {
            ((1.0 / r - 1.0) / c0).max(PRIOR_COST_PER_CALL)
        }
        _ => PRIOR_COST_PER_CALL,
    }
}

fn normal_functions(rows: &[DiffRow]) -> Vec<String> {
    rows.iter().map(|r| r.function.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_takes_callers_first_and_skips_what_does_not_fit() {
        let below = vec![
            ("ap_get_mime_headers_core".to_string(), 1),
            ("apr_pool_create".to_string(), 1),
            ("ap_rgetline_core".to_string(), 2),
            ("apr_socket_recv".to_string(), 3),
        ];
        let calls = |f: &str| match f {
            "ap_get_mime_headers_core" => 1.0,
            "apr_pool_create" => 3.0,
            "ap_rgetline_core" => 2.5,
            "apr_socket_recv" => 1.0,
            _ => 0.0,
        };
        let mean = |f: &str| match f {
            "ap_get_mime_headers_core" => 9_000,
            "apr_pool_create" => 300,
            "ap_rgetline_core" => 2_000,
            "apr_socket_recv" => 1_500,
            _ => 0,
        };
        let (set, dropped, spent) = within_budget(&below, 5.0, &calls, &mean, &|_| 0);
        // Depth 1 first (the long call before the short one), then what
        // still fits deeper down: the 2.5 calls of ap_rgetline_core do not.
        assert_eq!(
            set,
            [
                "ap_get_mime_headers_core",
                "apr_pool_create",
                "apr_socket_recv"
            ]
        );
        let names: Vec<&str> = dropped.iter().map(|d| d.function.as_str()).collect();
        assert_eq!(names, ["ap_rgetline_core"]);
        assert_eq!(spent, 5.0);
        // Where the attack held workers goes first, however deep.
        let held = |f: &str| u64::from(f == "apr_socket_recv" || f == "ap_rgetline_core") * 150;
        let (set, _, spent) = within_budget(&below, 5.0, &calls, &mean, &held);
        assert_eq!(
            set,
            [
                "ap_rgetline_core",
                "apr_socket_recv",
                "ap_get_mime_headers_core"
            ]
        );
        assert_eq!(spent, 4.5);
    }

    #[test]
    fn a_cheap_level_zero_cannot_make_calls_look_free() {
        assert_eq!(cost_per_call_of(1.0, 0.8), PRIOR_COST_PER_CALL);
        assert_eq!(cost_per_call_of(10.0, 0.99), PRIOR_COST_PER_CALL);
        // 0.5x with 10 calls per request: each call is a tenth of a request.
        assert!((cost_per_call_of(10.0, 0.5) - 0.1).abs() < 1e-12);
    }

    fn cost_per_call_of(h0: f64, ratio: f64) -> f64 {
        let p = PhaseResult {
            name: "normal".into(),
            trace: std::path::PathBuf::new(),
            duration_s: 1.0,
            client: Some(crate::server::ClientReport {
                requests: 1000,
                ..Default::default()
            }),
            client_error: None,
            attack: None,
            events: (2.0 * h0 * 1000.0) as u64,
            lost: 0,
            attach_mode: String::new(),
        };
        cost_per_call(&p, Some(ratio))
    }
}
