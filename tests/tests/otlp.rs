//! `flowdar export --format otlp`: a recorded Apache's requests as
//! OpenTelemetry spans, sent over OTLP/HTTP to a receiver on loopback
//! (`flowdar_tests::otlp_receiver`, decoding with the official protobuf
//! definitions). Exact: N requests sent give N server spans.
use std::{collections::HashMap, io::Write, time::Duration};

use flowdar::server::otlp_receiver::{attr, Received, Receiver};
use flowdar::server::{run_load, ApacheOptions, LoadPlan, ThrowawayApache};
use flowdar_tests::*;

/// 10 keep-alive connections of 4 requests, 2 at a time: 40 answered.
fn forty_requests(apache: &ThrowawayApache) {
    let r = run_load(
        apache.addr(),
        &LoadPlan {
            connections: 10,
            requests_per_connection: 4,
            concurrency: 2,
            ..Default::default()
        },
    );
    assert_eq!((r.ok, r.errors), (40, 0));
}

/// 40 keep-alive requests (10 connections of 4) and 3 clients that never
/// finish their request, recorded with `apache:request,io`: 40 `HTTP`
/// server spans from 127.0.0.1, each with its handler and its socket reads
/// as children inside it, and 3 unfinished `read request` spans.
#[test]
fn each_request_is_one_server_span_with_its_calls_inside() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("otlp.flowdar");
    let rec = record_profile(apache.pid(), "apache:request,io", &trace);
    forty_requests(&apache);
    // A missing page, a POST and a DELETE of a static file: their status
    // and method.
    let url = format!("http://{}", apache.addr());
    for (args, want) in [
        (vec![format!("{url}/missing.html")], "404"),
        (
            vec!["-d".into(), "x=1".into(), format!("{url}/index.html")],
            "200",
        ),
        (
            vec!["-X".into(), "DELETE".into(), format!("{url}/index.html")],
            "405",
        ),
    ] {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .args(&args)
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    }
    let held: Vec<std::net::TcpStream> = (0..3)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(apache.addr()).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: held\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let (code, out, err) = rec.stop(libc::SIGINT);
    drop(held);
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");

    let receiver = Receiver::start(None).unwrap();
    let path = trace.to_str().unwrap();
    let out = export_otlp(
        path,
        &receiver,
        &["--span-functions", "ap_invoke_handler,apr_socket_recv"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("43 requests and 3 requests still being read"),
        "{text}"
    );
    let spans = receiver.spans();
    let servers: Vec<&Received> = spans.iter().filter(|r| r.span.kind == 2).collect();
    // Named by method (OpenTelemetry's name without a route), with the
    // method and the final status.
    let outcome = |r: &Received| {
        (
            r.span.name.clone(),
            attr(&r.span.attributes, "http.request.method"),
            attr(&r.span.attributes, "http.response.status_code"),
        )
    };
    let mut outcomes: HashMap<(String, String, String), usize> = HashMap::new();
    for s in &servers {
        *outcomes.entry(outcome(s)).or_default() += 1;
    }
    let key = |n: &str, m: &str, c: &str| (n.to_string(), m.to_string(), c.to_string());
    assert_eq!(
        outcomes,
        HashMap::from([
            (key("GET", "GET", "200"), 40),
            (key("GET", "GET", "404"), 1),
            (key("POST", "POST", "200"), 1),
            (key("DELETE", "DELETE", "405"), 1),
            (key("read request", "", ""), 3),
        ])
    );
    assert!(
        text.contains(&format!("sent {} spans", spans.len())),
        "{text}"
    );
    for s in &servers {
        assert_eq!(attr(&s.span.attributes, "client.address"), "127.0.0.1");
        assert!(
            attr(&s.span.attributes, "client.port")
                .parse::<u16>()
                .unwrap()
                > 0
        );
        assert_eq!(attr(&s.span.attributes, "network.protocol.version"), "1.1");
        let unfinished = attr(&s.span.attributes, "flowdar.unfinished") == "true";
        assert_eq!(unfinished, s.span.name == "read request", "{:?}", s.span);
        assert_eq!(attr(&s.resource, "service.name"), "apache");
        assert_eq!(attr(&s.resource, "process.pid"), apache.pid().to_string());
        assert_eq!(attr(&s.resource, "flowdar.trace"), path);
    }
    // Children: inside their request, in its trace, its span their parent.
    let by_id: HashMap<&[u8], &Received> = servers
        .iter()
        .map(|r| (r.span.span_id.as_slice(), *r))
        .collect();
    let mut per_request: HashMap<&[u8], HashMap<String, usize>> = HashMap::new();
    for c in spans.iter().filter(|r| r.span.kind == 1) {
        let parent = by_id
            .get(c.span.parent_span_id.as_slice())
            .unwrap_or_else(|| panic!("a child without its request: {:?}", c.span));
        assert_eq!(c.span.trace_id, parent.span.trace_id);
        assert!(
            c.span.start_time_unix_nano >= parent.span.start_time_unix_nano
                && c.span.end_time_unix_nano <= parent.span.end_time_unix_nano,
            "{:?} outside {:?}",
            c.span,
            parent.span
        );
        assert_eq!(attr(&c.span.attributes, "code.function.name"), c.span.name);
        *per_request
            .entry(parent.span.span_id.as_slice())
            .or_default()
            .entry(c.span.name.clone())
            .or_default() += 1;
    }
    for s in servers
        .iter()
        .filter(|s| outcome(s) == key("GET", "GET", "200"))
    {
        let children = per_request.get(s.span.span_id.as_slice());
        let count = |f: &str| children.and_then(|c| c.get(f)).copied().unwrap_or(0);
        assert_eq!(count("ap_invoke_handler"), 1, "{children:?}");
        assert!(count("apr_socket_recv") >= 1, "{children:?}");
    }
    assert_eq!(left_behind(), Vec::<String>::new());
}

/// A collector that goes away after its first batch: the export says how
/// many spans were dropped and fails; the receiver has exactly the first
/// batch; the trace file is unchanged and still holds every request.
#[test]
fn a_collector_gone_mid_export_costs_counted_spans_and_no_event() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("gone.flowdar");
    let rec = record_profile(apache.pid(), "apache:request", &trace);
    let r = run_load(
        apache.addr(),
        &LoadPlan {
            connections: 30,
            requests_per_connection: 50,
            concurrency: 4,
            ..Default::default()
        },
    );
    assert_eq!((r.ok, r.errors), (1500, 0));
    std::thread::sleep(Duration::from_millis(500));
    let (code, out, err) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");
    let path = trace.to_str().unwrap();
    let before = std::fs::read(&trace).unwrap();

    let receiver = Receiver::start(Some(1)).unwrap();
    let out = export_otlp(path, &receiver, &["--otlp-timeout", "2s"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert_eq!(receiver.batches(), 1);
    // 1500 requests: batches of 512, 512 and 476; the first one taken.
    assert_eq!(receiver.spans().len(), 512);
    assert!(stdout.contains("1500 requests"), "{stdout}");
    assert!(
        stdout.contains("sent 512 spans") && stdout.contains("dropped 988"),
        "{stdout}"
    );
    assert!(
        stderr.contains("988 of 1500 spans were not taken"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&trace).unwrap(),
        before,
        "the trace file is unchanged"
    );
    let stats = flowdar_json(&["stats", "--json", path]);
    let calls = stats["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["function"] == "ap_process_request_internal")
        .map(|f| f["calls"].as_u64().unwrap());
    assert_eq!(calls, Some(1500), "{stats}");
}

/// `record --otlp URL`: each request goes to the collector while the
/// recording runs, exactly one span a request.
#[test]
fn record_sends_each_request_while_it_records() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let receiver = Receiver::start(None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("live.flowdar");
    let pid = apache.pid().to_string();
    let endpoint = receiver.endpoint();
    let rec = start_recorder(&[
        "--pid",
        &pid,
        "--profile",
        "apache:request,io",
        "--otlp",
        &endpoint,
        "--span-functions",
        "ap_invoke_handler",
        "-o",
        trace.to_str().unwrap(),
    ]);
    forty_requests(&apache);
    // Spans go about a second after their request: some before the stop.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while receiver.spans().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!receiver.spans().is_empty(), "nothing sent while recording");
    let (code, out, err) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");
    let spans = receiver.spans();
    let http = spans.iter().filter(|r| r.span.name == "GET").count();
    let handlers = spans
        .iter()
        .filter(|r| r.span.name == "ap_invoke_handler")
        .count();
    assert_eq!((http, handlers), (40, 40), "{out}");
    assert!(
        out.contains(&format!(
            "OTLP: {} spans sent to {endpoint}/v1/traces while recording, 0 dropped.",
            spans.len()
        )),
        "{out}"
    );
    assert_eq!(left_behind(), Vec::<String>::new());
}

/// A collector that goes away during a live export: the recording goes
/// on and loses no event; the spans it could not send are counted, and
/// the ones it took plus the dropped ones are every request.
#[test]
fn a_collector_gone_during_recording_costs_counted_spans_and_no_event() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let receiver = Receiver::start(Some(1)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("gone-live.flowdar");
    let pid = apache.pid().to_string();
    let endpoint = receiver.endpoint();
    let rec = start_recorder(&[
        "--pid",
        &pid,
        "--profile",
        "apache:request",
        "--otlp",
        &endpoint,
        "--otlp-timeout",
        "1s",
        "-o",
        trace.to_str().unwrap(),
    ]);
    // Three rounds a second and a half apart: several batches.
    for _ in 0..3 {
        let r = run_load(
            apache.addr(),
            &LoadPlan {
                connections: 20,
                requests_per_connection: 50,
                concurrency: 4,
                ..Default::default()
            },
        );
        assert_eq!((r.ok, r.errors), (1000, 0));
        std::thread::sleep(Duration::from_millis(1500));
    }
    let (code, out, err) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");
    assert_eq!(receiver.batches(), 1);
    let sent = receiver.spans().len();
    let line = out
        .lines()
        .find(|l| l.starts_with("OTLP: "))
        .unwrap_or_else(|| panic!("no OTLP line:\n{out}"));
    let dropped: usize = line
        .split(" dropped")
        .next()
        .and_then(|h| h.rsplit(", ").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no dropped count in {line}"));
    assert!(
        line.starts_with(&format!("OTLP: {sent} spans sent")),
        "{line}"
    );
    assert!(dropped > 0, "{line}");
    assert_eq!(sent + dropped, 3000, "{line}");
    assert!(out.contains(", 0 lost,"), "no event lost:\n{out}");
    let stats = flowdar_json(&["stats", "--json", trace.to_str().unwrap()]);
    let calls = stats["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["function"] == "ap_process_request_internal")
        .map(|f| f["calls"].as_u64().unwrap());
    assert_eq!(calls, Some(3000), "{stats}");
}

/// `top --otlp URL`: the live view and the spans from the same batches.
#[test]
fn top_sends_each_request_while_it_shows_them() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let receiver = Receiver::start(None).unwrap();
    let endpoint = receiver.endpoint();
    let mut cmd = std::process::Command::new(flowdar_bin());
    cmd.args(["top", "--pid", &apache.pid().to_string(), "--json"])
        .args(["--profile", "apache:request", "--otlp", &endpoint]);
    let top = Background::start(cmd, "\"functions\"", Duration::from_secs(60));
    forty_requests(&apache);
    std::thread::sleep(Duration::from_millis(1500));
    let (code, _, err) = top.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "top failed:\n{err}");
    let http = receiver
        .spans()
        .iter()
        .filter(|r| r.span.name == "GET")
        .count();
    assert_eq!(http, 40, "{err}");
    assert!(
        err.contains(&format!(
            "OTLP: 40 spans sent to {endpoint}/v1/traces while recording, 0 dropped."
        )),
        "{err}"
    );
    assert_eq!(left_behind(), Vec::<String>::new());
}

/// A request that carries a W3C `traceparent` joins the caller's trace:
/// the kernel reads the header from `r->headers_in` (only the ids leave
/// it), and its server span gets the caller's trace id and parent span.
/// Requests without one, or with a malformed one, are roots of their own.
#[test]
fn a_traceparent_sent_by_the_client_is_joined() {
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("context.flowdar");
    let rec = record_profile(apache.pid(), "apache:request", &trace);
    let url = format!("http://{}/index.html", apache.addr());
    let curl = |header: Option<&str>| {
        let mut c = std::process::Command::new("curl");
        c.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ]);
        if let Some(h) = header {
            c.args(["-H", h]);
        }
        let out = c.arg(&url).output().expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    };
    let id = "4bf92f3577b34da6a3ce929d0e0e4736";
    for i in 0..5 {
        curl(Some(&format!("traceparent: 00-{id}-00f067aa0ba902b{i}-01")));
    }
    // Header names are case-insensitive.
    curl(Some(&format!("TraceParent: 00-{id}-00f067aa0ba902c0-00")));
    curl(None);
    curl(Some("traceparent: 00-not-a-trace-id-01"));
    curl(Some(&format!(
        "traceparent: 00-{}-00f067aa0ba902b1-01",
        "0".repeat(32)
    )));
    std::thread::sleep(Duration::from_millis(500));
    let (code, out, err) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");

    let receiver = Receiver::start(None).unwrap();
    let out = export_otlp(trace.to_str().unwrap(), &receiver, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut joined: Vec<(String, String, u32)> = Vec::new();
    let mut roots = 0;
    for r in receiver.spans().iter().filter(|r| r.span.name == "GET") {
        if r.span.parent_span_id.is_empty() {
            roots += 1;
            assert_ne!(hex(&r.span.trace_id), id);
        } else {
            joined.push((
                hex(&r.span.trace_id),
                hex(&r.span.parent_span_id),
                r.span.flags,
            ));
        }
    }
    joined.sort();
    let mut want: Vec<(String, String, u32)> = (0..5)
        .map(|i| (id.to_string(), format!("00f067aa0ba902b{i}"), 1))
        .collect();
    want.push((id.to_string(), "00f067aa0ba902c0".into(), 0));
    want.sort();
    assert_eq!(joined, want);
    assert_eq!(roots, 3, "no header, a malformed one, an all-zero trace id");
}
