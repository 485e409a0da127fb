//! One phase against the target: a recording while the legitimate client
//! (and the attack) run. Shared by the experiment's phases and the zoom's.
use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use flowdar_trace::TraceProbe;

use super::{
    error::Result,
    progress::Progress,
    results::{PhaseResult, Untraced},
    spec::{ClientKind, Load, Phase, Protocol},
};
use crate::{
    server::{self, Attack, AttackPlan, ClientPlan, ClientReport, H2loadPlan, Lab, Targets},
    tracer::Tracer,
};

/// The load of `phase` for `duration` with nothing attached: the observer
/// effect's baseline (`label`: the variant, or the zoom level measuring it
/// again beside its own phases).
pub(super) fn run_untraced_load(
    target: &Target<'_>,
    phase: &Phase,
    load: &Load,
    duration: Duration,
    label: &str,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<Untraced> {
    progress(&Progress::UntracedStart {
        variant: label,
        phase: &phase.name,
        duration,
    });
    let (client, client_error) = drive_client(target, load, duration, false)?;
    let u = Untraced {
        phase: phase.name.clone(),
        client,
        client_error,
    };
    progress(&Progress::UntracedDone(&u));
    Ok(u)
}

/// The legitimate client's load for `duration`: its report, or why none.
/// `under_attack`: h2load runs in slices (see `server::h2load`).
pub(super) fn drive_client(
    target: &Target<'_>,
    load: &Load,
    duration: Duration,
    under_attack: bool,
) -> Result<(Option<ClientReport>, Option<String>)> {
    let path = load.path.clone().unwrap_or_else(|| target.path.into());
    target.targets.check(target.addr.ip())?;
    let host = target.lab.map(|l| &l.client);
    let report = match load.client {
        ClientKind::Builtin => {
            let plan = ClientPlan {
                connections: load.connections,
                duration,
                timeout: load.timeout,
                path,
            };
            server::run_client(target.addr, &plan, host).map_err(|e| crate::one_line(&e))
        }
        ClientKind::H2load => {
            let plan = H2loadPlan {
                connections: load.connections,
                streams: load.streams,
                duration,
                timeout: load.timeout,
                path,
                h1: load.protocol == Protocol::Http11,
                rate: load.rate,
                sliced: under_attack,
            };
            server::run_h2load(target.addr, &plan, host).map_err(|e| crate::one_line(&e))
        }
    };
    Ok(match report {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(e)),
    })
}

/// The server every phase drives and records, and how.
#[derive(Clone, Copy)]
pub(super) struct Target<'a> {
    pub pid: u32,
    pub addr: SocketAddr,
    pub path: &'a str,
    /// The throwaway Apache's large file (slow read, range attacks).
    pub large_path: Option<&'a str>,
    pub probes: &'a [TraceProbe],
    /// What records the phases.
    pub tracer: &'a dyn Tracer,
    pub lab: Option<&'a Lab>,
    pub targets: &'a Targets,
}

/// Starts the attack `a` on the target for `duration` (from the attacker's
/// host when there is a lab).
pub(super) fn start_attack(
    target: &Target<'_>,
    a: &super::spec::AttackSpec,
    duration: Duration,
) -> Result<Attack> {
    let plan = AttackPlan {
        mode: a.mode,
        connections: a.connections,
        rate: a.rate,
        interval: a.interval,
        duration,
        source: None,
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
) -> Result<PhaseResult> {
    let started = Instant::now();
    let recording = target.tracer.start(target.pid, target.probes, trace)?;
    let mut attack = None;
    let mut load_time = duration;
    if let Some(a) = &phase.attack {
        let ramp = a.ramp.min(duration / 2);
        attack = Some(start_attack(target, a, duration)?);
        std::thread::sleep(ramp);
        load_time = duration - ramp;
    }
    let (client, client_error) = match &phase.load {
        Some(l) => drive_client(target, l, load_time, attack.is_some())?,
        None => {
            std::thread::sleep(load_time);
            (None, None)
        }
    };
    // Stop recording while the attack still holds its connections: the
    // calls it keeps stuck are the signal, recorded as in flight.
    let summary = recording.stop(&format!("phase {} over", phase.name))?;
    let attack_report = attack.as_mut().and_then(|a| a.stop().cloned());
    let attack_cmd = attack.map(|a| a.command.clone());
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
        attack_report,
        events: summary.events,
        lost: summary.lost,
        attach_mode: summary.mechanism,
    })
}
