//! The DoS lab on a real Apache, with real slowhttptest, from namespace
//! hosts: the built-in experiment (shortened) denies service and
//! mod_reqtimeout recovers it; slow read and range run end to end with the
//! signatures the README documents; a SIGKILLed experiment leaves no hosts.
use std::{path::Path, process::Command, time::Duration};

use flowdar_tests::*;

/// The lab's namespaces and root-side veths of experiment `pid`.
fn lab_leftovers(pid: u32) -> Vec<String> {
    let mut left: Vec<String> = flowdar::server::lab_namespaces()
        .into_iter()
        .filter(|(_, p)| *p == pid)
        .map(|(n, _)| n)
        .collect();
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    left.extend(
        String::from_utf8_lossy(&links.stdout)
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .filter(|n| *n == format!("fd{pid}c") || *n == format!("fd{pid}a")),
    );
    left
}

/// `variant/phase` from experiment.json (`untraced`: the variant's untraced run).
fn phase_of<'a>(exp: &'a serde_json::Value, variant: &str, phase: &str) -> &'a serde_json::Value {
    let v = exp["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == variant)
        .unwrap_or_else(|| panic!("variant {variant} in {exp}"));
    if phase == "untraced" {
        return &v["untraced"];
    }
    v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == phase)
        .unwrap_or_else(|| panic!("phase {phase} in {v}"))
}

/// The client's count a second of `what` ("ok" or "failed") in a phase.
fn counted_per_second(exp: &serde_json::Value, variant: &str, phase: &str, what: &str) -> Vec<u64> {
    let p = phase_of(exp, variant, phase);
    p["per_second"][what]
        .as_array()
        .unwrap_or_else(|| panic!("per_second.{what} in {p}"))
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect()
}

fn per_second(exp: &serde_json::Value, variant: &str, phase: &str) -> Vec<u64> {
    counted_per_second(exp, variant, phase, "ok")
}

fn failed_per_second(exp: &serde_json::Value, variant: &str, phase: &str) -> Vec<u64> {
    counted_per_second(exp, variant, phase, "failed")
}

fn rps(exp: &serde_json::Value, variant: &str, phase: &str) -> f64 {
    let p = phase_of(exp, variant, phase);
    for key in [
        "requests_per_s",
        "p99_ns",
        "errors",
        "events",
        "lost",
        "throughput_vs_first_phase",
    ] {
        assert!(p.get(key).is_some(), "{key} in {p}");
    }
    assert_eq!(p["lost"], 0, "{variant}/{phase}: no events lost");
    p["requests_per_s"].as_f64().unwrap()
}

#[test]
fn the_default_experiment_denies_service_and_reqtimeout_brings_it_back() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exp");
    // Phases of up to 20 s (the default's attack is 40 s): the attack's
    // 5 s ramp, then 15 s of client load. (30 s phases outran the debug
    // build's buffer in the reqtimeout attack phase: 982 k events lost.)
    let o = flowdar(&[
        "experiment",
        "--default",
        "--max-phase",
        "20s",
        "-o",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    for f in [
        "report.md",
        "report.html",
        "experiment.json",
        "none/diff.json",
        "none/normal.flowdar",
        "none/attack.flowdar",
        "reqtimeout/diff.json",
        "reqtimeout/attack.flowdar",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert!(
        stderr.contains("[none 1/2] phase normal")
            && stderr.contains("[reqtimeout 2/2] phase attack"),
        "progress shown:\n{stderr}"
    );
    assert!(stderr.contains("Lab: client 198.1"), "{stderr}");
    let exp = read_json(&out.join("experiment.json"));
    let names: Vec<&str> = exp["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["none", "reqtimeout"]);
    let (normal, attack) = (rps(&exp, "none", "normal"), rps(&exp, "none", "attack"));
    assert!(normal > 500.0, "normal load is served: {normal} req/s");
    assert!(
        attack <= 0.10 * normal,
        "denial: {attack} req/s under attack against {normal}\n{stdout}"
    );
    // Issue #15: each variant ran the normal load once more untraced, and
    // states the observer effect against it.
    assert!(
        stderr.contains("[none untraced] the load of phase normal again"),
        "{stderr}"
    );
    for v in exp["variants"].as_array().unwrap() {
        let untraced = v["untraced"]["requests_per_s"].as_f64().unwrap();
        assert!(untraced > 500.0, "untraced load is served: {untraced}");
        let phase = &v["phases"][0];
        let ratio = phase["throughput_vs_untraced"].as_f64().unwrap();
        let traced = phase["requests_per_s"].as_f64().unwrap();
        assert!(
            (ratio - traced / untraced).abs() < 1e-9 && ratio > 0.0,
            "{v}"
        );
    }
    // The phase's mean mixes the first seconds (the attack connections
    // queued before mod_reqtimeout closes them; how many depends on the
    // machine: 0.46-0.65 of normal measured) with the rest, so the bar is
    // on the attack phase's last 5 s: requests answered at no less than
    // half its normal phase's rate (measured 0.978 and 1.09 here, 0.657
    // in a CI run whose normal phase served 40 k requests/s; without the
    // mitigation it is 0; BENCHMARKS.md, "Tolerances of the root tests"),
    // and the same rate in the kernel matrix's verdict.
    let mitigated = rps(&exp, "reqtimeout", "attack");
    let its_normal = rps(&exp, "reqtimeout", "normal");
    assert!(
        mitigated >= 5.0 * attack,
        "mod_reqtimeout recovers: {mitigated} req/s against {attack} without it\n{stdout}"
    );
    let seconds = per_second(&exp, "reqtimeout", "attack");
    let settled = seconds[seconds.len() - 5..].iter().sum::<u64>() as f64 / 5.0;
    assert!(
        settled >= 0.5 * its_normal,
        "mod_reqtimeout recovers: {settled} req/s over the attack's last 5 s against {its_normal} in its normal phase ({seconds:?})\n{stdout}"
    );
    // And answers them: at most 1% failed (0 in the runs measured here;
    // without the mitigation every one fails).
    let failed = failed_per_second(&exp, "reqtimeout", "attack");
    let failed_late: u64 = failed[failed.len() - 5..].iter().sum();
    assert!(
        failed_late as f64 <= 0.01 * 5.0 * settled,
        "mod_reqtimeout recovers: requests fail over the attack's last 5 s ({failed:?})\n{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "over its last 5 s ({:.1}% of its normal)",
            100.0 * settled / its_normal
        )),
        "the report states the settled rate\n{stdout}"
    );
    // Second by second adds up to the phase's figure, in every phase.
    for (v, p) in [
        ("none", "normal"),
        ("none", "attack"),
        ("reqtimeout", "normal"),
        ("reqtimeout", "attack"),
    ] {
        let s = per_second(&exp, v, p);
        assert_eq!(s.len(), 15, "{v} {p}: one count a second of the load");
        let total: u64 = s.iter().sum();
        assert!(
            (total as f64 / 15.0 - rps(&exp, v, p)).abs() < 1e-6,
            "{v} {p}: {total} answers over 15 s against {} req/s",
            rps(&exp, v, p)
        );
    }
    // The first paragraph explains the denial from the trace.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    // A timeline per variant (issue #30): in report.md as VARIANT/timeline.svg,
    // inline in report.html; one client point a second of each load, and
    // the held workers a second of each capture, full in the attack of `none`.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(html.matches("data-figure=\"timeline\"").count(), 2);
    for v in ["none", "reqtimeout"] {
        assert!(md.contains(&format!("]({v}/timeline.svg)")), "{md}");
        let svg = std::fs::read_to_string(out.join(v).join("timeline.svg")).unwrap();
        assert!(html.contains(&svg), "{v}: the figure inline is the file");
        for (segment, points) in [("untraced", 15), ("normal", 15), ("attack", 15)] {
            let g = svg
                .split(&format!("<g data-segment=\"{segment}\">"))
                .nth(1)
                .unwrap_or_else(|| panic!("{v}: segment {segment} in {svg}"));
            let g = &g[..g.find("</g>").unwrap()];
            assert!(
                g.contains(&format!(
                    "data-series=\"requests\" data-points=\"{points}\""
                )),
                "{v} {segment}: {g}"
            );
            assert_eq!(
                g.contains("data-series=\"held\""),
                segment != "untraced",
                "{g}"
            );
            // The figure draws the client's own counts, second by second.
            assert_eq!(
                timeline_series(g, "requests"),
                counted_per_second(&exp, v, segment, "ok"),
                "{v} {segment}"
            );
            assert_eq!(
                timeline_series(g, "failures"),
                counted_per_second(&exp, v, segment, "failed"),
                "{v} {segment}"
            );
        }
    }
    // Without mitigation the attack costs the client failures (connects
    // timed out), drawn in red; reqtimeout's attack serves again.
    let none_svg = std::fs::read_to_string(out.join("none/timeline.svg")).unwrap();
    let segment = |svg: &str, name: &str| -> String {
        let g = svg
            .split(&format!("<g data-segment=\"{name}\">"))
            .nth(1)
            .unwrap();
        g[..g.find("</g>").unwrap()].to_string()
    };
    let none_attack = segment(&none_svg, "attack");
    assert!(
        timeline_series(&none_attack, "failures")
            .iter()
            .sum::<u64>()
            > 0,
        "{none_attack}"
    );
    // The denial as the figure draws it: the attack's answers at most a
    // tenth of the normal phase's (the bar the denial check above sets).
    let answered = |name: &str| -> u64 {
        timeline_series(&segment(&none_svg, name), "requests")
            .iter()
            .sum()
    };
    assert!(
        answered("attack") * 10 <= answered("normal"),
        "{none_attack}"
    );
    let held_series = timeline_series(&none_attack, "held");
    assert!(
        (19..=21).contains(&held_series.len()),
        "a point a second of the 20 s capture: {held_series:?}"
    );
    let first = md.split("\n\n").nth(1).unwrap();
    assert!(first.starts_with("**Denial of service.**"), "{first}");
    assert!(
        first.contains("Observer effect: traced, phase `normal` served"),
        "{first}"
    );
    // The default is the lean capture (issue #28): the held workers wait
    // in poll for their request's headers, from its first read.
    assert!(
        first.contains("workers were held in `read-wait: poll`")
            && first.contains("the read path, waiting in read or poll for request headers"),
        "{first}"
    );
    // Issue #16: the trace names the clients behind the held workers; all
    // of them are the attacker's.
    assert!(
        first.contains("Held by client address")
            && first.contains("(the attacker's host): ")
            && !first.contains("(the legitimate client's host): "),
        "{first}"
    );
    let held: u64 = first
        .split(" workers were held")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a number of held workers: {first}"));
    assert!(
        (100..=150).contains(&held),
        "most of the 150 workers held: {held}"
    );
    // The figure's last second and the capture's end (under a second
    // apart) count the same held workers, give or take one turning over.
    let last = *held_series.last().unwrap();
    assert!(
        last.abs_diff(held) <= 2,
        "held at the last whole second {last}, at the capture's end {held}: {held_series:?}"
    );
    let diff = read_json(&out.join("none/diff.json"));
    let row = |diff: &serde_json::Value, f: &str| {
        diff.as_array()
            .unwrap()
            .iter()
            .find(|r| r["function"] == f)
            .unwrap_or_else(|| panic!("{f} in {diff}"))
            .clone()
    };
    // Every held worker is in a wait of its own, in poll (or, for an
    // instant, in the read after it); poll, new under attack, ranks first.
    let (poll, read) = (row(&diff, "poll"), row(&diff, "read"));
    assert_eq!(
        poll["in_flight"].as_u64().unwrap() + read["in_flight"].as_u64().unwrap(),
        held,
        "{poll} {read}"
    );
    assert_eq!(diff[0]["function"], "poll", "{diff}");
    assert_eq!(diff[0]["significant"], true, "{diff}");
    // Requests exactly: one counted call each, as many as the client got
    // answers in the normal phases (no attacker's probes there).
    for v in ["none", "reqtimeout"] {
        let d = read_json(&out.join(v).join("diff.json"));
        let answered: u64 = per_second(&exp, v, "normal").iter().sum();
        assert_eq!(
            row(&d, flowdar::analysis::LEAN_REQUEST)["base_calls"].as_u64(),
            Some(answered),
            "{v}: requests in the trace against the client's answers"
        );
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("<table>")
            && html.matches("<svg").count() - html.matches("data-figure=\"timeline\"").count() == 2,
        "side-by-side sessions in the HTML report"
    );
    report_in_a_browser(&out);
    assert!(left_behind().is_empty());
    assert!(
        flowdar::server::lab_namespaces().is_empty(),
        "lab namespaces removed: {:?}",
        flowdar::server::lab_namespaces()
    );
}

/// Issue #30: report.html laid out in Debian's Chromium at 1400x1000: the
/// diagrams start at the top of their panes with no text over another,
/// and a timeline per variant with one point a second of each load.
/// Screenshots under target/screenshots for a person to look at.
fn report_in_a_browser(out: &Path) {
    use flowdar_tests::browser;
    let page = out.join("report.html");
    let layout = browser::layout(&page, 1400, 1000);
    assert_eq!(layout["ready"], "ok", "the page's script ran: {layout}");
    browser::assert_diagrams_readable(&layout);
    assert_eq!(layout["diagrams"].as_array().unwrap().len(), 2, "{layout}");
    let timelines = layout["timelines"].as_array().unwrap();
    let variants: Vec<&str> = timelines
        .iter()
        .map(|t| t["variant"].as_str().unwrap())
        .collect();
    assert_eq!(variants, ["none", "reqtimeout"], "{layout}");
    for t in timelines {
        assert!(t["width"].as_f64().unwrap() > 400.0, "drawn: {t}");
        let segments: Vec<&str> = t["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["segment"].as_str().unwrap())
            .collect();
        assert_eq!(segments, ["untraced", "normal", "attack"], "{t}");
        for s in t["segments"].as_array().unwrap() {
            assert_eq!(s["series"]["requests"], 15, "one point a second: {s}");
            assert_eq!(s["drawn"]["requests"], 15, "{s}");
            if s["segment"] != "untraced" {
                assert_eq!(s["series"]["held"], s["drawn"]["held"], "{s}");
            }
        }
    }
    // The timelines come first, side by side, whole in the first screen:
    // above the tables and the diagrams.
    for t in timelines {
        let bottom = t["top"].as_f64().unwrap() + t["height"].as_f64().unwrap();
        assert!(
            bottom <= 1000.0,
            "{} whole in the first screen: {t}",
            t["variant"]
        );
    }
    assert_eq!(
        timelines[0]["top"], timelines[1]["top"],
        "side by side: {layout}"
    );
    for (h, name) in [(1000, "report.png"), (5000, "report-full.png")] {
        browser::screenshot(&page, 1400, h, name);
    }
}

/// Runs a one-variant experiment: a normal phase of `normal_clients`
/// legitimate connections, then `attack_phase` (TOML lines); returns the diff
/// and the report's first paragraph.
fn attack_experiment(normal_clients: u32, attack_phase: &str) -> (Vec<serde_json::Value>, String) {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            r#"version = 1
profile = ["apache:request,io"]
probe = ["apache2:ap_byterange_filter", "apache2:ap_pass_brigade", "apache2:ap_core_output_filter"]
[server]
config = "ServerLimit 6\nMaxRequestWorkers 150\n"
[[phase]]
name = "normal"
duration = "6s"
load = {{ connections = {normal_clients} }}
[[phase]]
name = "attack"
{attack_phase}
"#
        ),
    )
    .unwrap();
    let out = dir.path().join("exp");
    let o = flowdar(&[
        "experiment",
        spec.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let diff = read_json(&out.join("none/diff.json"));
    assert!(left_behind().is_empty());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let first = md.split("\n\n").nth(1).unwrap().to_string();
    (
        diff.as_array().unwrap().clone(),
        format!("{first}\n{stdout}"),
    )
}

fn significant<'a>(diff: &'a [serde_json::Value], function: &str) -> Option<&'a serde_json::Value> {
    diff.iter()
        .find(|r| r["function"] == function && r["significant"] == true)
}

#[test]
fn slow_read_holds_workers_in_the_write_path() {
    require_root();
    let (diff, text) = attack_experiment(
        20,
        r#"duration = "12s"
load = { connections = 20 }
attack = { mode = "read", connections = 1000, rate = 200, interval = "10s", ramp = "4s" }"#,
    );
    // README, "What each attack did here": slow read holds every worker in
    // the handler, blocked in the core output filter (apr_poll) until the
    // client reads.
    let row = significant(&diff, "ap_core_output_filter")
        .unwrap_or_else(|| panic!("ap_core_output_filter significant:\n{text}"));
    assert!(
        row["ratio"].as_f64().unwrap() >= 100.0 && row["in_flight"].as_u64().unwrap() >= 100,
        "{row}"
    );
    assert!(
        text.starts_with("**Denial of service.**") && text.contains("the write path"),
        "{text}"
    );
    let read = diff
        .iter()
        .find(|r| r["function"] == "ap_read_request")
        .unwrap();
    assert_eq!(read["in_flight"], 0, "no worker held reading: {read}");
}

#[test]
fn the_range_attack_costs_request_parsing_and_holds_no_worker() {
    require_root();
    // The attack alone in its phase (against the small page), so that the
    // diff compares its requests with legitimate ones.
    let (diff, text) = attack_experiment(
        1,
        r#"duration = "10s"
attack = { mode = "range", connections = 1000, rate = 200, ramp = "4s", path = "/index.html" }"#,
    );
    // README, "What each attack did here": each request carries 1001
    // overlapping ranges in a 6.9 KB header, read and parsed in
    // ap_read_request (several times a legitimate request's time); Apache
    // merges the ranges, so ap_byterange_filter does not get slower, and no
    // worker stays held.
    let row = significant(&diff, "ap_read_request")
        .unwrap_or_else(|| panic!("ap_read_request significant:\n{text}"));
    assert!(row["ratio"].as_f64().unwrap() >= 2.0, "{row}");
    let filter = diff
        .iter()
        .find(|r| r["function"] == "ap_byterange_filter")
        .unwrap();
    assert!(filter["ratio"].as_f64().unwrap() < 1.5, "{filter}");
    // Every one of the 1000 attack requests was answered; slowhttptest's
    // availability probe adds a request now and then.
    let answered = filter["test_calls"].as_u64().unwrap();
    assert!((1000..=1010).contains(&answered), "{filter}");
    let held: Vec<_> = diff
        .iter()
        .filter(|r| r["in_flight"].as_u64().unwrap() >= 20)
        .collect();
    assert!(held.is_empty(), "no workers held: {held:?}");
    assert!(
        text.starts_with("**The attack alone.**") && text.contains("No worker was held"),
        "{text}"
    );
}

#[test]
fn a_sigkilled_experiment_leaves_no_lab_hosts() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exp");
    let mut cmd = Command::new(flowdar_bin());
    cmd.args([
        "experiment",
        "--default",
        "--max-phase",
        "5s",
        "-o",
        out.to_str().unwrap(),
    ]);
    let bg = Background::start(cmd, "phase attack", Duration::from_secs(60));
    let pid = bg.pid();
    assert_eq!(lab_leftovers(pid).len(), 4, "two namespaces, two veths");
    let (status, _, err) = bg.stop(libc::SIGKILL);
    assert_eq!(status, None, "killed by a signal\n{err}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !lab_leftovers(pid).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(lab_leftovers(pid), Vec::<String>::new(), "hosts removed");
    assert!(left_behind().is_empty());
}
