//! Machine set-up: Debian packages, the nightly's rust-src, and bpf-linker
//! built against the nightly toolchain's own libLLVM (no LLVM 22 comes from
//! Debian here; see shared/TOOLCHAIN.md). Idempotent, and it notices a
//! bpf-linker broken by a nightly update and rebuilds it.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

/// Debian packages the tests, demo and experiments use.
const APT_PACKAGES: &[&str] = &[
    "apache2",
    "bpftrace",
    "wrk",
    "slowhttptest",
    // `ip netns`/veth: the experiment's client and attacker hosts (issue #19).
    "iproute2",
    "util-linux",
    "chromium",
    // Issue #18: `flowdar import uftrace` is tested against uftrace itself;
    // `cargo xtask install` splits debug info (objcopy) and its test renders
    // a man page (man -l) and has gdb find the debug file; the query pack
    // runs in Spark (Java) from a venv.
    "uftrace",
    "binutils",
    "man-db",
    "openjdk-17-jre-headless",
    "python3-venv",
    "gdb",
    // Issue #16: `flowdar top`'s terminal view is tested in tmux.
    "tmux",
    // Issue #31: the client-address offsets in flowdar-common are checked
    // against the DWARF of a program built on Debian's own httpd and APR
    // headers (flowdar-user/tests/offsets.rs, no root).
    "apache2-dev",
    "libapr1-dev",
    // Issue #26: Apache over TLS and HTTP/2 (the tests' certificates come
    // from openssl; h2load is the HTTP/2 and HTTP/1.1-over-TLS client) and
    // PHP-FPM behind mod_proxy_fcgi.
    "openssl",
    "nghttp2-client",
    "php8.2-fpm",
    // Issue #29: the TLS and HTTP/2 attack client (flowdar-lab/attacks,
    // on h2, hpack and hyperframe) and mod_qos, one of the mitigations
    // (built against PCRE 1: libpcre3, loaded with LoadFile).
    "python3-h2",
    "libapache2-mod-qos",
    "libpcre3",
];
/// PyPI packages the tests use (DuckDB reads the Parquet exports back).
const PIP_PACKAGES: &[(&str, &str)] = &[("duckdb", "duckdb")];
/// pyspark for the query-pack test, in a venv inside the clone
/// (target/pyspark), so nothing lands in a global cache.
const PYSPARK: &str = "pyspark>=3.5,<5";
const BPF_LINKER_VERSION: &str = "0.13.0";

/// What later steps need from set-up.
pub struct Env {
    /// Directory holding bpf-linker, to put first on PATH.
    pub tools_bin: PathBuf,
}

impl Env {
    /// PATH with our tools first.
    pub fn path(&self) -> String {
        format!(
            "{}:{}",
            self.tools_bin.display(),
            env::var("PATH").unwrap_or_default()
        )
    }
}

/// Where persistent tools live: outside the clone, so a fresh clone on the
/// same machine reuses them. `FLOWDAR_TOOLS_DIR` overrides.
fn tools_dir() -> PathBuf {
    if let Some(d) = env::var_os("FLOWDAR_TOOLS_DIR") {
        return d.into();
    }
    let home = env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".local/share/flowdar")
}

pub fn run() -> Result<Env> {
    apt_packages()?;
    pip_packages()?;
    pyspark()?;
    tracefs();
    rust_src()?;
    let tools_bin = bpf_linker()?;
    cargo_fuzz(&tools_bin)?;
    Ok(Env { tools_bin })
}

/// What building the release binary needs, and nothing more (no Debian
/// packages, no root): for `cargo xtask install`.
pub fn for_build() -> Result<Env> {
    rust_src()?;
    let tools_bin = bpf_linker()?;
    Ok(Env { tools_bin })
}

pub fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!(
            "setup: Debian packages present ({})",
            APT_PACKAGES.join(", ")
        );
        return Ok(());
    }
    eprintln!("setup: installing {} with apt-get", missing.join(", "));
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    run_cmd(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )
}

/// Mounts tracefs if the machine booted without it: flowdar mounts it
/// itself, but the tests' independent witness (bpftrace) may run first.
fn tracefs() {
    if std::path::Path::new("/sys/kernel/tracing/events").is_dir() {
        return;
    }
    let ok = Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .status()
        .is_ok_and(|s| s.success());
    eprintln!(
        "setup: mounting tracefs on /sys/kernel/tracing: {}",
        if ok { "done" } else { "failed (not root?)" }
    );
}

fn pip_packages() -> Result<()> {
    for (module, package) in PIP_PACKAGES {
        let present = Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if present {
            eprintln!("setup: python module {module} present");
            continue;
        }
        eprintln!("setup: installing {package} with pip");
        run_cmd(Command::new("python3").args(["-m", "pip", "install", "-q", package]))?;
    }
    Ok(())
}

/// The venv holding pyspark (its `bin/python` runs the Spark queries).
pub fn pyspark_venv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/pyspark")
}

fn pyspark() -> Result<()> {
    let venv = pyspark_venv();
    let python = venv.join("bin/python");
    let present = Command::new(&python)
        .args(["-c", "import pyspark"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        eprintln!("setup: pyspark present ({})", venv.display());
        return Ok(());
    }
    eprintln!(
        "setup: installing {PYSPARK} into {} (~1 minute)",
        venv.display()
    );
    run_cmd(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run_cmd(Command::new(&python).args(["-m", "pip", "install", "-q", "--no-cache-dir", PYSPARK]))
}

fn rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .context("running rustup")?;
    if !out.status.success() {
        bail!(
            "the nightly toolchain is missing (the eBPF crate needs it): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        eprintln!("setup: nightly rust-src present");
        return Ok(());
    }
    eprintln!("setup: adding rust-src to the nightly toolchain");
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// The nightly toolchain's libLLVM (e.g. libLLVM.so.22.1-rust-1.97.0-nightly).
fn nightly_libllvm() -> Result<PathBuf> {
    let out = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()
        .context("running rustc +nightly")?;
    let lib = PathBuf::from(String::from_utf8(out.stdout)?.trim()).join("lib");
    let found = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        });
    found.with_context(|| format!("no libLLVM.so.*-rust-* in {}", lib.display()))
}

fn llvm_major(lib: &Path) -> Result<String> {
    let name = lib.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.strip_prefix("libLLVM.so.")
        .and_then(|v| v.split('.').next())
        .map(str::to_string)
        .with_context(|| format!("cannot read the LLVM version of {name}"))
}

/// Builds bpf-linker into `<tools>/bin` unless a working one made for this
/// nightly is already there.
fn bpf_linker() -> Result<PathBuf> {
    let tools = tools_dir();
    let bin = tools.join("bin");
    let linker = bin.join("bpf-linker");
    let libllvm = nightly_libllvm()?;
    let stamp_path = tools.join("bpf-linker.stamp");
    let want_stamp = format!(
        "bpf-linker {BPF_LINKER_VERSION} against {}\n",
        libllvm.display()
    );
    let works = Command::new(&linker)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let stamp_ok = std::fs::read_to_string(&stamp_path).is_ok_and(|s| s == want_stamp);
    if works && stamp_ok {
        eprintln!("setup: bpf-linker present ({})", linker.display());
        return Ok(bin);
    }
    if linker.exists() {
        eprintln!(
            "setup: bpf-linker at {} is broken or built for another nightly; rebuilding",
            linker.display()
        );
    } else {
        eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against the nightly's libLLVM (~2 minutes)");
    }
    // bpf-linker finds libLLVM.so under LLVM_PREFIX/lib and bakes that
    // directory into its RUNPATH: it must stay where it is.
    let prefix = tools.join("llvm-prefix");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib)?;
    let name = libllvm.file_name().expect("file name");
    for link in [lib.join("libLLVM.so"), lib.join(name)] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    let feature = format!("llvm-{}", llvm_major(&libllvm)?);
    run_cmd(
        Command::new("cargo")
            .env("LLVM_PREFIX", &prefix)
            .args([
                "+nightly",
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--force",
            ])
            .args(["--no-default-features", "--features", &feature, "--root"])
            .arg(&tools),
    )?;
    std::fs::write(&stamp_path, want_stamp)?;
    Ok(bin)
}

/// cargo-fuzz, for the fuzz targets (installed next to bpf-linker).
fn cargo_fuzz(bin: &Path) -> Result<()> {
    if bin.join("cargo-fuzz").exists() {
        eprintln!("setup: cargo-fuzz present");
        return Ok(());
    }
    eprintln!("setup: installing cargo-fuzz (~1 minute)");
    run_cmd(
        Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked", "--root"])
            .arg(bin.parent().expect("tools dir")),
    )
}

pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}
