//! A hive-partitioned Parquet dataset that many traces append to, for
//! engines that read a whole lab's runs at once (Spark, DuckDB, Trino,
//! DataFusion). Layout (docs/dataset.md):
//!
//! ```text
//! DIR/calls/host=H/run=R/phase=P/calls-<trace_id>.parquet
//! DIR/events/host=H/run=R/phase=P/events-<trace_id>.parquet
//! ```
//! A trace goes in once: its id (a hash of its header) names its files,
//! and a second append of it is refused wherever it was put.
use std::path::{Path, PathBuf};

use super::{tables, RenderError, TableFormat};

/// Where in the dataset a trace goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub host: String,
    pub run: String,
    pub phase: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{key} `{value}` cannot name a partition: use letters, digits, `.`, `_`, `-` (starting with a letter or digit)")]
    BadValue { key: &'static str, value: String },
    #[error("this trace (id {id}) is already in the dataset: {existing}; nothing written")]
    Duplicate { id: String, existing: PathBuf },
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("{path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What an append wrote.
#[derive(Debug, Clone)]
pub struct Appended {
    pub trace_id: String,
    pub calls: PathBuf,
    pub events: PathBuf,
    pub rows: (u64, u64),
}

impl Partition {
    /// Hive writes `key=value` directory names; values holding `/`, `=`,
    /// spaces or a leading `.`/`_` (hidden files to Spark) would break them.
    pub fn check(&self) -> Result<(), DatasetError> {
        for (key, value) in [
            ("host", &self.host),
            ("run", &self.run),
            ("phase", &self.phase),
        ] {
            let ok = value
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !ok {
                return Err(DatasetError::BadValue {
                    key,
                    value: value.clone(),
                });
            }
        }
        Ok(())
    }

    fn dir(&self, root: &Path, table: &str) -> PathBuf {
        root.join(table)
            .join(format!("host={}", self.host))
            .join(format!("run={}", self.run))
            .join(format!("phase={}", self.phase))
    }
}

/// The file of `table` for trace `id` anywhere in the dataset, if any.
fn existing(root: &Path, table: &str, id: &str) -> Option<PathBuf> {
    let pattern = root
        .join(table)
        .join("*")
        .join("*")
        .join("*")
        .join(format!("{table}-{id}.parquet"));
    glob::glob(&pattern.to_string_lossy())
        .ok()?
        .flatten()
        .next()
}

/// Appends `trace` to the dataset at `root` under `partition`.
pub fn append(trace: &Path, root: &Path, partition: &Partition) -> Result<Appended, DatasetError> {
    partition.check()?;
    let header = flowdar_trace::TraceReader::open(trace)
        .map_err(RenderError::from)?
        .header()
        .clone();
    let id = tables::trace_id(&header);
    if let Some(existing) = existing(root, "calls", &id).or_else(|| existing(root, "events", &id)) {
        return Err(DatasetError::Duplicate { id, existing });
    }
    let (calls_dir, events_dir) = (partition.dir(root, "calls"), partition.dir(root, "events"));
    for d in [&calls_dir, &events_dir] {
        flowdar_trace::private::create_dir_all(d).map_err(|source| DatasetError::Io {
            path: d.clone(),
            source,
        })?;
    }
    let done = tables::TablePaths {
        calls: calls_dir.join(format!("calls-{id}.parquet")),
        events: events_dir.join(format!("events-{id}.parquet")),
    };
    // Written under hidden names (engines skip files starting with `.`),
    // then renamed: a reader never sees half a file.
    let hidden = |p: &Path| {
        p.with_file_name(format!(
            ".{}.tmp",
            p.file_name().unwrap_or_default().to_string_lossy()
        ))
    };
    let tmp = tables::TablePaths {
        calls: hidden(&done.calls),
        events: hidden(&done.events),
    };
    let rows = tables::write_tables(trace, &tmp, TableFormat::Parquet).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp.calls);
        let _ = std::fs::remove_file(&tmp.events);
    })?;
    for (from, to) in [(&tmp.events, &done.events), (&tmp.calls, &done.calls)] {
        std::fs::rename(from, to).map_err(|source| DatasetError::Io {
            path: to.clone(),
            source,
        })?;
    }
    Ok(Appended {
        trace_id: id,
        calls: done.calls,
        events: done.events,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_values_that_would_break_the_layout_are_refused() {
        let p = |host: &str| Partition {
            host: host.into(),
            run: "r1".into(),
            phase: "all".into(),
        };
        assert!(p("web-01.lab").check().is_ok());
        for bad in ["", "a/b", "a=b", ".hidden", "_tmp", "a b"] {
            assert!(p(bad).check().is_err(), "{bad:?}");
        }
    }
}
