//! `flowdar simplify`: a smaller trace that keeps what matters.
use std::{path::PathBuf, time::Duration};

use clap::Args;

use crate::analysis::{simplify, SimplifyOptions};

/// Write a simplified copy of a trace: drop calls shorter than a threshold
/// (their time stays with the caller as self time), cut below a depth,
/// collapse a library's calls made from inside itself into its outermost
/// call, and fold loops (identical consecutive sibling subtrees become one
/// call plus a repeat count). Calls still running at the end are kept.
#[derive(Debug, Args)]
pub struct SimplifyArgs {
    /// Trace file to simplify.
    pub trace: PathBuf,
    /// Simplified trace to write.
    #[arg(long, short)]
    pub output: PathBuf,
    #[command(flatten)]
    pub simplify: SimplifyFlags,
    /// Overwrite the output file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print the report as JSON (a one-element array): events_before,
    /// events_after, dropped_short, dropped_deep, dropped_collapsed, folded.
    #[arg(long)]
    pub json: bool,
}

/// The simplification options, shared by `simplify` and `render`.
#[derive(Debug, Clone, Args)]
pub struct SimplifyFlags {
    /// Drop calls shorter than this (e.g. 50us); their time stays with the caller.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub min_duration: Option<Duration>,
    /// Keep calls nested at most this deep (0: outermost calls only).
    #[arg(long)]
    pub max_depth: Option<u32>,
    /// Collapse this library's internal calls (file name or prefix, e.g.
    /// libapr-1; repeatable).
    #[arg(long, value_name = "OBJECT")]
    pub collapse: Vec<String>,
    /// Fold repeated identical sibling calls into one with a count.
    #[arg(long)]
    pub fold_loops: bool,
}

impl SimplifyFlags {
    pub fn options(&self) -> SimplifyOptions {
        SimplifyOptions {
            min_duration_ns: self.min_duration.map_or(0, |d| d.as_nanos() as u64),
            max_depth: self.max_depth,
            collapse: self.collapse.clone(),
            fold_loops: self.fold_loops,
        }
    }
}

pub fn run(args: SimplifyArgs) -> anyhow::Result<()> {
    let opts = args.simplify.options();
    let r = simplify(&args.trace, &args.output, &opts, args.force)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&[&r])?);
        return Ok(());
    }
    let pct = if r.events_before == 0 {
        0.0
    } else {
        100.0 * r.events_after as f64 / r.events_before as f64
    };
    println!(
        "{}: {} events -> {} ({pct:.1}%); calls dropped: {} short, {} too deep, {} collapsed; {} folded into loops",
        args.output.display(),
        r.events_before,
        r.events_after,
        r.dropped_short,
        r.dropped_deep,
        r.dropped_collapsed,
        r.folded
    );
    Ok(())
}
