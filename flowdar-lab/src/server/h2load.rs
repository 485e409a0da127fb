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
    /// Run in [`SLICE`]s, each with fresh connections (under an attack
    /// that can leave connections stuck in a TLS handshake); otherwise one
    /// run, the same connections for the whole time.
    pub sliced: bool,
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

/// How long each h2load run lasts under an attack: the wall time is
/// covered by runs of this length one after the other, each with fresh
/// connections. h2load
/// 1.52 cannot end a run whose connections are stuck in the TLS handshake
/// (a server whose workers are all held): it aborts on a libev assertion
/// with -N, or waits forever without, and a connection that timed out is
/// never opened again. Slices give every slice its own chance to connect,
/// and lose at most one slice to that.
const SLICE: Duration = Duration::from_secs(2);

/// Runs h2load against `https://addr/path` from `host` (the lab's client
/// host) or from this namespace; returns when the wall time is over.
pub fn run(
    addr: SocketAddr,
    plan: &H2loadPlan,
    host: Option<&Host>,
) -> Result<ClientReport, H2loadError> {
    let started = Instant::now();
    let t0_us = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let mut per_second = PerSecond::new(plan.duration.as_secs_f64().ceil() as usize);
    per_second.start_unix_ns = t0_us * 1000;
    let mut latencies = Vec::new();
    let (mut succeeded, mut failed, mut stuck) = (0u64, 0u64, 0u64);
    let mut last_error = None;
    while started.elapsed() + Duration::from_millis(100) < plan.duration {
        let left = plan.duration - started.elapsed();
        let length = if plan.sliced { left.min(SLICE) } else { left };
        let slice = slice(addr, plan, host, length)?;
        for (done_us, ns) in &slice.answered {
            per_second.add(done_us.saturating_sub(t0_us) as f64 / 1e6, true);
            latencies.push(*ns);
        }
        let end_s = started
            .elapsed()
            .as_secs_f64()
            .min(plan.duration.as_secs_f64() - 1e-3);
        match slice.counts {
            Some(c) => {
                succeeded += c.succeeded;
                failed += c.failed;
                for _ in 0..c.failed {
                    per_second.add(end_s, false);
                }
            }
            // One run for the whole time that measured its duration and
            // then hung in its teardown (h2load 1.52 over HTTP/1.1, seen
            // about one run in five: a client whose connection Apache
            // closed after MaxKeepAliveRequests as the clock ran out never
            // finishes): its log has every answered request. What was in
            // flight at the stop is not counted, as h2load's own timing
            // mode counts it (started, not done). Not under an attack,
            // where a hang is the server's doing (sliced, below).
            None if !plan.sliced && slice.stopped_then_hung => {
                succeeded += slice.answered.len() as u64;
            }
            // One run for the whole time that printed no counts: an error,
            // as it always was.
            None if !plan.sliced => {
                return Err(H2loadError::Output {
                    status: slice.status,
                    output: slice.output,
                })
            }
            None => {
                // A slice that did not finish: its answered requests are in
                // its log, and each of its connections failed.
                succeeded += slice.answered.len() as u64;
                stuck += u64::from(plan.connections.max(1));
                for _ in 0..plan.connections.max(1) {
                    per_second.add(end_s, false);
                }
                last_error = Some(format!("{}: {}", slice.status, slice.output));
            }
        }
    }
    if succeeded == 0 && failed == 0 && stuck == 0 {
        return Err(H2loadError::Output {
            status: "no run".into(),
            output: last_error.unwrap_or_else(|| "nothing".into()),
        });
    }
    if !plan.sliced {
        // One run's log has answered requests only: when its failures
        // happened is unknown.
        per_second.failed.clear();
    }
    latencies.sort_unstable();
    let q = |q: f64| {
        (!latencies.is_empty())
            .then(|| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)])
    };
    Ok(ClientReport {
        requests: succeeded,
        requests_per_s: succeeded as f64 / plan.duration.as_secs_f64(),
        connect_failures: stuck,
        request_failures: failed,
        wall_s: started.elapsed().as_secs_f64(),
        p50_ns: q(0.5),
        p99_ns: q(0.99),
        per_second,
    })
}

/// One h2load run of `length`.
struct Slice {
    /// Its summary's counts; None when it did not finish (see [`SLICE`]).
    counts: Option<Counts>,
    /// (answered at, latency) of its log's 2xx answers.
    answered: Vec<(u64, u64)>,
    /// Killed after it said its clients stopped (its duration was over).
    stopped_then_hung: bool,
    /// How it ended (`exit status: 134`, `killed: it did not end`) and its
    /// last line of output: why it printed no counts.
    status: String,
    output: String,
}

fn slice(
    addr: SocketAddr,
    plan: &H2loadPlan,
    host: Option<&Host>,
    length: Duration,
) -> Result<Slice, H2loadError> {
    let log = tempfile::NamedTempFile::new().map_err(H2loadError::Log)?;
    let out_file = tempfile::tempfile().map_err(H2loadError::Log)?;
    let mut cmd = match host {
        Some(h) => h.command(H2LOAD),
        None => Command::new(H2LOAD),
    };
    // h2load takes durations with a unit.
    let ms = |d: Duration| format!("{}ms", d.as_millis().max(1));
    cmd.args(["-D", &ms(length)])
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
    let out_read = out_file.try_clone().map_err(H2loadError::Log)?;
    cmd.arg(format!("https://{addr}{}", plan.path))
        .stdin(Stdio::null())
        .stdout(out_file)
        .stderr(Stdio::null());
    let mut child = cmd.spawn().map_err(H2loadError::Spawn)?;
    // Its run, then the timeout for what is in flight, then a second.
    let deadline = Instant::now() + length + plan.timeout + Duration::from_secs(1);
    let status = loop {
        match child.try_wait().map_err(H2loadError::Log)? {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => break None,
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut text = String::new();
    {
        use std::io::{Read as _, Seek as _};
        let mut f = out_read;
        let _ = f.seek(std::io::SeekFrom::Start(0));
        let _ = f.read_to_string(&mut text);
    }
    let text_log = std::fs::read_to_string(log.path()).map_err(H2loadError::Log)?;
    let answered = text_log
        .lines()
        .filter_map(|l| Some((answered_at_us(l)?, latency_ns(l)?)))
        .collect();
    Ok(Slice {
        counts: counts(&text),
        stopped_then_hung: status.is_none() && stopped(&text),
        answered,
        status: status.map_or_else(|| "killed: it did not end".into(), |s| s.to_string()),
        output: text
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("nothing")
            .trim()
            .to_string(),
    })
}

/// Whether h2load said its duration was over ("Stopped all clients for
/// thread #0", printed when the timer fires, before in-flight requests end).
fn stopped(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("Stopped all clients"))
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
        // The last line of a run that hung once its duration was over.
        let hung = "starting benchmark...\nspawning thread #0: 4 total client(s). Timing-based test with 0s of warm-up time and 4s of main duration for measurements.\nWarm-up started for thread #0.\nWarm-up phase is over for thread #0.\nMain benchmark duration is started for thread #0.\nMain benchmark duration is over for thread #0. Stopping all clients.\nStopped all clients for thread #0\n";
        assert!(stopped(hung));
        assert!(!stopped("starting benchmark...\n"));
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
