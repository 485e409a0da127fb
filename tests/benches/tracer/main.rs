//! Tracer benchmark (issue 8; not a test: it prints figures and ratios
//! measured side by side in one run, and the targets they are held to).
//!
//! `cargo xtask bench tracer [ROWS]` (root) builds the release binary and
//! runs this with FLOWDAR_BIN set. Rows: a (per call), b+c (server
//! throughput, trace bytes/event), d (analysis), e (attach/detach, launch to
//! first event), h (probe hits per request of each profile set), m (what
//! `record --min-duration` saves), r (read time per client, `request,io`
//! against `lean`), z (the zoom on the built-in experiment).
//! `cargo bench -p flowdar-tests --bench tracer -- [a] [b] [d] [e] [h] [m] [r] [z]` runs
//! some. Environment: BENCH_ROUNDS (default 3), BENCH_CALLS (default
//! 1000000), BENCH_WRK_SECS (default 5), BENCH_PAIRS (row b's extra
//! floor/`request` pairs and untraced/lean/top triples, default 8).
//!
//! Every row says in its heading how it was measured (rounds, median or
//! not, attach mode); the table's first line names the machine, the date
//! and the command.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark prints its figures and progress"
)]
mod analysis;
mod attach;
mod common;
mod hits;
mod mindur;
mod percall;
mod readtime;
mod server;
mod zoom;

use std::fmt::Write as _;

use common::Paired;
use percall::Tracer;
use server::Config;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn main() {
    flowdar_tests::require_root();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |row: &str| args.is_empty() || args.iter().any(|a| a == row);
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let calls: u64 = env_or("BENCH_CALLS", 1_000_000);
    let secs: u64 = env_or("BENCH_WRK_SECS", 5);
    let out_dir = std::env::var_os("BENCH_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("flowdar-bench"));
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Run of {} (`cargo xtask bench tracer{}`, release build) on {}: {}. Each row's heading says how it was measured.\n",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        args.iter().map(|a| format!(" {a}")).collect::<String>(),
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim(),
        machine(),
    );

    // Rows finished so far survive a later row's failure.
    let table = out_dir.join("tracer-bench.md");
    let save = |md: &str| std::fs::write(&table, md).expect("write the table");

    if want("a") {
        eprintln!("a. per traced call: {calls} calls of a probed function");
        let rows = percall::measure(calls, rounds, &out_dir);
        let get = |t: Tracer| rows.iter().find(|r| r.tracer == t).unwrap();
        let base = get(Tracer::Untraced).ns_per_call;
        let _ = writeln!(
            md,
            "### a. Per traced call ({calls} calls in a tight loop; median of {rounds} interleaved rounds; events: the fewest of the rounds, lost: the most)\n"
        );
        let _ = writeln!(
            md,
            "| configuration | ns/call | added ns/call | events | lost |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|");
        for r in &rows {
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.0} | {} | {} |",
                r.tracer.label(),
                r.ns_per_call,
                r.ns_per_call - base,
                r.events.map_or("-".into(), |e| e.to_string()),
                r.lost.map_or("-".into(), |e| e.to_string()),
            );
        }
        let fd = get(Tracer::Flowdar);
        let paired = Paired::of(&fd.rounds, &get(Tracer::Floor).rounds);
        let vs_floor = paired.median;
        // Each round's added cost over its own untraced run.
        let added = |t: Tracer| -> Vec<f64> {
            let untraced = &get(Tracer::Untraced).rounds;
            get(t)
                .rounds
                .iter()
                .zip(untraced)
                .map(|(x, u)| x - u)
                .collect()
        };
        let vs_bt = Paired::of(&added(Tracer::Flowdar), &added(Tracer::BpftracePrint)).median;
        let lost = fd.lost.unwrap_or(u64::MAX);
        let _ = writeln!(
            md,
            "\nFlowdar/floor, the median of each round's ratio (the two ran side by side): {} (target <= 1.10: {}); Flowdar's added cost / bpftrace printf's (the same, per round) = {vs_bt:.2} (target <= 0.6: {}); Flowdar lost {lost} of {} events (target 0: {}).\n\nIssue #15's target: Flowdar/floor = {vs_floor:.3} (target <= 1.02: {}; what a call's time over the floor is made of: BENCHMARKS.md, \"Where a traced call's time over the floor goes\").\n",
            paired.show(3),
            verdict(vs_floor <= 1.10),
            verdict(vs_bt <= 0.6),
            2 * calls,
            verdict(lost == 0 && fd.events == Some(2 * calls)),
            verdict(vs_floor <= 1.02),
        );
        let mode = fd.attach_mode.as_deref().unwrap_or("?");
        let _ = writeln!(md, "Flowdar's and the floor's attach mode: {mode}.\n");
        let programs = percall::kernel_programs(calls, &out_dir);
        md.push_str(&percall::render_programs(&programs, &rows));
    }

    save(&md);
    if want("b") {
        eprintln!(
            "b. server throughput: Apache event MPM, wrk -t2 -c20 keep-alive, {secs} s per run"
        );
        let pairs: usize = env_or("BENCH_PAIRS", 8);
        let rows = server::measure(secs, rounds, pairs, &out_dir);
        let get = |c: Config| rows.iter().find(|r| r.config == c).unwrap();
        let base = get(Config::Untraced).requests_per_sec;
        let mode = get(Config::Request).attach_mode.clone().unwrap_or_default();
        let _ = writeln!(
            md,
            "### b. Server throughput and c. storage (wrk -t2 -c20, {secs} s per run; requests/s and p99: medians of {rounds} interleaved rounds (the floor's and `request`'s {pairs} more pairs, and {pairs} untraced/lean/top triples, count in their ratios below, not here); events and bytes/event: the last round's, lost: the most; Flowdar's attach mode: {mode})\n"
        );
        let _ = writeln!(md, "| configuration | requests/s | vs untraced | p99 latency | events | lost | bytes/event |");
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
        for r in &rows {
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.2} | {:.0} µs | {} | {} | {} |",
                r.config.label(),
                r.requests_per_sec,
                r.requests_per_sec / base,
                r.p99_us,
                r.events.map_or("-".into(), |e| e.to_string()),
                r.lost.map_or("-".into(), |e| e.to_string()),
                r.bytes_per_event.map_or("-".into(), |b| format!("{b:.2}")),
            );
        }
        let req = get(Config::Request);
        let paired_floor = Paired::of(&req.rounds, &get(Config::Floor).rounds);
        let paired_bt = Paired::of(&req.rounds, &get(Config::BpftraceRequest).rounds);
        // No tracer on these probes can serve more than the floor: the
        // floor's own ratio to bpftrace bounds the ratio of any of them.
        let ceiling = Paired::of(
            &get(Config::Floor).rounds,
            &get(Config::BpftraceRequest).rounds,
        );
        let (vs_floor, vs_bt) = (paired_floor.median, paired_bt.median);
        let lost = req.lost.unwrap_or(1) + get(Config::Io).lost.unwrap_or(1);
        let bpe = [Config::Request, Config::Io, Config::Full]
            .iter()
            .filter_map(|c| get(*c).bytes_per_event)
            .fold(0.0f64, f64::max);
        let _ = writeln!(
            md,
            "\n`request` against the floor and bpftrace, the median of each round's ratio (with the floor: its {rounds} rounds and {pairs} pairs): {}x the floor's requests/s (target >= 0.9: {}), {}x bpftrace's (target >= 1.7: {}); lost with `request` and `io`: {lost} (target 0: {}). Largest bytes/event: {bpe:.2} (target <= 4: {}).\n\nIssue #15's targets: `request` {vs_floor:.2}x the floor's requests/s (target >= 0.97: {}), {vs_bt:.2}x bpftrace's (target >= 2.5: {}); lost {lost} (target 0: {}). The floor itself served {}x bpftrace's requests/s in the same rounds: on average no tracer on these probes can do better than that.\n",
            paired_floor.show(2),
            verdict(vs_floor >= 0.9),
            paired_bt.show(2),
            verdict(vs_bt >= 1.7),
            verdict(lost == 0),
            verdict(bpe <= 4.0),
            verdict(vs_floor >= 0.97),
            verdict(vs_bt >= 2.5),
            verdict(lost == 0),
            ceiling.show(2),
        );
        let lean = Paired::of(&get(Config::Lean).rounds, &get(Config::Untraced).rounds);
        let top = Paired::of(&get(Config::TopLean).rounds, &get(Config::Untraced).rounds);
        let lean_lost = get(Config::Lean)
            .lost
            .unwrap_or(1)
            .saturating_add(get(Config::TopLean).lost.unwrap_or(1));
        let _ = writeln!(
            md,
            "Issue #28's lean capture: `lean` served {}x untraced's requests/s and `top -o` {}x, the median of the ratios of its {rounds} rounds and {pairs} triples (target >= 0.90: {}, {}); lost with the two: {lean_lost} (target 0: {}).\n",
            lean.show(2),
            top.show(2),
            verdict(lean.median >= 0.9),
            verdict(top.median >= 0.9),
            verdict(lean_lost == 0),
        );
    }

    save(&md);
    if want("d") {
        eprintln!("d. analysis on generated traces");
        let rows = analysis::measure(rounds, &out_dir);
        let _ = writeln!(
            md,
            "### d. Analysis (traces generated into {}: 16 threads, 40 functions; one unmeasured run, then the median time of {rounds} runs and the largest peak RSS; the reader decodes on up to 4 threads)\n",
            out_dir.display()
        );
        let _ = writeln!(md, "| command | events | time | events/s | peak RSS |");
        let _ = writeln!(md, "|---|---:|---:|---:|---:|");
        for r in &rows {
            let _ = writeln!(
                md,
                "| `flowdar {}` | {} | {:.2} s | {:.1} M | {:.1} MiB |",
                r.command,
                r.events,
                r.seconds,
                r.events_per_sec() / 1e6,
                r.peak_rss as f64 / (1 << 20) as f64,
            );
        }
        let stats10 = rows
            .iter()
            .find(|r| r.command.starts_with("stats gen-10M"))
            .expect("a 10M stats row");
        let stats1 = rows
            .iter()
            .find(|r| r.command.starts_with("stats gen-2M"))
            .expect("a 2M stats row");
        let growth = stats10.peak_rss as f64 / stats1.peak_rss as f64;
        let _ = writeln!(
            md,
            "\n`stats` on 10M events: {:.1} M events/s (target >= 20: {}); peak RSS 10M/2M = {growth:.2} (target: does not grow, <= 1.2: {}).\n",
            stats10.events_per_sec() / 1e6,
            verdict(stats10.events_per_sec() >= 20e6),
            verdict(growth <= 1.2),
        );
    }

    save(&md);
    if want("e") {
        eprintln!("e. attach and detach");
        let r = attach::measure(rounds, &out_dir);
        let total = r.attach + r.detach;
        let _ = writeln!(
            md,
            "### e. Attach and detach (medians of {rounds} rounds; attach mode: {})\n",
            r.attach_mode
        );
        let _ = writeln!(md, "| what | time |");
        let _ = writeln!(md, "|---|---:|");
        let _ = writeln!(
            md,
            "| attach `apache:full` ({} functions attached, {} uprobes; {} refused by the kernel, skipped) | {:.0} ms |",
            r.functions,
            2 * r.functions,
            r.refused,
            r.attach.as_secs_f64() * 1e3
        );
        let _ = writeln!(
            md,
            "| detach `apache:full` | {:.0} ms |",
            r.detach.as_secs_f64() * 1e3
        );
        let _ = writeln!(
            md,
            "| launch of `flowdar record` to first event | {:.0} ms |",
            r.first_event.as_secs_f64() * 1e3
        );
        let _ = writeln!(
            md,
            "\nattach + detach of `full`: {:.2} s (target <= 2 s: {}).\n",
            total.as_secs_f64(),
            verdict(total.as_secs_f64() <= 2.0)
        );
    }

    save(&md);
    if want("h") {
        eprintln!("h. probe hits per request of each profile set");
        let rows = hits::measure(rounds, &out_dir);
        md.push_str(&hits::render(&rows, rounds));
        save(&md);
    }
    if want("m") {
        eprintln!("m. record --min-duration: what it saves");
        let rows = mindur::measure(secs, rounds, &out_dir);
        md.push_str(&mindur::render(&rows, rounds, secs));
        save(&md);
    }
    if want("r") {
        eprintln!("r. read time per client, request,io against lean, one run");
        let run = readtime::measure(secs, &out_dir);
        md.push_str(&readtime::render(&run, secs));
        save(&md);
    }
    if want("z") {
        eprintln!("z. the zoom on the built-in experiment (about 5 minutes)");
        md.push_str(&zoom::measure(&out_dir));
    }
    println!("\n{md}");
    save(&md);
    eprintln!("(also written to {})", table.display());
}

/// "2 CPUs, 23.4 GiB RAM, kernel 6.18.44": what a figure depends on.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    format!(
        "{cpus} CPUs, {:.1} GiB RAM, kernel {}",
        mem_kib as f64 / (1 << 20) as f64,
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    )
}
