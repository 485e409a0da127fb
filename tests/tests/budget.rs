//! `record --budget PCT` on a real Apache: under load, the estimate window
//! measures each function's calls, the dearest (calls times each one's
//! price, by how the function begins) are dropped until the rest
//! fits, the trace holds exactly the kept functions and the capture's
//! summary states its estimated overhead. On an idle server nothing can be
//! measured and every function is kept.
#![expect(
    clippy::print_stderr,
    reason = "the test shows what it measured next to its assertion"
)]
use std::time::Duration;

use flowdar::server::ThrowawayApache;
use flowdar_tests::*;

const PROFILE: &str = "apache:request,io";

/// Lines of `text` between `Dropped` and `Keeping`: (function, calls/s,
/// estimated share in percent).
fn dropped(text: &str) -> Vec<(String, f64, f64)> {
    text.lines()
        .skip_while(|l| !l.starts_with("Dropped, dearest first"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next().unwrap().to_string();
            let rate: f64 = f.next().unwrap().parse().unwrap();
            let est: f64 = l
                .rsplit("est. ")
                .next()
                .unwrap()
                .trim_end_matches('%')
                .parse()
                .unwrap();
            (name, rate, est)
        })
        .collect()
}

/// The percentage in the line starting with `prefix`, after `marker`.
fn percent(text: &str, prefix: &str, marker: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{text}"));
    let at = line.find(marker).unwrap() + marker.len();
    line[at..]
        .trim_start()
        .split('%')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("percentage in {line:?}"))
}

#[test]
fn a_budget_drops_the_dearest_functions_under_load_and_keeps_the_rest() {
    require_root();
    let apache = ThrowawayApache::start(&Default::default()).expect("start apache");
    let load = SteadyLoad::start(apache.addr());
    std::thread::sleep(Duration::from_millis(1000));
    let trace = TraceFile::new();
    let out = record_now(
        apache.pid(),
        &[
            "--profile",
            PROFILE,
            "--budget",
            "10",
            "--budget-window",
            "2s",
            "--duration",
            "2s",
            "-o",
            trace.to_str().unwrap(),
        ],
    );
    load.stop();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    eprintln!("{stderr}{stdout}");
    assert!(stderr.contains("Budget 10%: all "), "{stderr}");
    let kept = percent(&stderr, "Keeping", "estimated overhead at most");
    assert!(kept <= 10.0, "{stderr}");
    let gone = dropped(&stderr);
    assert!(!gone.is_empty(), "{stderr}");
    assert!(
        gone.windows(2).all(|w| w[0].2 >= w[1].2),
        "dropped dearest first: {gone:?}"
    );
    // The trace holds exactly the kept functions.
    let probes = flowdar(&[
        "probes",
        "--pid",
        &apache.pid().to_string(),
        "--profile",
        PROFILE,
        "--json",
    ]);
    let listed: serde_json::Value = serde_json::from_slice(&probes.stdout).expect("probes --json");
    let selected: Vec<String> = listed["probes"]
        .as_array()
        .expect("probe array")
        .iter()
        .map(|p| p["function"].as_str().unwrap().to_string())
        .collect();
    let t = Trace::read(&trace);
    let recorded: Vec<String> = t.header.probes.iter().map(|p| p.function.clone()).collect();
    let want: Vec<String> = selected
        .iter()
        .filter(|f| !gone.iter().any(|(g, _, _)| g == *f))
        .cloned()
        .collect();
    assert_eq!(recorded, want);
    assert!(stderr.contains(&format!(
        "Keeping {} of {} functions",
        want.len(),
        selected.len()
    )));
    assert!(t
        .header
        .probes
        .iter()
        .enumerate()
        .all(|(i, p)| p.id == i as u32));
    // The capture states its own estimate.
    assert!(stdout.contains("Estimated overhead: "), "{stdout}");
    assert!(t
        .footer
        .as_ref()
        .and_then(|f| f.overhead.as_ref())
        .is_some());
    assert!(left_behind().is_empty(), "{:?}", left_behind());
}

#[test]
fn on_an_idle_server_a_budget_keeps_every_function() {
    require_root();
    let apache = ThrowawayApache::start(&Default::default()).expect("start apache");
    let trace = TraceFile::new();
    let out = record_now(
        apache.pid(),
        &[
            "--profile",
            "apache:request",
            "--budget",
            "5",
            "--budget-window",
            "1s",
            "--duration",
            "1s",
            "-o",
            trace.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("with no load to measure, every function is kept"),
        "{stderr}"
    );
    let t = Trace::read(&trace);
    let probes = flowdar(&[
        "probes",
        "--pid",
        &apache.pid().to_string(),
        "--profile",
        "apache:request",
        "--json",
    ]);
    let listed: serde_json::Value = serde_json::from_slice(&probes.stdout).unwrap();
    assert_eq!(
        t.header.probes.len(),
        listed["probes"].as_array().unwrap().len()
    );
}

#[test]
fn a_budget_is_a_positive_percentage() {
    let out = flowdar(&[
        "record",
        "--pid",
        "1",
        "--profile",
        "apache:request",
        "--budget",
        "0",
        "-o",
        "/tmp/x",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`0` is not a percentage above 0"), "{err}");
}
