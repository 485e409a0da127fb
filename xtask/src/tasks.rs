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

pub fn build() -> Result<()> {
    let env = setup::run()?;
    run_cmd(cargo(&env).args(["build", "--release", "-p", "flowdar-user"]))?;
    eprintln!(
        "built {}",
        workspace_root().join("target/release/flowdar").display()
    );
    Ok(())
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
    let mut root = cargo(&env);
    root.env("FLOWDAR_BIN", workspace_root().join("target/debug/flowdar"))
        .args(["test", "-p", "flowdar-tests", "--"]);
    if let Some(f) = filter {
        root.arg(f);
    }
    root.arg("--test-threads=1");
    tally.run(&mut root)?;
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

pub fn demo() -> Result<()> {
    let env = setup::run()?;
    run_cmd(cargo(&env).args(["build", "--release", "-p", "flowdar-user"]))?;
    let out = workspace_root().join("target/flowdar-demo.flowdar");
    run_cmd(
        Command::new(workspace_root().join("target/release/flowdar"))
            .args(["demo", "-o"])
            .arg(&out),
    )
}
