//! Formatting helpers shared by the subcommands' text output.
use std::time::Duration;

pub use crate::units::{bytes, ns, signed_ns};

pub fn duration(d: Duration) -> String {
    ns(d.as_nanos() as u64)
}

/// The file name of a path, for compact tables.
pub fn short_object(path: &std::path::Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
