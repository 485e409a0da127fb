//! `record --budget PCT`: an estimate window with every probe, then the
//! deepest set that fits (capture::budget chooses; this runs and reports).
use std::time::Duration;

use anyhow::{bail, Context as _};

use super::format;
use crate::{
    capture::{self, ProbeLoad, RecordOptions, Recording},
    probes::ResolvedProbe,
};

/// Records `opts`' probes for `window`, then returns those that fit
/// `pct` percent of estimated overhead, renumbered, saying what was
/// dropped and why.
pub(super) fn fit(
    opts: &RecordOptions,
    pct: f64,
    window: Duration,
) -> anyhow::Result<Vec<ResolvedProbe>> {
    let dir = tempfile::tempdir().context("cannot create a directory for the estimate window")?;
    let trace = dir.path().join("budget-window.flowdar");
    let n = opts.probes.len();
    eprintln!(
        "Budget {pct}%: measuring each function's calls in a {} window with all {n} probes...",
        format::duration(window)
    );
    let rec = Recording::start(RecordOptions {
        output: trace.clone(),
        force: false,
        ..opts.clone()
    })
    .context("the budget's estimate window failed")?;
    std::thread::sleep(window);
    let summary = rec
        .stop("budget estimate window")
        .context("the budget's estimate window failed")?;
    let o = summary
        .overhead
        .clone()
        .context("--budget: a probed call's cost could not be measured on this machine")?;
    if o.ratio().is_none() || o.calls == 0 {
        eprintln!(
            "Budget {pct}%: the server did almost no work in the window ({} of CPU): with no load to measure, every function is kept.",
            format::duration(Duration::from_nanos(o.server_cpu_ns))
        );
        return Ok(opts.probes.clone());
    }
    let (stats, _) = super::stats::compute(&trace)?;
    let short = |i: usize| {
        summary
            .min_duration
            .as_ref()
            .map_or(0, |m| m.short_calls[i])
    };
    let loads: Vec<ProbeLoad> = opts
        .probes
        .iter()
        .map(|p| {
            let i = p.id as usize;
            ProbeLoad {
                function: p.function.clone(),
                calls: summary.counts.entries[i].max(summary.counts.exits[i]) + short(i),
                mean_ns: stats
                    .iter()
                    .find(|s| s.function == p.function)
                    .map_or(0, |s| s.mean_ns),
                ns_per_call: match p.is_syscall() {
                    // Unmeasured: the dearest figure, never free.
                    true if o.ns_per_syscall > 0 => o.ns_per_syscall,
                    true => o.ns_per_call,
                    false => o.ns_per_call_of(
                        capture::first_instruction(p) == capture::FirstInstruction::Push,
                    ),
                },
            }
        })
        .collect();
    let choice = capture::choose_within_budget(&loads, o.server_cpu_ns, pct / 100.0);
    let secs = summary.duration.as_secs_f64().max(1e-3);
    let pc = |f: f64| format!("{:.1}%", 100.0 * f);
    let all = if choice.all > 1.0 {
        "more than the server's whole CPU time".to_string()
    } else {
        format!("at most {} of the server's CPU time", pc(choice.all))
    };
    let per_call = match o.push_calls {
        0 => format!(
            "x {} an isolated probed call",
            format::duration(Duration::from_nanos(o.ns_per_call))
        ),
        _ => format!(
            "x {} an isolated probed call of a function that begins with a push, {} of one that does not",
            format::duration(Duration::from_nanos(o.ns_per_push_call)),
            format::duration(Duration::from_nanos(o.ns_per_call))
        ),
    };
    eprintln!(
        "Budget {pct}%: all {n} functions would cost {all} ({} calls/s {per_call}, against {} of CPU a second).",
        (o.calls as f64 / secs).round(),
        format::duration(Duration::from_nanos((o.server_cpu_ns as f64 / secs) as u64)),
    );
    if choice.kept.is_empty() {
        let coldest = choice
            .dropped
            .last()
            .map(|(i, c)| (&loads[*i].function, *c));
        match coldest {
            Some((f, c)) => bail!(
                "no function fits a budget of {pct}%: the least called, {f}, alone costs an estimated {}",
                pc(c)
            ),
            None => bail!("no function to record"),
        }
    }
    if !choice.dropped.is_empty() {
        eprintln!("Dropped, dearest first:");
        for (i, c) in &choice.dropped {
            eprintln!(
                "  {:<32} {:>10.0} calls/s   est. {}",
                loads[*i].function,
                loads[*i].calls as f64 / secs,
                pc(*c)
            );
        }
    }
    eprintln!(
        "Keeping {} of {n} functions: estimated overhead at most {} (isolated probed calls' costs, by how each function begins: an upper bound inside servers).",
        choice.kept.len(),
        pc(choice.kept_overhead)
    );
    Ok(choice
        .kept
        .iter()
        .enumerate()
        .map(|(id, &i)| opts.probes[i].clone().with_id(id as u32))
        .collect())
}
