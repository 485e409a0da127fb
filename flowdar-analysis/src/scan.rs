//! One pass over a trace: events paired into calls (in-flight ones at the
//! end), handed to a consumer. Every analysis command is built on this.
use std::path::Path;

use super::{Call, CallPairer, PairingCounts};
use flowdar_trace::{StoreError, TraceFooter, TraceHeader, TraceReader};

/// What a scan learnt besides the calls.
#[derive(Debug)]
pub struct Scanned {
    pub header: TraceHeader,
    pub footer: Option<TraceFooter>,
    pub warnings: Vec<String>,
    pub pairing: PairingCounts,
    pub events: u64,
    /// First and last event time (monotonic ns); the end is the capture's
    /// end when the footer has it.
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Scanned {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}

/// Reads `path`, calling `on_event` for each event and `on_call` for each
/// call as it completes, then for each call still open at the end.
pub fn scan(
    path: &Path,
    mut on_event: impl FnMut(&flowdar_common::Event),
    mut on_call: impl FnMut(&Call),
) -> Result<Scanned, StoreError> {
    let reader = TraceReader::open(path)?;
    let header = reader.header().clone();
    let mut pairer = CallPairer::for_probes(&header.probes);
    let mut events = 0u64;
    let mut last = header.start_monotonic_ns;
    let reader = reader.for_each_event(|e| {
        events += 1;
        last = last.max(e.ts_ns);
        on_event(e);
        pairer.push(e, |c| on_call(&c));
    })?;
    let footer = reader.footer().cloned();
    let end_ns = footer
        .as_ref()
        .map_or(last, |f| f.end_monotonic_ns.max(last));
    let pairing = pairer.finish(end_ns, |c| on_call(&c));
    Ok(Scanned {
        start_ns: header.start_monotonic_ns,
        header,
        footer,
        warnings: reader.warnings().iter().map(ToString::to_string).collect(),
        pairing,
        events,
        end_ns,
    })
}
