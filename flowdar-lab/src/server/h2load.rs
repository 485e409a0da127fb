//! The legitimate client over TLS: nghttp2's `h2load` (Debian's
//! nghttp2-client), HTTP/2 with several streams at a time on each
//! connection (or HTTP/1.1 over TLS), for a fixed wall time. Requests that
//! fail, error or time out (no progress on a connection for the timeout)
//! count as failures; latencies come from its per-request log.
use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use super::{lab::Host, ClientReport, PerSecond};

/// The program, from nghttp2-client.
pub const H2LOAD: &str = "h2load";

#[derive(Debug, Clone)]
pub struct H2loadPlan {
    pub connections: u32,
    /// Streams at a time on each connection (`-m`); 1 for HTTP/1.1.
    pub streams: u32,
    pub duration: Duration,
    /// A connection without progress for this long fails its requests.
    pub timeout: Duration,
    pub path: String,
    /// HTTP/1.1 over TLS instead of HTTP/2 (`--h1`).
    pub h1: bool,
    /// Requests per second on each connection (`--rps`); `None`: as fast
    /// as the server answers.
    pub rate: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum H2loadError {
    #[error("cannot run {H2LOAD} (install nghttp2-client; `cargo xtask setup` does)")]
    Spawn(#[source] std::io::Error),
    #[error("{H2LOAD} printed no request counts (exit {status}): {output}")]
    Output { status: String, output: String },
    #[error("reading {H2LOAD}'s request log")]
    Log(#[source] std::io::Error),
}

/// Runs h2load against `https://addr/path` from `host` (the lab's client
/// host) or from this namespace; returns when the wall time is over.
pub fn run(
    addr: SocketAddr,
    plan: &H2loadPlan,
    host: Option<&Host>,
) -> Result<ClientReport, H2loadError> {
    let log = tempfile::NamedTempFile::new().map_err(H2loadError::Log)?;
    let mut cmd = match host {
        Some(h) => h.command(H2LOAD),
        None => Command::new(H2LOAD),
    };
    // h2load takes durations with a unit.
    let ms = |d: Duration| format!("{}ms", d.as_millis().max(1));
    cmd.args(["-D", &ms(plan.duration)])
        .args(["-c", &plan.connections.max(1).to_string()])
        .args(["-m", &plan.streams.max(1).to_string()])
        .args(["-N", &ms(plan.timeout)])
        .arg("--log-file")
        .arg(log.path());
    if plan.h1 {
        cmd.arg("--h1");
    }
    if let Some(rate) = plan.rate {
        cmd.args(["--rps", &rate.max(1).to_string()]);
    }
    cmd.arg(format!("https://{addr}{}", plan.path))
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    let started = Instant::now();
    let t0_us = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let out = cmd.output().map_err(H2loadError::Spawn)?;
    let wall_s = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(counts) = counts(&text) else {
        return Err(H2loadError::Output {
            status: out.status.to_string(),
            output: text
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("nothing")
                .trim()
                .to_string(),
        });
    };
    let text_log = std::fs::read_to_string(log.path()).map_err(H2loadError::Log)?;
    let mut latencies: Vec<u64> = text_log.lines().filter_map(latency_ns).collect();
    // The log has answered requests only: failures per second are unknown.
    let mut per_second = PerSecond::new(plan.duration.as_secs_f64().ceil() as usize);
    per_second.failed.clear();
    per_second.start_unix_ns = t0_us * 1000;
    for done_us in text_log.lines().filter_map(answered_at_us) {
        per_second.add(done_us.saturating_sub(t0_us) as f64 / 1e6, true);
    }
    latencies.sort_unstable();
    let q = |q: f64| {
        (!latencies.is_empty())
            .then(|| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)])
    };
    Ok(ClientReport {
        requests: counts.succeeded,
        requests_per_s: counts.succeeded as f64 / plan.duration.as_secs_f64(),
        connect_failures: 0,
        request_failures: counts.failed,
        wall_s,
        p50_ns: q(0.5),
        p99_ns: q(0.99),
        per_second,
    })
}

#[derive(Debug, PartialEq)]
struct Counts {
    succeeded: u64,
    /// Failed, errored and timed out.
    failed: u64,
}

/// From `requests: 400 total, 400 started, 400 done, 390 succeeded, 10
/// failed, 4 errored, 2 timeout`.
fn counts(text: &str) -> Option<Counts> {
    let line = text.lines().find(|l| l.starts_with("requests:"))?;
    let n = |what: &str| {
        line.split(',').find_map(|p| {
            p.trim()
                .trim_start_matches("requests:")
                .trim()
                .strip_suffix(what)
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
    };
    Some(Counts {
        succeeded: n("succeeded")?,
        failed: n("failed")? + n("errored").unwrap_or(0) + n("timeout").unwrap_or(0),
    })
}

/// A successful request's time from its log line (`start_us\tstatus\t
/// duration_us`, as h2load writes it).
/// When a 2xx answer of the log ended, in microseconds since the epoch.
fn answered_at_us(line: &str) -> Option<u64> {
    let mut f = line.split('\t');
    let start: u64 = f.next()?.trim().parse().ok()?;
    latency_ns(line).map(|ns| start + ns / 1000)
}

fn latency_ns(line: &str) -> Option<u64> {
    let mut f = line.split('\t');
    let (_, status, us) = (f.next()?, f.next()?, f.next()?);
    let status: i32 = status.trim().parse().ok()?;
    ((200..300).contains(&status))
        .then(|| us.trim().parse::<u64>().ok().map(|us| us * 1000))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn its_counts_and_log_lines_are_read() {
        let out = "finished in 4.00s, 99.75 req/s, 3.28KB/s\n\
                   requests: 400 total, 400 started, 400 done, 390 succeeded, 10 failed, 4 errored, 2 timeout\n";
        assert_eq!(
            counts(out),
            Some(Counts {
                succeeded: 390,
                failed: 16
            })
        );
        assert_eq!(counts("no requests line"), None);
        assert_eq!(latency_ns("1764868000123456\t200\t1532"), Some(1_532_000));
        assert_eq!(latency_ns("1764868000123456\t-1\t1532"), None, "failed");
        assert_eq!(latency_ns("garbage"), None);
        assert_eq!(
            answered_at_us("1764868000123456\t200\t1532"),
            Some(1_764_868_000_124_988)
        );
        assert_eq!(answered_at_us("1764868000123456\t503\t1532"), None);
    }
}
