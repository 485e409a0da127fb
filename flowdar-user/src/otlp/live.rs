//! Live export: spans made from a recording's batches of events (the
//! capture's tap: exactly what the trace file gets) and sent while it
//! records. Nothing here can hold the capture back: the tap is a channel
//! the capture's writer never waits on; the spans wait for the network in
//! a bounded queue, and what does not fit is dropped and counted.
use std::{
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use flowdar_analysis::{CallPairer, RequestSpan, SpanBuilder};
use flowdar_common::Event;
use flowdar_trace::TraceProbe;

use super::send::{SendReport, Sender, BATCH_SPANS};

/// Batches of spans waiting for the sender.
const QUEUE_BATCHES: usize = 16;
/// A span goes once its request has been over this long (an outer call of
/// the same request ends microseconds after the inner one)...
const SETTLE_NS: u64 = 1_000_000_000;
/// ...in a batch sent when it holds [`BATCH_SPANS`] requests or is this old.
const BATCH_AGE: Duration = Duration::from_secs(1);

/// What a live export needs, checked before the capture starts.
pub struct LivePlan {
    pub builder: SpanBuilder,
    /// The recording's probe table (probe ids are indexes into it).
    pub probes: Vec<TraceProbe>,
    pub sender: Sender,
}

/// A live export under way.
pub struct LiveExport {
    url: String,
    builder: JoinHandle<u64>,
    sender: JoinHandle<SendReport>,
}

/// CLOCK_MONOTONIC, the events' clock.
fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn spans_in(batch: &[RequestSpan]) -> u64 {
    batch.iter().map(|s| 1 + s.children.len() as u64).sum()
}

impl LiveExport {
    /// Starts the two threads; the returned channel is the capture's tap.
    pub fn start(plan: LivePlan) -> std::io::Result<(mpsc::Sender<Vec<Event>>, Self)> {
        let LivePlan {
            mut builder,
            probes,
            mut sender,
        } = plan;
        let url = sender.url().to_string();
        let (tap, events) = mpsc::channel::<Vec<Event>>();
        let (queue, waiting) = mpsc::sync_channel::<Vec<RequestSpan>>(QUEUE_BATCHES);
        let builder = std::thread::Builder::new()
            .name("flowdar-otlp-spans".into())
            .spawn(move || {
                let mut pairer = CallPairer::for_probes(&probes);
                let (mut pending, mut since, mut latest, mut dropped) =
                    (Vec::new(), Instant::now(), 0u64, 0u64);
                let offer = |batch: Vec<RequestSpan>, dropped: &mut u64| {
                    let n = spans_in(&batch);
                    if queue.try_send(batch).is_err() {
                        *dropped += n;
                    }
                };
                loop {
                    // An idle server sends nothing: its last requests still
                    // go, a second after they ended, by the clock.
                    let batch = match events.recv_timeout(BATCH_AGE) {
                        Ok(batch) => batch,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            latest = latest.max(monotonic_ns());
                            Vec::new()
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    for e in &batch {
                        latest = latest.max(e.ts_ns);
                        builder.add_event(e);
                        pairer.push(e, |c| builder.add(&c));
                    }
                    pending.extend(builder.take_settled(latest.saturating_sub(SETTLE_NS)));
                    if pending.len() >= BATCH_SPANS || since.elapsed() >= BATCH_AGE {
                        if !pending.is_empty() {
                            offer(std::mem::take(&mut pending), &mut dropped);
                        }
                        since = Instant::now();
                    }
                }
                // The capture stopped: what is still open is unfinished.
                pairer.finish(latest, |c| builder.add(&c));
                pending.extend(builder.take_all());
                if !pending.is_empty() {
                    offer(pending, &mut dropped);
                }
                dropped
            })?;
        let sender = std::thread::Builder::new()
            .name("flowdar-otlp-send".into())
            .spawn(move || {
                for batch in waiting {
                    sender.send(&batch);
                }
                sender.report().clone()
            })?;
        Ok((
            tap,
            Self {
                url,
                builder,
                sender,
            },
        ))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// After the capture stopped (its tap closed): sends what is left and
    /// says what went.
    pub fn finish(self) -> SendReport {
        let queued_out = self.builder.join().unwrap_or(0);
        let mut report = self.sender.join().unwrap_or_default();
        if queued_out > 0 {
            report.dropped += queued_out;
            report.error.get_or_insert_with(|| {
                "the collector fell behind: spans queued past the bound".into()
            });
        }
        report
    }
}
