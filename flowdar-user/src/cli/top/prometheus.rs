//! `flowdar top --prometheus`: the live figures as a scrape endpoint
//! (OpenMetrics text from `prometheus-client`, served by `tiny_http`).
use std::{
    net::SocketAddr,
    sync::{atomic::AtomicU64, Arc, Mutex},
};

use anyhow::Context as _;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{analysis::Interval, store::TraceProbe};

type Labels = Vec<(String, String)>;
type F64Gauge = Gauge<f64, AtomicU64>;

struct Metrics {
    calls: Family<Labels, Counter>,
    mean: Family<Labels, F64Gauge>,
    p99: Family<Labels, F64Gauge>,
    workers: Gauge,
    in_flight: Family<Labels, Gauge>,
    client_seconds: Family<Labels, F64Gauge>,
    client_workers: Family<Labels, Gauge>,
    alert: Family<Labels, Gauge>,
}

pub struct Exporter {
    registry: Arc<Mutex<Registry>>,
    metrics: Metrics,
    pub addr: SocketAddr,
}

fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), v.to_string())]
}

impl Exporter {
    /// Registers the metrics and serves them at `addr` from a thread.
    pub fn serve(addr: SocketAddr, probes: &[TraceProbe]) -> anyhow::Result<Self> {
        let mut r = Registry::with_prefix("flowdar");
        let m = Metrics {
            calls: Family::default(),
            mean: Family::default(),
            p99: Family::default(),
            workers: Gauge::default(),
            in_flight: Family::default(),
            client_seconds: Family::default(),
            client_workers: Family::default(),
            alert: Family::default(),
        };
        r.register(
            "calls",
            "Calls entered, per traced function",
            m.calls.clone(),
        );
        r.register(
            "call_mean_seconds",
            "Mean duration of the calls that returned in the last interval",
            m.mean.clone(),
        );
        r.register(
            "call_p99_seconds",
            "99th percentile duration of the calls that returned in the last interval",
            m.p99.clone(),
        );
        r.register(
            "workers_in_call",
            "Worker threads inside a traced call now",
            m.workers.clone(),
        );
        r.register(
            "in_flight_calls",
            "Traced calls open now, by age",
            m.in_flight.clone(),
        );
        r.register(
            "client_worker_seconds",
            "Worker time spent on a client's connections",
            m.client_seconds.clone(),
        );
        r.register(
            "client_workers",
            "Workers on a client's connections now",
            m.client_workers.clone(),
        );
        r.register("alert", "1 while an alert is raised", m.alert.clone());
        for p in probes {
            let _ = m.calls.get_or_create(&label("function", &p.function));
        }
        let _ = m.alert.get_or_create(&label("kind", "slow-http"));
        let server = tiny_http::Server::http(addr)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("cannot serve Prometheus metrics on {addr}"))?;
        let addr = server.server_addr().to_ip().unwrap_or(addr);
        if !addr.ip().is_loopback() {
            eprintln!("warning: Prometheus metrics are served on {addr}, beyond loopback");
        }
        let registry = Arc::new(Mutex::new(r));
        let shared = registry.clone();
        std::thread::Builder::new()
            .name("flowdar-metrics".into())
            .spawn(move || {
                for req in server.incoming_requests() {
                    let mut body = String::new();
                    let _ = encode(&mut body, &shared.lock().expect("registry"));
                    let header = tiny_http::Header::from_bytes(
                        "Content-Type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )
                    .expect("static header");
                    let _ = req.respond(tiny_http::Response::from_string(body).with_header(header));
                }
            })
            .context("starting the metrics thread")?;
        Ok(Self {
            registry,
            metrics: m,
            addr,
        })
    }

    /// Folds one interval in (counters add up, gauges take its values).
    pub fn update(&self, i: &Interval) {
        let _held = self.registry.lock().expect("registry");
        let m = &self.metrics;
        // Gauges of this interval only: a function with no call in it, or a
        // client holding no worker now, has no current value.
        m.mean.clear();
        m.p99.clear();
        m.client_workers.clear();
        for f in &i.functions {
            let l = label("function", &f.function);
            m.calls.get_or_create(&l).inc_by(f.calls);
            m.mean.get_or_create(&l).set(f.mean_ns as f64 / 1e9);
            m.p99.get_or_create(&l).set(f.p99_ns as f64 / 1e9);
        }
        m.workers.set(i.workers.len() as i64);
        for b in &i.in_flight {
            m.in_flight
                .get_or_create(&label("age", b.age))
                .set(b.calls as i64);
        }
        for c in &i.clients {
            let l = label("address", &c.address);
            m.client_seconds
                .get_or_create(&l)
                .set(c.worker_ns as f64 / 1e9);
            m.client_workers.get_or_create(&l).set(c.workers_now as i64);
        }
        m.alert
            .get_or_create(&label("kind", "slow-http"))
            .set(i64::from(i.alerts.iter().any(|a| a.kind == "slow-http")));
    }
}
