//! `record --min-duration`: the kernel drops calls shorter than the minimum
//! at their return and counts them per function; longer calls, their held
//! ancestors and calls still open at the end are recorded, nested and in
//! time order. Checked exactly on a program whose calls' durations are
//! known (tests/fixtures/durations.c), on both attach mechanisms.
use std::{
    io::{BufRead, Write},
    process::Command,
};

use flowdar_common::EventKind::{Entry, Exit};
use flowdar_tests::*;

const ROUNDS: usize = 20;
const MIN_NS: u64 = 10_000_000;
const FUNCTIONS: [&str; 5] = ["outer", "quick", "slow", "hang", "wait_line"];

fn min_duration_drops_short_calls_exactly(mode: &[&str]) {
    require_root();
    let fixture = compile_fixture(
        include_str!("../fixtures/durations.c"),
        "durations",
        &["-O1", "-fno-inline", "-fno-optimize-sibling-calls"],
    );
    let bin = &fixture.bin;
    let (mut child, mut stdout) = start_fixture(bin, &ROUNDS.to_string());
    let mut line = String::new();
    let probes: Vec<String> = FUNCTIONS
        .iter()
        .map(|f| format!("{}:{f}", bin.display()))
        .collect();
    let mut args: Vec<&str> = probes
        .iter()
        .flat_map(|p| ["--probe", p.as_str()])
        .collect();
    args.extend_from_slice(&["--min-duration", "10ms"]);
    args.extend_from_slice(mode);
    let (rec, trace) = record(child.id(), &args);
    writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("looped"), "{line}");
    // hang() and wait_line() are now open; let them pass the minimum.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (code, out, err) = rec.stop(libc::SIGINT);
    writeln!(child.stdin.as_mut().unwrap(), "end").unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");
    assert!(
        out.contains("Minimum duration 10.0 ms: 50 shorter calls dropped in the kernel; 2 calls still open at the end kept."),
        "{out}"
    );

    let t = Trace::read(&trace);
    let footer = t.footer.as_ref().expect("finished trace");
    let min = footer
        .min_duration
        .as_ref()
        .expect("min_duration in the footer");
    assert_eq!(min.ns, MIN_NS);
    let short = |f: &str| min.short_calls[t.probe_id(f) as usize];
    // quick() always, outer() for odd rounds (no slow call): short.
    assert_eq!(
        FUNCTIONS.map(short),
        [ROUNDS as u64 / 2, 2 * ROUNDS as u64, 0, 0, 0]
    );
    let counts = |f: &str| (t.count(f, Entry), t.count(f, Exit));
    assert_eq!(counts("outer"), (ROUNDS / 2, ROUNDS / 2));
    assert_eq!(counts("slow"), (ROUNDS / 2, ROUNDS / 2));
    assert_eq!(counts("quick"), (0, 0));
    // Open at the end, and past the minimum: entries alone.
    assert_eq!(counts("hang"), (1, 0));
    assert_eq!(counts("wait_line"), (1, 0));
    for f in ["outer", "slow"] {
        for (entry, exit) in t.calls(f) {
            let exit = exit.expect("returned");
            assert!(exit - entry >= MIN_NS, "{f} lasted {} ns", exit - entry);
        }
    }
    let (problems, open) = t.nesting_problems();
    assert!(
        problems.is_empty(),
        "{problems:?}\nfirst events: {:#?}",
        &t.events[..t.events.len().min(8)]
    );
    assert_eq!(open, 2);
    // Every slow() call sits inside an outer() call.
    let outers = t.calls("outer");
    for (s, e) in t.calls("slow") {
        assert!(
            outers
                .iter()
                .any(|(a, b)| *a <= s && e.unwrap() <= b.unwrap()),
            "slow at {s} outside every outer"
        );
    }
    // The dropped quick() calls stay in outer()'s self time.
    let stats = run_ok(
        Command::new(flowdar_bin())
            .args(["stats", "--json"])
            .arg(&*trace),
    );
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    let row = |f: &str| {
        stats["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["function"] == f)
            .cloned()
            .unwrap_or_else(|| panic!("{f} in stats"))
    };
    let ns = |f: &str, k: &str| row(f)[k].as_u64().unwrap();
    assert_eq!(
        ns("outer", "self_ns"),
        ns("outer", "total_ns") - ns("slow", "total_ns")
    );
    assert_eq!(stats["pairing"]["unmatched_exits"], 0);
    assert_eq!(stats["pairing"]["lost_exits"], 0);
    // hang() and wait_line() were still running when the probes went.
    assert_eq!(stats["cut_by_detach"], 2);
    // The overhead estimate counts every call that hit both probes:
    // recorded or dropped as short.
    let o = footer.overhead.as_ref().expect("overhead estimate");
    assert_eq!(
        o.calls,
        (ROUNDS / 2 + ROUNDS / 2) as u64 + 5 * ROUNDS as u64 / 2
    );
    // A probed call of the calibration's `lea` function costs ~10 µs on
    // the development VM (BENCHMARKS.md, "the estimated overhead"); the
    // kernel matrix runs this test under TCG too, several times slower.
    assert!(
        (100..=100_000).contains(&o.ns_per_call),
        "a probed call's cost between 100 ns and 100 µs: {} ns",
        o.ns_per_call
    );
    let info = run_ok(
        Command::new(flowdar_bin())
            .args(["info", "--json"])
            .arg(&*trace),
    );
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["min_duration_ns"], MIN_NS);
    assert_eq!(info["overhead"]["calls"], o.calls);
    assert!(left_behind().is_empty(), "{:?}", left_behind());
}

#[test]
fn min_duration_drops_short_calls_exactly_by_default() {
    min_duration_drops_short_calls_exactly(&[]);
}

#[test]
fn min_duration_drops_short_calls_exactly_on_perf_events() {
    min_duration_drops_short_calls_exactly(&["--attach-mode", "perf"]);
}
