//! `flowdar experiment`: a DoS experiment in one command.
use std::{path::PathBuf, time::Duration};

use clap::Args;

use super::attach::AttachArgs;

use crate::{
    experiment::{self, RunOptions, Spec},
    server::Mpm,
};

/// Run a denial-of-service experiment: a server (by default a throwaway
/// Apache on loopback), phases of load (wrk) with and without a slow-HTTP
/// attack (slowhttptest), each phase recorded to DIR/PHASE.flowdar; then
/// DIR/report.md, a self-contained DIR/report.html and DIR/diff.json: the
/// client-side impact, `flowdar diff` of the last phase against the first
/// ranked by impact, and a normal session beside an attacked one.
#[derive(Debug, Args)]
#[command(after_help = "Experiment spec (TOML):\n\
```\n\
version = 1\n\
profile = [\"apache:request,io\"]\n\
[server]\n\
mpm = \"event\"        # or: pid = 1234 / command = [...], with url = \"http://127.0.0.1:8080/\"\n\
[[phase]]\n\
name = \"normal\"\n\
duration = \"20s\"\n\
load = { connections = 20, threads = 2 }\n\
[[phase]]\n\
name = \"attack\"\n\
duration = \"25s\"\n\
load = { connections = 20, threads = 2 }\n\
attack = { mode = \"headers\", connections = 120, rate = 60, interval = \"5s\", ramp = \"5s\" }\n\
```\n\
`flowdar experiment --print-default` shows the built-in experiment.")]
pub struct ExperimentArgs {
    /// The experiment spec.
    #[arg(required_unless_present_any = ["default", "print_default"])]
    pub spec: Option<PathBuf>,
    /// Run the built-in experiment (throwaway Apache, normal load, then the
    /// same load under a Slowloris attack).
    #[arg(long, conflicts_with = "spec")]
    pub default: bool,
    /// Print the built-in spec and exit.
    #[arg(long)]
    pub print_default: bool,
    /// Output directory.
    #[arg(long, short, required_unless_present = "print_default")]
    pub output: Option<PathBuf>,
    /// The throwaway Apache's MPM (overrides the spec).
    #[arg(long, value_enum)]
    pub mpm: Option<Mpm>,
    /// Cap every phase at this length (e.g. 5s for a quick run).
    #[arg(long, value_parser = crate::units::parse_wall_duration)]
    pub max_phase: Option<Duration>,
    /// Write into a non-empty output directory.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub attach: AttachArgs,
}

pub fn run(args: ExperimentArgs) -> anyhow::Result<()> {
    if args.print_default {
        print!("{}", experiment::DEFAULT_SPEC);
        return Ok(());
    }
    let mut spec = match &args.spec {
        Some(path) => Spec::load(path)?,
        None => Spec::default_spec(),
    };
    if let Some(m) = args.mpm {
        spec.server.mpm = m;
        if args.default && m == Mpm::Prefork {
            // 150 workers are 150 processes under prefork (ServerLimit
            // counts processes there, threads x processes elsewhere).
            spec.server.config = "ServerLimit 150\nMaxRequestWorkers 150\n".into();
        }
    }
    let dir = args.output.expect("required by clap");
    let phases = experiment::run(
        &spec,
        &dir,
        &RunOptions {
            max_phase: args.max_phase,
            force: args.force,
            plan: args.attach.plan(false),
        },
    )?;
    let title = format!("Flowdar DoS experiment ({:?} MPM)", spec.server.mpm);
    let report = experiment::write_report(&dir, &phases, &title)?;
    println!(
        "\nWhat the attack changed (top of {}/diff.json):",
        dir.display()
    );
    println!(
        "{:<34} {:>11} {:>11} {:>9} {:>9} {:>12}",
        "function", "mean normal", "mean attack", "ratio", "in-flight", "impact"
    );
    for r in report.diff.iter().take(8) {
        println!(
            "{:<34} {:>11} {:>11} {:>9} {:>9} {:>10}/s{}",
            r.function,
            super::format::ns(r.base_mean_ns),
            super::format::ns(r.test_mean_ns),
            if r.ratio.is_finite() {
                format!("{:.1}x", r.ratio)
            } else {
                "new".into()
            },
            r.in_flight,
            super::format::signed_ns(r.impact_ns_per_s),
            if r.significant { " *" } else { "" }
        );
    }
    println!(
        "\nReport: {0}/report.md, {0}/report.html (traces beside them)",
        dir.display()
    );
    Ok(())
}
