//! Building the binaries the guests run, and booting one guest.
use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::*;
use crate::setup::{run_cmd, Env};

/// Builds `flowdar` and the root test executables on the host; returns the
/// binary and the executables by test file name.
pub(super) fn build(env: &Env, checks: &[&Check]) -> Result<(PathBuf, BTreeMap<String, PathBuf>)> {
    let root = workspace_root();
    let cargo = || {
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.current_dir(&root).env("PATH", env.path());
        c
    };
    run_cmd(cargo().args(["build", "-p", "flowdar-user"]))?;
    // Only the test files the checks use: nothing else to build or to break.
    let mut files: Vec<&str> = checks
        .iter()
        .filter_map(|c| match c.what {
            What::Test { file, .. } => Some(file),
            What::Flowdar { .. } => None,
        })
        .collect();
    files.sort_unstable();
    files.dedup();
    if files.is_empty() {
        // `--check flowdar_experiment`: no test to build (without a
        // `--test`, cargo would build them all).
        return Ok((root.join("target/debug/flowdar"), BTreeMap::new()));
    }
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
    for check in checks {
        if let What::Test { file, .. } = check.what {
            if !tests.contains_key(file) {
                bail!("cargo built no test executable for tests/tests/{file}.rs");
            }
        }
    }
    Ok((root.join("target/debug/flowdar"), tests))
}

/// Integration-test executables in cargo's JSON messages, by target name.
pub(super) fn test_executables(json: &str) -> BTreeMap<String, PathBuf> {
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
pub(super) fn boot(
    kernel: Kernel,
    dir: &Path,
    venv_bin: &Path,
    flowdar: &Path,
    tests: &BTreeMap<String, PathBuf>,
    checks: &[&Check],
) -> Result<Run> {
    let out = dir.join(&kernel.version);
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    let mut plan = String::new();
    for check in checks {
        let mut line = vec![check.name.to_string(), check.limit.to_string()];
        match check.what {
            What::Test { file, test } => line.extend([
                "env".into(),
                format!("FLOWDAR_BIN={}", flowdar.display()),
                "FLOWDAR_MATRIX_KERNEL=1".into(),
                tests[file].display().to_string(),
                "--exact".into(),
                test.into(),
                "--test-threads=1".into(),
            ]),
            What::Flowdar { args, .. } => {
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
        checks.len()
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
    let outcomes = checks
        .iter()
        .map(|check| {
            let row = results
                .lines()
                .map(|l| l.split('\t').collect::<Vec<_>>())
                .find(|f| f.len() == 3 && f[0] == check.name)
                .map(|f| (f[1].parse().ok(), f[2].parse().unwrap_or(0.0)));
            let log = std::fs::read_to_string(out.join("logs").join(format!("{}.log", check.name)))
                .unwrap_or_default();
            let outcome = judge(check, row, &log);
            if !outcome.passed && !log.is_empty() {
                eprintln!(
                    "kernels: {} `{}` failed; its log from the panic:\n{}\n",
                    kernel.version,
                    check.name,
                    failure_excerpt(&log, FAILURE_LINES)
                );
            }
            outcome
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
pub(super) fn pump(
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
