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
mod codec;
mod format;
mod reader;
mod writer;

pub use codec::{decode as decode_chunk, ChunkEncoder};
pub use format::{ChunkIndex, StoreError, TraceFooter, TraceHeader, FORMAT_VERSION, MAGIC};
pub use reader::{ReadWarning, TraceReader};
pub use writer::TraceWriter;

#[cfg(test)]
mod tests;
