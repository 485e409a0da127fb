//! Row z: the zoom (issue #15). The built-in Slowloris experiment, started
//! from the connection-level probes only, zooms in by itself; the row
//! states the chain it found, what each level cost the normal load against
//! the untraced run, the discovery window's degraded service, and the
//! whole run's wall time.
use std::{fmt::Write as _, path::Path, process::Command, time::Instant};

use flowdar_tests::{flowdar_bin, read_json};

use crate::verdict;

/// Where the chain must reach (Slowloris holds workers reading headers).
const LEAF: &str = "apr_socket_recv";
const MIN_RATIO: f64 = 0.8;
const MAX_DISCOVERY_S: f64 = 2.0;
const MAX_RUN_S: f64 = 300.0;

pub fn measure(out_dir: &Path) -> String {
    let dir = out_dir.join("zoom-experiment");
    let started = Instant::now();
    let o = Command::new(flowdar_bin())
        .args([
            "experiment",
            "--default",
            "--profile",
            "apache:connection",
            "--zoom",
            "--force",
            "-o",
        ])
        .arg(&dir)
        .output()
        .expect("run flowdar experiment");
    let wall = started.elapsed().as_secs_f64();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let zoom = read_json(&dir.join("none/zoom/zoom.json"));
    let exp = read_json(&dir.join("experiment.json"));
    let chain: Vec<String> = zoom["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    let levels = zoom["levels"].as_array().unwrap();
    let significant = |f: &str| {
        levels.iter().any(|l| {
            l["rows"].as_array().unwrap().iter().any(|r| {
                r["function"] == f
                    && r["significant"] == true
                    && r["ratio"].as_f64().is_none_or(|x| x > 1.0)
            })
        })
    };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### z. Zoom (`flowdar experiment --default --profile apache:connection --zoom`: one run; every level's phases at most 12 s)\n\nChain: {}\n\nStopped: {}.\n\n| level | functions | est. calls/request (budget) | normal phase vs untraced |\n|---:|---:|---:|---:|",
        chain.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(" → "),
        zoom["stopped"].as_str().unwrap_or("")
    );
    let mut ratios = Vec::new();
    for l in levels {
        let r = l["throughput_ratio"].as_f64();
        ratios.extend(r);
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} ({:.1}) | {} |",
            l["level"],
            l["functions"].as_array().unwrap().len(),
            l["estimated_calls_per_request"].as_f64().unwrap_or(0.0),
            l["budget_calls_per_request"].as_f64().unwrap_or(0.0),
            r.map_or("-".into(), |r| format!("{r:.2}x"))
        );
    }
    // The other variants' normal phases are measured phases too.
    for v in exp["variants"].as_array().unwrap().iter().skip(1) {
        let r = v["phases"][0]["throughput_vs_untraced"].as_f64();
        ratios.extend(r);
        let _ = writeln!(
            md,
            "\nVariant `{}` (level 0's profile): normal phase vs its untraced run {}.",
            v["name"].as_str().unwrap_or("?"),
            r.map_or("-".into(), |r| format!("{r:.2}x"))
        );
    }
    let d = &zoom["discovery"];
    let a = &zoom["attack_discovery"];
    let degraded = d["degraded_s"].as_f64().unwrap();
    let degraded_attack = a["degraded_s"].as_f64().unwrap();
    let reached = chain.iter().any(|f| f == LEAF);
    let all_significant = chain.iter().skip(1).all(|f| significant(f));
    let lowest = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let _ = writeln!(
        md,
        "\nDiscovery windows ({} functions attached, {} refused by the kernel): under the normal load {degraded:.2} s of degraded service (attach {:.2} s, window {:.1} s, detach {:.2} s) at {:.0} requests/s; under the attack {degraded_attack:.2} s.\n\nThe chain reaches `{LEAF}`, every link significant (target): {}; lowest traced/untraced throughput of a measured normal phase: {lowest:.2}x (target >= {MIN_RATIO}: {}); each discovery window <= {MAX_DISCOVERY_S} s of degraded service (target): {}; whole run {wall:.0} s (target <= {MAX_RUN_S:.0} s: {}).\n",
        d["functions"],
        d["refused"],
        d["attach_s"].as_f64().unwrap_or(0.0),
        d["window_s"].as_f64().unwrap_or(0.0),
        d["detach_s"].as_f64().unwrap_or(0.0),
        d["requests_per_s"].as_f64().unwrap_or(0.0),
        verdict(reached && all_significant),
        verdict(lowest >= MIN_RATIO),
        verdict(degraded.max(degraded_attack) <= MAX_DISCOVERY_S),
        verdict(wall <= MAX_RUN_S),
    );
    md
}
