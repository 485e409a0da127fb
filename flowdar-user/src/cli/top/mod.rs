//! `flowdar top`: a live view of a running server, refreshed every interval,
//! from the same pipeline as `record` (and, with `-o`, the same trace).
mod prometheus;
mod tui;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use clap::Args;

use super::{attach::AttachArgs, record, select::ProbeSelection};
use crate::{
    analysis::{AlertRule, Interval, LiveView},
    capture::{self, monotonic_ns, RecordOptions, Recording},
    probes,
};

/// Watch a running server live: calls/s, mean and p99 per function, each
/// busy worker's phase (reading request, handler, backend, writing
/// response, keep-alive, closing) and for how long, calls in flight by
/// age, the clients holding the workers, and alerts.
///
/// Without --profile, --probes or --probe, it watches `apache:lean`: the
/// server's socket I/O from the kernel's syscall tracepoints and one
/// uprobe a request, the cheapest view that still names the clients and
/// the workers they hold.
///
/// The built-in alert is the slow-HTTP pattern: at least --alert-workers
/// workers blocked reading a request (`ap_read_request`, or with `lean` in
/// read or poll on the client's socket since the request's first read) for
/// longer than --alert-after, with the client addresses holding them.
/// Client addresses need the `lean`, `request` or `connection` set. Press q
/// (or Ctrl-C) to stop.
/// With -o, the same trace as `flowdar record` is written; the figures shown
/// are computed from exactly the events written to it.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    flowdar top --pid $(cat /run/apache2/apache2.pid)\n  \
    flowdar top --pid $(cat /run/apache2/apache2.pid) --profile apache:request\n  \
    flowdar top --pid 1234 --profile apache:request --json --duration 30s > live.jsonl\n  \
    flowdar top --pid 1234 --profile apache:request --prometheus -o t.flowdar")]
pub struct TopArgs {
    /// PID of the server's parent process.
    #[arg(long, short)]
    pub pid: u32,
    #[command(flatten)]
    pub select: ProbeSelection,
    /// Also keep the trace (as `flowdar record -o`).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Overwrite the output file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print one JSON object per interval instead of the terminal view:
    /// {"t", "functions", "workers", "in_flight", "clients", "alerts"}.
    #[arg(long)]
    pub json: bool,
    /// Serve the figures as a Prometheus scrape endpoint (/metrics) at ADDR
    /// (default 127.0.0.1:9464, loopback).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9464")]
    pub prometheus: Option<SocketAddr>,
    /// Refresh interval (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = crate::units::parse_wall_duration)]
    pub interval: Duration,
    /// Stop after this long.
    #[arg(long, short, value_parser = crate::units::parse_wall_duration)]
    pub duration: Option<Duration>,
    /// The slow-HTTP alert fires when at least this many workers...
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub alert_workers: usize,
    /// ...have been reading one request for longer than this.
    #[arg(long, default_value = "5s", value_name = "T", value_parser = crate::units::parse_wall_duration)]
    pub alert_after: Duration,
    #[command(flatten)]
    pub attach: AttachArgs,
    #[command(flatten)]
    pub otlp: super::otlp::LiveOtlpArgs,
}

/// What `top` watches when nothing is chosen.
pub const DEFAULT_PROFILE: &str = "apache:lean";
/// ...plus the TLS handshakes (one SSL_accept a connection) when the
/// server has OpenSSL mapped (mod_ssl): workers held in a handshake are an
/// alert of their own.
const DEFAULT_PROFILE_TLS: &str = "apache:lean,handshake";

/// The default profile for the server `pid`.
fn default_profile(pid: u32) -> &'static str {
    let tls = probes::ProcMaps::read(pid).is_ok_and(|m| m.find("libssl").is_ok());
    if tls {
        DEFAULT_PROFILE_TLS
    } else {
        DEFAULT_PROFILE
    }
}

pub fn run(args: TopArgs) -> anyhow::Result<()> {
    if !args.json && !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        bail!("flowdar top draws on a terminal; use --json for a pipe or a file");
    }
    let select = args.select.clone().or_profile(default_profile(args.pid));
    let requests = select.requests()?;
    capture::check_privileges(("top", Some(args.pid), args.attach.plan(false).mode))?;
    capture::kernel_features().check_required()?;
    if !capture::is_alive(args.pid) {
        bail!("no process with PID {}", args.pid);
    }
    select.check_server(args.pid)?;
    // Without -o the trace goes to a temporary file, removed at the end.
    let scratch = tempfile::Builder::new()
        .prefix("flowdar-top-")
        .tempdir()
        .context("creating a temporary directory")?;
    let output = match &args.output {
        Some(p) => {
            record::check_output(p, args.force)?;
            p.clone()
        }
        None => scratch.path().join("live.flowdar"),
    };
    let (probes, _) = probes::resolve_with_targets(args.pid, &requests, &args.select.debug_dir)?;
    let table: Vec<crate::store::TraceProbe> =
        probes.iter().map(|p| p.trace_probe().clone()).collect();
    let metrics = match args.prometheus {
        Some(addr) => {
            let e = prometheus::Exporter::serve(addr, &table)?;
            eprintln!("Prometheus metrics at http://{}/metrics", e.addr);
            Some(e)
        }
        None => None,
    };
    let rule = AlertRule {
        workers: args.alert_workers.max(1),
        after_ns: args.alert_after.as_nanos() as u64,
    };
    let opts = RecordOptions {
        pid: args.pid,
        probes: probes.clone(),
        output,
        force: args.force,
        plan: args.attach.plan(false),
        ..Default::default()
    };
    let trace_path = opts.output.clone();
    let (otlp_tap, live) = match args.otlp.prepare(args.pid, &trace_path, &table)? {
        Some(plan) => {
            let (tap, live) = crate::otlp::LiveExport::start(plan)?;
            (Some(tap), Some(live))
        }
        None => (None, None),
    };
    let (tap, events) = mpsc::channel();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut signals = super::signals::StopSignals::install()?;
        let recording =
            tokio::task::spawn_blocking(move || Recording::start_with_tap(opts, Some(tap)))
                .await??;
        let mut view = LiveView::new(&table, rule, monotonic_ns());
        // Workers an attack already holds: their calls began before
        // attach, so only the kernel's socket view shows them.
        view.set_blocked(blocked_workers(args.pid));
        let mut screen = if args.json {
            None
        } else {
            Some(tui::Screen::enter(args.pid, recording.mechanism().name())?)
        };
        let mut out = Output {
            json: args.json,
            metrics: metrics.as_ref(),
        };
        let started = Instant::now();
        let mut next = started + args.interval;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let reason = loop {
            tokio::select! {
                why = signals.recv() => break why,
                _ = tick.tick() => {}
            }
            while let Ok(batch) = events.try_recv() {
                batch.iter().for_each(|e| view.push(e));
                if let Some(t) = &otlp_tap {
                    let _ = t.send(batch);
                }
            }
            if let Some(s) = screen.as_mut() {
                if s.quit_requested()? {
                    break "quit";
                }
            }
            if args.duration.is_some_and(|d| started.elapsed() >= d) {
                break "duration reached";
            }
            if !capture::is_alive(args.pid) {
                break "target exited";
            }
            if Instant::now() >= next {
                next += args.interval;
                view.forget_dead(capture::is_alive);
                if view.wants_blocked() {
                    view.set_blocked(blocked_workers(args.pid));
                }
                out.show(&view.snapshot(monotonic_ns()), screen.as_mut())?;
            }
        };
        // The last view's ages are those of the moment the stop began:
        // detaching takes a second or more, and a worker whose request
        // began just before the syscalls stopped would age in its handler.
        let stopping_ns = monotonic_ns();
        let summary = tokio::task::spawn_blocking(move || recording.stop(reason)).await??;
        // The writer is done: every batch it wrote is in the channel.
        for batch in events.iter() {
            batch.iter().for_each(|e| view.push(e));
            if let Some(t) = &otlp_tap {
                let _ = t.send(batch);
            }
        }
        drop(otlp_tap);
        let last = view.snapshot_at(monotonic_ns(), stopping_ns);
        if let Some(s) = screen.take() {
            s.leave()?;
            print!("{}", tui::as_text(&last));
        }
        out.show(&last, None)?;
        let lost = summary.total_kernel_drops() + summary.total_user_drops();
        eprintln!(
            "Stopped ({reason}) after {:.1} s: {} events, {lost} lost{}.",
            summary.duration.as_secs_f64(),
            summary.counts.events(),
            match &args.output {
                Some(p) => format!("; trace in {}", p.display()),
                None => String::new(),
            }
        );
        // As `record` ends: attach and detach, what was open at attach, the
        // estimated overhead (stderr: stdout holds the last view).
        for line in record::attach_and_cost(&summary) {
            eprintln!("{line}");
        }
        if let Some(live) = live {
            let url = live.url().to_string();
            eprintln!("Sending the last spans to {url}...");
            eprintln!("{}", super::otlp::live_line(&url, &live.finish()));
        }
        anyhow::Ok(())
    })
}

/// Where each interval goes.
struct Output<'a> {
    json: bool,
    metrics: Option<&'a prometheus::Exporter>,
}

impl Output<'_> {
    fn show(&mut self, i: &Interval, screen: Option<&mut tui::Screen>) -> anyhow::Result<()> {
        if let Some(m) = self.metrics {
            m.update(i);
        }
        if self.json {
            println!("{}", serde_json::to_string(i)?);
        } else if let Some(s) = screen {
            s.draw(i)?;
        }
        Ok(())
    }
}

/// The workers of `pid`'s tree blocked on a client's socket now, as the
/// live view takes them.
fn blocked_workers(pid: u32) -> Vec<crate::analysis::BlockedWorker> {
    capture::blocked_on_sockets(pid)
        .into_iter()
        .map(|b| crate::analysis::BlockedWorker {
            pid: b.pid,
            tid: b.tid,
            peer: b.peer,
            reading: b.reading,
        })
        .collect()
}
