//! The lab's attacks: what each kind does, its bounds, and the running
//! attack. The slow-HTTP kinds run Debian's `slowhttptest`
//! (`slowhttptest.rs`); the TLS and HTTP/2 kinds run the project's own
//! client on Debian's python3-h2 (`h2attack.rs`), which reports what it
//! sent. Only against allowed targets (see `targets`), bounded in time,
//! stopped with the phase and killed by the kernel if the experiment dies.
use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{h2attack, lab::Host, slowhttptest, targets::Targets};

pub use h2attack::AttackReport;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
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
    /// TLS ClientHellos sent but for their last byte, then held.
    TlsHandshake,
    /// HTTP/2 streams whose HEADERS never end (a CONTINUATION a interval).
    H2SlowHeaders,
    /// HTTP/2 responses held behind a zero flow-control window, opened a
    /// few bytes an interval.
    H2SlowRead,
    /// CVE-2023-44487: HEADERS then RST_STREAM at once, `rate` streams a
    /// second over `connections` connections.
    H2RapidReset,
    /// CVE-2024-27316's shape: CONTINUATION frames without END_HEADERS,
    /// `rate` a second on each connection.
    H2Continuation,
}

impl AttackMode {
    /// Whether the attack needs a large response (the throwaway Apache's
    /// `LARGE_PATH`) rather than the small page.
    pub fn wants_large_response(self) -> bool {
        matches!(
            self,
            AttackMode::Read | AttackMode::Range | AttackMode::H2SlowRead
        )
    }

    /// Whether it speaks TLS (and HTTP/2): it needs the server's TLS port.
    pub fn needs_tls(self) -> bool {
        !matches!(
            self,
            AttackMode::Headers | AttackMode::Body | AttackMode::Read | AttackMode::Range
        )
    }

    /// Its name in specs and reports (`tls-handshake`).
    pub fn name(self) -> &'static str {
        match self {
            AttackMode::Headers => "headers",
            AttackMode::Body => "body",
            AttackMode::Read => "read",
            AttackMode::Range => "range",
            AttackMode::TlsHandshake => "tls-handshake",
            AttackMode::H2SlowHeaders => "h2-slow-headers",
            AttackMode::H2SlowRead => "h2-slow-read",
            AttackMode::H2RapidReset => "h2-rapid-reset",
            AttackMode::H2Continuation => "h2-continuation",
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AttackPlan {
    pub mode: AttackMode,
    pub connections: u32,
    /// New connections per second (h2-rapid-reset: streams a second;
    /// h2-continuation: frames a second on each connection).
    pub rate: u32,
    /// Seconds between follow-up bytes (or reads) on each connection.
    pub interval: Duration,
    pub duration: Duration,
    /// The address to connect from (TLS and HTTP/2 kinds; e.g. another
    /// loopback address, to tell the attacker from a client on this host).
    pub source: Option<std::net::IpAddr>,
}

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
            .map(|a| if a.len() > 200 { "<h2attack.py>" } else { a })
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
