//! OpenTelemetry export: a trace's requests as OTLP spans (`encode`), sent
//! to a collector over OTLP/HTTP in batches that never block the caller
//! for long (`send`): a slow or absent collector costs the spans it did
//! not take, counted, never the trace file.
mod encode;
mod live;
mod send;

pub use encode::{encode, Resource};
pub use live::{LiveExport, LivePlan};
pub use send::{EndpointError, SendReport, Sender, BATCH_SPANS};
