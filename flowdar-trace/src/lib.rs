//! The trace file: a versioned header, independent checksummed chunks of
//! zstd-compressed events, and a footer with the run's counters.
//!
//! ```text
//! "FLOWDAR\0" u32:format_version
//! frame*      frame = u8:kind u32:len u32:crc32(payload) payload[len]
//!   kind 1 header  JSON TraceHeader (first frame)
//!   kind 2 events  u32:encoded_len, zstd(columnar encoding, see `codec`)
//!   kind 3 footer  JSON TraceFooter (last frame; absent if the tracer died)
//! ```
//! Every chunk stands alone, so a file cut at any byte reads back up to its
//! last complete chunk.
//!
//! This crate is the bottom floor of Flowdar's user space: it knows events
//! and files, not the kernel, the command line or Apache. The tracer writes
//! it; the reader, analysis, exporters, benches and fuzz targets read it.
//! [`private`] creates every file that holds what a trace holds (the
//! trace, and the exports and reports derived from it) with the trace's
//! mode.
//!
//! The types serialised into a file (header, footer, [`TraceProbe`],
//! [`Capture`]) are owned here, so a change to them is a change of the
//! format, caught by `tests::header_shape_is_format_version_2`.
#![deny(clippy::unwrap_used, clippy::expect_used)]
mod capture;
mod codec;
mod format;
mod names;
pub mod private;
mod probe;
mod reader;
pub mod text;
mod writer;

pub use capture::{Capture, ClientRead, Deref, ErrorRule, FieldRead};
pub use codec::{decode as decode_chunk, ChunkEncoder};
pub use format::{
    ChunkIndex, MinDuration, OverheadEstimate, StoreError, TraceFooter, TraceHeader, CHUNK_EVENTS,
    FORMAT_VERSION, MAGIC,
};
pub use names::demangle;
pub use probe::{TraceProbe, KERNEL_PATH};
pub use reader::{ReadWarning, TraceReader};
pub use writer::TraceWriter;

#[cfg(test)]
mod tests;
