//! A throwaway OTLP/HTTP receiver on loopback, for `flowdar demo --otlp`
//! and the export tests: it decodes each `POST /v1/traces` body with the
//! official protobuf definitions (`opentelemetry-proto`) and keeps the
//! spans with their resource's attributes. (No OpenTelemetry Collector or
//! Jaeger binary comes from the registries the developers' machines reach:
//! Debian, crates.io, PyPI, npm.)
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::{any_value::Value, KeyValue},
    trace::v1::Span,
};
use prost::Message;

/// A received span and its resource's attributes.
#[derive(Debug, Clone)]
pub struct Received {
    pub span: Span,
    pub resource: Vec<KeyValue>,
}

/// The receiver; stopped (its port closed) on drop or by [`Receiver::stop`].
pub struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
    batches: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Listens on 127.0.0.1 (a free port). After `take_batches` batches it
    /// closes its port, as a collector killed mid-export does.
    pub fn start(take_batches: Option<usize>) -> std::io::Result<Self> {
        let server = tiny_http::Server::http("127.0.0.1:0").map_err(std::io::Error::other)?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| std::io::Error::other("the OTLP receiver has no IP address"))?;
        let spans = Arc::new(Mutex::new(Vec::new()));
        let batches = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, b, halt) = (spans.clone(), batches.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                if take_batches.is_some_and(|n| b.load(Ordering::Relaxed) >= n) {
                    break;
                }
                let Ok(Some(mut req)) = server.recv_timeout(Duration::from_millis(50)) else {
                    continue;
                };
                let mut body = Vec::new();
                let _ = req.as_reader().read_to_end(&mut body);
                let decoded = ExportTraceServiceRequest::decode(&body[..])
                    .ok()
                    .filter(|_| req.url() == "/v1/traces");
                let ok = decoded.is_some();
                if let Some(export) = decoded {
                    let mut kept = s.lock().unwrap_or_else(|e| e.into_inner());
                    for rs in export.resource_spans {
                        let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
                        for ss in rs.scope_spans {
                            for span in ss.spans {
                                kept.push(Received {
                                    span,
                                    resource: resource.clone(),
                                });
                            }
                        }
                    }
                    b.fetch_add(1, Ordering::Relaxed);
                }
                let answer = ExportTraceServiceResponse::default().encode_to_vec();
                let status = if ok { 200 } else { 400 };
                let _ =
                    req.respond(tiny_http::Response::from_data(answer).with_status_code(status));
            }
            // Dropping the server closes the port: later batches are refused.
        });
        Ok(Self {
            addr,
            spans,
            batches,
            stop,
            thread: Some(thread),
        })
    }

    /// Its endpoint, as `--endpoint` takes it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn batches(&self) -> usize {
        self.batches.load(Ordering::Relaxed)
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An attribute's value as text ("" when absent).
pub fn attr(attrs: &[KeyValue], key: &str) -> String {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map_or_else(String::new, |v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            Value::BoolValue(b) => b.to_string(),
            Value::DoubleValue(d) => d.to_string(),
            other => format!("{other:?}"),
        })
}
