//! Running an experiment: start (or find) the server, then for each phase
//! record while the workload (and attack) run, and collect client results.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde::Serialize;

use super::{Phase, Spec};
use crate::{
    capture::{self, RecordOptions, Recording},
    probes,
    server::{self, ApacheOptions, Attack, AttackPlan, ThrowawayApache, WrkPlan, WrkReport},
};

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Cap every phase at this length (tests run experiments in seconds).
    pub max_phase: Option<Duration>,
    pub force: bool,
    /// How to attach (the same for every phase).
    pub plan: capture::AttachPlan,
}

/// What one phase did, client and tracer side.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    pub name: String,
    pub trace: PathBuf,
    pub duration_s: f64,
    pub wrk: Option<WrkReport>,
    /// Why wrk produced no report, if it did not.
    pub wrk_error: Option<String>,
    pub attack: Option<String>,
    pub events: u64,
    pub lost: u64,
    /// How the phase's uprobes were attached (`uprobe_multi`, `perf`).
    pub attach_mode: String,
}

enum Server {
    Throwaway(ThrowawayApache),
    Existing {
        pid: u32,
        addr: SocketAddr,
        path: String,
    },
    Started {
        child: Child,
        addr: SocketAddr,
        path: String,
    },
}

impl Server {
    fn pid(&self) -> u32 {
        match self {
            Server::Throwaway(a) => a.pid(),
            Server::Existing { pid, .. } => *pid,
            Server::Started { child, .. } => child.id(),
        }
    }

    fn target(&self) -> (SocketAddr, String) {
        match self {
            Server::Throwaway(a) => (a.addr(), server::INDEX_PATH.into()),
            Server::Existing { addr, path, .. } | Server::Started { addr, path, .. } => {
                (*addr, path.clone())
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Server::Started { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `http://127.0.0.1:PORT/PATH` -> loopback address and path.
fn parse_url(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("`{url}`: only http:// URLs"))?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let addr: SocketAddr = host
        .parse()
        .with_context(|| format!("`{url}`: give an IP:PORT host, e.g. 127.0.0.1:8080"))?;
    if !addr.ip().is_loopback() {
        bail!("`{url}`: experiments send traffic to loopback addresses only");
    }
    Ok((addr, path))
}

fn start_server(spec: &Spec) -> anyhow::Result<Server> {
    let s = &spec.server;
    match (s.pid, &s.command) {
        (Some(pid), _) => {
            let (addr, path) = parse_url(s.url.as_deref().context("server.pid needs server.url")?)?;
            if !capture::is_alive(pid) {
                bail!("no process with PID {pid}");
            }
            Ok(Server::Existing { pid, addr, path })
        }
        (None, Some(cmd)) => {
            let (addr, path) = parse_url(
                s.url
                    .as_deref()
                    .context("server.command needs server.url")?,
            )?;
            let (prog, args) = cmd.split_first().context("server.command is empty")?;
            let child = Command::new(prog)
                .args(args)
                .stdin(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {prog}"))?;
            std::thread::sleep(Duration::from_secs(2));
            Ok(Server::Started { child, addr, path })
        }
        (None, None) => {
            let opts = ApacheOptions {
                mpm: s.mpm,
                extra_config: s.config.clone(),
                ..Default::default()
            };
            Ok(Server::Throwaway(ThrowawayApache::start(&opts)?))
        }
    }
}

/// Runs `spec`, writing one trace per phase into `dir`. Progress goes to
/// stderr as phases run.
pub fn run(spec: &Spec, dir: &Path, opts: &RunOptions) -> anyhow::Result<Vec<PhaseResult>> {
    capture::check_privileges(("experiment", spec.server.pid, opts.plan.mode))?;
    prepare_dir(dir, opts.force)?;
    let server = start_server(spec)?;
    let (addr, path) = server.target();
    eprintln!(
        "Server PID {} on http://{addr}{path} ({:?} MPM)",
        server.pid(),
        spec.server.mpm
    );
    let mut requests = Vec::new();
    for p in &spec.profile {
        requests.extend(probes::profile_requests(p)?);
    }
    let resolved = probes::resolve(
        server.pid(),
        &requests,
        Path::new(crate::symbols::DEBUG_ROOT),
    )?;
    let mechanism = capture::attach_mechanism(&opts.plan, resolved.len())?;
    eprintln!(
        "Probes: {} functions, attach mode: {mechanism}",
        resolved.len()
    );
    let mut results = Vec::new();
    for (i, phase) in spec.phases.iter().enumerate() {
        let duration = opts
            .max_phase
            .map_or(phase.duration, |m| phase.duration.min(m));
        eprintln!(
            "[{}/{}] phase {}: {:.0} s of {}",
            i + 1,
            spec.phases.len(),
            phase.name,
            duration.as_secs_f64(),
            describe(phase)
        );
        let trace = dir.join(format!("{}.flowdar", phase.name));
        let target = Target {
            pid: server.pid(),
            addr,
            path: &path,
            probes: &resolved,
            plan: opts.plan,
        };
        results.push(run_phase(&target, phase, duration, &trace)?);
        let r = results.last().expect("pushed");
        eprintln!(
            "      {} events recorded, {} lost (attach mode: {}); client: {}",
            r.events,
            r.lost,
            r.attach_mode,
            r.wrk.as_ref().map_or_else(
                || r.wrk_error.clone().unwrap_or_else(|| "no load".into()),
                |w| format!(
                    "{:.0} req/s, p99 {}, {} errors",
                    w.requests_per_sec,
                    w.latency_p99_us
                        .map_or("-".into(), |v| format!("{:.1} ms", v / 1e3)),
                    w.errors
                )
            )
        );
    }
    Ok(results)
}

fn describe(p: &Phase) -> String {
    let load = p.load.as_ref().map_or("no load".into(), |l| {
        format!("wrk -t{} -c{}", l.threads, l.connections)
    });
    match &p.attack {
        Some(a) => format!(
            "{load} plus slowhttptest ({:?}, {} connections at {}/s)",
            a.mode, a.connections, a.rate
        ),
        None => load,
    }
}

fn prepare_dir(dir: &Path, force: bool) -> anyhow::Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() && !force {
        bail!(
            "{} exists and is not empty (pass --force to write into it)",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// The server every phase drives and records, and how.
struct Target<'a> {
    pid: u32,
    addr: SocketAddr,
    path: &'a str,
    probes: &'a [probes::ResolvedProbe],
    plan: capture::AttachPlan,
}

fn run_phase(
    target: &Target<'_>,
    phase: &Phase,
    duration: Duration,
    trace: &Path,
) -> anyhow::Result<PhaseResult> {
    let &Target {
        pid,
        addr,
        path,
        probes,
        plan,
    } = target;
    let started = Instant::now();
    let recording = Recording::start(RecordOptions {
        pid,
        probes: probes.to_vec(),
        output: trace.to_path_buf(),
        force: true,
        ring_bytes: 16 << 20,
        buffer_bytes: 256 << 20,
        command_line: std::env::args().collect(),
        plan,
        bpf_stats: false,
    })?;
    let mut attack = None;
    let mut load_time = duration;
    if let Some(a) = &phase.attack {
        let ramp = a.ramp.min(duration / 2);
        let plan = AttackPlan {
            mode: a.mode,
            connections: a.connections,
            rate: a.rate,
            interval: a.interval,
            duration,
        };
        let running = Attack::start(addr, path, &plan)
            .context("starting slowhttptest (Debian's package; `cargo xtask setup` installs it)")?;
        attack = Some((running.command.clone(), running));
        std::thread::sleep(ramp);
        load_time = duration - ramp;
    }
    let (wrk, wrk_error) = match &phase.load {
        Some(l) => {
            let plan = WrkPlan {
                threads: l.threads,
                connections: l.connections,
                duration: load_time,
                path: path.into(),
            };
            match server::run_wrk(addr, &plan) {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(e.to_string())),
            }
        }
        None => {
            std::thread::sleep(load_time);
            (None, None)
        }
    };
    // Stop recording while the attack still holds its connections: the
    // calls it keeps stuck are the signal, recorded as in flight.
    let summary = recording.stop(&format!("phase {} over", phase.name))?;
    let attack_cmd = attack.map(|(cmd, mut a)| {
        a.stop();
        cmd
    });
    if attack_cmd.is_some() {
        // Let the server release the attack's connections before what follows.
        std::thread::sleep(Duration::from_secs(2));
    }
    Ok(PhaseResult {
        name: phase.name.clone(),
        trace: trace.to_path_buf(),
        duration_s: started.elapsed().as_secs_f64(),
        wrk,
        wrk_error,
        attack: attack_cmd,
        events: summary.counts.events(),
        lost: summary.total_kernel_drops() + summary.total_user_drops(),
        attach_mode: summary.mechanism.to_string(),
    })
}
