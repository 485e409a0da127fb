//! `flowdar export --format otlp`: a trace's requests to an OpenTelemetry
//! collector.
use std::{path::Path, time::Duration};

use anyhow::bail;
use clap::Args;

use crate::{analysis, otlp};

#[derive(Debug, Args)]
pub struct OtlpArgs {
    /// Where --format otlp sends spans: an OTLP/HTTP receiver,
    /// http://HOST:PORT[/PATH] (the OpenTelemetry Collector, Jaeger and
    /// Grafana Tempo listen on 4318; the path defaults to /v1/traces).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Functions whose calls inside a request become its child spans,
    /// comma-separated (they must be probed in the trace, with their
    /// returns), e.g. ap_invoke_handler,apr_socket_recv.
    #[arg(long, value_name = "F,F...", value_delimiter = ',')]
    pub span_functions: Vec<String>,
    /// The resource's service.name.
    #[arg(long, default_value = "apache", value_name = "NAME")]
    pub service_name: String,
    /// How long the collector may take to answer one batch; a batch it does
    /// not take in time is dropped and counted.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub otlp_timeout: Duration,
}

pub fn export(trace: &Path, endpoint: &str, args: &OtlpArgs) -> anyhow::Result<()> {
    let (spans, scanned) = analysis::spans_of(trace, &args.span_functions)?;
    let header = &scanned.header;
    let resource = otlp::Resource {
        service_name: args.service_name.clone(),
        host: header.host.clone(),
        pid: header.target_pid,
        trace_file: trace.display().to_string(),
        id_seed: u64::from_str_radix(&crate::render::trace_id(header), 16).unwrap_or(1),
        unix_offset_ns: i128::from(header.start_unix_ns) - i128::from(header.start_monotonic_ns),
    };
    let mut sender = otlp::Sender::new(endpoint, resource, args.otlp_timeout)?;
    sender.send(&spans);
    let r = sender.report();
    let requests = spans
        .iter()
        .filter(|s| s.kind == analysis::SpanKind::Request)
        .count();
    let reading = spans.len() - requests;
    let unfinished = spans.iter().filter(|s| !s.finished).count();
    let children: usize = spans.iter().map(|s| s.children.len()).sum();
    println!(
        "{}: {requests} requests and {reading} requests still being read ({unfinished} unfinished in all), {children} child spans: sent {} spans to {}, dropped {}",
        trace.display(),
        r.sent,
        sender.url(),
        r.dropped
    );
    if r.dropped > 0 {
        bail!(
            "{} of {} spans were not taken by {} ({}); the trace file is unchanged: export it again when the collector is up",
            r.dropped,
            r.sent + r.dropped,
            sender.url(),
            r.error.as_deref().unwrap_or("no answer")
        );
    }
    Ok(())
}
