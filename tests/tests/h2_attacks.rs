//! The TLS and HTTP/2 attacks of the lab (issue #29), each for 5 s against
//! a throwaway Apache with TLS and HTTP/2, recorded with the probes the
//! HTTP/2-era experiments use (`apache:lean,handshake,h2`). The attack
//! client connects from 127.0.0.2, so that the trace's client addresses
//! tell it apart; what it reports it sent must be what the trace saw.
use std::{net::IpAddr, path::Path, time::Duration};

use flowdar::{
    analysis::{h2_streams, H2Streams},
    server::{
        ApacheOptions, Attack, AttackMode, AttackPlan, AttackReport, Targets, ThrowawayApache,
        LARGE_PATH,
    },
};
use flowdar_tests::*;

const ATTACKER: &str = "127.0.0.2";
const PROFILE: &str = "apache:lean,handshake,h2";

/// An Apache with TLS and HTTP/2 and a pool larger than any attack here.
fn apache() -> ThrowawayApache {
    ThrowawayApache::start(&ApacheOptions {
        tls: true,
        ..Default::default()
    })
    .expect("start apache with mod_ssl and mod_http2")
}

fn start(apache: &ThrowawayApache, mode: AttackMode, connections: u32, rate: u32) -> Attack {
    let plan = AttackPlan {
        mode,
        connections,
        rate,
        interval: Duration::from_secs(1),
        duration: Duration::from_secs(20),
        source: Some(ATTACKER.parse().unwrap()),
    };
    let path = if mode.wants_large_response() {
        LARGE_PATH
    } else {
        "/index.html"
    };
    Attack::start(
        apache.tls_addr().expect("a TLS port"),
        path,
        &plan,
        None,
        &Targets::default(),
    )
    .expect("start the attack client (cargo xtask setup installs python3-h2)")
}

/// Runs `mode` for 5 s under a recording. `held`: the recording stops
/// while the attack still holds its connections (what it holds is the
/// signal); otherwise the attack stops first, so that everything it sent
/// is in the trace.
fn attacked(
    mode: AttackMode,
    connections: u32,
    rate: u32,
    held: bool,
) -> (AttackReport, TraceFile, ThrowawayApache) {
    require_root();
    let apache = apache();
    let (rec, trace) = record(apache.pid(), &["--profile", PROFILE]);
    let mut attack = start(&apache, mode, connections, rate);
    // The 5 s of attack count from its first connection: a slow guest (the
    // kernel matrix's emulated 6.1, on a busy host) once took 4.5 s to
    // start python, which then opened 20 streams before it was stopped.
    wait_for_attacker(apache.tls_addr().expect("a TLS port").port());
    std::thread::sleep(Duration::from_secs(5));
    let stop_recording = |rec: Background| {
        let (code, out, err) = rec.stop(libc::SIGINT);
        assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");
    };
    let report = if held {
        stop_recording(rec);
        attack.stop().cloned()
    } else {
        let report = attack.stop().cloned();
        std::thread::sleep(Duration::from_secs(1));
        stop_recording(rec);
        report
    };
    let report = report.expect("the attack client's report");
    assert_eq!(report.connections_failed, 0, "{report:?}");
    for tool in ["python", "h2", "hpack", "hyperframe", "openssl"] {
        assert!(report.versions.contains_key(tool), "{report:?}");
    }
    (report, trace, apache)
}

/// Waits (up to 60 s) until the server holds a connection from
/// [`ATTACKER`] on `port` (/proc/net/tcp: local 127.0.0.1:port, remote
/// 127.0.0.2, any state past the handshake).
fn wait_for_attacker(port: u16) {
    let local = format!("0100007F:{port:04X}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let found = tcp.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == local && f[2].starts_with("0200007F:") && f[3] != "0A"
        });
        if found {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no connection from {ATTACKER} to port {port} within 60 s");
}

fn streams(trace: &Path) -> H2Streams {
    h2_streams(trace)
        .expect("read the trace")
        .expect("the trace has the h2 probes")
}

/// The attacker's row of `flowdar clients`.
fn attacker_row(trace: &Path) -> serde_json::Value {
    let clients = flowdar_json(&["clients", "--json", trace.to_str().unwrap()]);
    clients
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == ATTACKER)
        .unwrap_or_else(|| panic!("no row for {ATTACKER}: {clients}"))
        .clone()
}

/// The attacker's sessions (connections) still open when capture ended.
fn attacker_open_sessions(trace: &Path) -> Vec<serde_json::Value> {
    let sessions = flowdar_json(&["sessions", "--json", trace.to_str().unwrap()]);
    sessions
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["client"]
                .as_str()
                .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                .map(|a| a.ip())
                == Some(ATTACKER.parse::<IpAddr>().unwrap())
                && s["closed"] == false
        })
        .cloned()
        .collect()
}

fn in_flight(trace: &Path, function: &str) -> u64 {
    let stats = flowdar_json(&["stats", "--json", trace.to_str().unwrap()]);
    stats["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["function"] == function)
        .map_or(0, |r| r["in_flight"].as_u64().unwrap())
}

#[test]
fn tls_handshake_holds_workers_in_ssl_accept_by_the_attackers_address() {
    let (sent, trace, _apache) = attacked(AttackMode::TlsHandshake, 30, 30, true);
    assert_eq!(sent.connections_opened, 30, "{sent:?}");
    assert_eq!(sent.connections_held, 30, "{sent:?}");
    // Every held connection is a worker in SSL_accept, from the attacker.
    assert_eq!(in_flight(&trace, "SSL_accept"), 30);
    let row = attacker_row(&trace);
    assert_eq!(row["connections"], 30, "{row}");
    assert_eq!(row["requests"], 0, "{row}");
    assert_eq!(row["in_flight"].as_u64(), Some(30), "{row}");
    let open = attacker_open_sessions(&trace);
    assert_eq!(open.len(), 30);
    // HTTP/2 never began: no stream.
    assert_eq!(streams(&trace).opened, 0);
}

#[test]
fn h2_rapid_reset_streams_opened_and_reset_match_the_attack_client() {
    let (sent, trace, _apache) = attacked(AttackMode::H2RapidReset, 2, 500, false);
    let s = streams(&trace);
    // 500 a second asked for; a slow guest starts python late and runs it
    // slowly (336 streams in 1.5 s once in the kernel matrix's emulated
    // 6.1 guest): half a second's worth is still a rapid reset, and what
    // follows checks the trace against what was sent, exactly.
    assert!(sent.streams_opened >= 250, "{sent:?}");
    assert_eq!(sent.streams_reset, sent.streams_opened, "{sent:?}");
    assert_eq!(s.opened, sent.streams_opened, "{s:?} {sent:?}");
    assert_eq!(s.answered, 0, "every stream was reset at once: {s:?}");
    assert_eq!(s.unanswered(), sent.streams_reset);
    // The server's GOAWAYs (two when mod_http2 ends a session for too many
    // resets): the client has read them all, or not yet the last ones when
    // it was stopped (seen on 6.1 in the kernel matrix's slower guest).
    assert!(s.goaways >= sent.goaways, "{s:?} {sent:?}");
    let row = attacker_row(&trace);
    assert_eq!(row["connections"], sent.connections_opened, "{row}");
}

#[test]
fn h2_slow_headers_streams_are_held_open_without_a_request() {
    let (sent, trace, _apache) = attacked(AttackMode::H2SlowHeaders, 20, 40, true);
    assert_eq!(sent.connections_held, 20, "{sent:?}");
    assert_eq!(sent.streams_opened, 20, "{sent:?}");
    let s = streams(&trace);
    assert_eq!(s.opened, 20, "{s:?}");
    assert_eq!(s.answered, 0, "no stream's headers ended: {s:?}");
    // The connections wait in the event loop, not in workers: open, with
    // no request, from the attacker.
    let open = attacker_open_sessions(&trace);
    assert_eq!(open.len(), 20, "{open:?}");
    for o in &open {
        assert_eq!(o["requests"], 0, "{o}");
    }
}

#[test]
fn h2_slow_read_streams_are_answered_and_held_behind_a_zero_window() {
    let (sent, trace, _apache) = attacked(AttackMode::H2SlowRead, 5, 20, true);
    assert_eq!(sent.connections_held, 5, "{sent:?}");
    assert_eq!(sent.streams_opened, 40, "8 streams a connection: {sent:?}");
    let s = streams(&trace);
    assert_eq!(s.opened, 40, "{s:?}");
    // Answered (headers sent), their 1 MiB bodies held by the window.
    assert_eq!(s.answered, 40, "{s:?}");
    assert_eq!(attacker_open_sessions(&trace).len(), 5);
}

#[test]
fn h2_continuation_flood_is_cut_off_by_the_server() {
    let (sent, trace, _apache) = attacked(AttackMode::H2Continuation, 10, 50, false);
    assert_eq!(sent.streams_opened, 10, "{sent:?}");
    // Debian's mod_http2 (patched for CVE-2024-27316) ends each session
    // once the header block outgrows its limits.
    assert_eq!(sent.connections_closed_by_server, 10, "{sent:?}");
    let s = streams(&trace);
    assert_eq!(s.opened, 10, "{s:?}");
    assert_eq!(s.answered, 0, "{s:?}");
    assert!(attacker_open_sessions(&trace).is_empty());
    let row = attacker_row(&trace);
    assert_eq!(row["connections"], 10, "{row}");
}

/// The HTTP/2 era's TLS handshake experiment (`flowdar experiment --h2`
/// runs it first), phases cut to 15 s: the denial without mitigation, its
/// cause in the trace (workers held in SSL_accept by the attacker), and
/// mod_reqtimeout's handshake stage bringing service back.
#[test]
fn the_tls_handshake_experiment_shows_the_denial_its_cause_and_the_fix() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exp");
    let spec = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../flowdar-lab/examples/dos-tls-handshake.toml");
    let o = flowdar(&[
        "experiment",
        spec.to_str().unwrap(),
        "--max-phase",
        "15s",
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
    let variants = exp["variants"].as_array().unwrap();
    let names: Vec<&str> = variants
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["none", "handshake"]);
    let rps = |v: &serde_json::Value, i: usize| v["phases"][i]["requests_per_s"].as_f64().unwrap();
    let (none, fixed) = (&variants[0], &variants[1]);
    // The attack's own report, in the issue-19 shape's phase.
    let sent = &none["phases"][1]["attack"]["sent"];
    assert!(
        sent["connections_opened"].as_u64().unwrap() > 150,
        "more than the 150 workers: {sent}"
    );
    assert!(none["phases"][1]["attack"]["command"]
        .as_str()
        .unwrap()
        .contains("tls-handshake"));
    // Second by second: without mitigation no second of the attack phase
    // serves a tenth of the normal rate; with it, service comes back (the
    // attack's first handshakes are cut at 5 s, and its 400 connections
    // are all opened by then) to at least half of it.
    let best = |v: &serde_json::Value| {
        v["phases"][1]["per_second"]["ok"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n.as_f64())
            .fold(0.0, f64::max)
    };
    assert!(rps(none, 0) > 1000.0, "{none}");
    assert!(
        best(none) <= 0.1 * rps(none, 0),
        "a denial without mitigation: {none}"
    );
    assert!(
        best(fixed) >= 0.5 * rps(fixed, 0),
        "handshake=5 brings service back: {fixed}"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("**Denial of service.**"), "{report}");
    assert!(
        report.contains("`SSL_accept` > `read-wait: poll`"),
        "{report}"
    );
    assert!(
        report.contains("the TLS handshake (SSL_accept)"),
        "{report}"
    );
    assert!(report.contains("(the attacker's host)"), "{report}");
}

/// `flowdar top` on a server with mod_ssl, with the profile the HTTP/2
/// experiments use (lean, SSL_accept and libnghttp2): held handshakes
/// raise their own alert, naming the attacker; a Rapid Reset raises the
/// reset alert. (The default profile there is lean and SSL_accept: see
/// `top`'s unit tests and the README.)
#[test]
fn top_alerts_on_held_handshakes_and_on_streams_reset_faster_than_served() {
    require_root();
    let apache = apache();
    let mut top = std::process::Command::new(flowdar_bin());
    top.args(["top", "--pid", &apache.pid().to_string(), "--json"])
        .args(["--profile", PROFILE])
        .args(["--alert-workers", "20", "--alert-after", "2s"]);
    let top = Background::start(top, "\"functions\"", Duration::from_secs(60));
    let mut handshakes = start(&apache, AttackMode::TlsHandshake, 30, 30);
    std::thread::sleep(Duration::from_secs(5));
    let held = handshakes.stop().cloned().expect("its report");
    assert_eq!(held.connections_held, 30, "{held:?}");
    let mut resets = start(&apache, AttackMode::H2RapidReset, 2, 500);
    std::thread::sleep(Duration::from_secs(4));
    let sent = resets.stop().cloned().expect("its report");
    assert!(sent.streams_reset >= 500, "{sent:?}");
    let (code, out, err) = top.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "top failed:\n{err}");
    let alerts: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .flat_map(|i| i["alerts"].as_array().cloned().unwrap_or_default())
        .collect();
    let handshake = alerts
        .iter()
        .find(|a| a["kind"] == "tls-handshake")
        .unwrap_or_else(|| panic!("no handshake alert: {out}"));
    assert_eq!(handshake["clients"][0], ATTACKER, "{handshake}");
    let most = alerts
        .iter()
        .filter(|a| a["kind"] == "tls-handshake")
        .filter_map(|a| a["workers"].as_u64())
        .max();
    assert_eq!(most, Some(30), "all 30 held past 2 s at last: {alerts:?}");
    assert!(
        !alerts.iter().any(|a| a["kind"] == "slow-http"),
        "a handshake is not a slow request: {alerts:?}"
    );
    assert!(
        alerts.iter().any(|a| a["kind"] == "h2-reset"),
        "no reset alert: {alerts:?}"
    );
}

/// The `h2` set under a legitimate HTTP/2 load: each stream opened once
/// and answered once (mod_http2 sets an answered stream's state back to
/// NULL at its clean-up, which opens nothing).
#[test]
fn h2_streams_of_a_legitimate_load_are_each_opened_and_answered_once() {
    require_root();
    let apache = apache();
    let url = format!("https://{}/index.html", apache.tls_addr().unwrap());
    let (rec, trace) = record(apache.pid(), &["--profile", PROFILE]);
    let out = std::process::Command::new("timeout")
        .args(["60", "h2load", "-n", "200", "-c", "2", "-m", "10", &url])
        .output()
        .expect("h2load (cargo xtask setup installs nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("200 succeeded, 0 failed"), "h2load: {text}");
    std::thread::sleep(Duration::from_secs(1));
    let (code, out, err) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");
    let s = streams(&trace);
    assert_eq!(
        (s.opened, s.answered, s.server_resets),
        (200, 200, 0),
        "{s:?}"
    );
}
