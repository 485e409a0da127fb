//! Driving `wrk` (Debian's package) against a loopback server and reading
//! its report: requests/s, latency percentiles, errors.
use std::{net::SocketAddr, process::Command, time::Duration};

#[derive(Debug, thiserror::Error)]
pub enum WrkError {
    #[error("cannot run wrk (install Debian's wrk; `cargo xtask setup` does)")]
    Spawn(#[source] std::io::Error),
    #[error("wrk failed: {0}")]
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct WrkPlan {
    pub threads: u32,
    pub connections: u32,
    pub duration: Duration,
    pub path: String,
}

impl Default for WrkPlan {
    fn default() -> Self {
        Self {
            threads: 2,
            connections: 20,
            duration: Duration::from_secs(10),
            path: super::INDEX_PATH.into(),
        }
    }
}

/// What wrk reported.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct WrkReport {
    pub requests: u64,
    pub requests_per_sec: f64,
    pub latency_p50_us: Option<f64>,
    pub latency_p99_us: Option<f64>,
    /// Connect, read, write and timeout errors, and non-2xx/3xx answers.
    pub errors: u64,
}

/// Runs wrk against `addr` (loopback only) and parses its report.
pub fn run(addr: SocketAddr, plan: &WrkPlan) -> Result<WrkReport, WrkError> {
    assert!(addr.ip().is_loopback(), "load goes to loopback only");
    let secs = plan.duration.as_secs().max(1);
    let out = Command::new("wrk")
        .args([
            "--latency",
            "-t",
            &plan.threads.to_string(),
            "-c",
            &plan.connections.to_string(),
        ])
        .args(["-d", &format!("{secs}s"), "--timeout", "5s"])
        .arg(format!("http://{addr}{}", plan.path))
        .output()
        .map_err(WrkError::Spawn)?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(WrkError::Failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(parse(&text))
}

/// Parses wrk 4.x `--latency` output.
pub fn parse(text: &str) -> WrkReport {
    let mut r = WrkReport::default();
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(v)) => r.requests_per_sec = v.parse().unwrap_or(0.0),
            (Some("50%"), Some(v)) => r.latency_p50_us = parse_latency(v),
            (Some("99%"), Some(v)) => r.latency_p99_us = parse_latency(v),
            (Some("Socket"), Some("errors:")) => {
                // Socket errors: connect 0, read 0, write 0, timeout 0
                r.errors += line
                    .split(',')
                    .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                    .sum::<u64>();
            }
            (Some("Non-2xx"), _) => {
                r.errors += line
                    .rsplit(' ')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            }
            (Some(n), Some("requests")) => r.requests = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    r
}

/// "1.23ms" / "850.00us" / "2.00s" -> microseconds.
fn parse_latency(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        "m" => n * 60e6,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 10s test @ http://127.0.0.1:8080/index.html
  2 threads and 20 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.46ms    1.02ms  22.95ms   89.11%
    Req/Sec     7.03k   512.31     8.01k    71.50%
  Latency Distribution
     50%    1.21ms
     75%    1.70ms
     90%    2.42ms
     99%  850.00us
  139912 requests in 10.00s, 44.83MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 4
Requests/sec:  13987.21
Transfer/sec:      4.48MB
";

    #[test]
    fn parses_a_wrk_report() {
        let r = parse(WRK);
        assert_eq!(r.requests, 139_912);
        assert_eq!(r.requests_per_sec, 13987.21);
        assert_eq!(r.latency_p50_us, Some(1210.0));
        assert_eq!(r.latency_p99_us, Some(850.0));
        assert_eq!(r.errors, 9);
    }
}
