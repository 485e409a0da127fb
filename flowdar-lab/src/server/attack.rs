//! The lab's attacks: what each kind does, its bounds, and the running
//! attack. The slow-HTTP kinds run Debian's `slowhttptest`
//! (`slowhttptest.rs`); the TLS and HTTP/2 kinds run the project's own
//! client on Debian's python3-h2 (`h2attack.rs`), which reports what it
//! sent. Only against allowed targets (see `targets`), bounded in time,
//! stopped with the phase and killed by the kernel if the experiment dies.
use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
};

use super::{h2attack, lab::Host, slowhttptest, targets::Targets};

pub use super::attack_plan::{AttackMode, AttackPlan};
pub use h2attack::AttackReport;

#[derive(Debug, thiserror::Error)]
pub enum AttackError {
    #[error(transparent)]
    Target(#[from] super::TargetError),
    #[error("cannot run {tool} (install Debian's {package}; `cargo xtask setup` does)")]
    Spawn {
        tool: &'static str,
        package: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A running attack; stopped (killed) on drop.
pub struct Attack {
    child: Child,
    mode: AttackMode,
    pub command: String,
    report: Option<AttackReport>,
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
        let (program, args, tool, package) = if plan.mode.needs_tls() {
            let (program, args) = h2attack::arguments(addr, path, plan);
            (
                program,
                args,
                "the TLS and HTTP/2 attack client",
                "python3-h2",
            )
        } else {
            let args = slowhttptest::arguments(addr, path, plan);
            ("slowhttptest", args, "slowhttptest", "slowhttptest")
        };
        let mut cmd = match host {
            Some(h) => h.command(program),
            None => Command::new(program),
        };
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(if plan.mode.needs_tls() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::null());
        let shown: Vec<&str> = args
            .iter()
            .map(|a| match a.as_str() {
                h2attack::SCRIPT => "<h2attack.py>",
                a => a,
            })
            .collect();
        let command = format!("{program} {}", shown.join(" "));
        let child = cmd.spawn().map_err(|source| AttackError::Spawn {
            tool,
            package,
            source,
        })?;
        Ok(Self {
            child,
            mode: plan.mode,
            command,
            report: None,
        })
    }

    /// Stops the attack. The TLS and HTTP/2 client is asked to (SIGTERM)
    /// and returns what it sent; slowhttptest is killed.
    pub fn stop(&mut self) -> Option<&AttackReport> {
        if self.mode.needs_tls() && self.report.is_none() {
            self.report = h2attack::finish(&mut self.child);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.report.as_ref()
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
