//! A small, bounded HTTP/1.1 client load: N connections, R keep-alive GETs
//! on each, C at a time. Loopback only, every socket with a timeout.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub connections: usize,
    pub requests_per_connection: usize,
    pub concurrency: usize,
    pub path: String,
    pub timeout: Duration,
}

impl Default for LoadPlan {
    fn default() -> Self {
        Self {
            connections: 1,
            requests_per_connection: 1,
            concurrency: 1,
            path: super::INDEX_PATH.into(),
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Requests answered with status 200.
    pub ok: usize,
    pub errors: usize,
    /// Connections that completed every request.
    pub connections_ok: usize,
    /// Per request, in microseconds, sorted.
    pub latencies_us: Vec<u64>,
    pub elapsed: Duration,
}

/// Runs `plan` against `addr` (must be loopback) and waits for it to finish.
pub fn run(addr: SocketAddr, plan: &LoadPlan) -> LoadResult {
    assert!(addr.ip().is_loopback(), "load goes to loopback only");
    let next = AtomicUsize::new(0);
    let result = Mutex::new(LoadResult::default());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..plan.concurrency.max(1).min(plan.connections.max(1)) {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < plan.connections {
                    let (ok, lat) = one_connection(addr, plan);
                    let mut r = result.lock().unwrap();
                    r.ok += ok;
                    r.errors += plan.requests_per_connection - ok;
                    r.connections_ok += usize::from(ok == plan.requests_per_connection);
                    r.latencies_us.extend(lat);
                }
            });
        }
    });
    let mut r = result.into_inner().unwrap();
    r.latencies_us.sort_unstable();
    r.elapsed = started.elapsed();
    r
}

/// One connection: requests in sequence, then a client-side close.
fn one_connection(addr: SocketAddr, plan: &LoadPlan) -> (usize, Vec<u64>) {
    let mut lat = Vec::new();
    let Ok(mut sock) = TcpStream::connect_timeout(&addr, plan.timeout) else {
        return (0, lat);
    };
    let _ = sock.set_read_timeout(Some(plan.timeout));
    let _ = sock.set_write_timeout(Some(plan.timeout));
    let _ = sock.set_nodelay(true);
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: flowdar-load\r\n\r\n",
        plan.path
    );
    let mut ok = 0;
    let mut buf = Vec::with_capacity(4096);
    for _ in 0..plan.requests_per_connection {
        let t = Instant::now();
        if sock.write_all(req.as_bytes()).is_err() {
            break;
        }
        match read_response(&mut sock, &mut buf) {
            Some(200) => {
                ok += 1;
                lat.push(t.elapsed().as_micros() as u64);
            }
            _ => break,
        }
    }
    (ok, lat)
}

/// Reads one response (headers + Content-Length body); returns its status.
pub(super) fn read_response(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<u16> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = sock.read(&mut chunk).ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(status)
}
