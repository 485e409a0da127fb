//! Choosing the newest matching Debian kernels and installing what the
//! matrix needs: QEMU, busybox-static, the kernels, virtme-ng in a venv.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use super::*;
use crate::setup::run_cmd;

/// The matrix's kernels, newest package of each, narrowed by `--kernel`
/// (a row label like `6.1`, else a part of the version like `6.12.117`).
pub(super) fn select(pattern: Option<&str>) -> Result<Vec<Kernel>> {
    let specs: Vec<&KernelSpec> = match pattern {
        Some(p) if MATRIX.iter().any(|s| s.label == p) => {
            MATRIX.iter().filter(|s| s.label == p).collect()
        }
        _ => MATRIX.iter().collect(),
    };
    let mut kernels = Vec::new();
    for spec in specs {
        let package = newest_package(spec.package)?;
        let version = package
            .strip_prefix("linux-image-")
            .expect("pattern starts with linux-image-")
            .to_string();
        kernels.push(Kernel {
            label: spec.label,
            why: spec.why,
            package,
            version,
        });
    }
    if let Some(p) = pattern {
        kernels.retain(|k| k.label == p || k.version.contains(p));
        if kernels.is_empty() {
            let labels: Vec<&str> = MATRIX.iter().map(|s| s.label).collect();
            bail!(
                "--kernel {p} matches no kernel of the matrix ({})",
                labels.join(", ")
            );
        }
    }
    Ok(kernels)
}

/// The package matching `pattern` with the highest numbers in its name
/// (6.1.0-56 over 6.1.0-9), from apt's lists (fetched if there are none).
pub(super) fn newest_package(pattern: &str) -> Result<String> {
    let search = || -> Result<Vec<String>> {
        let out = Command::new("apt-cache")
            .args(["search", "--names-only", pattern])
            .output()
            .context("running apt-cache")?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(" - ").next())
            .map(str::to_string)
            .collect())
    };
    let mut names = search()?;
    if names.is_empty() {
        eprintln!("kernels: no package matches {pattern}; running apt-get update");
        run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
        names = search()?;
    }
    names
        .into_iter()
        .max_by_key(|n| numbers(n))
        .with_context(|| format!("no Debian package matches {pattern}"))
}

/// The runs of digits in `s`, for ordering package names.
pub(super) fn numbers(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter_map(|d| d.parse().ok())
        .collect()
}

/// Installs the host packages and kernels that are missing, in one apt run.
pub(super) fn install(kernels: &[Kernel]) -> Result<()> {
    let mut missing: Vec<String> = HOST_PACKAGES
        .iter()
        .filter(|p| !installed(p))
        .map(|p| p.to_string())
        .collect();
    missing.extend(
        kernels
            .iter()
            .filter(|k| !k.present())
            .map(|k| k.package.clone()),
    );
    if missing.is_empty() {
        let have: Vec<&str> = kernels.iter().map(|k| k.package.as_str()).collect();
        eprintln!(
            "kernels: present ({}, {})",
            HOST_PACKAGES.join(", "),
            have.join(", ")
        );
        return Ok(());
    }
    eprintln!(
        "kernels: installing {} with apt-get (no Debian initramfs: vng makes its own)",
        missing.join(", ")
    );
    let started = Instant::now();
    run_cmd(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            // Read by /etc/kernel/postinst.d/initramfs-tools: skip the
            // initramfs (~1 min per kernel), which only a real boot of the
            // host with that kernel would use.
            .env("INITRD", "No")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )?;
    eprintln!("kernels: installed in {:.0?}", started.elapsed());
    Ok(())
}

/// virtme-ng from PyPI in a venv under target/kernels; returns its bin/.
pub(super) fn virtme_ng(dir: &Path) -> Result<PathBuf> {
    let venv = dir.join("venv");
    let bin = venv.join("bin");
    let version = Command::new(bin.join("vng"))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if version == format!("virtme-ng {VIRTME_NG}") {
        eprintln!("kernels: {version} present ({})", bin.display());
        return Ok(bin);
    }
    eprintln!(
        "kernels: installing virtme-ng {VIRTME_NG} into {}",
        venv.display()
    );
    run_cmd(
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
    )?;
    run_cmd(
        Command::new(bin.join("pip"))
            // No cache in ~/.cache: all of it stays in target/kernels.
            .args([
                "install",
                "-q",
                "--no-cache-dir",
                "--disable-pip-version-check",
            ])
            .arg(format!("virtme-ng=={VIRTME_NG}")),
    )?;
    Ok(bin)
}
