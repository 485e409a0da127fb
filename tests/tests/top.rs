//! `flowdar top` live: the slow-HTTP alert under a Slowloris attack from a
//! lab host, intervals that add up exactly to the trace recorded at the same
//! time, a Prometheus scrape, and the terminal view in tmux (resize, target
//! exit).
use std::{
    collections::HashMap,
    process::Command,
    time::{Duration, Instant},
};

use flowdar::server::{run_wrk, ApacheOptions, Lab, ThrowawayApache, WrkPlan};
use flowdar_common::EventKind;
use flowdar_tests::*;

/// A Slowloris of `connections` that sends a header line every 20 s: none
/// before these tests stop (see [`Slowloris::interval_s`]).
fn slowloris(lab: &Lab, port: u16, connections: u32) -> std::process::Child {
    Slowloris {
        connections,
        rate: connections,
        interval_s: 20,
        length_s: 40,
    }
    .spawn(lab, port)
}

/// An Apache on 127.0.0.1 and on the lab's server address.
fn lab_apache(lab: &Lab) -> ThrowawayApache {
    ThrowawayApache::start(&ApacheOptions {
        listen: vec![lab.server.into()],
        ..Default::default()
    })
    .expect("start apache")
}

#[test]
fn json_intervals_raise_the_alert_and_add_up_to_the_trace() {
    require_root();
    let lab = Lab::create().expect("lab hosts");
    let apache = lab_apache(&lab);
    let trace = TraceFile::new();
    let mut cmd = Command::new(flowdar_bin());
    cmd.args(["top", "--pid", &apache.pid().to_string()])
        .args(["--profile", "apache:request", "--json"])
        .args(["--alert-workers", "20", "--alert-after", "3s"])
        .args(["--prometheus", "127.0.0.1:0"])
        .args(["-o", trace.to_str().unwrap()]);
    // Ready once the first interval is out (probes attached).
    let top = Background::start(cmd, "\"functions\"", Duration::from_secs(60));
    let metrics_url = top
        .stderr()
        .lines()
        .find_map(|l| l.strip_prefix("Prometheus metrics at "))
        .expect("the metrics address")
        .to_string();
    // Legitimate load, then the attack; the alert must come within 10 s of
    // the attack's ramp-up (its 50 connections open within its first second).
    let wrk = run_wrk(
        apache.addr(),
        &WrkPlan {
            threads: 1,
            connections: 4,
            duration: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .expect("wrk");
    let mut attack = slowloris(&lab, apache.port(), 50);
    let ramped_up = Instant::now() + Duration::from_secs(1);
    let mut alerted = None;
    while Instant::now() < ramped_up + Duration::from_secs(15) && alerted.is_none() {
        std::thread::sleep(Duration::from_millis(200));
        if top
            .stdout()
            .lines()
            .any(|l| l.contains("\"kind\":\"slow-http\""))
        {
            alerted = Some(Instant::now());
        }
    }
    let scrape = Command::new("curl")
        .args(["-sf", &metrics_url])
        .output()
        .expect("curl");
    let (code, out, err) = top.stop(libc::SIGINT);
    let _ = attack.kill();
    let _ = attack.wait();
    assert_eq!(code, Some(0), "top failed:\n{err}");
    // It ends as `record` does: how the probes went in and out, and what
    // they cost.
    assert!(
        err.contains("Probes attached in ")
            && err.contains(" from launch to attached")
            && err.contains("Estimated overhead: "),
        "{err}"
    );
    assert!(wrk.requests > 100, "{wrk:?}");
    let alerted = alerted.unwrap_or_else(|| panic!("no slow-http alert:\n{out}\n{err}"));
    assert!(
        alerted <= ramped_up + Duration::from_secs(10),
        "alert {:?} after the ramp-up",
        alerted - ramped_up
    );

    // The alert names the attacker.
    let intervals: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert!(intervals.len() >= 5, "{} intervals", intervals.len());
    let alert = intervals
        .iter()
        .flat_map(|i| i["alerts"].as_array().unwrap().iter())
        .next()
        .expect("an alert");
    assert_eq!(
        alert["clients"][0],
        lab.attacker.addr.to_string(),
        "{alert}"
    );
    assert!(alert["workers"].as_u64().unwrap() >= 20, "{alert}");

    // The intervals' calls add up to the trace's, function by function.
    let mut live: HashMap<String, u64> = HashMap::new();
    for i in &intervals {
        for f in i["functions"].as_array().unwrap() {
            *live
                .entry(f["function"].as_str().unwrap().into())
                .or_default() += f["calls"].as_u64().unwrap();
        }
    }
    let t = Trace::read(&trace);
    let mut recorded: HashMap<String, u64> = HashMap::new();
    for p in &t.header.probes {
        let n = t.count(&p.function, EventKind::Entry) as u64;
        if n > 0 {
            recorded.insert(p.function.clone(), n);
        }
    }
    assert!(recorded["ap_read_request"] > 100, "{recorded:?}");
    assert_eq!(live, recorded, "live calls vs the trace's entries");

    // The scrape: OpenMetrics text with our families, ending in # EOF.
    assert!(scrape.status.success(), "scrape failed");
    let text = String::from_utf8(scrape.stdout).expect("utf-8");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    assert!(text.contains("# TYPE flowdar_calls counter"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("flowdar_calls_total{function=\"ap_read_request\"} ")),
        "{text}"
    );
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let value = l.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "not a sample line: {l}");
    }
    assert_eq!(left_behind(), Vec::<String>::new());
}

/// The peak a `top` sparkline titles (" WHAT: N now, peak P ") on `screen`.
fn sparkline_peak(screen: &str, what: &str) -> Option<u64> {
    let rest = screen.split(&format!(" {what}: ")).nth(1)?;
    let rest = rest.split(", peak ").nth(1)?;
    rest.split(' ').next()?.parse().ok()
}

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().expect("tmux");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_terminal_view_survives_resizes_and_the_target_exiting() {
    require_root();
    let mut apache = ThrowawayApache::start(&Default::default()).expect("start apache");
    let session = format!("flowdar-top-{}", std::process::id());
    let log = tempfile::NamedTempFile::new().unwrap();
    let script = format!(
        "{} top --pid {} --profile apache:request --interval 500ms 2>{}; echo EXIT=$?; sleep 30",
        flowdar_bin().display(),
        apache.pid(),
        log.path().display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "120",
        "-y",
        "40",
        &script,
    ]);
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["kill-session", "-t", &self.0])
                .status();
        }
    }
    let _guard = Kill(session.clone());
    let screen = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = tmux(&["capture-pane", "-p", "-t", &session]);
            if s.contains(want) || Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // Attached once the first interval is drawn; then requests until one
    // interval shows them.
    let s = screen("t = ");
    assert!(s.contains("no alerts"), "{s}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let s = loop {
        fresh_connections(&apache, 5);
        let s = tmux(&["capture-pane", "-p", "-t", &session]);
        if s.contains("ap_read_request") || Instant::now() > deadline {
            break s;
        }
    };
    assert!(
        s.contains("functions") && s.contains("ap_read_request"),
        "{s}"
    );
    // Issue #30: the requests/s sparkline titles its peak and draws bars
    // once an interval answered requests (ratatui's bar glyphs).
    let deadline = Instant::now() + Duration::from_secs(30);
    let s = loop {
        fresh_connections(&apache, 5);
        let s = tmux(&["capture-pane", "-p", "-t", &session]);
        if sparkline_peak(&s, "requests/s").is_some_and(|p| p > 0) || Instant::now() > deadline {
            break s;
        }
    };
    assert!(
        sparkline_peak(&s, "requests/s").is_some_and(|p| p > 0),
        "{s}"
    );
    assert_eq!(
        sparkline_peak(&s, "workers reading requests").map(|_| ()),
        Some(()),
        "{s}"
    );
    // The requests/s sparkline is the left half of its rows (the held
    // workers' is the right half).
    let bars = s
        .lines()
        .skip_while(|l| !l.contains(" requests/s: "))
        .skip(1)
        .take(3)
        .filter(|l| {
            let half = l.chars().count() / 2;
            l.chars()
                .take(half)
                .any(|c| ('\u{2581}'..='\u{2588}').contains(&c))
        })
        .count();
    assert!(bars > 0, "sparkline bars under its title:\n{s}");
    for (x, y) in [("60", "15"), ("200", "60"), ("20", "5"), ("120", "40")] {
        tmux(&["resize-window", "-t", &session, "-x", x, "-y", y]);
        std::thread::sleep(Duration::from_millis(700));
    }
    let s = screen("clients");
    assert!(s.contains(" workers: "), "after resizes:\n{s}");
    apache.stop();
    let s = screen("EXIT=");
    let err = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert!(
        s.contains("EXIT=0"),
        "top did not exit cleanly:\n{s}\n{err}"
    );
    assert!(err.contains("target exited"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(left_behind(), Vec::<String>::new());
}

/// `top` started while an attack already holds the workers (the issue's
/// "during an attack"): their `ap_read_request` calls began before attach,
/// so no probe sees them; the view finds them blocked on the attacker's
/// sockets through /proc and raises the alert naming the attacker.
#[test]
fn top_started_during_an_attack_sees_the_workers_it_already_holds() {
    require_root();
    let lab = Lab::create().expect("lab hosts");
    let apache = lab_apache(&lab);
    let mut attack = slowloris(&lab, apache.port(), 50);
    // The attack's connections open within its first second and each holds
    // a worker reading headers from then on.
    std::thread::sleep(Duration::from_secs(4));
    let mut cmd = Command::new(flowdar_bin());
    cmd.args(["top", "--pid", &apache.pid().to_string()])
        .args(["--profile", "apache:request", "--json"])
        .args(["--alert-workers", "20", "--alert-after", "2s"])
        .args(["--duration", "5s"]);
    let top = Background::start(cmd, "\"functions\"", Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    while top.stdout().lines().count() < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, out, err) = top.stop(libc::SIGINT);
    let _ = attack.kill();
    let _ = attack.wait();
    assert_eq!(code, Some(0), "top failed:\n{err}");
    let intervals: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let attacker = lab.attacker.addr.to_string();
    // From the first interval: the held workers, each on an attacker's
    // connection.
    let first = &intervals[0];
    let held: Vec<&serde_json::Value> = first["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["function"] == flowdar::analysis::BLOCKED_BEFORE_ATTACH)
        .collect();
    assert!(
        held.len() >= 20,
        "{} held workers found: {first}",
        held.len()
    );
    for w in &held {
        let client: std::net::SocketAddr = w["client"].as_str().unwrap().parse().unwrap();
        assert_eq!(client.ip().to_string(), attacker, "{w}");
    }
    assert_eq!(first["clients"][0]["address"], attacker, "{first}");
    // Past the alert's 2 s, the alert names the attacker alone.
    let alert = intervals
        .iter()
        .flat_map(|i| i["alerts"].as_array().unwrap().iter())
        .next()
        .unwrap_or_else(|| panic!("no slow-http alert:\n{out}\n{err}"));
    assert_eq!(alert["clients"], serde_json::json!([attacker]), "{alert}");
    assert!(alert["workers"].as_u64().unwrap() >= 20, "{alert}");
}

/// `top` with no probes chosen watches `apache:lean`: attached during an
/// attack, it writes the workers already held into the trace at attach
/// (their waits in poll or read on the attacker's sockets, from /proc),
/// shows them from the first interval, and raises the alert naming the
/// attacker; `clients` on the trace counts them as held since the attach.
#[test]
fn top_by_default_is_lean_and_sees_the_workers_held_before_it_attached() {
    require_root();
    let lab = Lab::create().expect("lab hosts");
    let apache = lab_apache(&lab);
    let mut attack = slowloris(&lab, apache.port(), 50);
    std::thread::sleep(Duration::from_secs(4));
    let trace = TraceFile::new();
    let mut cmd = Command::new(flowdar_bin());
    cmd.args(["top", "--pid", &apache.pid().to_string(), "--json"])
        .args(["--alert-workers", "20", "--alert-after", "2s"])
        .args(["--duration", "5s", "-o", trace.to_str().unwrap()]);
    let top = Background::start(cmd, "\"functions\"", Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    while top.stdout().lines().count() < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, out, err) = top.stop(libc::SIGINT);
    let _ = attack.kill();
    let _ = attack.wait();
    assert_eq!(code, Some(0), "top failed:\n{err}");
    let t = Trace::read(&trace);
    assert!(
        t.header.probes.iter().any(|p| p.is_syscall()) && t.header.probes.len() == 10,
        "the default is apache:lean: {:?}",
        t.header
            .probes
            .iter()
            .map(|p| &p.function)
            .collect::<Vec<_>>()
    );
    let intervals: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let attacker = lab.attacker.addr.to_string();
    let first = &intervals[0];
    let on_attacker = first["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| {
            w["client"]
                .as_str()
                .and_then(|c| c.parse::<std::net::SocketAddr>().ok())
                .is_some_and(|c| c.ip().to_string() == attacker)
        })
        .count();
    assert!(
        on_attacker >= 20,
        "{on_attacker} workers on the attacker's connections: {first}"
    );
    // Every worker the attack holds (a second or more: not slowhttptest's
    // availability probes, complete requests from the same address) is
    // reading its request, in every interval.
    for i in &intervals {
        for w in i["workers"].as_array().unwrap() {
            let theirs = w["client"]
                .as_str()
                .and_then(|c| c.parse::<std::net::SocketAddr>().ok())
                .is_some_and(|c| c.ip().to_string() == attacker);
            if theirs && w["for_ns"].as_u64().unwrap() >= 1_000_000_000 {
                assert_eq!(w["phase"], "reading request", "{w}");
            }
        }
    }
    let alert = intervals
        .iter()
        .flat_map(|i| i["alerts"].as_array().unwrap().iter())
        .next()
        .unwrap_or_else(|| panic!("no slow-http alert:\n{out}\n{err}"));
    assert_eq!(alert["clients"], serde_json::json!([attacker]), "{alert}");
    assert!(alert["workers"].as_u64().unwrap() >= 20, "{alert}");

    let rows = flowdar_json(&["clients", "--json", trace.to_str().unwrap()]);
    let them = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == attacker.as_str())
        .unwrap_or_else(|| panic!("no row for the attacker: {rows}"));
    let held = them["held_at_attach"].as_u64().unwrap();
    assert!(held >= 20, "held since the attach: {them}");
    assert!(them["in_flight"].as_u64().unwrap() >= held, "{them}");
    assert_eq!(left_behind(), Vec::<String>::new());
}
