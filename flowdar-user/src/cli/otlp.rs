//! `flowdar export --format otlp`: a trace's requests to an OpenTelemetry
//! collector.
use std::{path::Path, time::Duration};

use anyhow::bail;
use clap::Args;

use crate::{analysis, otlp};

/// What spans carry, for `export --format otlp` and `--otlp` alike.
#[derive(Debug, Clone, Args)]
pub struct SpanArgs {
    /// Functions whose calls inside a request become its child spans,
    /// comma-separated (they must be probed, with their returns), e.g.
    /// ap_invoke_handler,apr_socket_recv.
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

#[derive(Debug, Args)]
pub struct OtlpArgs {
    /// Where --format otlp sends spans: an OTLP/HTTP receiver,
    /// http://HOST:PORT[/PATH] (the OpenTelemetry Collector, Jaeger and
    /// Grafana Tempo listen on 4318; the path defaults to /v1/traces).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    #[command(flatten)]
    pub spans: SpanArgs,
}

/// `--otlp URL` on `record` and `top`: spans sent while recording.
#[derive(Debug, Args)]
pub struct LiveOtlpArgs {
    /// Also send each request as an OpenTelemetry span while recording, to
    /// this OTLP/HTTP receiver (http://HOST:4318[/PATH]): a request goes
    /// about a second after it ends. Needs the request set's probes
    /// (--profile apache:request). A slow or absent collector costs spans
    /// (counted in the summary), never events: the trace holds everything.
    #[arg(long, value_name = "URL")]
    pub otlp: Option<String>,
    #[command(flatten)]
    pub spans: SpanArgs,
}

impl LiveOtlpArgs {
    /// The live export for a recording of `probes` into `output`, checked
    /// before anything is attached; None without --otlp.
    pub fn prepare(
        &self,
        pid: u32,
        output: &Path,
        probes: &[crate::store::TraceProbe],
    ) -> anyhow::Result<Option<otlp::LivePlan>> {
        let Some(url) = &self.otlp else {
            return Ok(None);
        };
        let builder = analysis::SpanBuilder::for_trace(output, probes, &self.spans.span_functions)?;
        let realtime = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
        let monotonic = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let ns = |t: rustix::time::Timespec| {
            i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec)
        };
        let resource = otlp::Resource {
            service_name: self.spans.service_name.clone(),
            host: crate::capture::hostname(),
            pid,
            trace_file: output.display().to_string(),
            id_seed: ns(realtime) as u64 ^ u64::from(pid).rotate_left(32),
            unix_offset_ns: ns(realtime) - ns(monotonic),
        };
        let sender = otlp::Sender::new(url, resource, self.spans.otlp_timeout)?;
        Ok(Some(otlp::LivePlan {
            builder,
            probes: probes.to_vec(),
            sender,
        }))
    }
}

/// The summary line of a live export.
pub fn live_line(url: &str, r: &otlp::SendReport) -> String {
    match &r.error {
        None => format!("OTLP: {} spans sent to {url} while recording, 0 dropped.", r.sent),
        Some(e) => format!(
            "OTLP: {} spans sent to {url} while recording, {} dropped (last failure: {e}); the trace holds every request: `flowdar export TRACE --format otlp --endpoint URL` sends them again.",
            r.sent, r.dropped
        ),
    }
}

pub fn export(trace: &Path, endpoint: &str, args: &OtlpArgs) -> anyhow::Result<()> {
    let args = &args.spans;
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

/// What a throwaway receiver took, as an operator reads it: spans by kind,
/// name, protocol and client, and the first request as a back end draws it.
pub fn received_summary(
    spans: &[crate::server::otlp_receiver::Received],
    batches: usize,
) -> String {
    use crate::server::otlp_receiver::attr;
    use std::collections::BTreeMap;
    let count = |pairs: BTreeMap<String, usize>| {
        pairs
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (mut names, mut versions, mut clients, mut children, mut statuses) = (
        BTreeMap::new(),
        BTreeMap::new(),
        BTreeMap::new(),
        BTreeMap::new(),
        BTreeMap::new(),
    );
    let mut unfinished = 0;
    for r in spans {
        let a = |k| attr(&r.span.attributes, k);
        unfinished += usize::from(a("flowdar.unfinished") == "true");
        if r.span.parent_span_id.is_empty() {
            *names.entry(r.span.name.clone()).or_default() += 1;
            *versions
                .entry(format!("HTTP/{}", a("network.protocol.version")))
                .or_default() += 1;
            *clients.entry(a("client.address")).or_default() += 1;
            *statuses
                .entry(format!("status {}", a("http.response.status_code")))
                .or_default() += 1;
        } else {
            *children.entry(r.span.name.clone()).or_default() += 1;
        }
    }
    let servers: usize = names.values().sum();
    let resource = spans.first().map(|r| &r.resource);
    let mut out = format!(
        "The throwaway OTLP receiver took {} spans in {batches} batch(es) (service.name {}, process.pid {}):\n  {servers} server spans: {}; {}; {}; clients: {}\n  {} child spans: {}\n  {unfinished} unfinished (still going when the recording stopped)",
        spans.len(),
        resource.map_or_else(String::new, |r| attr(r, "service.name")),
        resource.map_or_else(String::new, |r| attr(r, "process.pid")),
        count(names),
        count(versions),
        count(statuses),
        count(clients),
        children.values().sum::<usize>(),
        count(children),
    );
    if let Some(first) = spans.iter().find(|r| r.span.parent_span_id.is_empty()) {
        let s = &first.span;
        let us = |a: u64, b: u64| format!("{} µs", b.saturating_sub(a) / 1000);
        out.push_str(&format!(
            "\nIts first request, as a tracing back end draws it:\n  {} from {}:{} ({})",
            s.name,
            attr(&s.attributes, "client.address"),
            attr(&s.attributes, "client.port"),
            us(s.start_time_unix_nano, s.end_time_unix_nano)
        ));
        for c in spans
            .iter()
            .map(|r| &r.span)
            .filter(|c| c.parent_span_id == s.span_id)
        {
            out.push_str(&format!(
                "\n    {:<20} at +{:<10} {}",
                c.name,
                us(s.start_time_unix_nano, c.start_time_unix_nano),
                us(c.start_time_unix_nano, c.end_time_unix_nano)
            ));
        }
    }
    out
}
