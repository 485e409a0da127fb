//! The experiment's legitimate client: N connections, each a closed loop of
//! keep-alive GETs, for a fixed wall time. Connects and answers time out,
//! and every timeout counts as a failure: under a denial a load generator
//! that waits for its connections (wrk) reports a normal run after the
//! attack ends, this one reports the denial. Figures are per wall second.
use std::{
    io::Write,
    net::{SocketAddr, TcpStream},
    sync::Mutex,
    time::{Duration, Instant},
};

use super::{lab::Host, load::read_response, PerSecond};

/// Requests on one connection before the client opens a new one: real
/// clients come and go, and a denial shows first on new connections.
const REQUESTS_PER_CONNECTION: u32 = 100;
/// Pause after a refused connect (no busy loop against a closed port).
const REFUSED_PAUSE: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
pub struct ClientPlan {
    pub connections: u32,
    pub duration: Duration,
    /// Connect timeout, and answer timeout per request.
    pub timeout: Duration,
    pub path: String,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ClientReport {
    /// Requests answered with status 200 within the timeout.
    pub requests: u64,
    /// Over the wall time of the phase's load.
    pub requests_per_s: f64,
    /// Connects that timed out or were refused.
    pub connect_failures: u64,
    /// Requests without a (200) answer within the timeout.
    pub request_failures: u64,
    pub wall_s: f64,
    pub p50_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    /// Answers and failures second by second (empty where the client
    /// gave none).
    pub per_second: PerSecond,
}

impl ClientReport {
    pub fn errors(&self) -> u64 {
        self.connect_failures + self.request_failures
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    connect_failures: u64,
    request_failures: u64,
    latencies_ns: Vec<u64>,
    per_second: PerSecond,
}

/// Runs the client against `addr` from `host` (the lab's client host) or
/// from this namespace; returns when the wall time is over (at most one
/// timeout later).
pub fn run(
    addr: SocketAddr,
    plan: &ClientPlan,
    host: Option<&Host>,
) -> Result<ClientReport, super::LabError> {
    let seconds = plan.duration.as_secs_f64().ceil() as usize;
    let tally = Mutex::new(Tally {
        per_second: PerSecond::new(seconds),
        ..Tally::default()
    });
    let started = Instant::now();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..plan.connections.max(1))
            .map(|_| {
                s.spawn(|| {
                    if let Some(h) = host {
                        h.enter()?;
                    }
                    let mine = client_loop(addr, plan, started, seconds);
                    let mut t = tally.lock().expect("no panics while held");
                    t.ok += mine.ok;
                    t.connect_failures += mine.connect_failures;
                    t.request_failures += mine.request_failures;
                    t.latencies_ns.extend(mine.latencies_ns);
                    t.per_second.merge(&mine.per_second);
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("client thread"))
            .collect::<Result<Vec<()>, _>>()
    })?;
    let wall = plan.duration.as_secs_f64();
    let mut t = tally.into_inner().expect("threads joined");
    t.latencies_ns.sort_unstable();
    let q = |q: f64| {
        let l = &t.latencies_ns;
        (!l.is_empty()).then(|| l[((l.len() as f64 * q) as usize).min(l.len() - 1)])
    };
    Ok(ClientReport {
        requests: t.ok,
        requests_per_s: t.ok as f64 / wall,
        connect_failures: t.connect_failures,
        request_failures: t.request_failures,
        wall_s: started.elapsed().as_secs_f64(),
        p50_ns: q(0.5),
        p99_ns: q(0.99),
        per_second: t.per_second,
    })
}

/// One connection after another until the deadline.
fn client_loop(addr: SocketAddr, plan: &ClientPlan, started: Instant, seconds: usize) -> Tally {
    let deadline = started + plan.duration;
    let mut t = Tally {
        per_second: PerSecond::new(seconds),
        ..Tally::default()
    };
    let at = || started.elapsed().as_secs_f64();
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: flowdar-client\r\n\r\n",
        plan.path
    );
    let mut buf = Vec::with_capacity(4096);
    while Instant::now() < deadline {
        let mut sock = match TcpStream::connect_timeout(&addr, plan.timeout) {
            Ok(s) => s,
            Err(e) => {
                t.connect_failures += 1;
                t.per_second.add(at(), false);
                if e.kind() != std::io::ErrorKind::TimedOut {
                    std::thread::sleep(REFUSED_PAUSE);
                }
                continue;
            }
        };
        let _ = sock.set_read_timeout(Some(plan.timeout));
        let _ = sock.set_write_timeout(Some(plan.timeout));
        let _ = sock.set_nodelay(true);
        for _ in 0..REQUESTS_PER_CONNECTION {
            if Instant::now() >= deadline {
                break;
            }
            let sent = Instant::now();
            let ok = sock.write_all(req.as_bytes()).is_ok()
                && read_response(&mut sock, &mut buf) == Some(200);
            if !ok {
                t.request_failures += 1;
                t.per_second.add(at(), false);
                break;
            }
            t.ok += 1;
            t.per_second.add(at(), true);
            t.latencies_ns.push(sent.elapsed().as_nanos() as u64);
        }
    }
    t
}
