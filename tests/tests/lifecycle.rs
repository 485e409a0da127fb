//! How `flowdar record` ends: duration, target exit, SIGKILL of the tracer.
//! Whatever the end, no probe of ours stays attached.
use std::time::Duration;

use flowdar::server::{run_load, ApacheOptions, LoadPlan, ThrowawayApache};
use flowdar_common::EventKind::Entry;
use flowdar_tests::*;

#[test]
fn duration_stops_and_finalises() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.flowdar");
    let o = record_now(
        apache.pid(),
        &[
            "--probe",
            "apache2:ap_read_request",
            "-o",
            trace.to_str().unwrap(),
            "--duration",
            "1500ms",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("stopped: duration reached"));
    let t = Trace::read(&trace);
    assert!(t.footer.is_some());
    assert_eq!(left_behind(), Vec::<String>::new());
}

#[test]
fn target_exit_stops_the_recording() {
    require_root();
    let mut apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let (rec, trace) = record(apache.pid(), &["--probe", "apache2:ap_invoke_handler"]);
    let plan = LoadPlan {
        connections: 5,
        ..Default::default()
    };
    assert_eq!(run_load(apache.addr(), &plan).ok, 5);
    apache.stop();
    // The recorder notices within a poll period and exits by itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while flowdar::capture::is_alive(rec.pid()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, out, err) = rec.stop(0);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("stopped: target exited"), "{out}");
    let t = Trace::read(&trace);
    assert_eq!(t.count("ap_invoke_handler", Entry), 5);
    assert_eq!(left_behind(), Vec::<String>::new());
}

#[test]
fn sigkill_leaves_no_probe_and_a_readable_trace() {
    require_root();
    // Before the recorder: where it could pin, the check below looks.
    let _bpffs = BpffsMount::ensure();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let (rec, trace) = record(apache.pid(), &["--probe", "apache2:ap_invoke_handler"]);
    assert!(
        !leftover_programs().is_empty(),
        "programs loaded while recording"
    );
    assert_eq!(
        call_links().len(),
        2,
        "one uprobe_multi link each for entry and exit: {:?}",
        leftover_links()
    );
    let plan = LoadPlan {
        connections: 20,
        ..Default::default()
    };
    assert_eq!(run_load(apache.addr(), &plan).ok, 20);
    // The drain hands a partial batch to the writer within 1 s.
    std::thread::sleep(Duration::from_millis(2000));
    let (code, _, _) = rec.stop(libc::SIGKILL);
    assert_eq!(code, None, "killed by the signal");
    // The kernel releases perf links and programs when the fds close.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !(leftover_programs().is_empty() && leftover_links().is_empty())
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(left_behind(), Vec::<String>::new());
    assert!(pinned_objects().is_empty(), "{:?}", pinned_objects());
    let t = Trace::read(&trace);
    assert!(t.footer.is_none());
    assert!(
        t.warnings.iter().any(|w| w.contains("no footer")),
        "{:?}",
        t.warnings
    );
    assert_eq!(
        t.count("ap_invoke_handler", Entry),
        20,
        "every flushed event survives the kill"
    );
}

#[test]
fn sighup_stops_cleanly_like_sigint_and_sigterm() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let (rec, trace) = record(apache.pid(), &["--probe", "apache2:ap_invoke_handler"]);
    assert_eq!(
        run_load(
            apache.addr(),
            &LoadPlan {
                connections: 3,
                ..Default::default()
            }
        )
        .ok,
        3
    );
    std::thread::sleep(Duration::from_millis(300));
    let (code, out, err) = rec.stop(libc::SIGHUP);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("stopped: SIGHUP"), "{out}");
    let t = Trace::read(&trace);
    assert!(t.footer.is_some(), "finalised");
    assert_eq!(t.count("ap_invoke_handler", Entry), 3);
    assert_eq!(left_behind(), Vec::<String>::new());
}

/// A throwaway Apache dies with whoever started it, even a SIGKILLed one
/// (no unwinding, no Drop): the kernel's parent-death signal stops it.
#[test]
fn a_killed_demo_leaves_no_apache_behind() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.flowdar");
    let mut cmd = std::process::Command::new(flowdar_bin());
    cmd.args(["demo", "--wrk", "30s", "-o", trace.to_str().unwrap()]);
    let demo = Background::start(cmd, "Recording:", Duration::from_secs(60));
    let apache: u32 = demo
        .stderr()
        .lines()
        .find_map(|l| l.strip_prefix("Apache PID "))
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .expect("the demo names its Apache PID");
    let server = flowdar::capture::descendants(apache);
    assert!(server.len() > 1, "a parent and its children: {server:?}");
    let (code, _, _) = demo.stop(libc::SIGKILL);
    assert_eq!(code, None, "killed by the signal");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.iter().any(|p| flowdar::capture::is_alive(*p)) {
        assert!(
            std::time::Instant::now() < deadline,
            "Apache outlived the killed demo: {:?}",
            server
                .iter()
                .filter(|p| flowdar::capture::is_alive(**p))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The killed recorder's probes die with it too.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !leftover_programs().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(left_behind(), Vec::<String>::new());
}
