//! Running an experiment: the lab (client and attacker hosts), then per
//! variant a server, and per phase a recording while the legitimate client
//! (and the attack) run; client and tracer results are collected.
use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde::Serialize;

use super::{
    setup::{check_spec, setup_hosts, start_server, Server},
    Phase, Spec,
};
use crate::{
    capture::{self, RecordOptions, Recording},
    probes,
    server::{self, Attack, AttackPlan, ClientPlan, ClientReport, Host, Lab, Targets},
};

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Cap every phase at this length (tests run experiments in seconds).
    pub max_phase: Option<Duration>,
    pub force: bool,
    /// How to attach (the same for every phase).
    pub plan: capture::AttachPlan,
    /// Networks beyond loopback and the lab that traffic may go to.
    pub allow_targets: Vec<ipnet::IpNet>,
    /// Zoom in below the first variant's most affected function.
    pub zoom: Option<super::zoom::ZoomOptions>,
}

/// What one phase did, client and tracer side.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    pub name: String,
    pub trace: PathBuf,
    pub duration_s: f64,
    pub client: Option<ClientReport>,
    /// Why the client produced no report, if it did not.
    pub client_error: Option<String>,
    pub attack: Option<String>,
    pub events: u64,
    pub lost: u64,
    /// How the phase's uprobes were attached (`uprobe_multi`, `perf`).
    pub attach_mode: String,
}

/// One variant's run: its server settings and its phases.
#[derive(Debug, Clone, Serialize)]
pub struct VariantResult {
    pub name: String,
    pub config: String,
    pub server_pid: u32,
    /// The normal load once more with nothing attached: what the phases'
    /// throughput is measured against to state the observer effect.
    pub untraced: Option<Untraced>,
    pub phases: Vec<PhaseResult>,
}

/// The untraced run of the normal load (first phase with a load and no
/// attack), same client settings and length, no probe attached.
#[derive(Debug, Clone, Serialize)]
pub struct Untraced {
    /// The phase whose load it repeats.
    pub phase: String,
    pub client: Option<ClientReport>,
    pub client_error: Option<String>,
}

impl VariantResult {
    /// Traced throughput of `phase` over the untraced run's, when both exist.
    pub fn throughput_ratio(&self, phase: &PhaseResult) -> Option<f64> {
        let untraced = self.untraced.as_ref()?.client.as_ref()?.requests_per_s;
        let traced = phase.client.as_ref()?.requests_per_s;
        (untraced > 0.0).then(|| traced / untraced)
    }
}

/// Who sent what to where.
#[derive(Debug, Clone, Serialize)]
pub struct Hosts {
    /// The address the client and the attacker sent to.
    pub server: SocketAddr,
    /// The legitimate client's address and namespace (None: this host).
    pub client: Option<(IpAddr, String)>,
    pub attacker: Option<(IpAddr, String)>,
    /// Why clients ran on this host, when the lab was asked for.
    pub note: Option<String>,
}

/// Everything the report needs.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub variants: Vec<VariantResult>,
    pub hosts: Hosts,
    /// The first variant's zoom, when asked for.
    pub zoom: Option<super::zoom::Zoom>,
}

/// What an experiment is doing, as it goes: the caller decides where it
/// goes (the CLI prints each on stderr, as its `Display` reads).
pub enum Progress<'a> {
    /// Where clients, attacker and server are (or why clients run here).
    Hosts(String),
    /// A variant's server is up.
    Variant {
        name: &'a str,
        pid: u32,
        url: String,
        /// ` (throwaway Apache, Event MPM)` or empty.
        server: String,
        /// The variant's extra server settings, on one line.
        config: &'a str,
    },
    /// The probes resolved for this variant's server.
    Probes {
        functions: usize,
        mechanism: String,
    },
    PhaseStart {
        variant: &'a str,
        index: usize,
        of: usize,
        phase: &'a Phase,
        duration: Duration,
        lab: Option<&'a Lab>,
    },
    PhaseDone(&'a PhaseResult),
    /// The untraced run of the normal load starts.
    UntracedStart {
        variant: &'a str,
        phase: &'a str,
        duration: Duration,
    },
    UntracedDone(&'a Untraced),
    /// The zoom's discovery window opens with this many functions.
    Discovery {
        functions: usize,
        window: Duration,
        under: &'a str,
    },
    DiscoveryDone(&'a super::zoom::Discovery),
    /// A zoom level probes `functions` at and below `tail`.
    ZoomLevel {
        level: usize,
        tail: &'a str,
        functions: usize,
        dropped: usize,
    },
}

impl std::fmt::Display for Progress<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hosts(s) => write!(f, "Lab: {s}"),
            Self::Variant {
                name,
                pid,
                url,
                server,
                config,
            } => {
                write!(f, "Variant {name}: server PID {pid} on {url}{server}")?;
                let config = config.trim();
                if !config.is_empty() {
                    write!(f, ", with: {}", config.replace('\n', "; "))?;
                }
                Ok(())
            }
            Self::Probes {
                functions,
                mechanism,
            } => write!(f, "Probes: {functions} functions, attach mode: {mechanism}"),
            Self::PhaseStart {
                variant,
                index,
                of,
                phase,
                duration,
                lab,
            } => write!(
                f,
                "[{variant} {}/{of}] phase {}: {:.0} s of {}",
                index + 1,
                phase.name,
                duration.as_secs_f64(),
                describe(phase, *lab)
            ),
            Self::PhaseDone(r) => write!(f, "      {}", progress_line(r)),
            Self::UntracedStart {
                variant,
                phase,
                duration,
            } => write!(
                f,
                "[{variant} untraced] the load of phase {phase} again, {:.0} s, nothing attached (the observer effect's baseline)",
                duration.as_secs_f64()
            ),
            Self::Discovery {
                functions,
                window,
                under,
            } => write!(
                f,
                "[zoom] discovery: {functions} functions ({}) for {:.1} s under {under}",
                super::zoom::DISCOVERY_PROFILE,
                window.as_secs_f64()
            ),
            Self::DiscoveryDone(d) => write!(
                f,
                "      {}{:.2} s of degraded service (attach {:.2} s, detach {:.2} s)",
                d.requests_per_s
                    .map_or(String::new(), |r| format!("{r:.0} req/s in the window; ")),
                d.degraded_s,
                d.attach_s,
                d.detach_s
            ),
            Self::ZoomLevel {
                level,
                tail,
                functions,
                dropped,
            } => write!(
                f,
                "[zoom {level}] {functions} functions below `{tail}` ({dropped} left out for the budget)"
            ),
            Self::UntracedDone(u) => write!(
                f,
                "      client: {}",
                client_line(u.client.as_ref(), u.client_error.as_deref())
            ),
        }
    }
}

/// Runs `spec`, writing one trace per variant and phase into
/// `dir/VARIANT/PHASE.flowdar`, and tells `progress` what it does.
pub fn run(
    spec: &Spec,
    dir: &Path,
    opts: &RunOptions,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> anyhow::Result<Outcome> {
    capture::check_privileges(("experiment", spec.server.pid, opts.plan.mode))?;
    if opts.zoom.is_some() {
        // Refused now rather than after the phases: the discovery windows
        // attach thousands of functions.
        let mechanism = capture::kernel_features().mechanism(opts.plan.mode)?;
        if mechanism == capture::Mechanism::PerfEvent && !opts.plan.slow_detach_ok {
            anyhow::bail!(
                "--zoom needs uprobe_multi links (Linux 6.6+, and not --attach-mode perf): its discovery windows attach {} (~1400 functions), which perf-event uprobes take minutes to detach",
                super::zoom::DISCOVERY_PROFILE
            );
        }
    }
    let url = check_spec(spec)?;
    if let Some((addr, _)) = &url {
        Targets {
            allowed: opts.allow_targets.clone(),
            lab: vec![],
        }
        .check(addr.ip())?;
    }
    prepare_dir(dir, opts.force)?;
    let (lab, note) = setup_hosts(spec, &url)?;
    let targets = Targets {
        allowed: opts.allow_targets.clone(),
        lab: lab.iter().map(|l| IpAddr::from(l.server)).collect(),
    };
    if let Some(l) = &lab {
        progress(&Progress::Hosts(format!(
            "client {} ({}), attacker {} ({}), server address {} (root namespace)",
            l.client.addr, l.client.netns, l.attacker.addr, l.attacker.netns, l.server
        )));
    }
    if let Some(n) = &note {
        progress(&Progress::Hosts(n.clone()));
    }
    let variants = spec.variants();
    let mut results = Vec::new();
    let mut zoom = None;
    let mut server_addr = None;
    for variant in &variants {
        let server = start_server(spec, variant, lab.as_ref().map(|l| l.server.into()))?;
        let (addr, path) = match (&server, &url) {
            (Server::Throwaway(a), _) => (a.addr(), server::INDEX_PATH.to_string()),
            (_, Some((addr, path))) => (*addr, path.clone()),
            _ => unreachable!("check_spec requires a url for pid/command servers"),
        };
        let addr = lab
            .as_ref()
            .map_or(addr, |l| SocketAddr::new(l.server.into(), addr.port()));
        server_addr = Some(addr);
        progress(&Progress::Variant {
            name: &variant.name,
            pid: server.pid(),
            url: format!("http://{addr}{path}"),
            server: match server {
                Server::Throwaway(_) => format!(" (throwaway Apache, {:?} MPM)", spec.server.mpm),
                _ => String::new(),
            },
            config: &variant.config,
        });
        let vdir = dir.join(&variant.name);
        std::fs::create_dir_all(&vdir).with_context(|| format!("creating {}", vdir.display()))?;
        let mut requests = Vec::new();
        for p in &spec.profile {
            requests.extend(probes::profile_requests(p)?);
        }
        for p in &spec.probe {
            requests.push(
                p.parse::<probes::ProbeRequest>()
                    .map_err(|e| anyhow::anyhow!("probe `{p}`: {e}"))?,
            );
        }
        let resolved = probes::resolve(
            server.pid(),
            &requests,
            Path::new(crate::symbols::DEBUG_ROOT),
        )?;
        let mechanism = capture::attach_mechanism(&opts.plan, resolved.len())?;
        progress(&Progress::Probes {
            functions: resolved.len(),
            mechanism: mechanism.to_string(),
        });
        let large = matches!(server, Server::Throwaway(_));
        let target = Target {
            pid: server.pid(),
            addr,
            path: &path,
            large_path: large.then_some(server::LARGE_PATH),
            probes: &resolved,
            plan: opts.plan,
            lab: lab.as_ref(),
            targets: &targets,
        };
        let normal = spec
            .phases
            .iter()
            .find(|p| p.attack.is_none() && p.load.is_some());
        let untraced = match normal {
            Some(phase) => {
                let duration = opts
                    .max_phase
                    .map_or(phase.duration, |m| phase.duration.min(m));
                progress(&Progress::UntracedStart {
                    variant: &variant.name,
                    phase: &phase.name,
                    duration,
                });
                let u = run_untraced(&target, phase, duration)?;
                progress(&Progress::UntracedDone(&u));
                Some(u)
            }
            None => None,
        };
        let mut phases = Vec::new();
        for (i, phase) in spec.phases.iter().enumerate() {
            let duration = opts
                .max_phase
                .map_or(phase.duration, |m| phase.duration.min(m));
            progress(&Progress::PhaseStart {
                variant: &variant.name,
                index: i,
                of: spec.phases.len(),
                phase,
                duration,
                lab: lab.as_ref(),
            });
            let trace = vdir.join(format!("{}.flowdar", phase.name));
            let r = run_phase(&target, phase, duration, &trace)?;
            progress(&Progress::PhaseDone(&r));
            phases.push(r);
        }
        if let (Some(z), true) = (&opts.zoom, results.is_empty()) {
            let capped = |p: &Phase| opts.max_phase.map_or(p.duration, |m| p.duration.min(m));
            let (first, last) = (&spec.phases[0], spec.phases.last().context("no phases")?);
            let ground = super::zoom::Ground {
                target,
                normal: (first, &phases[0]),
                attack: (last, phases.last().context("no phases")?),
                untraced_rps: untraced
                    .as_ref()
                    .and_then(|u| u.client.as_ref())
                    .map(|c| c.requests_per_s),
                durations: (capped(first), capped(last)),
            };
            zoom = Some(super::zoom::run(&ground, &vdir.join("zoom"), z, progress)?);
        }
        results.push(VariantResult {
            name: variant.name.clone(),
            config: variant.config.clone(),
            server_pid: server.pid(),
            untraced,
            phases,
        });
    }
    let hosts = Hosts {
        server: server_addr.context("no variants")?,
        client: lab
            .as_ref()
            .map(|l| (l.client.addr.into(), l.client.netns.clone())),
        attacker: lab
            .as_ref()
            .map(|l| (l.attacker.addr.into(), l.attacker.netns.clone())),
        note,
    };
    drop(lab);
    Ok(Outcome {
        variants: results,
        hosts,
        zoom,
    })
}

fn progress_line(r: &PhaseResult) -> String {
    format!(
        "{} events recorded, {} lost (attach mode: {}); client: {}",
        r.events,
        r.lost,
        r.attach_mode,
        client_line(r.client.as_ref(), r.client_error.as_deref())
    )
}

fn client_line(client: Option<&ClientReport>, error: Option<&str>) -> String {
    client.map_or_else(
        || error.unwrap_or("no load").to_string(),
        |c| {
            format!(
                "{:.0} req/s over {:.0} s, p99 {}, {} connect and {} request failures",
                c.requests_per_s,
                c.wall_s,
                c.p99_ns.map_or("-".into(), crate::units::ns),
                c.connect_failures,
                c.request_failures
            )
        },
    )
}

/// The legitimate client's load for `duration`: its report, or why none.
pub(super) fn drive_client(
    target: &Target<'_>,
    load: &super::spec::Load,
    duration: Duration,
) -> anyhow::Result<(Option<ClientReport>, Option<String>)> {
    let plan = ClientPlan {
        connections: load.connections,
        duration,
        timeout: load.timeout,
        path: load.path.clone().unwrap_or_else(|| target.path.into()),
    };
    target.targets.check(target.addr.ip())?;
    Ok(
        match server::run_client(target.addr, &plan, target.lab.map(|l| &l.client)) {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(crate::errors::chain(&e))),
        },
    )
}

/// The load of `phase` with nothing attached and no attack.
fn run_untraced(
    target: &Target<'_>,
    phase: &Phase,
    duration: Duration,
) -> anyhow::Result<Untraced> {
    let load = phase.load.as_ref().expect("chosen for its load");
    let (client, client_error) = drive_client(target, load, duration)?;
    Ok(Untraced {
        phase: phase.name.clone(),
        client,
        client_error,
    })
}

fn describe(p: &Phase, lab: Option<&Lab>) -> String {
    let from = |h: Option<&Host>| h.map_or(String::new(), |h| format!(" from {}", h.addr));
    let load = p.load.as_ref().map_or("no load".into(), |l| {
        format!(
            "{} client connections{}",
            l.connections,
            from(lab.map(|l| &l.client))
        )
    });
    match &p.attack {
        Some(a) => format!(
            "{load} plus slowhttptest ({:?}, {} connections at {}/s{})",
            a.mode,
            a.connections,
            a.rate,
            from(lab.map(|l| &l.attacker))
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
#[derive(Clone, Copy)]
pub(super) struct Target<'a> {
    pub pid: u32,
    pub addr: SocketAddr,
    pub path: &'a str,
    /// The throwaway Apache's large file (slow read, range attacks).
    pub large_path: Option<&'a str>,
    pub probes: &'a [probes::ResolvedProbe],
    pub plan: capture::AttachPlan,
    pub lab: Option<&'a Lab>,
    pub targets: &'a Targets,
}

/// Starts the attack `a` on the target for `duration` (from the attacker's
/// host when there is a lab).
pub(super) fn start_attack(
    target: &Target<'_>,
    a: &super::spec::AttackSpec,
    duration: Duration,
) -> anyhow::Result<Attack> {
    let plan = AttackPlan {
        mode: a.mode,
        connections: a.connections,
        rate: a.rate,
        interval: a.interval,
        duration,
    };
    let path = a.path.as_deref().unwrap_or(match target.large_path {
        Some(large) if a.mode.wants_large_response() => large,
        _ => target.path,
    });
    Ok(Attack::start(
        target.addr,
        path,
        &plan,
        target.lab.map(|l| &l.attacker),
        target.targets,
    )?)
}

pub(super) fn run_phase(
    target: &Target<'_>,
    phase: &Phase,
    duration: Duration,
    trace: &Path,
) -> anyhow::Result<PhaseResult> {
    let started = Instant::now();
    let recording = Recording::start(RecordOptions {
        pid: target.pid,
        probes: target.probes.to_vec(),
        output: trace.to_path_buf(),
        force: true,
        plan: target.plan,
        ..Default::default()
    })?;
    let mut attack = None;
    let mut load_time = duration;
    if let Some(a) = &phase.attack {
        let ramp = a.ramp.min(duration / 2);
        attack = Some(start_attack(target, a, duration)?);
        std::thread::sleep(ramp);
        load_time = duration - ramp;
    }
    let (client, client_error) = match &phase.load {
        Some(l) => drive_client(target, l, load_time)?,
        None => {
            std::thread::sleep(load_time);
            (None, None)
        }
    };
    // Stop recording while the attack still holds its connections: the
    // calls it keeps stuck are the signal, recorded as in flight.
    let summary = recording.stop(&format!("phase {} over", phase.name))?;
    let attack_cmd = attack.map(|mut a| {
        a.stop();
        a.command.clone()
    });
    if attack_cmd.is_some() {
        // Let the server release the attack's connections before what follows.
        std::thread::sleep(Duration::from_secs(2));
    }
    Ok(PhaseResult {
        name: phase.name.clone(),
        trace: trace.to_path_buf(),
        duration_s: started.elapsed().as_secs_f64(),
        client,
        client_error,
        attack: attack_cmd,
        events: summary.counts.events(),
        lost: summary.total_kernel_drops() + summary.total_user_drops(),
        attach_mode: summary.mechanism.to_string(),
    })
}
