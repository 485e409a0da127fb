//! The traced server misbehaving during capture: a graceful restart (new
//! children), a crash followed by a supervisor's restart (new parent PID).
//! Flowdar notices, says so, keeps what it has, and with `--follow` records
//! the restarted server too. Counts are exact across the change.
use std::time::{Duration, Instant};

use flowdar::server::{run_load, ApacheOptions, LoadPlan, ThrowawayApache};
use flowdar_common::EventKind::{Entry, Exit};
use flowdar_tests::*;

const REQUESTS: usize = 10;

fn requests(apache: &ThrowawayApache) {
    let plan = LoadPlan {
        connections: REQUESTS,
        requests_per_connection: 1,
        concurrency: 1,
        ..Default::default()
    };
    let r = run_load(apache.addr(), &plan);
    assert_eq!((r.ok, r.errors), (REQUESTS, 0));
}

fn wait_for(rec: &Background, text: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !rec.stderr().contains(text) {
        assert!(
            Instant::now() < deadline,
            "no {text:?} from the recorder within {timeout:?}:\n{}",
            rec.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn graceful_restart_is_reported_and_new_children_are_traced() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let (rec, trace) = record(apache.pid(), &["--probe", "apache2:ap_invoke_handler"]);
    let before = descendants_of(apache.pid());
    requests(&apache);
    apache.graceful_restart();
    wait_for(&rec, "server processes:", Duration::from_secs(10));
    // New children serve once the old ones are gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    while descendants_of(apache.pid())
        .iter()
        .any(|p| before[1..].contains(p))
    {
        assert!(Instant::now() < deadline, "old children still running");
        std::thread::sleep(Duration::from_millis(50));
    }
    requests(&apache);
    std::thread::sleep(Duration::from_millis(300));
    let (code, out, err) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(err.contains("exited during capture"), "{err}");
    let t = Trace::read(&trace);
    assert_eq!(t.count("ap_invoke_handler", Entry), 2 * REQUESTS);
    assert_eq!(t.count("ap_invoke_handler", Exit), 2 * REQUESTS);
    let served_by: std::collections::BTreeSet<u32> = t.events.iter().map(|e| e.tgid).collect();
    assert!(
        served_by.iter().any(|p| !before.contains(p)),
        "a child forked by the graceful restart was traced: {served_by:?} vs {before:?}"
    );
}

#[test]
fn follow_records_the_server_restarted_after_a_crash() {
    require_root();
    let mut apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let old = apache.pid();
    let (rec, trace) = record(old, &["--follow", "--probe", "apache2:ap_invoke_handler"]);
    requests(&apache);
    // A client has its response before the handler returns: let the last
    // returns happen before the crash, so every call is complete.
    std::thread::sleep(Duration::from_millis(300));
    let new = apache.crash_and_restart().expect("restart apache");
    assert_ne!(new, old);
    wait_for(
        &rec,
        &format!("following the restarted server: PID {new}"),
        Duration::from_secs(10),
    );
    assert!(rec
        .stderr()
        .contains(&format!("server PID {old} exited; waiting")));
    requests(&apache);
    std::thread::sleep(Duration::from_millis(300));
    let (code, out, err) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("stopped: SIGINT"), "{out}");
    assert!(
        err.contains(&format!("followed restart PID {old} -> {new}")),
        "{err}"
    );
    let t = Trace::read(&trace);
    assert_eq!(t.count("ap_invoke_handler", Entry), 2 * REQUESTS);
    assert_eq!(t.count("ap_invoke_handler", Exit), 2 * REQUESTS);
    let new_tree = descendants_of(new);
    let after: usize = t
        .events
        .iter()
        .filter(|e| e.kind == Exit as u32 && new_tree.contains(&e.tgid))
        .count();
    assert_eq!(after, REQUESTS, "the restarted server's requests");
    assert_eq!(left_behind(), Vec::<String>::new());
}

#[test]
fn without_follow_a_crash_stops_the_recording_and_keeps_the_trace() {
    require_root();
    let mut apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let (rec, trace) = record(apache.pid(), &["--probe", "apache2:ap_invoke_handler"]);
    requests(&apache);
    apache.crash_and_restart().expect("restart apache");
    let deadline = Instant::now() + Duration::from_secs(10);
    while flowdar::capture::is_alive(rec.pid()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, out, err) = rec.stop(0);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("stopped: target exited"), "{out}");
    // The new server was not traced: only the first batch is in the trace.
    requests(&apache);
    let t = Trace::read(&trace);
    assert_eq!(t.count("ap_invoke_handler", Entry), REQUESTS);
    assert!(t.footer.is_some(), "finalised");
}

fn descendants_of(pid: u32) -> Vec<u32> {
    flowdar::capture::descendants(pid)
}
