//! For whom: the time workers spent per client address, from the sessions
//! (each knows its client through [`crate::ClientBook`]).
use std::collections::HashMap;

use serde::Serialize;

use super::Session;

/// One client address: what the server's workers did for it. Field names
/// are a stable interface (`flowdar clients --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientRow {
    /// The client's IP address ("unknown" for connections whose client was
    /// never read: opened before capture and not read from since).
    pub address: String,
    pub connections: u64,
    pub requests: u64,
    /// Time workers spent on its connections (calls on worker threads,
    /// overlaps counted once per thread).
    pub worker_ns: u64,
    /// Of which blocked reading from it (`ap_read_request`).
    pub read_ns: u64,
    /// Time its requests waited on a backend server (`apache:backend`).
    pub backend_ns: u64,
    /// Its calls still open when capture ended.
    pub in_flight: u64,
    /// Lean traces: its connections a worker was already waiting on when
    /// capture began.
    pub held_at_attach: u64,
    /// Its HTTP/1.x requests whose response was seen sent, and their
    /// latency's median and 99th percentile (nearest rank): from the first
    /// bytes the server read of each to the end of its response. Null when
    /// none was answered in the trace. HTTP/2 streams are not measured
    /// (see `Session::request_ns`).
    pub answered: u64,
    pub latency_p50_ns: Option<u64>,
    pub latency_p99_ns: Option<u64>,
}

/// The `p`-quantile of sorted `values` (nearest rank), if any.
fn quantile(sorted: &[u64], p: f64) -> Option<u64> {
    let rank = ((p * sorted.len() as f64).ceil() as usize).max(1);
    sorted.get(rank - 1).copied()
}

/// Sessions grouped by client IP address, by worker time held (most first).
pub fn by_client(sessions: &[Session]) -> Vec<ClientRow> {
    let mut rows: HashMap<String, ClientRow> = HashMap::new();
    let mut latencies: HashMap<String, Vec<u64>> = HashMap::new();
    for s in sessions {
        let address = s
            .client
            .map_or_else(|| "unknown".to_string(), |a| a.ip().to_string());
        let r = rows.entry(address.clone()).or_insert_with(|| ClientRow {
            address,
            connections: 0,
            requests: 0,
            worker_ns: 0,
            read_ns: 0,
            backend_ns: 0,
            in_flight: 0,
            held_at_attach: 0,
            answered: 0,
            latency_p50_ns: None,
            latency_p99_ns: None,
        });
        r.connections += 1;
        r.requests += s.requests;
        r.worker_ns += s.worker_ns;
        r.read_ns += s.read_ns;
        r.backend_ns += s.backend_ns;
        r.in_flight += s.in_flight;
        r.held_at_attach += u64::from(s.held_at_attach);
        latencies
            .entry(r.address.clone())
            .or_default()
            .extend(&s.request_ns);
    }
    for r in rows.values_mut() {
        let mut ns = latencies.remove(&r.address).unwrap_or_default();
        ns.sort_unstable();
        r.answered = ns.len() as u64;
        r.latency_p50_ns = quantile(&ns, 0.50);
        r.latency_p99_ns = quantile(&ns, 0.99);
    }
    let mut rows: Vec<ClientRow> = rows.into_values().collect();
    rows.sort_by(|a, b| {
        b.worker_ns
            .cmp(&a.worker_ns)
            .then_with(|| a.address.cmp(&b.address))
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&[7], 0.99), Some(7));
        assert_eq!(quantile(&[3, 9], 0.5), Some(3));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
