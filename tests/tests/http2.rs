//! The Apache users run: TLS (mod_ssl, real OpenSSL) and HTTP/2
//! (mod_http2), recorded with the built-in `apache:request` profile and no
//! other flag. HTTP/2 streams run on mod_http2's workers, on secondary
//! connections; `ap_read_request` is never called for them. Counts are
//! checked against bpftrace on the same functions, and every stream's
//! worker against the thread bpftrace saw run it.
use std::{collections::HashMap, process::Command, time::Duration};

use flowdar::server::{ApacheOptions, ThrowawayApache};
use flowdar_tests::*;

const APACHE: &str = "/usr/sbin/apache2";

/// h2load (Debian's nghttp2-client) against `url`, bounded in time;
/// returns its count of succeeded requests.
fn h2load(url: &str, args: &[&str]) -> u64 {
    let out = Command::new("timeout")
        .args(["60", "h2load"])
        .args(args)
        .arg(url)
        .output()
        .expect("h2load (cargo xtask setup installs nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "h2load {args:?}: {text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("h2load printed no requests line: {text}"));
    // "requests: 400 total, 400 started, 400 done, 400 succeeded, 0 failed, ..."
    line.split(',')
        .find_map(|p| p.trim().strip_suffix(" succeeded"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no succeeded count in {line}"))
}

/// An Apache with mod_ssl and mod_http2 on a TLS port, and the URL of its
/// index page there.
fn tls_apache() -> (ThrowawayApache, String) {
    let apache = ThrowawayApache::start(&ApacheOptions {
        tls: true,
        ..Default::default()
    })
    .expect("start apache with mod_ssl and mod_http2");
    let url = format!(
        "https://{}/index.html",
        apache.tls_addr().expect("a TLS port")
    );
    (apache, url)
}

#[test]
fn http2_and_tls_sessions_clients_and_streams_are_exact() {
    require_root();
    let (apache, url) = tls_apache();
    let pid = apache.pid();
    // The witness: entries of the two functions, and the thread of each
    // stream's ap_process_request.
    let filter = format!("/pid == {pid} || curtask->real_parent->tgid == {pid}/");
    let mut witness = Command::new("bpftrace");
    witness.arg("-e").arg(format!(
        "uprobe:{APACHE}:ap_process_request {filter} {{ @entry[\"ap_process_request\"] = count(); @worker[tid] = count(); }}\n\
         uprobe:{APACHE}:ap_read_request {filter} {{ @entry[\"ap_read_request\"] = count(); }}\n"
    ));
    let witness = Background::start(witness, "Attaching", Duration::from_secs(60));
    let (rec, trace) = record(pid, &["--profile", "apache:request"]);

    // 400 HTTP/2 streams over 4 TLS connections, 10 at a time on each;
    // then 200 HTTP/1.1 requests over 4 more TLS connections.
    assert_eq!(h2load(&url, &["-n", "400", "-c", "4", "-m", "10"]), 400);
    assert_eq!(h2load(&url, &["--h1", "-n", "200", "-c", "4"]), 200);
    // Lingering close ends each connection after the client goes.
    std::thread::sleep(Duration::from_secs(2));
    let (code, out, err) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");
    let (_, witnessed, _) = witness.stop(libc::SIGINT);
    let counts = parse_bpftrace_counts(&witnessed);
    let path = trace.to_str().unwrap();

    // Exact against bpftrace: one ap_process_request per stream, and no
    // ap_read_request for them (HTTP/1.1's 200, plus one NULL per
    // connection when its client closed).
    let stats = flowdar_json(&["stats", "--json", path]);
    let calls = |f: &str| -> u64 {
        stats["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["function"] == f)
            .map_or(0, |r| r["calls"].as_u64().unwrap())
    };
    assert_eq!(counts["entryap_process_request"], 400, "{witnessed}");
    assert_eq!(calls("ap_process_request"), 400);
    assert_eq!(
        calls("ap_read_request"),
        counts["entryap_read_request"],
        "{witnessed}"
    );

    // 8 sessions holding exactly 600 requests: 4 HTTP/2 ones of 100
    // streams, 4 HTTP/1.1 ones of 50 requests.
    let sessions = flowdar_json(&["sessions", "--json", path]);
    let sessions = sessions.as_array().unwrap();
    let summary: Vec<(String, u64, String)> = sessions
        .iter()
        .map(|s| {
            (
                s["protocol"].as_str().unwrap_or("null").to_string(),
                s["requests"].as_u64().unwrap(),
                s["client"].as_str().unwrap_or("null").to_string(),
            )
        })
        .collect();
    assert_eq!(sessions.len(), 8, "{summary:?}");
    let mut by_protocol: HashMap<&str, Vec<u64>> = HashMap::new();
    for (p, n, client) in &summary {
        assert!(client.starts_with("127.0.0.1:"), "{summary:?}");
        by_protocol.entry(p.as_str()).or_default().push(*n);
    }
    assert_eq!(by_protocol["h2"], [100; 4], "{summary:?}");
    assert_eq!(by_protocol["http/1.1"], [50; 4], "{summary:?}");
    assert!(
        sessions.iter().all(|s| s["closed"] == true),
        "every connection ended (lingering close): {sessions:?}"
    );

    // One client: 8 connections, 600 requests.
    let clients = flowdar_json(&["clients", "--json", path]);
    let clients = clients.as_array().unwrap();
    assert_eq!(clients.len(), 1, "{clients:?}");
    assert_eq!(
        (
            clients[0]["address"].as_str().unwrap(),
            clients[0]["connections"].as_u64().unwrap(),
            clients[0]["requests"].as_u64().unwrap()
        ),
        ("127.0.0.1", 8, 600)
    );
    // Every HTTP/1.1 request answered has a latency (from its read to its
    // response); HTTP/2 streams have none (their frames are read and
    // written by the connection's thread, around the worker's part).
    assert_eq!(clients[0]["answered"].as_u64(), Some(200), "{clients:?}");
    assert!(
        clients[0]["latency_p50_ns"].as_u64() <= clients[0]["latency_p99_ns"].as_u64(),
        "{clients:?}"
    );

    // Every stream, from the connection's thread to its worker and back:
    // the workers are the threads bpftrace saw run the streams, stream for
    // stream.
    let streams = flowdar_json(&["flows", "--streams", "--json", path]);
    let streams = streams.as_array().unwrap();
    assert_eq!(streams.len(), 400);
    let mut workers: HashMap<String, u64> = HashMap::new();
    let mut whole_path = 0;
    for s in streams {
        *workers
            .entry(format!("worker{}", s["to_tid"].as_u64().unwrap()))
            .or_default() += 1;
        assert_ne!(
            s["from_tid"], s["to_tid"],
            "a stream runs on a worker, not on its connection's thread"
        );
        whole_path += usize::from(s["from_tid"].is_u64() && s["back_tid"].is_u64());
    }
    // The connection's thread before and after each stream: a response
    // written in the event MPM's write completion (no probed pass) has
    // none after it. Seen once in 400 streams; 0 in most runs.
    assert!(
        whole_path * 100 >= streams.len() * 99,
        "{whole_path} of {} streams with the connection's thread on both sides",
        streams.len()
    );
    let witnessed_workers: HashMap<String, u64> = counts
        .iter()
        .filter(|(k, _)| k.starts_with("worker"))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(workers, witnessed_workers);
    let h2_connections: std::collections::HashSet<u64> = streams
        .iter()
        .map(|s| s["connection"].as_u64().unwrap())
        .collect();
    assert!(h2_connections.len() <= 4 && !h2_connections.is_empty());

    // The diagram of an HTTP/2 session draws each of its streams as a
    // hand-off from the connection's thread to the worker and one back:
    // as many arrows as `flows --streams` has ends for that connection.
    let first = sessions.iter().find(|s| s["protocol"] == "h2").unwrap();
    let conn = first["connection"].as_u64().unwrap();
    let (from, to) = (
        first["start_ns"].as_u64().unwrap(),
        first["start_ns"].as_u64().unwrap() + first["duration_ns"].as_u64().unwrap(),
    );
    // Its process's connection in its time (children share addresses,
    // and addresses are recycled).
    let ends: usize = streams
        .iter()
        .filter(|s| s["connection"] == conn && s["pid"] == first["pid"])
        .filter(|s| (from..=to).contains(&s["start_ns"].as_u64().unwrap()))
        .map(|s| usize::from(s["from_tid"].is_u64()) + usize::from(s["back_tid"].is_u64()))
        .sum();
    assert!(ends >= 198, "{ends} stream ends drawn for 100 streams");
    let svg = trace.with_extension("svg");
    let id = first["id"].as_u64().unwrap().to_string();
    let out = flowdar(&[
        "render",
        path,
        "--session",
        &id,
        "--by",
        "thread",
        "--max-calls",
        "100000",
        "-o",
        svg.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drawn = std::fs::read_to_string(&svg).unwrap();
    let _ = std::fs::remove_file(&svg);
    assert_eq!(drawn.matches(r#"<g class="handoff">"#).count(), ends);

    // The Perfetto export has the same arrows, for every stream.
    let all_ends: usize = streams
        .iter()
        .map(|s| usize::from(s["from_tid"].is_u64()) + usize::from(s["back_tid"].is_u64()))
        .sum();
    let arrows = perfetto_events(&trace)
        .iter()
        .filter(|e| e["cat"] == "stream" && e["ph"] == "s")
        .count();
    assert_eq!(arrows, all_ends);

    // OTLP: one server span a request, in the protocol it came in, from
    // its client (an HTTP/2 stream's, through its connection's master).
    let receiver = flowdar::server::otlp_receiver::Receiver::start(None).unwrap();
    let out = export_otlp(path, &receiver, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut versions: HashMap<String, u64> = HashMap::new();
    for r in receiver.spans().iter().filter(|r| r.span.name == "GET") {
        let a = |k| flowdar::server::otlp_receiver::attr(&r.span.attributes, k);
        assert_eq!(a("client.address"), "127.0.0.1", "{:?}", r.span);
        *versions.entry(a("network.protocol.version")).or_default() += 1;
    }
    assert_eq!(
        versions,
        HashMap::from([("2".into(), 400), ("1.1".into(), 200)])
    );
}

/// The lean capture (one entry-only uprobe a request) counts HTTP/2
/// streams for their client's socket: each stream's counted call reads
/// `r->connection->master` and that connection's client, and the stream
/// goes to the socket the kernel accepted from that address and port.
/// Exact against bpftrace on the counted function.
#[test]
fn a_lean_capture_gives_each_http2_stream_to_its_clients_socket() {
    require_root();
    let (apache, url) = tls_apache();
    let pid = apache.pid();
    let filter = format!("/pid == {pid} || curtask->real_parent->tgid == {pid}/");
    let mut witness = Command::new("bpftrace");
    witness.arg("-e").arg(format!(
        "uprobe:{APACHE}:ap_process_async_request {filter} {{ @entry[\"ap_process_async_request\"] = count(); }}\n"
    ));
    let witness = Background::start(witness, "Attaching", Duration::from_secs(60));
    let (rec, trace) = record(pid, &["--profile", "apache:lean"]);
    assert_eq!(h2load(&url, &["-n", "400", "-c", "4", "-m", "10"]), 400);
    assert_eq!(h2load(&url, &["--h1", "-n", "200", "-c", "4"]), 200);
    std::thread::sleep(Duration::from_secs(2));
    let (code, out, err) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");
    let (_, witnessed, _) = witness.stop(libc::SIGINT);
    let counts = parse_bpftrace_counts(&witnessed);
    let path = trace.to_str().unwrap();
    assert_eq!(counts["entryap_process_async_request"], 600, "{witnessed}");

    let sessions = flowdar_json(&["sessions", "--json", path]);
    let sessions = sessions.as_array().unwrap();
    let summary: Vec<(String, u64, String)> = sessions
        .iter()
        .map(|s| {
            (
                s["protocol"].as_str().unwrap_or("null").to_string(),
                s["requests"].as_u64().unwrap(),
                s["client"].as_str().unwrap_or("null").to_string(),
            )
        })
        .collect();
    assert_eq!(sessions.len(), 8, "{summary:?}");
    let mut by_protocol: HashMap<&str, Vec<u64>> = HashMap::new();
    for (p, n, client) in &summary {
        assert!(client.starts_with("127.0.0.1:"), "{summary:?}");
        by_protocol.entry(p.as_str()).or_default().push(*n);
    }
    assert_eq!(by_protocol["h2"], [100; 4], "{summary:?}");
    assert_eq!(by_protocol["http/1.1"], [50; 4], "{summary:?}");

    let clients = flowdar_json(&["clients", "--json", path]);
    let clients = clients.as_array().unwrap();
    assert_eq!(clients.len(), 1, "{clients:?}");
    assert_eq!(
        (
            clients[0]["address"].as_str().unwrap(),
            clients[0]["connections"].as_u64().unwrap(),
            clients[0]["requests"].as_u64().unwrap()
        ),
        ("127.0.0.1", 8, 600)
    );
}

/// `flowdar top` under HTTP/2: the live view's clients and workers count
/// the streams for their client's connection.
#[test]
fn top_shows_http2_clients_and_workers() {
    require_root();
    let (apache, url) = tls_apache();
    let mut top = Command::new(flowdar_bin());
    top.args(["top", "--pid", &apache.pid().to_string()]).args([
        "--profile",
        "apache:request",
        "--json",
    ]);
    // Ready once the first interval is out (probes attached).
    let top = Background::start(top, "\"functions\"", Duration::from_secs(60));
    // Four connections, 10 streams at a time on each: a few seconds.
    assert_eq!(h2load(&url, &["-n", "20000", "-c", "4", "-m", "10"]), 20000);
    std::thread::sleep(Duration::from_secs(2));
    let (code, out, err) = top.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "top failed:\n{err}");
    let intervals: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(intervals.len() >= 3, "{out}");
    // While the load ran: one client, 127.0.0.1, its 4 connections, and
    // workers on it.
    let busy: Vec<_> = intervals
        .iter()
        .filter(|i| {
            i["clients"].as_array().is_some_and(|c| {
                c.len() == 1
                    && c[0]["address"] == "127.0.0.1"
                    && c[0]["connections"] == 4
                    && c[0]["workers_now"].as_u64() > Some(0)
            })
        })
        .collect();
    assert!(
        !busy.is_empty(),
        "an interval with the h2 client busy: {out}"
    );
    let calls: u64 = intervals
        .iter()
        .filter_map(|i| {
            i["functions"].as_array().map(|f| {
                f.iter()
                    .filter(|r| r["function"] == "ap_process_request")
                    .filter_map(|r| r["calls"].as_u64())
                    .sum::<u64>()
            })
        })
        .sum();
    assert_eq!(calls, 20000, "one ap_process_request per stream");
}

/// Per session, the time in TLS handshakes, reads and writes (OpenSSL's
/// exported functions); a client that sends half a ClientHello and waits
/// is a held connection, with its client address, counted by `clients`.
#[test]
fn tls_time_per_session_and_a_stalled_handshake_is_a_held_connection() {
    use std::io::Write as _;
    require_root();
    let apache = ThrowawayApache::start(&ApacheOptions {
        tls: true,
        ..Default::default()
    })
    .expect("start apache with mod_ssl and mod_http2");
    let tls = apache.tls_addr().expect("a TLS port");
    let url = format!("https://{tls}/index.html");
    let libssl = "/usr/lib/x86_64-linux-gnu/libssl.so.3";
    let witness = start_bpftrace_counter(apache.pid(), &[(libssl, "SSL_accept")]);
    let (rec, trace) = record(apache.pid(), &["--profile", "apache:request,tls"]);
    assert_eq!(h2load(&url, &["-n", "100", "-c", "2", "-m", "10"]), 100);
    // A TLS record header announcing a 512-byte ClientHello, and only the
    // first bytes of it: the server waits in its handshake.
    let mut stalled = std::net::TcpStream::connect(tls).expect("connect");
    stalled
        .write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .unwrap();
    let stalled_addr = stalled.local_addr().unwrap().to_string();
    std::thread::sleep(Duration::from_secs(3));
    let (code, out, err) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");
    drop(stalled);
    let (_, witnessed, _) = witness.stop(libc::SIGINT);
    let counts = parse_bpftrace_counts(&witnessed);
    let path = trace.to_str().unwrap();

    let stats = flowdar_json(&["stats", "--json", path]);
    let accepts = stats["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["function"] == "SSL_accept")
        .map_or(0, |r| {
            r["calls"].as_u64().unwrap() + r["in_flight"].as_u64().unwrap()
        });
    assert_eq!(accepts, counts["entrySSL_accept"], "{witnessed}");
    assert_eq!(accepts, 3, "two h2load connections and the stalled one");
    let in_flight = stats["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["function"] == "SSL_accept")
        .map(|r| r["in_flight"].as_u64().unwrap());
    assert_eq!(in_flight, Some(1), "the stalled handshake never returned");

    let sessions = flowdar_json(&["sessions", "--json", path]);
    let sessions = sessions.as_array().unwrap();
    let h2: Vec<_> = sessions.iter().filter(|s| s["protocol"] == "h2").collect();
    assert_eq!(h2.len(), 2, "{sessions:?}");
    for s in &h2 {
        assert_eq!(s["requests"], 50, "{s}");
        assert_eq!(s["tls"], true, "{s}");
        for f in ["handshake_ns", "tls_read_ns", "tls_write_ns"] {
            assert!(s[f].as_u64().unwrap() > 0, "{f}: {s}");
        }
        assert!(
            s["handshake_ns"].as_u64() < s["duration_ns"].as_u64(),
            "{s}"
        );
    }
    let held: Vec<_> = sessions
        .iter()
        .filter(|s| s["client"] == stalled_addr.as_str())
        .collect();
    assert_eq!(
        held.len(),
        1,
        "the stalled client {stalled_addr}: {sessions:?}"
    );
    let held = held[0];
    assert_eq!(held["closed"], false, "{held}");
    assert_eq!(held["tls"], true, "{held}");
    assert_eq!(held["protocol"], serde_json::Value::Null, "{held}");
    assert_eq!(held["requests"], 0, "{held}");
    assert!(held["in_flight"].as_u64().unwrap() >= 1, "{held}");
    // In its handshake since it connected, about 3 s before capture ended.
    assert!(
        held["handshake_ns"].as_u64().unwrap() > 2_000_000_000,
        "{held}"
    );

    let clients = flowdar_json(&["clients", "--json", path]);
    let clients = clients.as_array().unwrap();
    assert_eq!(clients.len(), 1, "{clients:?}");
    assert_eq!(
        (
            clients[0]["connections"].as_u64().unwrap(),
            clients[0]["requests"].as_u64().unwrap()
        ),
        (3, 100)
    );
}

/// `flowdar experiment` with a TLS + HTTP/2 server and h2load as the
/// client (the example spec, phases cut to 4 s): each phase's sessions
/// are its 4 client connections over TLS, in the protocol h2load spoke.
#[test]
fn an_experiment_over_tls_and_http2_drives_h2load_from_the_lab() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exp");
    let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../flowdar-lab/examples/h2-tls.toml");
    let o = flowdar(&[
        "experiment",
        spec.to_str().unwrap(),
        "--max-phase",
        "4s",
        "-o",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let exp = read_json(&out.join("experiment.json"));
    let phases = exp["variants"][0]["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2);
    for (phase, protocol) in phases.iter().zip(["h2", "http/1.1"]) {
        let name = phase["name"].as_str().unwrap();
        assert_eq!(
            (phase["errors"].as_u64(), phase["lost"].as_u64()),
            (Some(0), Some(0)),
            "{phase}"
        );
        assert!(phase["requests_per_s"].as_f64().unwrap() > 100.0, "{phase}");
        let trace = out.join("none").join(format!("{name}.flowdar"));
        let path = trace.to_str().unwrap();
        let sessions = flowdar_json(&["sessions", "--json", path]);
        let sessions = sessions.as_array().unwrap();
        // HTTP/2: h2load's 4 connections for the whole phase. HTTP/1.1:
        // Apache closes a connection after 100 requests
        // (MaxKeepAliveRequests: the first and 100 more) and h2load opens another.
        if protocol == "h2" {
            assert_eq!(sessions.len(), 4, "{name}: {sessions:?}");
        } else {
            assert!(sessions.len() >= 4, "{name}: {sessions:?}");
            for s in sessions {
                assert!(s["requests"].as_u64() <= Some(101), "{name}: {s}");
            }
        }
        for s in sessions {
            assert_eq!(
                (s["protocol"].as_str(), s["tls"].as_bool()),
                (Some(protocol), Some(true)),
                "{s}"
            );
            assert!(s["handshake_ns"].as_u64().unwrap() > 0, "{s}");
            assert!(
                s["client"].as_str().unwrap().starts_with("198.18.")
                    || s["client"].as_str().unwrap().starts_with("198.19."),
                "from the lab's client host: {s}"
            );
        }
        // Every request of the phase in a session: HTTP/2 streams through
        // ap_process_request, HTTP/1.1 requests through ap_read_request.
        let stats = flowdar_json(&["stats", "--json", path]);
        let function = if protocol == "h2" {
            "ap_process_request"
        } else {
            "ap_process_async_request"
        };
        let calls = stats["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["function"] == function)
            .map(|r| r["calls"].as_u64().unwrap() + r["in_flight"].as_u64().unwrap())
            .unwrap();
        let requests: u64 = sessions
            .iter()
            .map(|s| s["requests"].as_u64().unwrap())
            .sum();
        assert_eq!(requests, calls, "{name}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("**No attack: phase `h1` against phase `h2`.**"),
        "{md}"
    );
    assert!(left_behind().is_empty());
}

/// `flowdar top` (its default, the lean capture) under a Slowloris over
/// TLS: the attacker's connections finish their handshakes and then
/// trickle header lines inside TLS; the workers they hold are reading
/// their requests, and the alert names the attacker (loopback here: the
/// TLS port listens there).
#[test]
fn top_raises_the_alert_for_a_slowloris_over_tls() {
    require_root();
    let (apache, _) = tls_apache();
    let tls = apache.tls_addr().expect("a TLS port");
    let mut top = Command::new(flowdar_bin());
    top.args(["top", "--pid", &apache.pid().to_string(), "--json"])
        .args(["--alert-workers", "20", "--alert-after", "2s"]);
    let top = Background::start(top, "\"functions\"", Duration::from_secs(60));
    // A line every 20 s: none before the stop (see Slowloris::interval_s).
    // Killed however the test ends.
    struct Attack(std::process::Child);
    impl Drop for Attack {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let attack = Command::new("slowhttptest")
        .args([
            "-H", "-c", "50", "-r", "50", "-i", "20", "-l", "40", "-p", "5",
        ])
        .args(["-u", &format!("https://{tls}/index.html")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(Attack)
        .expect("slowhttptest");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline && !top.stdout().contains("\"kind\":\"slow-http\"") {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, out, err) = top.stop(libc::SIGINT);
    drop(attack);
    assert_eq!(code, Some(0), "{err}");
    let intervals: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let alert = intervals
        .iter()
        .flat_map(|i| i["alerts"].as_array().unwrap().iter())
        .next()
        .unwrap_or_else(|| panic!("no slow-http alert:\n{out}\n{err}"));
    assert_eq!(alert["kind"], "slow-http", "{alert}");
    assert_eq!(
        alert["clients"],
        serde_json::json!(["127.0.0.1"]),
        "{alert}"
    );
    let last = intervals.last().unwrap();
    let held: Vec<&serde_json::Value> = last["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["for_ns"].as_u64().unwrap() >= 1_000_000_000)
        .collect();
    assert!(held.len() >= 20, "{last}");
    for w in held {
        assert_eq!(w["phase"], "reading request", "{w}");
        assert!(
            w["client"]
                .as_str()
                .is_some_and(|c| c.starts_with("127.0.0.1:")),
            "{w}"
        );
    }
    assert_eq!(left_behind(), Vec::<String>::new());
}
