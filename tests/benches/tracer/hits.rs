//! Row h: probe hits per request for each built-in probe set of
//! `flowdar-user/profiles/apache.toml`, each set attached alone and the four
//! request-path sets attached together, against one throwaway Apache (event
//! MPM) driven by the built-in client with a fixed number of requests.
//!
//! A hit is one uprobe or uretprobe firing in the server: one recorded
//! entry or exit event (the run checks that none was lost, so every hit is
//! in the trace). The window runs from attach to detach: the load, then
//! half a second for Apache to see the clients' closes (as `flowdar demo`
//! waits), so the server's background calls in that window count too.
use std::{collections::BTreeMap, path::Path, time::Duration};

use flowdar::{
    server::{run_load, ApacheOptions, LoadPlan, ThrowawayApache},
    store::TraceReader,
};
use flowdar_tests::start_recorder;

use crate::common::{median, parse_summary};

/// The sets, alone, then the four request-path sets together, then `full`.
pub const SETS: &[&str] = &[
    "connection",
    "request",
    "io",
    "handoff",
    "connection,request,io,handoff",
    "full",
];
/// The four sets that `SETS` also attaches together.
pub const ALONE: usize = 4;
pub const CONNECTIONS: usize = 100;
pub const REQUESTS_PER_CONNECTION: usize = 10;
pub const CONCURRENCY: usize = 8;

/// One set's result over the rounds.
#[derive(Debug, Clone)]
pub struct HitsRow {
    pub set: String,
    /// Functions attached (the probe table less those the kernel refused).
    pub functions: usize,
    /// Functions a pattern matched that the kernel refused (skipped).
    pub refused: usize,
    pub attach_mode: String,
    /// Median over the rounds, and the smallest and largest.
    pub hits_per_request: f64,
    pub min: f64,
    pub max: f64,
    /// Events lost in any round (0 means every hit was counted).
    pub lost: u64,
    /// Per function: median hits per request over the rounds.
    pub per_function: BTreeMap<String, f64>,
}

struct Run {
    hits_per_request: f64,
    functions: usize,
    refused: usize,
    attach_mode: String,
    lost: u64,
    per_function: BTreeMap<String, f64>,
}

fn plan() -> LoadPlan {
    LoadPlan {
        connections: CONNECTIONS,
        requests_per_connection: REQUESTS_PER_CONNECTION,
        concurrency: CONCURRENCY,
        ..Default::default()
    }
}

fn measure_one(apache: &ThrowawayApache, set: &str, out: &Path) -> Run {
    let pid = apache.pid().to_string();
    let profile = format!("apache:{set}");
    let rec = start_recorder(&[
        "--pid",
        &pid,
        "--profile",
        &profile,
        "--force",
        "-o",
        out.to_str().unwrap(),
    ]);
    let load = run_load(apache.addr(), &plan());
    // Let Apache see the clients' closes before detaching (as the demo does).
    std::thread::sleep(Duration::from_millis(500));
    let (code, stdout, stderr) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{stdout}\n{stderr}");
    assert_eq!(load.errors, 0, "the client saw errors: {load:?}");
    let requests = load.ok as f64;
    let s = parse_summary(&stdout);
    let reader = TraceReader::open(out).expect("open the trace");
    let names: Vec<String> = reader
        .header()
        .probes
        .iter()
        .map(|p| p.function.clone())
        .collect();
    let mut counts = vec![0u64; names.len()];
    let mut events = 0u64;
    reader
        .for_each_event(|e| {
            events += 1;
            counts[e.probe_id as usize] += 1;
        })
        .expect("read the trace");
    assert_eq!(events, s.events, "the trace holds what record counted");
    Run {
        hits_per_request: events as f64 / requests,
        functions: names.len() - s.skipped,
        refused: s.skipped,
        attach_mode: s.attach_mode,
        lost: s.lost,
        per_function: names
            .into_iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .map(|(f, n)| (f, n as f64 / requests))
            .collect(),
    }
}

/// Every set `rounds` times, interleaved, against one Apache.
pub fn measure(rounds: usize, out_dir: &Path) -> Vec<HitsRow> {
    let apache = ThrowawayApache::start(&ApacheOptions::default()).expect("start apache");
    // Warm up: children and their worker threads started before any count.
    let warm = run_load(apache.addr(), &plan());
    assert_eq!(warm.errors, 0, "warm-up load saw errors: {warm:?}");
    let mut runs: Vec<Vec<Run>> = SETS.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (i, set) in SETS.iter().enumerate() {
            eprintln!(
                "  h. hits per request, round {}/{rounds}: apache:{set}",
                round + 1
            );
            let out = out_dir.join(format!("hits-{i}.flowdar"));
            runs[i].push(measure_one(&apache, set, &out));
        }
    }
    SETS.iter()
        .zip(runs)
        .map(|(set, runs)| {
            let hits: Vec<f64> = runs.iter().map(|r| r.hits_per_request).collect();
            let mut per_function: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for r in &runs {
                for (f, h) in &r.per_function {
                    per_function.entry(f.clone()).or_default().push(*h);
                }
            }
            let last = runs.last().expect("at least one round");
            HitsRow {
                set: set.to_string(),
                functions: last.functions,
                refused: last.refused,
                attach_mode: last.attach_mode.clone(),
                hits_per_request: median(hits.clone()),
                min: hits.iter().copied().fold(f64::INFINITY, f64::min),
                max: hits.iter().copied().fold(0.0, f64::max),
                lost: runs.iter().map(|r| r.lost).max().unwrap_or(0),
                per_function: per_function
                    .into_iter()
                    .map(|(f, mut hs)| {
                        // A function no round saw stays absent; one some
                        // rounds missed counts 0 there.
                        hs.resize(runs.len(), 0.0);
                        (f, median(hs))
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Row h as Markdown: the per-set table (what README's profile table
/// quotes), the sum of the four sets alone against all four together, and
/// per function, alone against together.
pub fn render(rows: &[HitsRow], rounds: usize) -> String {
    use std::fmt::Write as _;
    let mut md = String::new();
    let requests = CONNECTIONS * REQUESTS_PER_CONNECTION;
    let _ = writeln!(
        md,
        "### h. Probe hits per request ({requests} requests on {CONNECTIONS} keep-alive connections, {CONCURRENCY} at a time, built-in client; event MPM; median of {rounds} interleaved rounds)\n"
    );
    let _ = writeln!(
        md,
        "| set | functions attached | attach mode | hits per request | lowest-highest | lost |"
    );
    let _ = writeln!(md, "|---|---:|---|---:|---:|---:|");
    for r in rows {
        let refused = if r.refused > 0 {
            format!(" ({} refused by the kernel, skipped)", r.refused)
        } else {
            String::new()
        };
        let _ = writeln!(
            md,
            "| `apache:{}` | {}{refused} | {} | {:.1} | {:.1}-{:.1} | {} |",
            r.set, r.functions, r.attach_mode, r.hits_per_request, r.min, r.max, r.lost
        );
    }
    let alone: f64 = rows[..ALONE].iter().map(|r| r.hits_per_request).sum();
    let together = &rows[ALONE];
    let _ = writeln!(
        md,
        "\nThe four sets share no function: measured alone they sum to {alone:.1} hits per request, attached together {:.1}. A hit is one recorded entry or exit (uprobe or uretprobe firing) from attach to detach, the 0.5 s after the load included, divided by the requests answered.\n",
        together.hits_per_request
    );
    let _ = writeln!(
        md,
        "| function (sets attached alone) | alone | in all four together |"
    );
    let _ = writeln!(md, "|---|---:|---:|");
    for r in &rows[..ALONE] {
        for (f, h) in &r.per_function {
            let t = together.per_function.get(f).copied().unwrap_or(0.0);
            let _ = writeln!(md, "| `{f}` ({}) | {h:.2} | {t:.2} |", r.set);
        }
    }
    md.push('\n');
    md
}
