//! `flowdar experiment`: a DoS experiment in one command.
use std::{path::PathBuf, time::Duration};

use clap::Args;

use super::{attach::AttachArgs, values::MpmArg};

use crate::{
    experiment::{self, RunOptions, Spec},
    server::Mpm,
};

/// Run a denial-of-service experiment: a lab of hosts (the legitimate
/// client and the attacker each in a network namespace of their own,
/// 198.18.0.0/15), a server (by default a throwaway Apache, recorded by
/// PID) per variant of its settings, and phases of load with and without an
/// attack (slowhttptest: headers, body, read, range; over TLS and HTTP/2,
/// the lab's own client: tls-handshake, h2-*), each phase
/// recorded to DIR/VARIANT/PHASE.flowdar; then DIR/report.md (what happened
/// in plain words first), a self-contained DIR/report.html,
/// DIR/experiment.json and DIR/VARIANT/diff.json.
///
/// DIR/experiment.json: {"variants": [{"name", "config", "untraced":
/// {"phase", "requests_per_s", ...}, "phases": [{"name", "requests_per_s",
/// "p99_ns", "errors", "client_error" (why the load generator gave no
/// figures, or null), "events", "lost", "throughput_vs_first_phase",
/// "throughput_vs_untraced"}]}]}: client figures over wall time, with
/// connect and answer timeouts counted as errors. Each variant runs its
/// normal load once more with nothing attached (`untraced`): the observer
/// effect is each traced phase's throughput over it.
///
/// With --zoom, DIR/VARIANT/zoom/zoom.json: {"levels": [{"level",
/// "functions", "throughput_ratio", "rows": [{"function", "ratio",
/// "significant", ...}], "dropped", ...}], "chain": [outermost, ...,
/// deepest significant], "discovery": {...}, "attack_discovery": {...},
/// "stopped"}; a ratio of null is infinite (never called in the normal
/// phase).
#[derive(Debug, Args)]
#[command(after_help = "Experiment spec (TOML):\n\
```\n\
version = 1\n\
profile = [\"apache:lean\"]          # the default spec's; apache:request,io for the Apache functions\n\
probe = [\"apache2:ap_byterange_filter\"]   # optional single functions\n\
[server]\n\
mpm = \"event\"        # or: pid = 1234 / command = [...], with url = \"http://127.0.0.1:8080/\"\n\
[lab]\n\
namespaces = true    # client and attacker on hosts of their own\n\
[[variant]]\n\
name = \"reqtimeout\"  # config: lines added to the throwaway Apache's configuration\n\
config = \"LoadModule reqtimeout_module /usr/lib/apache2/modules/mod_reqtimeout.so\\nRequestReadTimeout header=1-3,MinRate=500\"\n\
[[phase]]\n\
name = \"normal\"\n\
duration = \"15s\"\n\
load = { connections = 20, timeout = \"1s\" }\n\
[[phase]]\n\
name = \"attack\"\n\
duration = \"40s\"\n\
load = { connections = 20 }\n\
attack = { mode = \"headers\", connections = 1000, rate = 200, interval = \"10s\", ramp = \"5s\" }\n\
```\n\
Attack modes: headers (Slowloris, -H), body (R-U-Dead-Yet, -B), read (slow read, -X), range (Apache Killer, -R), all slowhttptest's; \
with [server] tls = true, the lab's TLS and HTTP/2 client (python3-h2): tls-handshake (ClientHellos held one byte short), \
h2-slow-headers (HEADERS never ended), h2-slow-read (a zero window), h2-rapid-reset (HEADERS then RST_STREAM; rate: streams/s), \
h2-continuation (CONTINUATION floods; rate: frames/s a connection).\n\
`flowdar experiment --h2` runs the built-in TLS and HTTP/2 experiments.\n\
`flowdar experiment --print-default` shows the built-in experiment.")]
pub struct ExperimentArgs {
    /// The experiment spec.
    #[arg(required_unless_present_any = ["default", "h2", "print_default"])]
    pub spec: Option<PathBuf>,
    /// Run the built-in experiment (throwaway Apache with 150 workers,
    /// normal load, then the same load under a Slowloris attack; without
    /// mitigation and with mod_reqtimeout).
    #[arg(long, conflicts_with = "spec")]
    pub default: bool,
    /// Run the built-in experiments of the HTTP/2 era, one after the other,
    /// each into OUTPUT/NAME: stalled TLS handshakes (`tls-handshake`,
    /// mitigated by mod_reqtimeout's handshake stage) and HTTP/2 streams
    /// whose headers never end (`h2-slow-headers`, mitigated by mod_qos's
    /// connections per address), against a throwaway Apache with TLS and
    /// HTTP/2 and Debian's default settings, the legitimate load from
    /// h2load; then OUTPUT/report.md, each attack's verdict. About 4
    /// minutes. The specs: flowdar-lab/examples/dos-*.toml.
    #[arg(long, conflicts_with_all = ["spec", "default"])]
    pub h2: bool,
    /// Print the built-in spec and exit.
    #[arg(long)]
    pub print_default: bool,
    /// Output directory.
    #[arg(long, short, required_unless_present = "print_default")]
    pub output: Option<PathBuf>,
    /// The throwaway Apache's MPM (overrides the spec).
    #[arg(long, value_enum)]
    pub mpm: Option<MpmArg>,
    /// Probe these built-in profiles instead of the spec's (NAME:SET[,SET],
    /// repeatable), e.g. `--profile apache:connection --zoom` to start a
    /// zoom from the connection level.
    #[arg(long, value_name = "NAME:SET")]
    pub profile: Vec<String>,
    /// Cap every phase at this length (e.g. 5s for a quick run).
    #[arg(long, value_parser = crate::units::parse_wall_duration)]
    pub max_phase: Option<Duration>,
    /// Also allow traffic to this network (CIDR, e.g. 10.0.0.0/24: a lab of
    /// your own); by default only loopback and the experiment's own hosts.
    #[arg(long, value_name = "CIDR")]
    pub allow_target: Vec<ipnet::IpNet>,
    /// Zoom in below the most affected function of the first variant, up
    /// to LEVELS levels (--zoom=LEVELS; default 6): two one-second
    /// discovery windows with apache:full, under the normal load (who calls
    /// whom) and under the attack (where it holds workers); each level then
    /// probes what lies below the chain's tail within --budget, reruns the
    /// first and last phases and extends the chain with the callees that
    /// got significantly slower. Needs uprobe_multi links (Linux 6.6+).
    #[arg(long, value_name = "LEVELS", num_args = 0..=1, require_equals = true,
          default_missing_value = "6", value_parser = clap::value_parser!(u16).range(1..))]
    pub zoom: Option<u16>,
    /// The observer cost each zoom level may have: at most PCT percent less
    /// throughput than untraced (estimated from hits per request).
    #[arg(long, value_name = "PCT", default_value_t = 20.0, requires = "zoom", value_parser = parse_budget)]
    pub budget: f64,
    /// Write into a non-empty output directory.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub attach: AttachArgs,
}

pub fn run(args: ExperimentArgs) -> anyhow::Result<()> {
    if args.print_default {
        print!("{}", experiment::DEFAULT_SPEC);
        return Ok(());
    }
    for p in &args.profile {
        // Refused now, with the profile's own message, not mid-run.
        crate::probes::profile_requests(p)?;
    }
    let dir = args.output.clone().expect("required by clap");
    if !args.h2 {
        let spec = match &args.spec {
            Some(path) => Spec::load(path)?,
            None => Spec::default_spec(),
        };
        run_one(&overridden(spec, &args), &dir, &args)?;
        return Ok(());
    }
    // The HTTP/2 era's experiments, each in a directory of its own.
    let mut index = String::from(
        "# Flowdar DoS experiments: TLS and HTTP/2\n\nEach attack against a throwaway Apache with TLS and HTTP/2 and Debian's default settings, without and with its mitigation; each directory holds its full report.\n",
    );
    std::fs::create_dir_all(&dir)?;
    for (name, text) in experiment::H2_SPECS {
        let spec = overridden(Spec::parse(std::path::Path::new(name), text)?, &args);
        println!("\n=== {name} ({}/{name})", dir.display());
        let summary = run_one(&spec, &dir.join(name), &args)?;
        index.push_str(&format!(
            "\n## {name} ([report]({name}/report.md))\n\n{summary}\n"
        ));
    }
    std::fs::write(dir.join("report.md"), index)?;
    println!("\nAll: {}/report.md", dir.display());
    Ok(())
}

/// `spec` with the command line's `--profile` and `--mpm`.
fn overridden(mut spec: Spec, args: &ExperimentArgs) -> Spec {
    if !args.profile.is_empty() {
        spec.profile = args.profile.clone();
        spec.probe.clear();
    }
    if let Some(m) = args.mpm.map(Mpm::from) {
        spec.server.mpm = m;
        if (args.default || args.h2) && m == Mpm::Prefork {
            // The built-in specs' 150 workers are 150 processes under
            // prefork (ServerLimit counts processes there, threads x
            // processes elsewhere).
            spec.server.config = spec
                .server
                .config
                .replace("ServerLimit 6\n", "ServerLimit 150\n");
        }
    }
    spec
}

/// Runs `spec` into `dir`, writes its report and prints what it found;
/// returns the report's summary.
fn run_one(spec: &Spec, dir: &std::path::Path, args: &ExperimentArgs) -> anyhow::Result<String> {
    let outcome = experiment::run(
        spec,
        dir,
        &RunOptions {
            max_phase: args.max_phase,
            force: args.force,
            allow_targets: args.allow_target.clone(),
            zoom: args.zoom.map(|levels| experiment::ZoomOptions {
                levels: levels.into(),
                budget_pct: args.budget,
                ..Default::default()
            }),
        },
        &super::tracer::CaptureTracer {
            plan: args.attach.plan(false),
        },
        &mut |p| eprintln!("{p}"),
    )?;
    let title = format!("Flowdar DoS experiment ({:?} MPM)", spec.server.mpm);
    let report = experiment::write_report(dir, &outcome, &title)?;
    println!("\n{}", report.summary.replace("**", ""));
    for (name, rows) in &report.diffs {
        let (base, test) = phase_names(&outcome, name);
        println!(
            "\nVariant {name}: what changed from phase {base} to {test} (top of {}/{name}/diff.json):",
            dir.display()
        );
        println!(
            "{:<34} {:>11} {:>11} {:>9} {:>9} {:>12}",
            "function",
            format!("mean {base}"),
            format!("mean {test}"),
            "ratio",
            "in-flight",
            "impact"
        );
        for r in rows.iter().take(6) {
            println!(
                "{:<34} {:>11} {:>11} {:>9} {:>9} {:>10}/s{}",
                r.function,
                super::format::ns(r.base_mean_ns),
                super::format::ns(r.test_mean_ns),
                if r.ratio.is_finite() {
                    format!("{:.1}x", r.ratio)
                } else {
                    "new".into()
                },
                r.in_flight,
                super::format::signed_ns(r.impact_ns_per_s),
                if r.significant { " *" } else { "" }
            );
        }
    }
    if let Some(e) = &outcome.zoom_error {
        println!("\nZoom failed (the phases above are complete): {e}");
    }
    if let Some(z) = &outcome.zoom {
        println!(
            "\nZoom ({} level{}; stopped: {}):\n  {}\n  discovery windows: {}; per level, normal-phase throughput vs untraced: {}\n  budget: a probed call taken to cost {:.3} of a request's work ({})",
            z.levels.len() - 1,
            if z.levels.len() == 2 { "" } else { "s" },
            z.stopped,
            if z.chain.is_empty() {
                "no chain".to_string()
            } else {
                z.chain.join(" -> ")
            },
            [&z.discovery, &z.attack_discovery]
                .into_iter()
                .flatten()
                .map(|d| format!("{:.2} s of degraded service under {}", d.degraded_s, d.under))
                .collect::<Vec<_>>()
                .join(", "),
            z.levels
                .iter()
                .map(|l| l.throughput_ratio.map_or("-".into(), |r| format!("{r:.2}x")))
                .collect::<Vec<_>>()
                .join(", "),
            z.call_cost.share,
            z.call_cost.from
        );
    }
    println!(
        "\nReport: {0}/report.md, {0}/report.html, {0}/experiment.json (traces beside them)",
        dir.display()
    );
    Ok(report.summary)
}

/// A percentage strictly between 0 and 100.
fn parse_budget(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("`{s}` is not a percentage (e.g. 20)"))?;
    if v > 0.0 && v < 100.0 {
        Ok(v)
    } else {
        Err(format!(
            "{v}% is not a budget: give a percentage between 0 and 100"
        ))
    }
}

/// The phases variant `name`'s diff compares: its first and its last.
fn phase_names(outcome: &experiment::Outcome, name: &str) -> (String, String) {
    let phases = outcome
        .variants
        .iter()
        .find(|v| v.name == name)
        .map(|v| v.phases.as_slice())
        .unwrap_or_default();
    let label =
        |p: Option<&experiment::PhaseResult>| p.map_or_else(|| "?".into(), |p| p.name.clone());
    (label(phases.first()), label(phases.last()))
}
