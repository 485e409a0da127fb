//! `cargo xtask`: the one entry point for set-up, builds, tests and the demo.
//!
//! Every command that needs tools runs `setup` first, so the README's two
//! commands work on a fresh machine.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a developer tool: it reports progress and results on the terminal"
)]
mod install;
mod kernels;
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
    /// Build (release; set-up limited to what building needs: rust-src,
    /// bpf-linker) and install `flowdar`: the binary (debug
    /// info split into PREFIX/bin/.debug/flowdar.debug), bash/zsh/fish
    /// completions and a man page per subcommand (`man flowdar-record`).
    Install {
        /// Installation prefix.
        #[arg(long, default_value = install::DEFAULT_PREFIX)]
        prefix: std::path::PathBuf,
        /// Install the release binary already built (target/release/flowdar).
        #[arg(long)]
        no_build: bool,
    },
    /// Remove what `cargo xtask install` put under the prefix.
    Uninstall {
        /// Installation prefix.
        #[arg(long, default_value = install::DEFAULT_PREFIX)]
        prefix: std::path::PathBuf,
    },
    /// Set up, build, and run the built-in DoS experiment: a throwaway Apache
    /// on loopback, normal load, then the same load under a Slowloris attack.
    Demo,
    /// rustfmt --check and clippy -D warnings (user space and eBPF crates).
    Lint,
    /// Fuzz the trace reader, the probe-file parser and the experiment-spec parser (cargo fuzz).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Benchmarks (root): print figures measured side by side and the
    /// targets they are held to (see BENCHMARKS.md). Default: the tracer
    /// rows a-e, h, m, r and z.
    Bench {
        /// Which benchmark.
        #[arg(value_enum, default_value = "tracer")]
        which: tasks::Bench,
        /// Only these rows of the tracer benchmark (a, b, d, e, h, m, r, z; b
        /// includes c), e.g. `cargo xtask bench tracer a e`.
        #[arg(value_parser = ["a", "b", "d", "e", "h", "m", "r", "z"])]
        rows: Vec<String>,
    },
    /// Soak (root): trace Apache under steady load with the `request`
    /// profile for a long time, sampling Flowdar's RSS and CPU; results
    /// to paste into RELIABILITY.md.
    Soak {
        /// How long (e.g. 10m, 30s).
        #[arg(long, default_value = "10m")]
        duration: String,
    },
    /// Kernel matrix (root): boot Debian's packaged kernels (the newest
    /// 6.1 and 6.12) under virtme-ng/QEMU and run a subset of the root tests,
    /// `flowdar demo` and a short `flowdar experiment` in each; installs
    /// what it needs; writes target/kernels/matrix.md. ~2.5 minutes a kernel.
    Kernels {
        /// Only the kernel whose label (6.1, 6.12) is this, or whose version
        /// contains it (e.g. 6.1.0-56).
        #[arg(long, value_name = "PATTERN")]
        kernel: Option<String>,
        /// Only the checks whose name contains this (e.g. a test's name,
        /// or `flowdar_experiment`): to chase one check's failure.
        #[arg(long, value_name = "NAME")]
        check: Option<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run().map(|_| ()),
        Command::Build => tasks::build(),
        Command::Test { filter, no_lint } => tasks::test(filter.as_deref(), !no_lint),
        Command::Install { prefix, no_build } => install::run(&prefix, !no_build),
        Command::Uninstall { prefix } => install::uninstall(&prefix),
        Command::Demo => tasks::demo(),
        Command::Lint => setup::run().and_then(|env| tasks::lint(&env)),
        Command::Fuzz { seconds } => setup::run().and_then(|env| tasks::fuzz(&env, seconds)),
        Command::Bench { which, rows } => tasks::bench(which, &rows),
        Command::Soak { duration } => tasks::soak(&duration),
        Command::Kernels { kernel, check } => {
            kernels::run(kernel.as_deref(), check.as_deref()).map(|_| ())
        }
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use xtask::doc_commands::{self, Program};

    /// Every `cargo xtask ...` shown in README.md and BENCHMARKS.md parses
    /// with this command line (the `flowdar ...` ones are checked in
    /// flowdar-user/tests/doc_commands.rs).
    #[test]
    fn every_xtask_command_in_the_docs_parses() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        if let Err(report) = doc_commands::check_all::<super::Cli>(&root, Program::Xtask, 10) {
            panic!("{report}");
        }
    }
}
