//! `flowdar demo`: a throwaway Apache on loopback, traced while a bounded
//! load runs against it; prints the recording summary and the statistics.
use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::Args;

use super::{attach::AttachArgs, format, record, select::ProbeSelection, stats, values::MpmArg};
use crate::{
    capture::{self, RecordOptions, Recording},
    probes::{self, ProbeRequest},
    server::{self, ApacheOptions, LoadPlan, Mpm, ThrowawayApache, WrkPlan},
};

/// The demo's probes: Apache's request path and APR's socket I/O.
const DEMO_PROBES: &[&str] = &[
    "apache2:ap_run_process_connection",
    "apache2:ap_read_request",
    "apache2:ap_process_async_request",
    "apache2:ap_invoke_handler",
    "libapr-1:apr_socket_recv",
    "libapr-1:apr_socket_sendv",
];

/// Start a throwaway Apache (Debian's apache2, own config in a temp dir,
/// loopback port), record it by PID while a bounded load runs, then print
/// the summary and per-function statistics. Needs root.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Client connections to make.
    #[arg(long, default_value_t = 200)]
    pub connections: usize,
    /// Keep-alive requests on each connection.
    #[arg(long, default_value_t = 5)]
    pub requests: usize,
    /// Connections in parallel.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Apache MPM.
    #[arg(long, value_enum, default_value_t = MpmArg::Event)]
    pub mpm: MpmArg,
    /// Trace file (overwritten).
    #[arg(long, short, default_value = "flowdar-demo.flowdar")]
    pub output: PathBuf,
    /// Probes to use instead of the demo's (Apache's request path and
    /// APR's socket I/O).
    #[command(flatten)]
    pub select: ProbeSelection,
    /// Drive the server with wrk (2 threads, --wrk-connections keep-alive
    /// connections) for this long instead of the built-in client.
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_wall_duration)]
    pub wrk: Option<Duration>,
    /// wrk's connections.
    #[arg(long, default_value_t = 20)]
    pub wrk_connections: u32,
    #[command(flatten)]
    pub attach: AttachArgs,
    /// Then send the demo's requests as OpenTelemetry spans over OTLP/HTTP:
    /// to URL, or with no URL to a throwaway receiver on loopback that says
    /// what it took. The demo records `apache:request,io` then (client
    /// addresses need its probes), unless probes are chosen.
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = THROWAWAY)]
    pub otlp: Option<String>,
    /// With --otlp: the functions sent as child spans of each request.
    #[arg(
        long,
        value_name = "F,F...",
        value_delimiter = ',',
        default_value = "ap_invoke_handler,apr_socket_recv"
    )]
    pub span_functions: Vec<String>,
}

/// `--otlp` without a URL.
const THROWAWAY: &str = "throwaway";

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    capture::check_privileges(("demo", None, args.attach.plan(false).mode))?;
    eprintln!(
        "Starting a throwaway Apache ({:?} MPM) on loopback...",
        Mpm::from(args.mpm)
    );
    let apache = ThrowawayApache::start(&ApacheOptions {
        mpm: args.mpm.into(),
        ..Default::default()
    })?;
    eprintln!(
        "Apache PID {} listening on {} (config in {})",
        apache.pid(),
        apache.addr(),
        apache.dir().display()
    );
    let requests: Vec<ProbeRequest> = if args.select.profile.is_empty()
        && args.select.probes.is_none()
        && args.select.probe.is_empty()
    {
        match args.otlp {
            Some(_) => crate::probes::profile_requests("apache:request,io")?,
            None => DEMO_PROBES
                .iter()
                .map(|s| s.parse().expect("valid demo probe"))
                .collect(),
        }
    } else {
        args.select.requests()?
    };
    let probes = probes::resolve(apache.pid(), &requests, &args.select.debug_dir)?;
    let recording = Recording::start(RecordOptions {
        pid: apache.pid(),
        probes,
        output: args.output.clone(),
        force: true,
        plan: args.attach.plan(false),
        ..Default::default()
    })?;
    eprintln!(
        "Recording: {} processes, probes attached in {} ({}).",
        recording.processes_at_start(),
        format::duration(recording.attach_time()),
        record::attach_mode_label(recording.mechanism(), recording.syscall_hooks()),
    );
    let client = match args.wrk {
        Some(duration) => {
            eprintln!(
                "Running wrk for {} ({} connections)...",
                format::duration(duration),
                args.wrk_connections
            );
            let plan = WrkPlan {
                duration,
                connections: args.wrk_connections,
                ..Default::default()
            };
            let r = server::run_wrk(apache.addr(), &plan)?;
            format!(
                "Client (wrk): {} requests, {} errors ({:.0} req/s; latency p50 {} µs, p99 {} µs)",
                r.requests,
                r.errors,
                r.requests_per_sec,
                r.latency_p50_us.map_or(0, |v| v as u64),
                r.latency_p99_us.map_or(0, |v| v as u64)
            )
        }
        None => {
            eprintln!(
                "Sending {} requests on {} connections ({} at a time)...",
                args.connections * args.requests,
                args.connections,
                args.concurrency
            );
            let plan = LoadPlan {
                connections: args.connections,
                requests_per_connection: args.requests,
                concurrency: args.concurrency,
                ..Default::default()
            };
            let load = server::run_load(apache.addr(), &plan);
            let lat = &load.latencies_us;
            let p = |q: f64| {
                lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
                    .copied()
                    .unwrap_or(0)
            };
            format!(
                "Client: {} ok, {} errors in {} ({:.0} req/s; latency p50 {} µs, p99 {} µs)",
                load.ok,
                load.errors,
                format::duration(load.elapsed),
                load.ok as f64 / load.elapsed.as_secs_f64().max(1e-9),
                p(0.5),
                p(0.99)
            )
        }
    };
    // Let Apache see the clients' closes before detaching.
    std::thread::sleep(Duration::from_millis(500));
    let summary = recording.stop("load finished")?;
    println!("{client}\n");
    record::print_summary(&summary);
    println!();
    let (rows, _) = stats::compute(&args.output).context("reading the demo trace back")?;
    stats::print_table(&rows);
    if let Some(url) = &args.otlp {
        println!();
        send_spans(&args.output, url, &args.span_functions)?;
    }
    println!("\nNext: flowdar dump {} | less", args.output.display());
    Ok(())
}

/// `--otlp`: the trace's requests to `url`, or to a throwaway receiver
/// whose catch is summed up.
fn send_spans(trace: &std::path::Path, url: &str, functions: &[String]) -> anyhow::Result<()> {
    let receiver = match url {
        THROWAWAY => Some(server::otlp_receiver::Receiver::start(None)?),
        _ => None,
    };
    let endpoint = receiver
        .as_ref()
        .map_or_else(|| url.to_string(), |r| r.endpoint());
    let otlp = super::otlp::OtlpArgs {
        endpoint: Some(endpoint.clone()),
        spans: super::otlp::SpanArgs {
            span_functions: functions.to_vec(),
            service_name: "apache".into(),
            otlp_timeout: Duration::from_secs(5),
        },
    };
    super::otlp::export(trace, &endpoint, &otlp)?;
    let Some(mut receiver) = receiver else {
        return Ok(());
    };
    receiver.stop();
    println!(
        "{}",
        super::otlp::received_summary(&receiver.spans(), receiver.batches())
    );
    Ok(())
}
