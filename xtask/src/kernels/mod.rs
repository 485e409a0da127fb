//! `cargo xtask kernels`: the kernel matrix. Boots Debian's packaged kernels
//! under virtme-ng (QEMU) over the host's own root filesystem and runs, in
//! each, a subset of the root integration tests plus `flowdar demo` and
//! `flowdar experiment`, from binaries built on the host.
//!
//! This module owns the matrix (which kernels, which checks), installing
//! what the matrix needs (QEMU, busybox-static, virtme-ng in
//! `target/kernels/venv`, the kernels), the boots, and the report
//! (`target/kernels/matrix.md`). The guest side is
//! `xtask/guest/run-matrix.sh`.
//!
//! Why these choices (measured on the project's 2-core Debian 12 VM):
//! - TCG, not KVM: nested KVM stops after "Probing EDD" here
//!   (shared/TOOLCHAIN.md), so every guest runs `--disable-kvm`, several
//!   times slower than the host: the checks compare counts, never times.
//! - Kernels are installed with `INITRD=No`: vng builds its own initramfs
//!   (from /lib/modules) at every boot and never reads Debian's, whose
//!   generation costs about a minute per kernel.
//! - The test executables run directly in the guest (`--exact NAME`),
//!   never cargo: the guest's root is read-only and cargo would rebuild.
//!   Exit 0 is not a pass on its own: see `verdict.rs`.
mod checks;
mod guest;
mod install;
mod report;
mod verdict;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::setup::{self, installed, run_cmd};
use checks::{Check, What, CHECKS};
use guest::{boot, build};
use install::{install, select, virtme_ng};
use report::{attach_mode, failure_excerpt, first_error, minutes, report};
use verdict::judge;

/// A kernel of the matrix: the newest Debian package whose name matches.
struct KernelSpec {
    /// What `--kernel` matches first, and the row label.
    label: &'static str,
    /// `apt-cache search --names-only` pattern; the highest numbers win.
    package: &'static str,
    why: &'static str,
}

const MATRIX: &[KernelSpec] = &[
    KernelSpec {
        label: "6.1",
        package: r"^linux-image-6\.1\.0-[0-9]+-amd64$",
        why: "Debian 12's stock kernel: no uprobe_multi (Linux 6.6+), perf-event uprobes",
    },
    KernelSpec {
        label: "6.12",
        package: r"^linux-image-6\.12\.[0-9]+\+deb12-amd64$",
        why: "Debian 12's 6.12 kernel (bookworm updates): uprobe_multi",
    },
];

/// Host packages the boots need: QEMU, and busybox-static for the initramfs
/// virtme-ng builds (it refuses to boot without a busybox).
const HOST_PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static"];
const VIRTME_NG: &str = "1.42";

/// Guest size: what the root tests and the experiment's 150-worker Apache
/// need, on the host's 2 cores.
const VNG_MEMORY: &str = "3G";
const VNG_CPUS: &str = "2";
/// Past this a guest is killed and its unfinished checks count as failed:
/// a hung guest costs CI at most this (a whole guest took 3-5 min here
/// with 5 s experiment phases; the 20 s ones add about 2).
const GUEST_DEADLINE: Duration = Duration::from_secs(12 * 60);
/// Lines of a failed check's log printed with the run's output.
const FAILURE_LINES: usize = 80;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A resolved kernel: Debian package and its version string (`uname -r`).
struct Kernel {
    label: &'static str,
    why: &'static str,
    package: String,
    version: String,
}

impl Kernel {
    fn vmlinuz(&self) -> PathBuf {
        PathBuf::from(format!("/boot/vmlinuz-{}", self.version))
    }

    fn present(&self) -> bool {
        self.vmlinuz().is_file()
            && Path::new(&format!("/lib/modules/{}/modules.dep", self.version)).is_file()
            && installed(&self.package)
    }
}

/// How one check went in one guest.
struct Outcome {
    /// Exit status; None when it never ran (the guest died or timed out).
    status: Option<i32>,
    /// Exit 0 and its log accepted (see [`verdict`]).
    passed: bool,
    seconds: f64,
    /// When it failed: what its verdict found, or the first telling line
    /// of its log.
    error: String,
}

/// One guest's results.
struct Run {
    kernel: Kernel,
    outcomes: Vec<Outcome>,
    attach_mode: String,
    wall: Duration,
    note: String,
}

impl Run {
    fn passed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.passed).count()
    }

    fn failed(&self) -> usize {
        self.outcomes.len() - self.passed()
    }
}

/// `cargo xtask kernels [--kernel PATTERN] [--check NAME]`.
/// Runs the matrix; returns the checks (passed, failed) when none failed.
pub fn run(pattern: Option<&str>, only: Option<&str>) -> Result<(usize, usize)> {
    let checks: Vec<&Check> = CHECKS
        .iter()
        .filter(|c| only.is_none_or(|o| c.name.contains(o)))
        .collect();
    if checks.is_empty() {
        bail!(
            "no check's name contains {:?} (the checks: {})",
            only.unwrap_or_default(),
            CHECKS.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
        );
    }
    let env = setup::run()?;
    let dir = workspace_root().join("target/kernels");
    std::fs::create_dir_all(&dir)?;
    let mut kernels = select(pattern)?;
    if let Err(e) = install(&kernels) {
        // Stale lists name packages the mirror has dropped: refresh, choose
        // again, retry once.
        eprintln!("kernels: {e:#}; running apt-get update and retrying");
        run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
        kernels = select(pattern)?;
        install(&kernels)?;
    }
    let venv_bin = virtme_ng(&dir)?;
    let (flowdar, tests) = build(&env, &checks)?;
    let mut runs = Vec::new();
    for kernel in kernels {
        runs.push(boot(kernel, &dir, &venv_bin, &flowdar, &tests, &checks)?);
    }
    let md = report(&runs, &checks);
    println!("\n{md}");
    let path = dir.join("matrix.md");
    std::fs::write(&path, &md).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("kernels: wrote {}", path.display());
    let failed: usize = runs.iter().map(Run::failed).sum();
    if failed > 0 {
        bail!("{failed} check(s) failed across the kernel matrix (logs in target/kernels/VERSION/logs)");
    }
    Ok((runs.iter().map(Run::passed).sum(), failed))
}

#[cfg(test)]
mod tests {
    use super::{guest::test_executables, install::numbers, *};

    #[test]
    fn newest_package_orders_by_number_not_text() {
        let names = ["linux-image-6.1.0-9-amd64", "linux-image-6.1.0-56-amd64"];
        let max = names.iter().max_by_key(|n| numbers(n)).unwrap();
        assert_eq!(*max, "linux-image-6.1.0-56-amd64");
    }

    #[test]
    fn finds_test_executables_in_cargo_json() {
        let json = r#"{"reason":"compiler-artifact","target":{"kind":["test"],"crate_types":["bin"],"name":"lifecycle","src_path":"/w/tests/tests/lifecycle.rs"},"executable":"/w/target/debug/deps/lifecycle-abc","fresh":true}
{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"flowdar_tests"},"executable":"/w/target/debug/deps/flowdar_tests-1"}"#;
        let found = test_executables(json);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found["lifecycle"],
            PathBuf::from("/w/target/debug/deps/lifecycle-abc")
        );
    }

    #[test]
    fn reads_the_attach_mode_and_the_error() {
        let dir = std::env::temp_dir().join(format!("xtask-kernels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("a.log"),
            "Probes attached\nAttach mode: perf (fallback)\n",
        )
        .unwrap();
        assert_eq!(attach_mode(&dir), "perf");
        std::fs::remove_dir_all(&dir).unwrap();
        let log = "running 1 test\nthread 'x' panicked at a.rs:1:2:\nrecord failed:\nError: attaching: Invalid argument (os error 22)\n";
        assert_eq!(
            first_error(log),
            "a.rs:1:2: Error: attaching: Invalid argument (os error 22)"
        );
        let log = "thread 'x' panicked at a.rs:1:2:\nassertion `left == right` failed: Attaching 6 probes...\n  left: Some(3)\n right: Some(50)\n";
        assert_eq!(
            first_error(log),
            "a.rs:1:2: assertion `left == right` failed: Attaching 6 probes... (left: Some(3), right: Some(50))"
        );
        assert_eq!(
            first_error("x\ntimed out after 300 s\n"),
            "timed out after 300 s"
        );
    }

    #[test]
    fn a_failure_excerpt_starts_at_the_panic_and_is_bounded() {
        let log = "a\nb\nthread 'x' panicked at a.rs:1:2:\nstuck\n-- tid 7 (flowdar) S\nc\nd\n";
        assert_eq!(
            failure_excerpt(log, 3),
            "thread 'x' panicked at a.rs:1:2:\nstuck\n-- tid 7 (flowdar) S\n[... 2 more lines]"
        );
        assert_eq!(failure_excerpt("a\nb\nc\n", 2), "b\nc");
    }
}
