//! Driving `slowhttptest` (Debian's package) for Slowloris-style attacks:
//! slow headers (-H) or slow body (-B), against loopback only, bounded in
//! time, stopped with the phase.
use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttackMode {
    /// Slowloris: headers sent a line at a time, never finished.
    Headers,
    /// R-U-Dead-Yet: a body sent a few bytes at a time.
    Body,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AttackPlan {
    pub mode: AttackMode,
    pub connections: u32,
    /// New connections per second.
    pub rate: u32,
    /// Seconds between follow-up bytes on each connection.
    pub interval: Duration,
    pub duration: Duration,
}

/// A running attack; stopped (killed) on drop.
pub struct Attack {
    child: Child,
    pub command: String,
}

impl Attack {
    pub fn start(addr: SocketAddr, path: &str, plan: &AttackPlan) -> std::io::Result<Self> {
        assert!(addr.ip().is_loopback(), "attacks go to loopback only");
        let mut cmd = Command::new("slowhttptest");
        cmd.arg(match plan.mode {
            AttackMode::Headers => "-H",
            AttackMode::Body => "-B",
        })
        .args([
            "-c",
            &plan.connections.to_string(),
            "-r",
            &plan.rate.to_string(),
        ])
        .args(["-i", &plan.interval.as_secs().max(1).to_string()])
        .args(["-l", &(plan.duration.as_secs() + 5).to_string(), "-p", "3"])
        .args(["-u", &format!("http://{addr}{path}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let command = format!("{cmd:?}").replace('"', "");
        Ok(Self {
            child: cmd.spawn()?,
            command,
        })
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop();
    }
}
