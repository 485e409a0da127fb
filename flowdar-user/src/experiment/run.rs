//! Running an experiment: the lab (client and attacker hosts), then per
//! variant a server, its untraced baseline and its phases (`phase`), and
//! the zoom below the first variant's most affected function (`zoom`).
use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use anyhow::{bail, Context as _};

use super::{
    phase::{drive_client, run_phase, Target},
    progress::Progress,
    results::{Hosts, Outcome, Untraced, VariantResult},
    setup::{check_spec, setup_hosts, start_server, Server},
    Phase, Spec,
};
use crate::{
    capture::{self},
    probes,
    server::{self, Targets},
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
        let first = spec.phases.first().context("no phases")?;
        if first.load.is_none() || first.attack.is_some() {
            bail!("--zoom needs a first phase with a load and no attack (the normal load it measures against)");
        }
        if spec.phases.len() < 2 || spec.phases.last().is_some_and(|p| p.attack.is_none()) {
            bail!("--zoom needs a last phase with an attack (the one it explains)");
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
    let mut zoom_error = None;
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
            // The phases ran: a zoom that fails still leaves their report.
            match super::zoom::run(&ground, &vdir.join("zoom"), z, progress) {
                Ok(done) => zoom = Some(done),
                Err(e) => zoom_error = Some(crate::errors::chain(e.as_ref())),
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
        zoom_error,
    })
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

fn prepare_dir(dir: &Path, force: bool) -> anyhow::Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() && !force {
        bail!(
            "{} exists and is not empty (pass --force to write into it)",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}
