//! Bad input to `flowdar record` (as root): one-line errors, non-zero exit,
//! no trace file left behind, no probe left attached.
use flowdar::server::{ApacheOptions, ThrowawayApache};
use flowdar_tests::*;

fn assert_one_line_error(o: &std::process::Output, expect: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "should fail: {err}");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("Error: "), "{err}");
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
}

#[test]
fn unknown_pid_is_named() {
    require_root();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let gone = child.id();
    child.wait().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.flowdar");
    let o = record_now(
        gone,
        &["--probe", "libc:malloc", "-o", out.to_str().unwrap()],
    );
    assert_one_line_error(&o, &format!("no process with PID {gone}"));
    assert!(!out.exists());
}

#[test]
fn missing_function_and_library_are_named_with_candidates() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let pid = apache.pid().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.flowdar");
    let o = flowdar(&[
        "record",
        "--pid",
        &pid,
        "--probe",
        "apache2:ap_read_requets",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_one_line_error(&o, "could not resolve ap_read_requets in /usr/sbin/apache2: no such function (the binary is stripped and no debug file was found;");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nearest: ap_read_request"), "{err}");
    let o = flowdar(&[
        "record",
        "--pid",
        &pid,
        "--probe",
        "libssl:SSL_read",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_one_line_error(&o, "maps no file named `libssl`; it maps: ");
    assert!(!out.exists(), "no trace file for a failed start");
    assert_eq!(left_behind(), Vec::<String>::new());
}

#[test]
fn not_root_names_the_capabilities() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let out = dir.path().join("t.flowdar");
    // setpriv (util-linux) drops to nobody with no capabilities.
    let o = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(flowdar_bin())
        .args([
            "record",
            "--pid",
            &apache.pid().to_string(),
            "--probe",
            "apache2:ap_read_request",
            "-o",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert_one_line_error(
        &o,
        "needs root, or the capabilities CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE (missing: CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE)",
    );
    assert!(!out.exists());
}

#[test]
fn existing_output_is_kept_without_force() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.flowdar");
    std::fs::write(&out, b"an earlier trace").unwrap();
    let o = record_now(
        apache.pid(),
        &[
            "--probe",
            "apache2:ap_read_request",
            "-o",
            out.to_str().unwrap(),
            "--duration",
            "1s",
        ],
    );
    assert_one_line_error(&o, "already exists (pass --force to overwrite it)");
    assert_eq!(std::fs::read(&out).unwrap(), b"an earlier trace");
    assert_eq!(left_behind(), Vec::<String>::new());
}

#[test]
fn a_pid_that_is_not_the_profiles_server_is_refused() {
    require_root();
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.flowdar");
    let o = record_now(
        sleeper.id(),
        &["--profile", "apache:request", "-o", out.to_str().unwrap()],
    );
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert_one_line_error(
        &o,
        &format!(
            "PID {} (sleep) is not the server profile `apache:request` is for: it maps none of apache2",
            sleeper.id()
        ),
    );
    assert!(!out.exists());
    assert_eq!(left_behind(), Vec::<String>::new());
}

#[test]
fn unwritable_output_is_refused_and_nothing_is_left_attached() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let o = record_now(
        apache.pid(),
        &[
            "--probe",
            "apache2:ap_read_request",
            "-o",
            "/proc/flowdar-cannot-write-here/t.flowdar",
        ],
    );
    assert_one_line_error(&o, "/proc/flowdar-cannot-write-here/t.flowdar");
    assert_eq!(left_behind(), Vec::<String>::new());
}

/// A failure after the probes are in place (the trace cannot be written:
/// /dev/full accepts the open and fails the first write) detaches them all.
#[test]
fn a_failure_after_attaching_leaves_nothing_attached() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    for mode in ["auto", "perf"] {
        let o = record_now(
            apache.pid(),
            &[
                "--profile",
                "apache:request",
                "--attach-mode",
                mode,
                "--force",
                "-o",
                "/dev/full",
            ],
        );
        assert_one_line_error(&o, "/dev/full");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("No space left on device"), "{mode}: {err}");
        assert_eq!(left_behind(), Vec::<String>::new(), "{mode}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata("/dev/full").unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666, "a device's mode is left alone");
}

/// Thousands of perf-event uprobes would take minutes to detach (one grace
/// period each): refused up front with the estimate and the way through.
#[test]
fn perf_events_for_the_full_profile_are_refused_with_the_detach_time() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let o = record_now(
        apache.pid(),
        &[
            "--profile",
            "apache:full",
            "--attach-mode",
            "perf",
            "-o",
            "/tmp/flowdar-never-written.flowdar",
        ],
    );
    assert_one_line_error(&o, "perf-event uprobes would take about");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("pass --slow-detach to proceed anyway"),
        "{err}"
    );
    // The time per uprobe is the development VM's, and says so.
    assert!(
        err.contains("~0.113 s measured on a 2-core VM: BENCHMARKS.md"),
        "{err}"
    );
    assert!(!std::path::Path::new("/tmp/flowdar-never-written.flowdar").exists());
    assert_eq!(left_behind(), Vec::<String>::new());
}
