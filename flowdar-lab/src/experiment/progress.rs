//! What an experiment tells its caller as it goes.
use std::time::Duration;

use super::{
    results::{Discovery, PhaseResult, Untraced},
    Phase,
};
use crate::server::{ClientReport, Host, Lab};

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
        /// The probe set (`apache:full`) and its size.
        profile: &'a str,
        functions: usize,
        window: Duration,
        under: &'a str,
    },
    DiscoveryDone(&'a Discovery),
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
                profile,
                functions,
                window,
                under,
            } => write!(
                f,
                "[zoom] discovery: {functions} functions selected ({profile}) for {:.1} s under {under}",
                window.as_secs_f64()
            ),
            Self::DiscoveryDone(d) => write!(
                f,
                "      {} attached ({} refused by the kernel); {}{:.2} s of degraded service (attach {:.2} s, detach {:.2} s)",
                d.functions,
                d.refused,
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
                c.p99_ns.map_or("-".into(), flowdar_analysis::units::ns),
                c.connect_failures,
                c.request_failures
            )
        },
    )
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
            "{load} plus the {} attack ({}, {} connections, rate {}/s{})",
            a.mode.name(),
            if a.mode.needs_tls() {
                "h2attack"
            } else {
                "slowhttptest"
            },
            a.connections,
            a.rate,
            from(lab.map(|l| &l.attacker))
        ),
        None => load,
    }
}
