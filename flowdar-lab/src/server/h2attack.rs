//! The TLS and HTTP/2 attack client (`attacks/h2attack.py`, run by
//! Debian's python3 with python3-h2) and the counts it reports: what it
//! sent, to be checked against what the trace saw.
use std::{io::Read as _, net::SocketAddr, process::Child, time::Duration};

use super::attack_plan::AttackPlan;

/// The client, embedded in the binary and given to `python3 -c`.
pub(super) const SCRIPT: &str = include_str!("../../attacks/h2attack.py");
/// Debian's interpreter, which has python3-h2 (not a virtualenv's).
const PYTHON: &str = "/usr/bin/python3";

/// What the attack client sent, as it reports at its end.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AttackReport {
    pub connections_opened: u64,
    /// Connections that could not be opened (refused, timed out: the
    /// server no longer accepting is one sign of a denial).
    pub connections_failed: u64,
    pub connections_closed_by_server: u64,
    /// Connections still held when the attack stopped.
    pub connections_held: u64,
    /// HTTP/2 streams opened (HEADERS sent) that the server accepted:
    /// streams past a GOAWAY's last stream id are `streams_refused`.
    pub streams_opened: u64,
    pub streams_refused: u64,
    pub streams_reset: u64,
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub goaways: u64,
    pub seconds: f64,
    /// python, h2, hpack, hyperframe and OpenSSL versions.
    pub versions: std::collections::BTreeMap<String, String>,
}

/// The interpreter and its arguments for `plan` against `addr` + `path`.
pub(super) fn arguments(
    addr: SocketAddr,
    path: &str,
    plan: &AttackPlan,
) -> (&'static str, Vec<String>) {
    let args = vec![
        "-c".to_string(),
        SCRIPT.to_string(),
        plan.mode.name().to_string(),
        "--host".into(),
        addr.ip().to_string(),
        "--port".into(),
        addr.port().to_string(),
        "--path".into(),
        path.to_string(),
        "--connections".into(),
        plan.connections.to_string(),
        "--rate".into(),
        plan.rate.to_string(),
        "--interval".into(),
        format!("{}", plan.interval.as_secs_f64()),
        "--duration".into(),
        // Its own bound, past the phase's end: the phase stops it first.
        format!("{}", (plan.duration + Duration::from_secs(5)).as_secs_f64()),
    ];
    let mut args = args;
    if let Some(ip) = plan.source {
        args.extend(["--source".to_string(), ip.to_string()]);
    }
    (PYTHON, args)
}

/// Asks the client to stop (SIGTERM) and reads its report: one JSON line.
/// None if it does not answer within 10 s or printed none.
pub(super) fn finish(child: &mut Child) -> Option<AttackReport> {
    let pid = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => return None,
        }
    }
    let mut out = String::new();
    child.stdout.take()?.read_to_string(&mut out).ok()?;
    serde_json::from_str(out.lines().last()?).ok()
}
