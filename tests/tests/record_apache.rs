//! `flowdar record` against a real Apache (event MPM) by its parent PID:
//! exact call counts, checked against bpftrace watching the same workload.
use std::time::Duration;

use flowdar::server::{ApacheOptions, ThrowawayApache};
use flowdar_common::EventKind::{Entry, Exit};
use flowdar_tests::*;

const CONNECTIONS: usize = 50;

#[test]
fn exact_counts_on_fresh_connections_match_bpftrace() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let pid = apache.pid().to_string();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.flowdar");
    let witness = start_bpftrace_counter(
        apache.pid(),
        &[
            ("/usr/sbin/apache2", "ap_read_request"),
            ("/usr/sbin/apache2", "ap_process_async_request"),
            ("/usr/sbin/apache2", "ap_invoke_handler"),
        ],
    );
    let rec = start_recorder(&[
        "--pid",
        &pid,
        "--probe",
        "/usr/sbin/apache2:ap_read_request",
        "--probe",
        "apache2:ap_process_async_request",
        "--probe",
        "apache2:ap_invoke_handler",
        "--probe",
        "libapr-1:apr_socket_recv",
        "-o",
        trace.to_str().unwrap(),
    ]);
    fresh_connections(&apache, CONNECTIONS);
    // Let Apache process the clients' closes (the NULL ap_read_request).
    std::thread::sleep(Duration::from_secs(1));
    let (code, out, err) = rec.stop(libc::SIGINT);
    let (_, bt_out, _) = witness.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");
    assert!(
        out.contains("stopped: SIGINT"),
        "summary names the stop reason:\n{out}"
    );
    assert_eq!(left_behind(), Vec::<String>::new(), "probes left attached");
    assert!(
        leftover_tracefs_uprobes().is_empty(),
        "{:?}",
        leftover_tracefs_uprobes()
    );

    let t = Trace::read(&trace);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let n = CONNECTIONS;
    for f in ["ap_process_async_request", "ap_invoke_handler"] {
        assert_eq!((t.count(f, Entry), t.count(f, Exit)), (n, n), "{f}");
    }
    assert_eq!(t.count("ap_read_request", Entry), 2 * n);
    assert_eq!(t.count("ap_read_request", Exit), 2 * n);
    assert_eq!(
        t.zero_returns("ap_read_request"),
        n,
        "one NULL return per client close"
    );
    assert!(
        t.count("apr_socket_recv", Entry) >= 2 * n,
        "at least a read per request and per close"
    );

    let (problems, open) = t.nesting_problems();
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(open, 0, "every call returned");
    let footer = t.footer.clone().expect("footer written");
    assert_eq!(
        (footer.total_kernel_drops(), footer.total_user_drops()),
        (0, 0)
    );
    assert_eq!(footer.events as usize, t.events.len());
    let tgids: std::collections::HashSet<u32> = t.events.iter().map(|e| e.tgid).collect();
    // Apache's children serve requests; the parent never does.
    let children: std::collections::HashSet<u32> = flowdar::capture::descendants(apache.pid())
        .into_iter()
        .skip(1)
        .collect();
    assert!(
        !tgids.is_empty() && tgids.is_subset(&children),
        "events from {tgids:?}, children {children:?}"
    );

    // The independent tracer saw exactly the same calls.
    let bt = parse_bpftrace_counts(&bt_out);
    for f in [
        "ap_read_request",
        "ap_process_async_request",
        "ap_invoke_handler",
    ] {
        assert_eq!(
            bt.get(&format!("entry{f}")).copied(),
            Some(t.count(f, Entry) as u64),
            "bpftrace {f}:\n{bt_out}"
        );
    }
    assert_eq!(
        bt.get("exitap_read_request,zero").copied(),
        Some(n as u64),
        "{bt_out}"
    );
    assert_eq!(
        bt.get("exitap_read_request,nonzero").copied(),
        Some(n as u64),
        "{bt_out}"
    );

    // stats --json reports the same counts under stable field names.
    let o = flowdar(&["stats", "--json", trace.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = out["functions"].as_array().unwrap();
    let row = |f: &str| {
        rows.iter()
            .find(|r| r["function"] == f)
            .unwrap_or_else(|| panic!("{f} in stats"))
    };
    assert_eq!(row("ap_read_request")["calls"], 2 * n as u64);
    assert_eq!(row("ap_read_request")["zero_returns"], n as u64);
    assert_eq!(row("ap_invoke_handler")["calls"], n as u64);
    assert_eq!(row("ap_process_async_request")["calls"], n as u64);
    for r in rows {
        for field in ["function", "calls", "total_ns", "mean_ns", "max_ns"] {
            assert!(r.get(field).is_some(), "{field} missing in {r}");
        }
        assert!(r["max_ns"].as_u64() <= r["total_ns"].as_u64());
        assert_eq!(r["in_flight"], 0);
    }

    // dump prints names, indented nesting and durations.
    let o = flowdar(&["dump", trace.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert_eq!(text.matches("-> ap_invoke_handler(").count(), n);
    assert!(
        text.contains("  -> ap_invoke_handler("),
        "invoke_handler nests under process_async_request"
    );
}

#[test]
fn other_processes_mapping_the_same_files_are_not_traced() {
    require_root();
    let target = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let other = ThrowawayApache::start(&ApacheOptions::default()).expect("start second apache");
    let (rec, trace) = record(
        target.pid(),
        &[
            "--probe",
            "apache2:ap_invoke_handler",
            "--probe",
            "libapr-1:apr_socket_recv",
        ],
    );
    fresh_connections(&other, 30);
    fresh_connections(&target, 10);
    fresh_connections(&other, 30);
    std::thread::sleep(Duration::from_millis(500));
    let (code, out, err) = rec.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("stopped: SIGTERM"), "{out}");
    let t = Trace::read(&trace);
    assert_eq!(
        t.count("ap_invoke_handler", Entry),
        10,
        "only the target's requests"
    );
    let ours = flowdar::capture::descendants(target.pid());
    let strangers: Vec<u32> = t
        .events
        .iter()
        .map(|e| e.tgid)
        .filter(|p| !ours.contains(p))
        .collect();
    assert!(
        strangers.is_empty(),
        "events from processes outside the target: {strangers:?}"
    );
}

/// The whole `full` profile (~1400 functions in apache2 and libapr-1)
/// goes through one uprobe_multi link per program and file; the two APR
/// atomics whose first instruction carries a LOCK prefix are predicted
/// refused and reported, everything else records exact counts.
#[test]
fn full_profile_attaches_through_uprobe_multi_links() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let (rec, trace) = record(apache.pid(), &["--profile", "apache:full"]);
    let links = call_links();
    let files = 2; // apache2 and libapr-1
    assert_eq!(links.len(), 2 * files, "entry+exit per file: {links:?}");
    fresh_connections(&apache, 20);
    std::thread::sleep(Duration::from_millis(500));
    let (code, out, err) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");
    assert!(
        out.contains(
            "2 functions matched by patterns could not be probed: apr_atomic_sub32 (ENOTSUPP"
        ),
        "{out}"
    );
    assert!(out.contains(", 0 lost,"), "{out}");
    assert_eq!(left_behind(), Vec::<String>::new());
    let t = Trace::read(&trace);
    // 20 requests + 20 closes (NULL) read; each request handled once.
    assert_eq!(t.count("ap_read_request", Entry), 40);
    assert_eq!(t.count("ap_read_request", Exit), 40);
    assert_eq!(t.count("ap_invoke_handler", Entry), 20);
    let (problems, _) = t.nesting_problems();
    assert!(problems.is_empty(), "{problems:?}");
}

/// The perf-event fallback (kernels without uprobe_multi) records the same
/// exact counts and leaves nothing attached.
#[test]
fn perf_event_attach_mode_records_the_same_counts() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let (rec, trace) = record(
        apache.pid(),
        &[
            "--attach-mode",
            "perf",
            "--probe",
            "apache2:ap_read_request",
            "--probe",
            "apache2:ap_invoke_handler",
        ],
    );
    assert_eq!(call_links().len(), 4, "{:?}", leftover_links());
    fresh_connections(&apache, 20);
    std::thread::sleep(Duration::from_millis(500));
    let (code, out, err) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");
    assert_eq!(left_behind(), Vec::<String>::new());
    let t = Trace::read(&trace);
    assert_eq!(t.count("ap_read_request", Entry), 40);
    assert_eq!(t.count("ap_read_request", Exit), 40);
    assert_eq!(t.count("ap_invoke_handler", Exit), 20);
}

/// The lean capture (kernel tracepoints, one entry-only uprobe a request)
/// counts requests as an independent tracer does: 20 keep-alive
/// connections of 5 requests and 10 fresh ones give exactly 110 requests,
/// as bpftrace counts `ap_process_request_internal` (one a request for a
/// static file), 5 on each keep-alive connection and 1 on each fresh one.
#[test]
fn a_lean_capture_counts_requests_per_connection_as_bpftrace_does() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("lean.flowdar");
    let witness = start_bpftrace_counter(
        apache.pid(),
        &[("/usr/sbin/apache2", "ap_process_request_internal")],
    );
    let rec = record_profile(apache.pid(), "apache:lean", &trace);
    let r = flowdar::server::run_load(
        apache.addr(),
        &flowdar::server::LoadPlan {
            connections: 20,
            requests_per_connection: 5,
            concurrency: 4,
            ..Default::default()
        },
    );
    assert_eq!((r.ok, r.errors), (100, 0));
    fresh_connections(&apache, 10);
    std::thread::sleep(Duration::from_secs(1));
    let (code, out, err) = rec.stop(libc::SIGINT);
    let (_, bt_out, _) = witness.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");
    let bt = parse_bpftrace_counts(&bt_out);
    assert_eq!(
        bt.get("entryap_process_request_internal").copied(),
        Some(110),
        "{bt_out}"
    );
    let path = trace.to_str().unwrap();
    let sessions = flowdar_json(&["sessions", "--json", path]);
    let mut per_connection: Vec<u64> = sessions
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["requests"].as_u64().unwrap())
        .filter(|&n| n > 0)
        .collect();
    per_connection.sort_unstable();
    let mut expected = vec![1; 10];
    expected.extend([5; 20]);
    assert_eq!(per_connection, expected, "{sessions}");
    let clients = flowdar_json(&["clients", "--json", path]);
    let local = clients
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "127.0.0.1")
        .unwrap_or_else(|| panic!("{clients}"));
    assert_eq!(local["requests"], 110, "{local}");
    assert_eq!(local["connections"], 30, "{local}");
    assert_eq!(left_behind(), Vec::<String>::new());
}

/// A uprobe recording started while workers are already held: the 6
/// connections sending a request line and one header, then nothing, hold
/// 6 workers inside `ap_read_request` before the probes exist. The trace
/// has each of them from the first instant, held since the attach, with
/// its client; the 2 whose requests are then completed leave the read
/// (their calls end, and are no longer in flight), the other 4 stay held.
#[test]
fn a_uprobe_recording_shows_the_workers_held_before_it_began() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let mut held = held_connections(&apache, 6);
    // Each connection's worker is reading (polling for) the rest.
    std::thread::sleep(Duration::from_millis(500));
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("held.flowdar");
    let rec = record_profile(apache.pid(), "apache:request", &trace);
    std::thread::sleep(Duration::from_millis(500));
    for s in &mut held[..2] {
        finish_request(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let (code, out, err) = rec.stop(libc::SIGINT);
    drop(held);
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");
    assert!(
        out.contains(
            "Open at attach: 6 client connections (from /proc), 6 workers already waiting"
        ),
        "{out}\n{err}"
    );
    let path = trace.to_str().unwrap();
    let clients = flowdar_json(&["clients", "--json", path]);
    let local = clients
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "127.0.0.1")
        .unwrap_or_else(|| panic!("{clients}"));
    assert_eq!(local["held_at_attach"], 6, "{local}");
    assert_eq!(local["in_flight"], 4, "{local}");
    let stats = flowdar_json(&["stats", "--json", path]);
    let read = stats["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["function"] == "ap_read_request")
        .unwrap_or_else(|| panic!("{stats}"));
    assert_eq!(read["in_flight"], 4, "{read}");
    // Simplified (outermost calls only), the held reads are still the
    // trace's, and the requests after them are not taken for their
    // children: the two released ones' requests stay outermost calls.
    let simple = dir.path().join("held-simple.flowdar");
    let out = flowdar(&[
        "simplify",
        path,
        "--max-depth",
        "0",
        "-o",
        simple.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = flowdar_json(&["stats", "--json", simple.to_str().unwrap()]);
    let calls = |f: &str| {
        stats["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["function"] == f)
            .map(|r| {
                (
                    r["calls"].as_u64().unwrap(),
                    r["in_flight"].as_u64().unwrap(),
                )
            })
    };
    assert_eq!(calls("ap_read_request").map(|c| c.1), Some(4), "{stats}");
    assert_eq!(calls("ap_process_async_request"), Some((2, 0)), "{stats}");
    assert_eq!(left_behind(), Vec::<String>::new());
}

/// The same with the lean capture: the 6 workers wait in `poll` for the
/// rest of their requests when the recording begins. Each is in the trace
/// from the first instant, held since the attach; the 2 released ones'
/// polls end (under fexit programs, which never see the return of a call
/// that began before them, at their thread's next call: the read of the
/// rest) and the other 4 stay in flight. On the kernel matrix's Debian
/// kernels through fentry/fexit (`--syscall-hooks fentry`, opt-in);
/// elsewhere `--syscall-hooks auto`, whichever this kernel allows (this
/// project's machines refuse fentry: the tracepoints).
#[test]
fn a_lean_recording_shows_the_workers_held_before_it_began() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let mut held = held_connections(&apache, 6);
    std::thread::sleep(Duration::from_millis(500));
    let matrix = std::env::var_os(MATRIX_KERNEL_ENV).is_some();
    let ask = if matrix { "fentry" } else { "auto" };
    let (rec, trace) = record(
        apache.pid(),
        &["--profile", "apache:lean", "--syscall-hooks", ask],
    );
    std::thread::sleep(Duration::from_millis(500));
    for mut s in held.drain(..2) {
        finish_request(&mut s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let (code, out, err) = rec.stop(libc::SIGINT);
    drop(held);
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");
    assert!(
        out.contains(
            "Open at attach: 6 client connections (from /proc), 6 workers already waiting"
        ),
        "{out}\n{err}"
    );
    let hooks = syscall_hooks_used(&err);
    if matrix {
        assert_eq!(hooks, "fentry", "{err}");
    }
    let path = trace.to_str().unwrap();
    let clients = flowdar_json(&["clients", "--json", path]);
    let local = clients
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "127.0.0.1")
        .unwrap_or_else(|| panic!("{clients}"));
    assert_eq!(local["held_at_attach"], 6, "{local}");
    assert_eq!(local["in_flight"], 4, "{hooks}: {local}");
    let stats = flowdar_json(&["stats", "--json", path]);
    let row = |f: &str| {
        stats["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["function"] == f)
            .map(|r| {
                (
                    r["calls"].as_u64().unwrap(),
                    r["in_flight"].as_u64().unwrap(),
                )
            })
            .unwrap_or_else(|| panic!("no {f}: {stats}"))
    };
    // The 2 released polls ended; the 4 others are still waiting.
    let (polls, waiting) = row("poll");
    assert_eq!(waiting, 4, "{hooks}: {stats}");
    assert!(polls >= 2, "{hooks}: {stats}");
    assert_eq!(row("ap_process_async_request").0, 2, "{stats}");
    assert_eq!(row("writev").0, 2, "{stats}");
    assert_eq!(left_behind(), Vec::<String>::new());
}

/// `n` connections to `apache` that each sent a request line and one
/// header, then nothing: a worker each, waiting for the rest.
fn held_connections(apache: &ThrowawayApache, n: usize) -> Vec<std::net::TcpStream> {
    use std::io::Write;
    (0..n)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(apache.addr()).unwrap();
            s.write_all(b"GET /index.html HTTP/1.1\r\nHost: held\r\n")
                .unwrap();
            s
        })
        .collect()
}

/// Ends a held connection's request and reads its answer (a 200).
fn finish_request(s: &mut std::net::TcpStream) {
    use std::io::{Read, Write};
    s.write_all(b"Connection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
}
