//! `cargo xtask`: the one entry point for set-up, builds, tests and the demo.
//!
//! Every command that needs tools runs `setup` first, so the README's two
//! commands work on a fresh machine.
mod setup;
mod tasks;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Flowdar's developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what building and testing need: Debian packages, rust-src for
    /// nightly, bpf-linker (idempotent; seconds when all is there).
    Setup,
    /// Set up and build the `flowdar` binary (release).
    Build,
    /// Set up, check formatting and lints, run the unit tests, then the root
    /// integration tests against the real kernel and a real Apache.
    Test {
        /// Only run tests whose name contains this.
        filter: Option<String>,
        /// Skip rustfmt and clippy.
        #[arg(long)]
        no_lint: bool,
    },
    /// Set up, build, and run the built-in DoS experiment: a throwaway Apache
    /// on loopback, normal load, then the same load under a Slowloris attack.
    Demo,
    /// rustfmt --check and clippy -D warnings (user space and eBPF crates).
    Lint,
    /// Fuzz the trace reader and the probe-file parser (cargo fuzz).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Benchmarks: print figures measured side by side (see BENCHMARKS.md).
    Bench {
        /// Which benchmark.
        #[arg(value_enum)]
        which: tasks::Bench,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run().map(|_| ()),
        Command::Build => tasks::build(),
        Command::Test { filter, no_lint } => tasks::test(filter.as_deref(), !no_lint),
        Command::Demo => tasks::demo(),
        Command::Lint => setup::run().and_then(|env| tasks::lint(&env)),
        Command::Fuzz { seconds } => setup::run().and_then(|env| tasks::fuzz(&env, seconds)),
        Command::Bench { which } => tasks::bench(which),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}
