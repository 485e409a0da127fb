//! The TOML probe file: which functions of which binaries to trace.
//!
//! ```toml
//! version = 1
//!
//! [[probe]]
//! target = "/usr/sbin/apache2"          # a path, or a library short name
//! functions = ["ap_read_request", "ap_invoke_handler"]
//!
//! [[probe]]
//! target = "libapr-1"                   # found in the target's /proc/PID/maps
//! functions = ["apr_socket_recv"]
//! ```
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ProbeRequest;

/// The probe-file format version this build reads.
pub const PROBE_FILE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read probe file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: unsupported probe file version {found} (this flowdar reads version {PROBE_FILE_VERSION})")]
    Version { path: PathBuf, found: u32 },
    #[error("{path}: no functions to probe")]
    Empty { path: PathBuf },
}

/// A parsed probe file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProbeFile {
    pub version: u32,
    #[serde(rename = "probe", default)]
    pub probes: Vec<ProbeGroup>,
}

/// Functions of one target.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProbeGroup {
    pub target: String,
    pub functions: Vec<String>,
    /// Leading integer arguments to keep for these functions (0..=3, default 3).
    #[serde(default = "all_args")]
    pub args: u8,
}

fn all_args() -> u8 {
    flowdar_common::MAX_ARGS as u8
}

impl ProbeFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses probe-file text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let file: ProbeFile = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError::Syntax {
                path: path.into(),
                line,
                column,
                message: e.message().trim().replace('\n', " "),
            }
        })?;
        if file.version != PROBE_FILE_VERSION {
            return Err(ConfigError::Version {
                path: path.into(),
                found: file.version,
            });
        }
        if let Some(g) = file
            .probes
            .iter()
            .find(|g| usize::from(g.args) > flowdar_common::MAX_ARGS)
        {
            return Err(ConfigError::Syntax {
                path: path.into(),
                line: 1,
                column: 1,
                message: format!(
                    "probe group for `{}`: args = {}, but at most {} arguments are captured",
                    g.target,
                    g.args,
                    flowdar_common::MAX_ARGS
                ),
            });
        }
        if file.probes.iter().all(|g| g.functions.is_empty()) {
            return Err(ConfigError::Empty { path: path.into() });
        }
        Ok(file)
    }

    /// The probe requests, in file order.
    pub fn requests(&self) -> Vec<ProbeRequest> {
        self.probes
            .iter()
            .flat_map(|g| {
                g.functions.iter().map(|f| ProbeRequest {
                    args: g.args,
                    ..ProbeRequest::new(&g.target, f)
                })
            })
            .collect()
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ProbeFile, ConfigError> {
        ProbeFile::parse(Path::new("p.toml"), text)
    }

    #[test]
    fn parses_the_shipped_example() {
        let text = include_str!("../../examples/apache-request.toml");
        let file = parse(text).unwrap();
        let reqs = file.requests();
        assert_eq!(reqs.len(), 4);
        assert_eq!(
            reqs[0],
            ProbeRequest {
                args: 1,
                ..ProbeRequest::new("/usr/sbin/apache2", "ap_read_request")
            }
        );
        assert_eq!(reqs[3], ProbeRequest::new("libapr-1", "apr_socket_recv"));
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let err =
            parse("version = 1\n[[probe]]\ntarget = \"x\"\nfunctons = [\"f\"]\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("p.toml:4:1: unknown field `functons`"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "one line: {msg}");
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let err = parse("version = 1\n[[probe]]\ntarget = \"x\nfunctions = []\n").unwrap_err();
        match err {
            ConfigError::Syntax { line, .. } => assert_eq!(line, 3),
            other => panic!("expected a syntax error, got {other}"),
        }
    }

    #[test]
    fn wrong_type_names_its_line() {
        let err = parse("version = 1\n[[probe]]\ntarget = \"x\"\nfunctions = \"f\"\n").unwrap_err();
        assert!(
            err.to_string().starts_with("p.toml:4:13: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn version_and_emptiness_are_checked() {
        let err =
            parse("version = 2\n[[probe]]\ntarget = \"x\"\nfunctions = [\"f\"]\n").unwrap_err();
        assert!(
            matches!(err, ConfigError::Version { found: 2, .. }),
            "{err}"
        );
        let err = parse("version = 1\n").unwrap_err();
        assert!(matches!(err, ConfigError::Empty { .. }), "{err}");
        let err = parse("[[probe]]\ntarget = \"x\"\nfunctions = [\"f\"]\n").unwrap_err();
        assert!(err.to_string().contains("missing field `version`"), "{err}");
    }
}
