//! OTLP/HTTP (protobuf) to a collector, in batches. A batch the collector
//! does not take (refused, an error status, no answer within the timeout)
//! is dropped and counted; after [`GIVE_UP_AFTER`] failures in a row,
//! batches are dropped without trying for [`COOL_DOWN`], so an absent
//! collector costs a few timeouts, and a restarted one is found again.
use std::time::{Duration, Instant};

use flowdar_analysis::RequestSpan;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use super::encode::{encode, Resource};

/// Requests per OTLP message (each with its child spans).
pub const BATCH_SPANS: usize = 512;
/// Failed batches in a row before the exporter stops trying...
const GIVE_UP_AFTER: u32 = 3;
/// ...for this long (a live export then tries one batch again).
const COOL_DOWN: Duration = Duration::from_secs(5);

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Spans the collector took (server and child spans).
    pub sent: u64,
    /// Spans it did not (the trace file still holds their calls).
    pub dropped: u64,
    /// The last failure, when there was one.
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("--endpoint {0}: an OTLP/HTTP URL is http://HOST:PORT[/PATH] (4318 is OTLP/HTTP's port; the path defaults to /v1/traces; https is not built in: send to a local collector)")]
    Syntax(String),
}

/// Sends spans of one resource to one endpoint.
pub struct Sender {
    agent: ureq::Agent,
    url: String,
    resource: Resource,
    next: u64,
    failures_in_a_row: u32,
    retry_at: Option<Instant>,
    report: SendReport,
}

/// `http://host:port` gets OTLP's traces path.
fn traces_url(endpoint: &str) -> Result<String, EndpointError> {
    let rest = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| EndpointError::Syntax(endpoint.into()))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() {
        return Err(EndpointError::Syntax(endpoint.into()));
    }
    Ok(match path.trim_end_matches('/') {
        "" => format!("http://{authority}/v1/traces"),
        p => format!("http://{authority}/{p}"),
    })
}

impl Sender {
    pub fn new(
        endpoint: &str,
        resource: Resource,
        timeout: Duration,
    ) -> Result<Self, EndpointError> {
        let url = traces_url(endpoint)?;
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .build()
            .new_agent();
        Ok(Self {
            agent,
            url,
            resource,
            next: 0,
            failures_in_a_row: 0,
            retry_at: None,
            report: SendReport::default(),
        })
    }

    /// The URL spans go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends `spans` in batches of [`BATCH_SPANS`] requests.
    pub fn send(&mut self, spans: &[RequestSpan]) {
        for batch in spans.chunks(BATCH_SPANS) {
            let count: u64 = batch.iter().map(|s| 1 + s.children.len() as u64).sum();
            let first = self.next;
            self.next += batch.len() as u64;
            if self.failures_in_a_row >= GIVE_UP_AFTER
                && self.retry_at.is_some_and(|t| Instant::now() < t)
            {
                self.report.dropped += count;
                continue;
            }
            let body = ExportTraceServiceRequest {
                resource_spans: vec![encode(&self.resource, batch, first)],
            }
            .encode_to_vec();
            let answer = self
                .agent
                .post(&self.url)
                .header("Content-Type", "application/x-protobuf")
                .send(&body[..]);
            match answer {
                Ok(_) => {
                    self.failures_in_a_row = 0;
                    self.report.sent += count;
                }
                Err(e) => {
                    self.failures_in_a_row += 1;
                    if self.failures_in_a_row >= GIVE_UP_AFTER {
                        self.retry_at = Some(Instant::now() + COOL_DOWN);
                    }
                    self.report.dropped += count;
                    self.report.error = Some(e.to_string());
                }
            }
        }
    }

    pub fn report(&self) -> &SendReport {
        &self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_gets_the_traces_path_and_only_http() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/").unwrap(),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/otlp/v1/traces").unwrap(),
            "http://c:4318/otlp/v1/traces"
        );
        assert!(traces_url("https://c:4318").is_err());
        assert!(traces_url("127.0.0.1:4318").is_err());
        assert!(traces_url("http:///v1/traces").is_err());
    }
}
