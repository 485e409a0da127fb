//! `experiment --zoom` on a real Apache under a real Slowloris: starting
//! from the connection-level probes only, the zoom finds the slowed read
//! path down to the socket read, every link significantly slower under
//! attack, and states what each level and the discovery window cost.
use std::path::Path;

use flowdar_tests::*;

#[test]
fn the_zoom_follows_a_slowloris_from_the_connection_down_to_the_socket_read() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        r#"version = 1
profile = ["apache:request,io"]
[server]
config = "ServerLimit 6\nMaxRequestWorkers 150\n"
[lab]
namespaces = true
[[phase]]
name = "normal"
duration = "8s"
load = { connections = 20 }
[[phase]]
name = "attack"
duration = "10s"
load = { connections = 20 }
attack = { mode = "headers", connections = 1000, rate = 200, interval = "10s", ramp = "5s" }
"#,
    )
    .unwrap();
    let out = dir.path().join("exp");
    // --profile replaces the spec's: the zoom starts from connections only.
    let o = flowdar(&[
        "experiment",
        spec.to_str().unwrap(),
        "--profile",
        "apache:connection",
        "--zoom=8",
        "-o",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("Probes: 8 functions"), "{stderr}");
    let zoom = read_json(&out.join("none/zoom/zoom.json"));
    let chain: Vec<&str> = zoom["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(chain.first(), Some(&"ap_run_process_connection"), "{zoom}");
    for f in ["ap_read_request", "apr_socket_recv"] {
        assert!(chain.contains(&f), "{f} in the chain {chain:?}\n{stderr}");
    }
    let levels = zoom["levels"].as_array().unwrap();
    assert_eq!(levels[0]["level"], 0);
    // Every link after the first was found below the one before it, at a
    // level that probed it, significantly slower under attack.
    for link in &chain {
        let found = levels.iter().any(|l| {
            l["rows"].as_array().unwrap().iter().any(|r| {
                r["function"] == *link
                    && r["significant"] == true
                    // null: infinite (never called in the normal phase).
                    && r["ratio"].as_f64().is_none_or(|x| x > 1.5)
            })
        });
        assert!(found, "{link} significant in some level: {zoom}");
    }
    for l in levels {
        let ratio = l["throughput_ratio"].as_f64().unwrap();
        assert!(ratio > 0.0 && ratio < 2.0, "{l}");
        if l["level"] != 0 {
            // The default budget, 20%, promises 0.8x untraced; the noise of
            // the ratio on a quiet machine is 0.10 (BENCHMARKS.md,
            // tolerances). A level that served less measured the untraced
            // load again beside itself, and was run again with fewer
            // functions, each rerun with fewer than the one before; one
            // that still served less says why (on a busy machine: a rerun
            // with fewer functions served no more, noise and not cost).
            match l["over_budget"].as_str() {
                None => assert!(ratio >= 0.8 - 0.10, "level within its budget: {l}"),
                Some(_) => assert!(l["untraced_again_rps"].as_f64().unwrap() > 0.0, "{l}"),
            }
            let mut before = usize::MAX;
            for r in l["reruns"].as_array().unwrap() {
                let n = r["functions"].as_u64().unwrap() as usize;
                assert!(
                    n < before && r["throughput_ratio"].as_f64().unwrap() < 0.75,
                    "{r}"
                );
                before = n;
            }
            assert!(l["functions"].as_array().unwrap().len() < before, "{l}");
            let functions = l["functions"].as_array().unwrap().len();
            assert!(functions >= 1, "{l}");
            assert!(
                l["estimated_calls_per_request"].as_f64().unwrap()
                    <= l["budget_calls_per_request"].as_f64().unwrap(),
                "{l}"
            );
            // Each level's traces are there, as zoom.json names them.
            for t in l["traces"].as_array().unwrap() {
                assert!(Path::new(t.as_str().unwrap()).is_file(), "{t}");
            }
        }
    }
    for (key, under) in [
        ("discovery", "the normal load"),
        ("attack_discovery", "the attack"),
    ] {
        let d = &zoom[key];
        assert_eq!(d["under"], under);
        assert!(d["functions"].as_u64().unwrap() > 1000, "{d}");
        let parts = d["attach_s"].as_f64().unwrap()
            + d["window_s"].as_f64().unwrap()
            + d["detach_s"].as_f64().unwrap();
        assert!(
            (d["degraded_s"].as_f64().unwrap() - parts).abs() < 1e-6,
            "{d}"
        );
    }
    // The normal load's window counts requests (calls per request come
    // from it); no client runs in the attack's.
    assert!(zoom["discovery"]["requests"].as_u64().unwrap() > 0);
    assert!(zoom["attack_discovery"]["requests_per_s"].is_null());
    // The report shows the chain and the costs.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("## Zoom: the chain below the most affected function")
            && md.contains("`ap_run_process_connection` → ")
            && md.contains("Discovery window under the normal load: ")
            && md.contains("Discovery window under the attack: "),
        "{md}"
    );
    assert!(stdout.contains("Zoom ("), "{stdout}");
    assert!(left_behind().is_empty(), "{:?}", left_behind());
    assert!(flowdar::server::lab_namespaces().is_empty());
}

/// Perf-event uprobes would make each discovery window take minutes to
/// detach: refused before anything runs, in one line.
#[test]
fn the_zoom_with_perf_event_uprobes_is_refused_before_anything_runs() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exp");
    let o = flowdar(&[
        "experiment",
        "--default",
        "--zoom",
        "--attach-mode",
        "perf",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("Error: --zoom needs uprobe_multi links"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
    assert!(flowdar::server::lab_namespaces().is_empty());
}
