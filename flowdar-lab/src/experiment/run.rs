//! Running an experiment: the lab (client and attacker hosts), then per
//! variant a server, its untraced baseline and its phases (`phase`), and
//! the zoom below the first variant's most affected function (`zoom`).
//! Each step is a function of its own: [`refuse_early`], [`setup_hosts`],
//! then per variant [`start_variant`], [`run_untraced`], [`run_phases`]
//! and [`zoom_first`].
use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use super::{
    error::{create_dir, ExperimentError, Result},
    phase::{run_phase, run_untraced_load, Target},
    progress::Progress,
    results::{Hosts, Outcome, PhaseResult, Untraced, VariantResult, Zoom},
    setup::{check_spec, setup_hosts, start_server, Server},
    Phase, Spec, Variant,
};
use crate::{
    server::{self, Lab, Targets},
    tracer::{Selection, Tracer},
};

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Cap every phase at this length (tests run experiments in seconds).
    pub max_phase: Option<Duration>,
    pub force: bool,
    /// Networks beyond loopback and the lab that traffic may go to.
    pub allow_targets: Vec<ipnet::IpNet>,
    /// Zoom in below the first variant's most affected function.
    pub zoom: Option<super::zoom::ZoomOptions>,
}

/// What every variant shares: the spec, the options, where traffic goes
/// and who records.
struct Context<'a> {
    spec: &'a Spec,
    opts: &'a RunOptions,
    tracer: &'a dyn Tracer,
    url: Option<(SocketAddr, String)>,
    lab: Option<Lab>,
    targets: Targets,
}

impl Context<'_> {
    fn capped(&self, p: &Phase) -> Duration {
        self.opts
            .max_phase
            .map_or(p.duration, |m| p.duration.min(m))
    }
}

/// Runs `spec`, writing one trace per variant and phase into
/// `dir/VARIANT/PHASE.flowdar` (recorded by `tracer`), and tells
/// `progress` what it does.
pub fn run(
    spec: &Spec,
    dir: &Path,
    opts: &RunOptions,
    tracer: &dyn Tracer,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<Outcome> {
    let url = refuse_early(spec, opts, tracer)?;
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
    let cx = Context {
        spec,
        opts,
        tracer,
        url,
        lab,
        targets,
    };
    let mut results = Vec::new();
    let mut zoom = None;
    let mut zoom_error = None;
    let mut server_addr = None;
    for variant in &spec.variants() {
        let (server, addr, path) = start_variant(&cx, variant, progress)?;
        let vdir = dir.join(&variant.name);
        create_dir(&vdir)?;
        server_addr = Some(addr);
        let probes = resolve_probes(&cx, server.pid(), progress)?;
        let target = Target {
            pid: server.pid(),
            addr,
            path: &path,
            large_path: matches!(server, Server::Throwaway(_)).then_some(server::LARGE_PATH),
            probes: &probes,
            tracer,
            lab: cx.lab.as_ref(),
            targets: &cx.targets,
        };
        let untraced = run_untraced(&cx, &target, &variant.name, progress)?;
        let phases = run_phases(&cx, &target, &variant.name, &vdir, progress)?;
        if let (Some(z), true) = (&opts.zoom, results.is_empty()) {
            // The phases ran: a zoom that fails still leaves their report.
            match zoom_first(&cx, z, target, &phases, untraced.as_ref(), &vdir, progress) {
                Ok(done) => zoom = Some(done),
                Err(e) => zoom_error = Some(crate::one_line(&e)),
            }
        }
        results.push(VariantResult {
            name: variant.name.clone(),
            config: variant.config.clone(),
            server_pid: server.pid(),
            untraced,
            phases,
        });
    }
    let lab = cx.lab.as_ref();
    let hosts = Hosts {
        server: server_addr.ok_or_else(|| ExperimentError::Refused("no variants".into()))?,
        client: lab.map(|l| (l.client.addr.into(), l.client.netns.clone())),
        attacker: lab.map(|l| (l.attacker.addr.into(), l.attacker.netns.clone())),
        note,
    };
    Ok(Outcome {
        variants: results,
        hosts,
        zoom,
        zoom_error,
    })
}

/// Refuses, before anything runs, what the tracer, the spec or the options
/// cannot do; the user's server's URL when it has one.
fn refuse_early(
    spec: &Spec,
    opts: &RunOptions,
    tracer: &dyn Tracer,
) -> Result<Option<(SocketAddr, String)>> {
    tracer.check(spec.server.pid)?;
    if opts.zoom.is_some() {
        check_zoom(spec, tracer)?;
    }
    let url = check_spec(spec)?;
    if let Some((addr, _)) = &url {
        Targets {
            allowed: opts.allow_targets.clone(),
            lab: vec![],
        }
        .check(addr.ip())?;
    }
    Ok(url)
}

/// What `--zoom` needs: quick wide sets (refused now rather than after the
/// phases: the discovery windows attach thousands of functions), a normal
/// first phase and an attacked last one.
fn check_zoom(spec: &Spec, tracer: &dyn Tracer) -> Result<()> {
    let refuse = |m: String| Err(ExperimentError::Refused(m));
    if !tracer.allows_wide_sets()? {
        return refuse(format!(
            "--zoom needs uprobe_multi links (Linux 6.6+, and not --attach-mode perf): its discovery windows attach {} (~1400 functions), which perf-event uprobes take minutes to detach",
            super::zoom::DISCOVERY_PROFILE
        ));
    }
    match spec.phases.first() {
        Some(first) if first.load.is_some() && first.attack.is_none() => {}
        _ => return refuse("--zoom needs a first phase with a load and no attack (the normal load it measures against)".into()),
    }
    if spec.phases.len() < 2 || spec.phases.last().is_some_and(|p| p.attack.is_none()) {
        return refuse("--zoom needs a last phase with an attack (the one it explains)".into());
    }
    Ok(())
}

/// The variant's server, the address client and attacker send to, and
/// the path they ask for.
fn start_variant(
    cx: &Context<'_>,
    variant: &Variant,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<(Server, SocketAddr, String)> {
    let lab = cx.lab.as_ref();
    let server = start_server(cx.spec, variant, lab.map(|l| l.server.into()))?;
    let (addr, path) = match (&server, &cx.url) {
        // With server.tls the load goes to the TLS port (HTTP/2).
        (Server::Throwaway(a), _) => (
            a.tls_addr().unwrap_or_else(|| a.addr()),
            server::INDEX_PATH.to_string(),
        ),
        (_, Some((addr, path))) => (*addr, path.clone()),
        _ => unreachable!("check_spec requires a url for pid/command servers"),
    };
    let addr = lab.map_or(addr, |l| SocketAddr::new(l.server.into(), addr.port()));
    progress(&Progress::Variant {
        name: &variant.name,
        pid: server.pid(),
        url: format!(
            "{}://{addr}{path}",
            if cx.spec.server.tls { "https" } else { "http" }
        ),
        server: match server {
            Server::Throwaway(_) => format!(" (throwaway Apache, {:?} MPM)", cx.spec.server.mpm),
            _ => String::new(),
        },
        config: &variant.config,
    });
    Ok((server, addr, path))
}

/// The spec's probes in the variant's server, and how they attach.
fn resolve_probes(
    cx: &Context<'_>,
    pid: u32,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<Vec<flowdar_trace::TraceProbe>> {
    let probes = cx.tracer.resolve(
        pid,
        Selection::Named {
            profiles: &cx.spec.profile,
            probes: &cx.spec.probe,
        },
    )?;
    let mechanism = cx.tracer.mechanism(probes.len())?;
    progress(&Progress::Probes {
        functions: probes.len(),
        mechanism,
    });
    Ok(probes)
}

/// The load of the normal phase (the first with a load and no attack)
/// once more, with nothing attached: the observer effect's baseline.
fn run_untraced(
    cx: &Context<'_>,
    target: &Target<'_>,
    variant: &str,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<Option<Untraced>> {
    let normal = cx
        .spec
        .phases
        .iter()
        .find(|p| p.attack.is_none() && p.load.is_some());
    let Some((phase, load)) = normal.and_then(|p| Some((p, p.load.as_ref()?))) else {
        return Ok(None);
    };
    let u = run_untraced_load(target, phase, load, cx.capped(phase), variant, progress)?;
    Ok(Some(u))
}

/// Every phase of the spec, each recorded into `vdir/PHASE.flowdar`.
fn run_phases(
    cx: &Context<'_>,
    target: &Target<'_>,
    variant: &str,
    vdir: &Path,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<Vec<PhaseResult>> {
    let mut phases = Vec::new();
    for (i, phase) in cx.spec.phases.iter().enumerate() {
        let duration = cx.capped(phase);
        progress(&Progress::PhaseStart {
            variant,
            index: i,
            of: cx.spec.phases.len(),
            phase,
            duration,
            lab: cx.lab.as_ref(),
        });
        let trace = vdir.join(format!("{}.flowdar", phase.name));
        let r = run_phase(target, phase, duration, &trace)?;
        progress(&Progress::PhaseDone(&r));
        phases.push(r);
    }
    Ok(phases)
}

/// The zoom below the first variant's most affected function, in
/// `vdir/zoom` (`check_zoom` made sure of a normal first phase and an
/// attacked last one).
fn zoom_first(
    cx: &Context<'_>,
    z: &super::zoom::ZoomOptions,
    target: Target<'_>,
    phases: &[PhaseResult],
    untraced: Option<&Untraced>,
    vdir: &Path,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<Zoom> {
    let no_phases = || ExperimentError::Refused("no phases".into());
    let first = cx.spec.phases.first().ok_or_else(no_phases)?;
    let last = cx.spec.phases.last().ok_or_else(no_phases)?;
    let ground = super::zoom::Ground {
        target,
        normal: (first, phases.first().ok_or_else(no_phases)?),
        attack: (last, phases.last().ok_or_else(no_phases)?),
        untraced_rps: untraced
            .and_then(|u| u.client.as_ref())
            .map(|c| c.requests_per_s),
        durations: (cx.capped(first), cx.capped(last)),
    };
    super::zoom::run(&ground, &vdir.join("zoom"), z, progress)
}

fn prepare_dir(dir: &Path, force: bool) -> Result<()> {
    let not_empty = match std::fs::read_dir(dir) {
        Ok(mut d) => d.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(source) => {
            return Err(ExperimentError::ReadDir {
                path: dir.into(),
                source,
            })
        }
    };
    if not_empty && !force {
        return Err(ExperimentError::DirNotEmpty(dir.into()));
    }
    create_dir(dir)
}
