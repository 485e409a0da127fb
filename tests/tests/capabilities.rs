//! Flowdar without root: a non-root user (`nobody`) holding capabilities
//! (ambient, through setpriv) against a root-owned throwaway Apache.
//!
//! With uprobe_multi links (Linux 6.6+) the set is CAP_BPF, CAP_PERFMON,
//! CAP_DAC_READ_SEARCH (tracefs is root's) and CAP_SYS_PTRACE (the server is
//! another user's); perf-event uprobes, and every perf event where
//! `kernel.perf_event_paranoid` is 3 (Debian's kernels), need CAP_SYS_ADMIN
//! instead of CAP_BPF + CAP_PERFMON. A smaller set is refused up front, in
//! one line naming every missing capability, before anything is loaded.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use flowdar::server::{ApacheOptions, ThrowawayApache};
use flowdar_common::EventKind::{Entry, Exit};
use flowdar_tests::*;

/// What `flowdar record` needs with uprobe_multi links (setpriv names).
const NEEDED: [&str; 4] = ["bpf", "perfmon", "dac_read_search", "sys_ptrace"];
/// What it needs with perf-event uprobes, or where perf_event_paranoid is 3.
const NEEDED_ADMIN: [&str; 3] = ["sys_admin", "dac_read_search", "sys_ptrace"];
/// What the README claimed was enough.
const CLAIMED: [&str; 2] = ["bpf", "perfmon"];

const CONNECTIONS: usize = 30;

/// The set `record` needs on this kernel in the default attach mode, and
/// the mode (`flowdar kernel` as root says which `auto` resolves to).
fn needed_here() -> (&'static [&'static str], &'static str) {
    let o = flowdar(&["kernel"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    let multi = out
        .lines()
        .any(|l| l.starts_with("attach mode (auto)") && l.ends_with("uprobe_multi"));
    let paranoid: i32 = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    match (multi, paranoid >= 3) {
        (true, false) => (&NEEDED, "uprobe_multi"),
        (true, true) => (&NEEDED_ADMIN, "uprobe_multi"),
        (false, _) => (&NEEDED_ADMIN, "perf"),
    }
}

/// `CAP_X` names of setpriv's names: "CAP_A, CAP_B and CAP_C" for the
/// needed list, "CAP_A, CAP_B" for the missing one.
fn cap_names(caps: &[&str]) -> Vec<String> {
    caps.iter()
        .map(|c| format!("CAP_{}", c.to_uppercase()))
        .collect()
}

fn sentence(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [only] => only.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// `setpriv` running `flowdar` as nobody:nogroup with no supplementary
/// groups and exactly `caps` (inheritable and ambient, so they survive the
/// exec into flowdar as its permitted and effective sets).
fn flowdar_as_nobody(caps: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    if caps.is_empty() {
        cmd.arg("--inh-caps=-all");
    } else {
        let list = caps
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(",");
        cmd.arg(format!("--inh-caps={list}"))
            .arg(format!("--ambient-caps={list}"));
    }
    cmd.arg("--").arg(flowdar_bin());
    cmd
}

/// A temp dir nobody may write into, and a trace path in it.
fn shared_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let out = dir.path().join("t.flowdar");
    (dir, out)
}

/// `Uid:` (real, effective) and `CapEff:` of a running process.
fn creds(pid: u32) -> (String, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_string()
    };
    let uid = field("Uid:")
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    (uid, u64::from_str_radix(&field("CapEff:"), 16).unwrap())
}

/// The capability bits setpriv's names stand for.
fn cap_bits(caps: &[&str]) -> u64 {
    caps.iter()
        .map(|c| match *c {
            "dac_read_search" => 1 << 2,
            "sys_ptrace" => 1 << 19,
            "sys_admin" => 1 << 21,
            "perfmon" => 1 << 38,
            "bpf" => 1 << 39,
            other => panic!("unknown capability {other}"),
        })
        .sum()
}

/// Records `apache` as nobody with `caps` while N fresh connections are
/// served; checks the recorder really ran unprivileged, the exact counts
/// and that nothing stays loaded.
fn record_as_nobody(apache: &ThrowawayApache, caps: &[&str], extra: &[&str], mode: &str) {
    let (_dir, out) = shared_dir();
    let mut cmd = flowdar_as_nobody(caps);
    cmd.args(["record", "--pid", &apache.pid().to_string()])
        .args(["--profile", "apache:request", "-o"])
        .arg(&out)
        .args(extra);
    let rec = Background::start(cmd, "Recording PID", Duration::from_secs(60));
    assert_eq!(
        creds(rec.pid()),
        ("65534 65534".to_string(), cap_bits(caps)),
        "the recorder runs as nobody with exactly {caps:?}"
    );
    fresh_connections(apache, CONNECTIONS);
    // Let Apache process the clients' closes (the NULL ap_read_request).
    std::thread::sleep(Duration::from_secs(1));
    let (code, stdout, stderr) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("attach mode: {mode}")),
        "attached with {mode}:\n{stdout}"
    );
    let left = left_behind();
    assert!(left.is_empty(), "left loaded: {left:?}");

    let t = Trace::read(&out);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let n = CONNECTIONS;
    for f in ["ap_process_async_request", "ap_invoke_handler"] {
        assert_eq!((t.count(f, Entry), t.count(f, Exit)), (n, n), "{f}");
    }
    assert_eq!(
        (
            t.count("ap_read_request", Entry),
            t.count("ap_read_request", Exit)
        ),
        (2 * n, 2 * n),
        "a request and a NULL (client close) per connection"
    );
    assert_eq!(t.zero_returns("ap_read_request"), n);
    let footer = t.footer.clone().expect("footer written");
    assert_eq!(
        (footer.total_kernel_drops(), footer.total_user_drops()),
        (0, 0)
    );
}

/// Refused up front: exit code 1, one line naming exactly `missing`, no
/// trace file, nothing loaded.
fn assert_refused(o: &Output, out: &Path, needed: &str, missing: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "should fail: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    let expect = format!("needs root, or the capabilities {needed} (missing: {missing})");
    assert!(
        err.starts_with("Error: ") && err.contains(&expect),
        "expected {expect:?} in: {err}"
    );
    assert!(!out.exists(), "no trace file for a refused recording");
    let left = left_behind();
    assert!(left.is_empty(), "left loaded: {left:?}");
}

#[test]
fn nobody_with_the_needed_capabilities_records_exact_counts() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let (needed, mode) = needed_here();
    record_as_nobody(&apache, needed, &[], mode);
}

#[test]
fn nobody_with_bpf_and_perfmon_only_is_refused_up_front() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let (_dir, out) = shared_dir();
    let (needed, _) = needed_here();
    let needed_text = sentence(&cap_names(needed));
    // The claimed pair, then the needed set less each capability in turn
    // (each is needed on its own).
    let mut sets: Vec<Vec<&str>> = vec![CLAIMED.to_vec()];
    for drop in needed {
        sets.push(needed.iter().copied().filter(|c| c != drop).collect());
    }
    for caps in sets {
        let missing: Vec<&str> = needed
            .iter()
            .copied()
            .filter(|c| !caps.contains(c))
            .collect();
        let o = flowdar_as_nobody(&caps)
            .args(["record", "--pid", &apache.pid().to_string()])
            .args(["--profile", "apache:request", "-o"])
            .arg(&out)
            .output()
            .unwrap();
        assert_refused(&o, &out, &needed_text, &cap_names(&missing).join(", "));
    }
}

#[test]
fn perf_event_uprobes_need_cap_sys_admin() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let (_dir, out) = shared_dir();
    let o = flowdar_as_nobody(&NEEDED)
        .args(["record", "--pid", &apache.pid().to_string()])
        .args(["--profile", "apache:request", "--attach-mode", "perf", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert_refused(
        &o,
        &out,
        "CAP_SYS_ADMIN, CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE",
        "CAP_SYS_ADMIN",
    );
    // CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON.
    record_as_nobody(&apache, &NEEDED_ADMIN, &["--attach-mode", "perf"], "perf");
}

#[test]
fn kernel_subcommand_with_the_needed_capabilities() {
    require_root();
    // `flowdar kernel` reads no other process: no CAP_SYS_PTRACE.
    let o = flowdar_as_nobody(&["bpf", "perfmon", "dac_read_search"])
        .arg("kernel")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let as_root = flowdar(&["kernel"]);
    assert!(as_root.status.success());
    // The features read the same; the probed and system calls' costs are
    // measured anew by each run (and so differ by noise), but nobody
    // measures them too.
    let features = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with("probed call cost") && !l.starts_with("system call cost"))
            .map(str::to_string)
            .collect()
    };
    let root_out = String::from_utf8_lossy(&as_root.stdout);
    assert_eq!(
        features(&stdout),
        features(&root_out),
        "nobody sees the kernel as root does"
    );
    for out in [&stdout, &root_out] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("probed call cost") && l.contains(" µs ")),
            "{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with("system call cost")
                    && l.contains(" a recorded system call (")),
            "{out}"
        );
    }
    assert!(stdout.contains("parent_pid at"), "{stdout}");

    let o = flowdar_as_nobody(&CLAIMED).arg("kernel").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(
            "flowdar kernel needs root, or the capabilities CAP_BPF, CAP_PERFMON and CAP_DAC_READ_SEARCH (missing: CAP_DAC_READ_SEARCH)"
        ),
        "{err}"
    );
    let left = left_behind();
    assert!(left.is_empty(), "left loaded: {left:?}");
}
