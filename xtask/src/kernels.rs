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
use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::setup::{self, installed, run_cmd, Env};

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
/// a hung guest costs CI at most this (a whole guest takes ~2.5 min here).
const GUEST_DEADLINE: Duration = Duration::from_secs(12 * 60);

/// One check run in every guest.
struct Check {
    /// Row label; also the log's file name in the guest's output directory.
    name: &'static str,
    /// Seconds before the guest script kills it (TCG is several times
    /// slower than the host).
    limit: u32,
    what: What,
}

enum What {
    /// A root integration test: `tests/tests/FILE.rs`, function TEST.
    Test {
        file: &'static str,
        test: &'static str,
    },
    /// `flowdar ARGS...`, which must exit 0.
    Flowdar(&'static [&'static str]),
}

/// The subset: one test per path that differs between kernels (attach,
/// the in-kernel process filter, fork following, the perf-event fallback,
/// teardown after SIGKILL), plus the two user-facing runs with defaults.
const CHECKS: &[Check] = &[
    // The lighter tour with its defaults (attach mode: auto); prints the
    // attach mode it used.
    Check {
        name: "flowdar_demo",
        limit: 180,
        what: What::Flowdar(&["demo"]),
    },
    // Exact counts against bpftrace (event MPM), default attach mode.
    Check {
        name: "exact_counts_on_fresh_connections_match_bpftrace",
        limit: 180,
        what: What::Test {
            file: "record_apache",
            test: "exact_counts_on_fresh_connections_match_bpftrace",
        },
    },
    // Fork following in the kernel (prefork children born after attach).
    Check {
        name: "prefork_children_forked_after_attach_are_traced_and_strangers_are_not",
        limit: 180,
        what: What::Test {
            file: "process_tree",
            test: "prefork_children_forked_after_attach_are_traced_and_strangers_are_not",
        },
    },
    // The in-kernel filter against a second Apache mapping the same files.
    Check {
        name: "other_processes_mapping_the_same_files_are_not_traced",
        limit: 180,
        what: What::Test {
            file: "record_apache",
            test: "other_processes_mapping_the_same_files_are_not_traced",
        },
    },
    // `--attach-mode perf`: the path older kernels need, detach included.
    Check {
        name: "perf_event_attach_mode_records_the_same_counts",
        limit: 180,
        what: What::Test {
            file: "record_apache",
            test: "perf_event_attach_mode_records_the_same_counts",
        },
    },
    // A SIGKILLed recorder leaves no program, link or pin behind.
    Check {
        name: "sigkill_leaves_no_probe_and_a_readable_trace",
        limit: 180,
        what: What::Test {
            file: "lifecycle",
            test: "sigkill_leaves_no_probe_and_a_readable_trace",
        },
    },
    // `record --profile apache:request` attached to a server under wrk with
    // the default attach mode: no phantom in-flight calls, exact counts
    // against bpftrace; and the same when detaching mid-load.
    Check {
        name: "attached_under_load_by_default_leaves_no_phantom_calls_and_counts_exactly",
        limit: 180,
        what: What::Test {
            file: "busy_server",
            test: "attached_under_load_by_default_leaves_no_phantom_calls_and_counts_exactly",
        },
    },
    Check {
        name: "detached_mid_load_by_default_leaves_no_phantom_calls_and_counts_exactly",
        limit: 180,
        what: What::Test {
            file: "busy_server",
            test: "detached_mid_load_by_default_leaves_no_phantom_calls_and_counts_exactly",
        },
    },
    // A server in its own mount and PID namespaces, recorded by host PID.
    Check {
        name: "a_server_in_its_own_namespaces_is_recorded_by_host_pid",
        limit: 180,
        what: What::Test {
            file: "container",
            test: "a_server_in_its_own_namespaces_is_recorded_by_host_pid",
        },
    },
    // A non-root user with the capabilities this kernel needs (perf-event
    // uprobes and perf_event_paranoid 3 need CAP_SYS_ADMIN on Debian's).
    Check {
        name: "nobody_with_the_needed_capabilities_records_exact_counts",
        limit: 180,
        what: What::Test {
            file: "capabilities",
            test: "nobody_with_the_needed_capabilities_records_exact_counts",
        },
    },
    // Apache not named like Debian's: `httpd` with its own libapr.
    Check {
        name: "an_httpd_named_build_with_its_own_apr_is_traced_by_the_profile",
        limit: 180,
        what: What::Test {
            file: "any_apache",
            test: "an_httpd_named_build_with_its_own_apr_is_traced_by_the_profile",
        },
    },
    // The built-in DoS experiment, phases capped at 5 s (wrk, slowhttptest,
    // 150-worker Apache, report).
    Check {
        name: "flowdar_experiment",
        limit: 300,
        what: What::Flowdar(&[
            "experiment",
            "--default",
            "--max-phase",
            "5s",
            "-o",
            "/tmp/flowdar-guest/experiment",
            "--force",
        ]),
    },
];

impl Check {
    fn label(&self) -> String {
        match &self.what {
            What::Test { file, test } => format!("{file}::{test}"),
            What::Flowdar(args) => format!("flowdar {}", args.join(" ")),
        }
    }
}

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
    seconds: f64,
    /// The first telling line of its log when it failed.
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
        self.outcomes.iter().filter(|o| o.status == Some(0)).count()
    }

    fn failed(&self) -> usize {
        self.outcomes.len() - self.passed()
    }
}

/// `cargo xtask kernels [--kernel PATTERN]`.
/// Runs the matrix; returns the checks (passed, failed) when none failed.
pub fn run(pattern: Option<&str>) -> Result<(usize, usize)> {
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
    let (flowdar, tests) = build(&env)?;
    let mut runs = Vec::new();
    for kernel in kernels {
        runs.push(boot(kernel, &dir, &venv_bin, &flowdar, &tests)?);
    }
    let md = report(&runs);
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

/// The matrix's kernels, newest package of each, narrowed by `--kernel`
/// (a row label like `6.1`, else a part of the version like `6.12.117`).
fn select(pattern: Option<&str>) -> Result<Vec<Kernel>> {
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
fn newest_package(pattern: &str) -> Result<String> {
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
fn numbers(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter_map(|d| d.parse().ok())
        .collect()
}

/// Installs the host packages and kernels that are missing, in one apt run.
fn install(kernels: &[Kernel]) -> Result<()> {
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
fn virtme_ng(dir: &Path) -> Result<PathBuf> {
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

/// Builds `flowdar` and the root test executables on the host; returns the
/// binary and the executables by test file name.
fn build(env: &Env) -> Result<(PathBuf, BTreeMap<String, PathBuf>)> {
    let root = workspace_root();
    let cargo = || {
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.current_dir(&root).env("PATH", env.path());
        c
    };
    run_cmd(cargo().args(["build", "-p", "flowdar-user"]))?;
    // Only the test files the checks use: nothing else to build or to break.
    let mut files: Vec<&str> = CHECKS
        .iter()
        .filter_map(|c| match c.what {
            What::Test { file, .. } => Some(file),
            What::Flowdar(_) => None,
        })
        .collect();
    files.sort_unstable();
    files.dedup();
    let out = cargo()
        .args([
            "test",
            "-p",
            "flowdar-tests",
            "--no-run",
            "--message-format=json",
        ])
        .args(files.iter().flat_map(|f| ["--test", f]))
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the root tests failed ({})", out.status);
    }
    let tests = test_executables(&String::from_utf8_lossy(&out.stdout));
    for check in CHECKS {
        if let What::Test { file, .. } = check.what {
            if !tests.contains_key(file) {
                bail!("cargo built no test executable for tests/tests/{file}.rs");
            }
        }
    }
    Ok((root.join("target/debug/flowdar"), tests))
}

/// Integration-test executables in cargo's JSON messages, by target name.
fn test_executables(json: &str) -> BTreeMap<String, PathBuf> {
    let field = |line: &str, key: &str| -> Option<String> {
        let start = line.find(key)? + key.len();
        let end = line[start..].find('"')?;
        Some(line[start..start + end].to_string())
    };
    json.lines()
        .filter(|l| l.contains(r#""target":{"kind":["test"]"#))
        .filter_map(|l| {
            let target = &l[l.find(r#""target":"#)?..];
            Some((
                field(target, r#""name":""#)?,
                PathBuf::from(field(l, r#""executable":""#)?),
            ))
        })
        .collect()
}

/// Boots `kernel` and runs every check in it.
fn boot(
    kernel: Kernel,
    dir: &Path,
    venv_bin: &Path,
    flowdar: &Path,
    tests: &BTreeMap<String, PathBuf>,
) -> Result<Run> {
    let out = dir.join(&kernel.version);
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    let mut plan = String::new();
    for check in CHECKS {
        let mut line = vec![check.name.to_string(), check.limit.to_string()];
        match check.what {
            What::Test { file, test } => line.extend([
                "env".into(),
                format!("FLOWDAR_BIN={}", flowdar.display()),
                tests[file].display().to_string(),
                "--exact".into(),
                test.into(),
                "--test-threads=1".into(),
            ]),
            What::Flowdar(args) => {
                line.push(flowdar.display().to_string());
                line.extend(args.iter().map(|a| a.to_string()));
            }
        }
        plan.push_str(&line.join("\t"));
        plan.push('\n');
    }
    std::fs::write(out.join("plan.tsv"), plan)?;

    let script = workspace_root().join("xtask/guest/run-matrix.sh");
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(venv_bin.join("vng"));
    cmd.env("PATH", path)
        .arg("-r")
        .arg(kernel.vmlinuz())
        .args(["--disable-kvm", "--memory", VNG_MEMORY, "--cpus", VNG_CPUS])
        .arg("--rwdir")
        .arg(&out)
        .arg("--exec")
        .arg(format!("bash '{}' '{}'", script.display(), out.display()))
        // Pipes, not our own descriptors: QEMU reopens the console through
        // /proc/self/fd/{1,2}, which truncates a file we are writing to.
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Its own process group, so a stuck guest is killed with its QEMU.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    eprintln!(
        "kernels: booting {} ({}) under TCG: {} checks",
        kernel.version,
        kernel.why,
        CHECKS.len()
    );
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting vng")?;
    // The console (guest output on stdout, kernel messages on stderr): shown
    // as it comes, and kept beside the results.
    let log = std::sync::Arc::new(std::sync::Mutex::new(std::fs::File::create(
        out.join("console.log"),
    )?));
    let pumps = [
        pump(child.stdout.take().expect("piped"), log.clone(), false),
        pump(child.stderr.take().expect("piped"), log, true),
    ];
    let mut note = String::new();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if started.elapsed() > GUEST_DEADLINE {
            note = format!("guest killed after {GUEST_DEADLINE:?}");
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for p in pumps {
        let _ = p.join();
    }
    let wall = started.elapsed();
    if let Some(s) = status.filter(|s| !s.success()) {
        note = format!("vng exited with {s}");
    }

    let results = std::fs::read_to_string(out.join("results.tsv")).unwrap_or_default();
    let outcomes = CHECKS
        .iter()
        .map(|check| {
            let row = results
                .lines()
                .map(|l| l.split('\t').collect::<Vec<_>>())
                .find(|f| f.len() == 3 && f[0] == check.name);
            let log = std::fs::read_to_string(out.join("logs").join(format!("{}.log", check.name)))
                .unwrap_or_default();
            match row {
                Some(f) => {
                    let status = f[1].parse().ok();
                    Outcome {
                        status,
                        seconds: f[2].parse().unwrap_or(0.0),
                        error: if status == Some(0) {
                            String::new()
                        } else {
                            first_error(&log)
                        },
                    }
                }
                None => Outcome {
                    status: None,
                    seconds: 0.0,
                    error: "not run (the guest stopped first)".into(),
                },
            }
        })
        .collect();
    let attach_mode = attach_mode(&out.join("logs"));
    let run = Run {
        kernel,
        outcomes,
        attach_mode,
        wall,
        note,
    };
    eprintln!(
        "kernels: {}: {} passed, {} failed in {} (attach mode: {})",
        run.kernel.version,
        run.passed(),
        run.failed(),
        minutes(run.wall),
        run.attach_mode
    );
    Ok(run)
}

/// Copies `from` line by line to our stdout (stderr if `to_stderr`) and to
/// `log`.
fn pump(
    from: impl std::io::Read + Send + 'static,
    log: std::sync::Arc<std::sync::Mutex<std::fs::File>>,
    to_stderr: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            // The serial console ends lines with CR LF.
            let line = line.replace(['\0', '\r'], "");
            if to_stderr {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
            let _ = writeln!(log.lock().expect("console log"), "{line}");
        }
    })
}

/// What went wrong in a failed check's log, on one line: a time-out, or the
/// panic's place and message with an `error` line of flowdar's (or else
/// the assertion's left and right), or the log's last line.
fn first_error(log: &str) -> String {
    let lines: Vec<&str> = log.lines().map(str::trim).collect();
    let find = |pred: &dyn Fn(&str) -> bool| lines.iter().copied().find(|l| pred(l));
    let text = if let Some(t) = find(&|l| l.starts_with("timed out after")) {
        t.to_string()
    } else {
        let error = find(&|l| l.to_ascii_lowercase().starts_with("error"));
        let panic = lines
            .iter()
            .position(|l| l.contains("panicked at"))
            .map(|i| {
                let place = lines[i]
                    .split("panicked at ")
                    .nth(1)
                    .unwrap_or("")
                    .trim_end_matches(':');
                let message = lines[i + 1..].iter().find(|l| !l.is_empty()).unwrap_or(&"");
                (place, *message)
            });
        let side = |s: &str| find(&|l| l.starts_with(s)).map(|l| l[s.len()..].trim());
        match (panic, error) {
            (Some((place, _)), Some(error)) => format!("{place}: {error}"),
            (Some((place, message)), None) => match (side("left:"), side("right:")) {
                (Some(l), Some(r)) => format!("{place}: {message} (left: {l}, right: {r})"),
                _ => format!("{place}: {message}"),
            },
            (None, Some(error)) => error.to_string(),
            (None, None) => lines
                .iter()
                .rev()
                .find(|l| !l.is_empty())
                .unwrap_or(&"(empty log)")
                .to_string(),
        }
    };
    let mut s: String = text.chars().take(300).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s.replace('|', "\\|")
}

/// What `flowdar` printed as its attach mode (a line `attach mode: X`, any
/// case) in the guest's logs; "?" when none says.
fn attach_mode(logs: &Path) -> String {
    let mut modes: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(logs).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            let lower = line.to_ascii_lowercase();
            if let Some(i) = lower.find("attach mode") {
                let rest = line[i + "attach mode".len()..]
                    .trim_start_matches([':', ' ', '='])
                    .split([',', ';', '(', ')'])
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                if !rest.is_empty() && !modes.contains(&rest) {
                    modes.push(rest);
                }
            }
        }
    }
    if modes.is_empty() {
        "?".into()
    } else {
        modes.sort();
        modes.join(" / ")
    }
}

fn minutes(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}m{:02}s", s / 60, s % 60)
}

/// The matrix as markdown: one row per kernel, then every check per kernel,
/// then what failed.
fn report(runs: &[Run]) -> String {
    let mut md = String::from(
        "| kernel | package | attach mode | passed | failed | boot + checks |\n\
         |---|---|---|---:|---:|---:|\n",
    );
    for r in runs {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.kernel.version,
            r.kernel.package,
            r.attach_mode,
            r.passed(),
            r.failed(),
            minutes(r.wall)
        ));
    }
    md.push_str("\n| check |");
    for r in runs {
        md.push_str(&format!(" {} |", r.kernel.label));
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(runs.len()));
    md.push('\n');
    for (i, check) in CHECKS.iter().enumerate() {
        md.push_str(&format!("| `{}` |", check.label()));
        for r in runs {
            let o = &r.outcomes[i];
            let verdict = match o.status {
                Some(0) => "ok".to_string(),
                Some(124) => "TIMEOUT".to_string(),
                Some(n) => format!("FAIL ({n})"),
                None => "not run".to_string(),
            };
            md.push_str(&format!(" {verdict}, {:.1} s |", o.seconds));
        }
        md.push('\n');
    }
    let mut failures = String::new();
    for r in runs {
        if !r.note.is_empty() {
            failures.push_str(&format!("- {}: {}\n", r.kernel.version, r.note));
        }
        for (check, o) in CHECKS.iter().zip(&r.outcomes) {
            if o.status != Some(0) {
                failures.push_str(&format!(
                    "- {} `{}`: {}\n",
                    r.kernel.version, check.name, o.error
                ));
            }
        }
    }
    if !failures.is_empty() {
        md.push_str("\nFailures (full logs in target/kernels/VERSION/logs/):\n\n");
        md.push_str(&failures);
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
