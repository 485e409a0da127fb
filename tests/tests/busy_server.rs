//! Attaching to and detaching from a server under load: no phantom calls.
//! Return probes go in before entry probes and come out after them, so no
//! recorded call is left "in flight" because its return probe was missing,
//! and every call entered while all probes were in place is recorded,
//! exactly as bpftrace (attached before, detached after) saw it.
use std::time::Duration;

use flowdar::server::ThrowawayApache;
use flowdar_tests::*;

/// The request path: short calls, none of which may be left open once the
/// server has answered.
const REQUEST_PATH: &[&str] = &[
    "ap_process_async_request",
    "ap_process_request_internal",
    "ap_invoke_handler",
    "ap_run_handler",
    "ap_finalize_request_protocol",
    "ap_run_log_transaction",
];
/// What bpftrace times independently (one call per request each).
const WITNESSED: &[&str] = &["ap_process_async_request", "ap_invoke_handler"];

#[derive(Clone, Copy, PartialEq)]
enum Stop {
    /// Stop recording after the load has ended (server idle).
    AfterLoad,
    /// Stop recording while the load still runs.
    MidLoad,
}

/// `mode` is an `--attach-mode`, or None for the default (auto: what this
/// kernel has, uprobe_multi from 6.6, perf events before).
fn busy(mode: Option<&str>, stop: Stop) {
    require_root();
    let apache = ThrowawayApache::start(&Default::default()).expect("start apache");
    let witness = start_bpftrace_calls(apache.pid(), "/usr/sbin/apache2", WITNESSED);
    // Load in back-to-back 1 s wrk runs until told to stop: the server is
    // busy from before the recorder starts (however long attaching takes on
    // a slow machine) until after it is attached or stopped.
    let load = SteadyLoad::start(apache.addr());
    std::thread::sleep(Duration::from_millis(1500));
    let mut args = vec!["--profile", "apache:request"];
    if let Some(m) = mode {
        args.extend(["--attach-mode", m]);
    }
    let (rec, trace) = record(apache.pid(), &args);
    std::thread::sleep(Duration::from_millis(1500));
    let (requests, (code, out, err)) = match stop {
        Stop::MidLoad => {
            let stopped = rec.stop(libc::SIGINT);
            (load.stop(), stopped)
        }
        Stop::AfterLoad => {
            let requests = load.stop();
            std::thread::sleep(Duration::from_millis(500));
            (requests, rec.stop(libc::SIGINT))
        }
    };
    std::thread::sleep(Duration::from_millis(300));
    let (_, bt_out, bt_err) = witness.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");
    assert!(requests > 1000, "the server was busy: {requests} requests");
    assert_eq!(left_behind(), Vec::<String>::new());
    let want = match mode {
        Some("perf") => "perf".to_string(),
        Some(_) => "uprobe_multi".to_string(),
        None => flowdar::capture::kernel_features()
            .mechanism(flowdar::capture::AttachMode::Auto)
            .expect("a kernel that can trace")
            .to_string(),
    };
    let mode = mode.unwrap_or("auto");
    assert!(
        out.contains(&format!("attach mode: {want}")),
        "summary names the attach mode:\n{out}"
    );

    let t = Trace::read(&trace);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert_eq!(t.header.attach_mode, want);
    for f in REQUEST_PATH {
        let open: Vec<u64> = t
            .calls(f)
            .iter()
            .filter(|(_, exit)| exit.is_none())
            .map(|(entry, _)| *entry)
            .collect();
        assert!(
            open.is_empty(),
            "{f}: {} calls left in flight by attaching/detaching ({mode}, stop {}):\n{out}",
            open.len(),
            if stop == Stop::MidLoad {
                "mid-load"
            } else {
                "after load"
            }
        );
    }

    // Every call entered while all probes were in place, exactly as the
    // witness saw it. The window is cut inside gaps between the witness's
    // calls, so a call's few microseconds between bpftrace's timestamp and
    // ours cannot put it on different sides of a cut.
    let attached = t.header.attached_monotonic_ns;
    let ended = t.footer.as_ref().expect("finalised").end_monotonic_ns;
    assert!(attached > 0 && ended > attached);
    let seen = parse_bpftrace_calls(&bt_out);
    for f in WITNESSED {
        let theirs: Vec<u64> = seen
            .get(*f)
            .unwrap_or_else(|| panic!("bpftrace saw no {f}: {bt_err}"))
            .iter()
            .map(|(entry, _)| *entry)
            .collect();
        let lo = cut_in_gap(&theirs, attached, attached + 200_000_000);
        let hi = cut_in_gap(&theirs, ended - 200_000_000, ended);
        let in_window = |ts: &u64| (lo..hi).contains(ts);
        let ours = t.calls(f);
        let n_ours = ours.iter().filter(|(e, _)| in_window(e)).count();
        let n_theirs = theirs.iter().filter(|e| in_window(e)).count();
        assert!(
            n_theirs > 200,
            "{f}: a busy window ({n_theirs} of bpftrace's {} calls, first at {:?}, last at {:?}; window {lo}..{hi}, attached {attached}, ended {ended}; flowdar has {} calls)",
            theirs.len(),
            theirs.iter().min(),
            theirs.iter().max(),
            t.calls(f).len()
        );
        assert_eq!(
            n_ours,
            n_theirs,
            "{f}: calls entered while attached, flowdar vs bpftrace ({mode}, window {} ms)",
            (hi - lo) / 1_000_000
        );
    }
}

/// The middle of the widest gap between `entries` within [from, to].
fn cut_in_gap(entries: &[u64], from: u64, to: u64) -> u64 {
    let mut inside: Vec<u64> = entries
        .iter()
        .copied()
        .filter(|e| (from..=to).contains(e))
        .collect();
    inside.sort_unstable();
    let mut points = vec![from];
    points.extend(inside);
    points.push(to);
    let (a, b) = points
        .windows(2)
        .map(|w| (w[0], w[1]))
        .max_by_key(|(a, b)| b - a)
        .expect("two points");
    assert!(b - a > 100_000, "no 100 µs gap to cut in");
    a + (b - a) / 2
}

#[test]
fn attached_under_load_by_default_leaves_no_phantom_calls_and_counts_exactly() {
    busy(None, Stop::AfterLoad);
}

#[test]
fn attached_under_load_perf_leaves_no_phantom_calls_and_counts_exactly() {
    busy(Some("perf"), Stop::AfterLoad);
}

#[test]
fn detached_mid_load_by_default_leaves_no_phantom_calls_and_counts_exactly() {
    busy(None, Stop::MidLoad);
}

#[test]
fn detached_mid_load_perf_leaves_no_phantom_calls_and_counts_exactly() {
    busy(Some("perf"), Stop::MidLoad);
}

/// The lean capture's system calls stop, entries and exits at once, when
/// the entry probes are gone: under load, no event of theirs comes after
/// that moment (`entries_removed_ns`). Exits let through a while longer,
/// as return uprobes are, ended a held worker's wait with its next read
/// and poll unseen, and a connection still held looked released.
#[test]
fn a_lean_capture_detached_mid_load_sends_no_system_call_after_its_entries_stop() {
    require_root();
    let apache = ThrowawayApache::start(&Default::default()).expect("start apache");
    let load = SteadyLoad::start(apache.addr());
    std::thread::sleep(Duration::from_millis(1500));
    let (rec, trace) = record(apache.pid(), &["--profile", "apache:lean"]);
    std::thread::sleep(Duration::from_millis(1500));
    let (code, out, err) = rec.stop(libc::SIGINT);
    let requests = load.stop();
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");
    assert!(requests > 1000, "the server was busy: {requests} requests");
    let t = Trace::read(&trace);
    let stopped = t.footer.as_ref().expect("finalised").entries_removed_ns;
    let syscall: Vec<bool> = t.header.probes.iter().map(|p| p.is_syscall()).collect();
    let theirs: Vec<&flowdar_common::Event> = t
        .events
        .iter()
        .filter(|e| syscall[e.probe_id as usize])
        .collect();
    assert!(theirs.len() > 1000, "{} system call events", theirs.len());
    let late = theirs.iter().filter(|e| e.ts_ns > stopped).count();
    assert_eq!(
        late,
        0,
        "system call events after the entry probes went ({} in all)",
        theirs.len()
    );
}
