//! `flowdar import`: other tracers' recordings as Flowdar traces.
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};

/// Convert another tracer's recording into a Flowdar trace, so that
/// `stats`, `diff`, `render` and `export` read it. Kept from a uftrace
/// recording: function names, their modules, process and thread ids,
/// nanosecond entry and exit times, nesting. Lost: arguments and return
/// values (such recordings are refused), uftrace's schedule, kernel and
/// SDT events.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    uftrace record -d prog.data ./prog\n  \
    flowdar import uftrace prog.data -o prog.flowdar\n  \
    flowdar stats prog.flowdar")]
pub struct ImportArgs {
    #[command(subcommand)]
    pub tool: Tool,
}

#[derive(Debug, Subcommand)]
pub enum Tool {
    /// A `uftrace record` directory (default name uftrace.data).
    Uftrace {
        /// The uftrace data directory.
        dir: PathBuf,
        /// The trace to write.
        #[arg(long, short)]
        output: PathBuf,
        /// Overwrite the output if it exists.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    match args.tool {
        Tool::Uftrace { dir, output, force } => {
            let s = crate::import::uftrace::import(&dir, &output, force)
                .with_context(|| format!("importing {}", dir.display()))?;
            println!(
                "wrote {}: {} events of {} functions on {} threads",
                output.display(),
                s.events,
                s.functions,
                s.threads
            );
            if s.skipped_events > 0 {
                eprintln!(
                    "note: {} uftrace event records (schedule, SDT) are not imported",
                    s.skipped_events
                );
            }
            if s.lost > 0 {
                eprintln!("warning: uftrace lost {} records while recording", s.lost);
            }
            Ok(())
        }
    }
}
