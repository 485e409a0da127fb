//! Build, test, lint and demo tasks.
use std::{path::PathBuf, process::Command};

use anyhow::Result;

use crate::setup::{self, run_cmd, Env};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn cargo(env: &Env) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root()).env("PATH", env.path());
    c
}

/// `cargo build --release -p flowdar-user`.
pub fn build_release(env: &Env) -> Result<()> {
    run_cmd(cargo(env).args(["build", "--release", "-p", "flowdar-user"]))
}

/// The release binary `cargo xtask build` makes.
pub fn release_binary() -> PathBuf {
    workspace_root().join("target/release/flowdar")
}

pub fn build() -> Result<()> {
    let env = setup::run()?;
    build_release(&env)?;
    eprintln!(
        "built {}",
        workspace_root().join("target/release/flowdar").display()
    );
    Ok(())
}

/// A fresh run of the tests takes about 8.5 GB of the checkout (measured
/// 2026-11-26: `target/` 5.6, the two fuzz targets' 2.9): say up front when
/// the disk is short, so that a failure for space reads as one.
const DISK_NEEDED_GB: u64 = 10;

fn report_disk() {
    let root = workspace_root();
    let out = Command::new("df").args(["-Pk"]).arg(&root).output();
    let free_kb = out.ok().and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .nth(1)?
            .split_whitespace()
            .nth(3)?
            .parse::<u64>()
            .ok()
    });
    match free_kb {
        Some(kb) if kb / (1 << 20) < DISK_NEEDED_GB => eprintln!(
            "xtask: warning: {} GB free under {}; a fresh test run needs about {DISK_NEEDED_GB} GB",
            kb / (1 << 20),
            root.display()
        ),
        Some(kb) => eprintln!("xtask: {} GB free under {}", kb / (1 << 20), root.display()),
        None => eprintln!("xtask: could not read the free disk space (df)"),
    }
}

pub fn lint(env: &Env) -> Result<()> {
    run_cmd(cargo(env).args(["fmt", "--all", "--check"]))?;
    run_cmd(cargo(env).args([
        "clippy",
        "--workspace",
        "--exclude",
        "flowdar-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The eBPF crate alone, for its own target (the workspace-wide run trips
    // over the duplicate panic handler).
    run_cmd(
        Command::new("rustup")
            .current_dir(workspace_root().join("flowdar-ebpf"))
            .env("PATH", env.path())
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
            )
            .args(["run", "nightly", "cargo", "clippy", "-Z", "build-std=core"])
            .args([
                "--target",
                "bpfel-unknown-none",
                "--release",
                "--bins",
                "--",
                "-D",
                "warnings",
            ]),
    )
}

pub fn test(filter: Option<&str>, lint_first: bool) -> Result<()> {
    report_disk();
    let env = setup::run()?;
    if lint_first {
        lint(&env)?;
    }
    // Tier 1: no root, no kernel.
    let mut unit = cargo(&env);
    unit.args([
        "test",
        "--workspace",
        "--exclude",
        "flowdar-ebpf",
        "--exclude",
        "flowdar-tests",
    ]);
    if let Some(f) = filter {
        unit.arg(f);
    }
    let mut tally = Tally::default();
    tally.run(&mut unit)?;
    // Tier 2: root, the real kernel and a real Apache. One at a time: they
    // count the kernel's loaded programs and must not see each other's.
    run_cmd(cargo(&env).args(["build", "-p", "flowdar-user"]))?;
    // The install test (tests/tests/install.rs) installs this one release
    // build with this xtask (`install --no-build`): built once, here.
    run_cmd(cargo(&env).args(["build", "--release", "-p", "flowdar-user"]))?;
    let mut root = cargo(&env);
    root.env("FLOWDAR_BIN", workspace_root().join("target/debug/flowdar"))
        .env("XTASK_BIN", std::env::current_exe()?)
        .args(["test", "-p", "flowdar-tests", "--"]);
    if let Some(f) = filter {
        root.arg(f);
    }
    root.arg("--test-threads=1");
    tally.run(&mut root)?;
    if filter.is_none() {
        fuzz(&env, FUZZ_SECONDS_IN_TEST)?;
        // Tier 2 again on the kernels users run (Debian 12's 6.1 without
        // uprobe_multi, 6.12 with it), booted under virtme-ng.
        // It fails (and so does this) if any check failed.
        let (passed, _) = crate::kernels::run(None, None)?;
        tally.passed += passed as u64;
    }
    println!(
        "\nall tests: {} passed, {} failed",
        tally.passed, tally.failed
    );
    Ok(())
}

/// Counts cargo test's `test result:` lines while passing output through.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

impl Tally {
    fn run(&mut self, cmd: &mut Command) -> Result<()> {
        use std::io::{BufRead, BufReader};
        let mut child = cmd.stdout(std::process::Stdio::piped()).spawn()?;
        for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
            let line = line?;
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                let num = |word: &str| {
                    rest.split(';')
                        .find_map(|p| {
                            p.trim()
                                .strip_suffix(word)?
                                .trim()
                                .rsplit(' ')
                                .next()?
                                .parse::<u64>()
                                .ok()
                        })
                        .unwrap_or(0)
                };
                self.passed += num("passed");
                self.failed += num("failed");
            }
        }
        let status = child.wait()?;
        if !status.success() {
            anyhow::bail!(
                "{cmd:?} failed ({status}); so far {} passed, {} failed",
                self.passed,
                self.failed
            );
        }
        Ok(())
    }
}

/// Fuzzing time per target inside `cargo xtask test`.
const FUZZ_SECONDS_IN_TEST: u64 = 20;
/// The fuzz targets, all in `flowdar-user/fuzz`: one crate, so that their
/// dependencies are built once under one set of features (a crate each,
/// with the trace reader's and the spec's crates alone, built them three
/// times: 49 s, 8 min 46 s and 5 min 16 s of a CI run).
const FUZZ_TARGETS: &[&str] = &["trace_reader", "probe_config", "experiment_spec"];

/// Runs every fuzz target for `seconds`, starting from the committed seeds;
/// any crash fails (cargo fuzz leaves the input in fuzz/artifacts).
pub fn fuzz(env: &Env, seconds: u64) -> Result<()> {
    let fuzz_dir = workspace_root().join("flowdar-user");
    for target in FUZZ_TARGETS {
        let corpus = workspace_root().join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        let seeds = fuzz_dir.join("fuzz/seeds").join(target);
        eprintln!("fuzz: {target} for {seconds} s");
        run_cmd(
            Command::new("rustup")
                .current_dir(&fuzz_dir)
                .env("PATH", env.path())
                // The dev profile at opt-level 1, without debug info:
                // cargo-fuzz's default (release, one codegen unit) took 21
                // minutes of CI to build the targets (then in three
                // crates: trace_reader 93 s, probe_config 632 s, against
                // 40 s and 407 s at opt-level 1), with the same debug
                // assertions and overflow checks; it runs about three
                // quarters as many inputs a second (8,900/s against
                // 12,000/s on probe_config; opt-level 0: 220/s).
                .env("CARGO_PROFILE_DEV_OPT_LEVEL", "1")
                .env("CARGO_PROFILE_DEV_DEBUG", "0")
                .args(["run", "nightly", "cargo", "fuzz", "run", "--dev"])
                .arg("--target-dir")
                .arg(workspace_root().join("target/fuzz-build"))
                .arg(target)
                .arg(&corpus)
                .arg(&seeds)
                .args([
                    "--",
                    &format!("-max_total_time={seconds}"),
                    "-print_final_stats=1",
                ]),
        )?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Bench {
    /// The tracer against the kernel's floor and bpftrace: per call (a),
    /// server throughput (b) and trace bytes/event (c), analysis (d),
    /// attach/detach (e), probe hits per request of each profile set (h),
    /// read time per client, `request,io` against `lean` (r), the zoom on
    /// the built-in experiment (z).
    Tracer,
    /// Trace store: bytes/event on a recorded Apache trace and a synthetic
    /// one, encode/decode rates; and a 30 s full-speed recording's losses.
    Store,
}

pub fn bench(which: Bench, rows: &[String]) -> Result<()> {
    let env = setup::run()?;
    run_cmd(cargo(&env).args(["build", "--release", "-p", "flowdar-user"]))?;
    let flowdar = workspace_root().join("target/release/flowdar");
    let out = workspace_root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    let examples = workspace_root().join("flowdar-user/examples");
    match which {
        Bench::Tracer => run_cmd(
            cargo(&env)
                .args(["bench", "-p", "flowdar-tests", "--bench", "tracer", "--"])
                .args(rows)
                .env("FLOWDAR_BIN", &flowdar)
                .env("BENCH_OUT", &out),
        ),
        Bench::Store => {
            let trace = out.join("apache-request-io.flowdar");
            eprintln!(
                "bench store: recording Apache under wrk for 10 s with the request+io probes"
            );
            run_cmd(
                Command::new(&flowdar)
                    .args(["demo", "--wrk", "10s", "--probes"])
                    .arg(examples.join("apache-request-io.toml"))
                    .arg("-o")
                    .arg(&trace),
            )?;
            eprintln!(
                "bench store: recording Apache under wrk for 30 s with the request probes (losses)"
            );
            run_cmd(
                Command::new(&flowdar)
                    .args(["demo", "--wrk", "30s", "--probes"])
                    .arg(examples.join("apache-request.toml"))
                    .arg("-o")
                    .arg(out.join("apache-request-30s.flowdar")),
            )?;
            run_cmd(
                cargo(&env)
                    .args(["bench", "-p", "flowdar-trace", "--bench", "store", "--"])
                    .arg(&trace),
            )
        }
    }
}

/// The soak run: `cargo bench -p flowdar-tests --bench soak` with the
/// release binary.
pub fn soak(duration: &str) -> Result<()> {
    let env = setup::run()?;
    run_cmd(cargo(&env).args(["build", "--release", "-p", "flowdar-user"]))?;
    let out = workspace_root().join("target/soak");
    std::fs::create_dir_all(&out)?;
    run_cmd(
        cargo(&env)
            .args([
                "bench",
                "-p",
                "flowdar-tests",
                "--bench",
                "soak",
                "--",
                duration,
            ])
            .env(
                "FLOWDAR_BIN",
                workspace_root().join("target/release/flowdar"),
            )
            .env("BENCH_OUT", &out),
    )
}

pub fn demo() -> Result<()> {
    let env = setup::run()?;
    run_cmd(cargo(&env).args(["build", "--release", "-p", "flowdar-user"]))?;
    // The built-in DoS experiment: a throwaway Apache, normal load, then the
    // same load under a Slowloris attack; recorded, compared and reported.
    let out = workspace_root().join("target/flowdar-experiment");
    run_cmd(
        Command::new(workspace_root().join("target/release/flowdar"))
            .args(["experiment", "--default", "--force", "-o"])
            .arg(&out),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crates that read, analyse and draw traces, and the lab: none
    /// may need the eBPF build (nightly and bpf-linker).
    const READERS: &[&str] = &["flowdar-trace", "flowdar-analysis", "flowdar-lab"];

    /// Someone who only reads traces builds and tests the readers on stable
    /// Rust without the kernel toolchain: none of them depends, not even
    /// for its tests, on flowdar-user (whose build script builds the eBPF
    /// object with nightly and bpf-linker), flowdar-ebpf or aya-build.
    /// (Building them apart in CI recompiled 3 minutes of dependencies
    /// under other features; Cargo's graph says the same in a second.)
    #[test]
    fn the_trace_readers_do_not_need_the_ebpf_build() {
        for krate in READERS {
            let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .current_dir(workspace_root())
                .args([
                    "tree",
                    "-p",
                    krate,
                    "-e",
                    "normal,build,dev",
                    "--target",
                    "all",
                    "--prefix",
                    "none",
                ])
                .output()
                .expect("cargo tree");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.starts_with(&format!("{krate} v")),
                "cargo tree -p {krate}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            for kernel_side in ["flowdar-user v", "flowdar-ebpf v", "aya-build v"] {
                assert!(
                    !text.lines().any(|l| l.starts_with(kernel_side)),
                    "{krate} depends on {kernel_side}:\n{text}"
                );
            }
        }
    }
}
