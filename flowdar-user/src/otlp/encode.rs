//! Requests ([`flowdar_analysis::RequestSpan`]) as OTLP spans, following
//! OpenTelemetry's HTTP semantic conventions as far as the trace knows
//! them: a SERVER span per request named by its method (`HTTP` when it is
//! not known), `http.request.method`, `http.response.status_code`,
//! `client.address` and `client.port`, `network.protocol.name`/`version`;
//! INTERNAL child spans named by function with `code.function.name`. A
//! request still going at the end of capture ends there, with
//! `flowdar.unfinished = true`; one still being read is named `read
//! request`. A request that carried a W3C `traceparent` joins that trace,
//! under the caller's span; any other is a root span of a trace of its own.
use flowdar_analysis::{RequestSpan, SpanKind};
use opentelemetry_proto::tonic::{
    common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValue},
    resource::v1::Resource as OtlpResource,
    trace::v1::{
        span::SpanKind as OtlpKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
    },
};

/// Who the spans are from.
#[derive(Debug, Clone)]
pub struct Resource {
    pub service_name: String,
    pub host: String,
    pub pid: u32,
    /// The trace file.
    pub trace_file: String,
    /// Seeds the span and trace ids: the same trace exports the same ids.
    pub id_seed: u64,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC at the recording, ns.
    pub unix_offset_ns: i128,
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, Value::StringValue(v.into()))
}

fn int(key: &str, v: i64) -> KeyValue {
    kv(key, Value::IntValue(v))
}

/// splitmix64: well-spread ids from a counter.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)).max(1)
}

/// The resource's spans for `spans` (`first` is the index of `spans[0]`
/// in the whole export: ids stay unique across batches).
pub fn encode(resource: &Resource, spans: &[RequestSpan], first: u64) -> ResourceSpans {
    let unix = |mono: u64| (i128::from(mono) + resource.unix_offset_ns).max(0) as u64;
    let mut out = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        let n = first + i as u64;
        // The caller's trace when the request carried a `traceparent`.
        let trace_id = match s.parent {
            Some(p) => p.trace_id.to_be_bytes().to_vec(),
            None => [
                mix(resource.id_seed ^ n).to_be_bytes(),
                mix(n.rotate_left(17) ^ !resource.id_seed).to_be_bytes(),
            ]
            .concat(),
        };
        let parent_span_id = s
            .parent
            .map_or_else(Vec::new, |p| p.span_id.to_be_bytes().to_vec());
        let span = mix(resource.id_seed.wrapping_add(n << 16));
        let span_id = span.to_be_bytes().to_vec();
        let mut attributes = vec![
            text("network.protocol.name", "http"),
            text("network.protocol.version", s.protocol),
            int("thread.id", i64::from(s.tid)),
            int("process.pid", i64::from(s.pid)),
        ];
        if let Some(c) = s.client {
            attributes.push(text("client.address", c.ip().to_string()));
            attributes.push(int("client.port", i64::from(c.port())));
        }
        if let Some(m) = s.method {
            attributes.push(text("http.request.method", m));
        }
        if let Some(code) = s.status {
            attributes.push(int("http.response.status_code", i64::from(code)));
        }
        if !s.finished {
            attributes.push(kv("flowdar.unfinished", Value::BoolValue(true)));
        }
        out.push(Span {
            trace_id: trace_id.clone(),
            span_id: span_id.clone(),
            parent_span_id,
            flags: s.parent.map_or(0, |p| u32::from(p.flags)),
            // OpenTelemetry's name for a server span without a route:
            // the method, or HTTP when it is not known.
            name: match (s.kind, s.method) {
                (SpanKind::Request, Some(m)) if m != "_OTHER" => m.into(),
                (SpanKind::Request, _) => "HTTP".into(),
                (SpanKind::ReadRequest, _) => "read request".into(),
            },
            // Server errors are errors of the span; 4xx are the client's.
            status: s.status.filter(|&c| c >= 500).map(|c| Status {
                code: StatusCode::Error as i32,
                message: format!("HTTP {c}"),
            }),
            kind: OtlpKind::Server as i32,
            start_time_unix_nano: unix(s.start_ns),
            end_time_unix_nano: unix(s.end_ns),
            attributes,
            ..Default::default()
        });
        for (j, c) in s.children.iter().enumerate() {
            let mut attributes = vec![
                text("code.function.name", c.function.clone()),
                int("thread.id", i64::from(c.tid)),
            ];
            if !c.finished {
                attributes.push(kv("flowdar.unfinished", Value::BoolValue(true)));
            }
            out.push(Span {
                trace_id: trace_id.clone(),
                span_id: mix(span.wrapping_add(j as u64 + 1)).to_be_bytes().to_vec(),
                parent_span_id: span_id.clone(),
                name: c.function.clone(),
                kind: OtlpKind::Internal as i32,
                start_time_unix_nano: unix(c.start_ns),
                end_time_unix_nano: unix(c.end_ns),
                attributes,
                ..Default::default()
            });
        }
    }
    ResourceSpans {
        resource: Some(OtlpResource {
            attributes: vec![
                text("service.name", resource.service_name.clone()),
                text("host.name", resource.host.clone()),
                int("process.pid", i64::from(resource.pid)),
                text("flowdar.trace", resource.trace_file.clone()),
            ],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "flowdar".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            }),
            spans: out,
            ..Default::default()
        }],
        ..Default::default()
    }
}
