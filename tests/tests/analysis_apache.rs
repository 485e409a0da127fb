//! Analysis on real Apache traces: sessions per client connection, hand-offs
//! from the listener to workers, and diff ranking a slowed read path first.
use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use flowdar::{
    analysis::{diff, scan, FlowTracker, SessionTracker},
    server::{run_load, ApacheOptions, LoadPlan, ThrowawayApache},
};
use flowdar_tests::*;

#[test]
fn sessions_and_handoffs_follow_every_keep_alive_connection() {
    require_root();
    let apache = small_event_apache();
    let (rec, trace) = record(
        apache.pid(),
        &["--profile", "apache:connection,request,handoff"],
    );
    let (connections, per_connection) = (25, 4);
    let plan = LoadPlan {
        connections,
        requests_per_connection: per_connection,
        concurrency: 2,
        ..Default::default()
    };
    assert_eq!(
        run_load(apache.addr(), &plan).ok,
        connections * per_connection
    );
    std::thread::sleep(Duration::from_secs(1));
    let (code, out, err) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "{out}\n{err}");

    let header = flowdar::store::TraceReader::open(&trace)
        .unwrap()
        .header()
        .clone();
    let sessions = std::cell::RefCell::new(SessionTracker::new(&header.probes));
    let mut flows = FlowTracker::new(&header.probes);
    scan(
        &trace,
        |e| {
            flows.push(e);
            sessions.borrow_mut().add_event(e);
        },
        |c| sessions.borrow_mut().add(c),
    )
    .unwrap();
    let sessions = sessions.into_inner().finish(&Default::default());
    assert_eq!(
        sessions.len(),
        connections,
        "one session per client connection"
    );
    // A worker already blocked in ap_queue_pop_something when the probes
    // attached returns from it without a uretprobe hit (the kernel only
    // hooks returns of calls entered after attaching): the connection it
    // pops then has no visible hand-off. Only a worker whose pop return was
    // seen before the session began can be held to one.
    let t = Trace::read(&trace);
    let pop = t.probe_id("ap_queue_pop_something");
    let pop_returns: Vec<(u32, u64)> = t
        .events
        .iter()
        .filter(|e| e.probe_id == pop && e.kind == flowdar_common::EventKind::Exit as u32)
        .map(|e| (e.tid, e.ts_ns))
        .collect();
    let mut exempt = 0;
    for s in &sessions {
        assert_eq!(
            s.requests, per_connection as u64,
            "session {} on {:#x}",
            s.id, s.connection
        );
        assert!(s.closed, "the client closed every connection");
        let worker = s.threads[0];
        if !pop_returns
            .iter()
            .any(|&(tid, ts)| tid == worker && ts <= s.start_ns)
        {
            exempt += 1;
            continue;
        }
        assert!(
            flows
                .flows
                .iter()
                .any(|f| f.connection == Some(s.connection) && s.threads.contains(&f.to_tid)),
            "a hand-off leads to session {} ({:#x})",
            s.id,
            s.connection
        );
    }
    assert!(
        exempt <= 4,
        "at most one session per worker thread is exempt"
    );
    // Every linked hand-off goes from the listener thread to a worker.
    assert!(flows.flows.iter().all(|f| f.from_tid != f.to_tid));
    let listeners: std::collections::HashSet<u32> =
        flows.flows.iter().map(|f| f.from_tid).collect();
    assert_eq!(listeners.len(), 1, "one listener thread pushes");

    // The CLI agrees.
    let o = flowdar(&["sessions", "--json", trace.to_str().unwrap()]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.len(), connections);
    assert!(rows
        .iter()
        .all(|r| r["requests"] == per_connection as u64 && r.get("duration_ns").is_some()));
}

/// One request whose header lines arrive `gap` apart.
fn slow_request(addr: std::net::SocketAddr, gap: Duration) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for part in [
        "GET /index.html HTTP/1.1\r\n",
        "Host: 127.0.0.1\r\n",
        "Connection: close\r\n",
        "\r\n",
    ] {
        s.write_all(part.as_bytes()).unwrap();
        std::thread::sleep(gap);
    }
    let mut response = Vec::new();
    s.read_to_end(&mut response).unwrap();
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response)
    );
}

/// The read path's chain, sorted: what a slowed header read adds to.
const READ_PATH: [&str; 3] = [
    "ap_read_request",
    "ap_run_process_connection",
    "apr_socket_recv",
];

/// The first three functions of a ranking, sorted.
fn top_three<'a>(ranked: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut top: Vec<&str> = ranked.take(3).collect();
    top.sort_unstable();
    top
}

fn record_requests(apache: &ThrowawayApache, trace: &std::path::Path, gap: Duration) {
    let rec = record_profile(apache.pid(), "apache:request,io", trace);
    // Four at a time: the workers' read path then gains 4x what the
    // listener's idle poll gains (one request at a time, the listener
    // waits in apr_pollset_poll exactly as long as a worker reads, and the
    // two tie in the ranking).
    for _ in 0..5 {
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| slow_request(apache.addr(), gap));
            }
        });
    }
    std::thread::sleep(Duration::from_millis(300));
    let (code, out, err) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "{out}\n{err}");
}

#[test]
fn diff_ranks_the_slowed_read_path_first_and_a_run_against_itself_shows_nothing() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let dir = tempfile::tempdir().unwrap();
    let (normal, slowed) = (
        dir.path().join("normal.flowdar"),
        dir.path().join("slowed.flowdar"),
    );
    record_requests(&apache, &normal, Duration::ZERO);
    record_requests(&apache, &slowed, Duration::from_millis(15));

    let rows = diff(&normal, &slowed).unwrap();
    // The read path ranks first: the connection pass, the ap_read_request
    // in it and the apr_socket_recv calls that wait, whose added worker
    // time is the same 45 ms per request to within noise (each encloses
    // the next), so any of the three may lead.
    assert_eq!(
        top_three(rows.iter().map(|r| r.function.as_str())),
        READ_PATH,
        "{rows:#?}"
    );
    let top = rows
        .iter()
        .find(|r| r.function == "ap_read_request")
        .unwrap();
    assert!(
        top.significant && top.ratio > 10.0 && top.p_value < 1e-6,
        "{top:#?}"
    );
    assert_eq!(
        (top.base_calls, top.test_calls),
        (20, 20),
        "one read per request (Connection: close: none at the close)"
    );
    // The handler does the same work either way, and none of the read
    // path's time may be counted in it. Its own mean moves with the
    // machine: after waiting 45 ms for its headers a worker can take 2x
    // (idle VM) to 3.9x (a compile beside it: 86 -> 340 us) as long over
    // it, cold caches most likely, significant with 20 calls a side. So
    // the bar is on what it gained against what the read path gained:
    // under 5% (measured 0.6% on the busy run; the read path's 45 ms
    // counted in it would be 100%). BENCHMARKS.md, "Tolerances of the
    // root tests".
    let unaffected = rows
        .iter()
        .find(|r| r.function == "ap_invoke_handler")
        .unwrap();
    let gained = |r: &flowdar::analysis::DiffRow| r.test_mean_ns as f64 - r.base_mean_ns as f64;
    assert!(
        gained(unaffected) < 0.05 * gained(top),
        "the handler gained {} ns against the read path's {} ns: {unaffected:#?}",
        gained(unaffected),
        gained(top)
    );

    let same = diff(&normal, &normal).unwrap();
    assert!(
        same.iter()
            .all(|r| !r.significant && (r.ratio - 1.0).abs() < 1e-9 && r.impact_ns_per_s == 0.0),
        "{same:#?}"
    );
    let o = flowdar(&[
        "diff",
        "--json",
        normal.to_str().unwrap(),
        slowed.to_str().unwrap(),
    ]);
    let json: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        top_three(json.iter().map(|r| r["function"].as_str().unwrap())),
        READ_PATH
    );
    for f in [
        "function",
        "base_calls",
        "test_calls",
        "base_mean_ns",
        "test_mean_ns",
        "ratio",
        "p_value",
        "in_flight",
    ] {
        assert!(json[0].get(f).is_some(), "{f}");
    }
}
