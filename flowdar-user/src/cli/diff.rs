//! `flowdar diff BASE TEST`: what changed between two runs.
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::format;
use crate::analysis::diff;

/// Compare a test run (e.g. under attack) with a base run: per function,
/// calls (and per request), mean and p99 durations in each, their ratio,
/// and a Mann-Whitney U p-value on the duration distributions. Ranked by
/// impact: how much more server time per second of capture went into the
/// function, calls still in flight at the end counting as lower bounds.
/// A row is significant when p < 0.001 and the mean moved by 1.5x or more,
/// or when the function is new: never called in the base run, called 10
/// times or more in the test run for at least 10 ms a second (no base
/// sample to test against).
///
/// JSON fields (stable): function, object, base_calls, test_calls,
/// base_calls_per_request, test_calls_per_request, base_mean_ns,
/// test_mean_ns, base_p99_ns, test_p99_ns, ratio, p_value, in_flight,
/// base_in_flight, impact_ns_per_s, significant, base_backend_mean_ns,
/// test_backend_mean_ns (of the mean, time waiting on a backend: with
/// `apache:backend`); most affected first. With backend probes, a last
/// line says whether the backend or Apache itself got slower.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The reference trace (a normal run).
    pub base: PathBuf,
    /// The trace to compare with it.
    pub test: PathBuf,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show at most this many rows (0: all).
    #[arg(long, default_value_t = 0)]
    pub top: usize,
    /// Also write a differential flame graph (widths: test; red: more time
    /// than in base, blue: less).
    #[arg(long, value_name = "SVG")]
    pub flame: Option<PathBuf>,
}

pub fn run(args: DiffArgs) -> anyhow::Result<()> {
    let mut rows = diff(&args.base, &args.test)?;
    super::note_if_lean(&args.base);
    super::note_if_lean(&args.test);
    if let Some(out) = &args.flame {
        let title = format!("{} vs {}", args.test.display(), args.base.display());
        let file = crate::store::private::open(out, true)
            .with_context(|| format!("cannot write {}", out.display()))?;
        crate::render::differential(&args.base, &args.test, &title, file)?;
        eprintln!("wrote {}", out.display());
    }
    if args.top > 0 {
        rows.truncate(args.top);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<32} {:>9} {:>9} {:>10} {:>10} {:>9} {:>10} {:>9} {:>12}  ",
        "function", "calls", "calls", "mean", "mean", "ratio", "p-value", "in-flight", "impact"
    );
    println!(
        "{:<32} {:>9} {:>9} {:>10} {:>10}",
        "", "base", "test", "base", "test"
    );
    for r in &rows {
        println!(
            "{:<32} {:>9} {:>9} {:>10} {:>10} {:>9} {:>10.2e} {:>9} {:>10}/s {}",
            r.function,
            r.base_calls,
            r.test_calls,
            format::ns(r.base_mean_ns),
            format::ns(r.test_mean_ns),
            if r.ratio.is_finite() {
                format!("{:.1}x", r.ratio)
            } else {
                "new".into()
            },
            r.p_value,
            r.in_flight,
            format::signed_ns(r.impact_ns_per_s),
            if r.significant { "*" } else { "" }
        );
    }
    let n = rows.iter().filter(|r| r.significant).count();
    println!("\n{n} significant changes (*: p < 0.001 and the mean moved 1.5x or more, or new: not called in the base run, 10 calls or more and 10 ms/s or more in the test run); impact = server time per second of capture, test minus base.");
    if let Some(v) = crate::analysis::backend_verdict(&rows) {
        println!("{v}");
    }
    Ok(())
}
