//! Errors as one line. Every error type in Flowdar displays its own context
//! only and carries its cause as `source` (aya's convention), so a message
//! is the chain joined, each cause once.
pub use flowdar_trace::text::one_line as chain;
