//! What to trace: probe requests from the command line or a probe file, and
//! their resolution to (file, offset) attach points in the target process.
mod config;
mod procmaps;
mod resolve;

use flowdar_common::MAX_ARGS;

pub use config::{ConfigError, ProbeFile, ProbeGroup, PROBE_FILE_VERSION};
pub use procmaps::{MappedFile, ProcMaps};
pub use resolve::{resolve, ResolveError, ResolvedProbe};

/// One function to probe in one target (a path, or a library short name
/// such as `libapr-1` looked up in the target's memory map).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProbeRequest {
    pub target: String,
    pub function: String,
    /// How many leading integer arguments to keep (0..=3); the rest are
    /// zeroed before storage (registers past a function's arity hold noise).
    pub args: u8,
}

impl ProbeRequest {
    /// A request keeping every captured argument.
    pub fn new(target: impl Into<String>, function: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            function: function.into(),
            args: MAX_ARGS as u8,
        }
    }
}

impl std::str::FromStr for ProbeRequest {
    type Err = String;

    /// Parses `TARGET:FUNCTION` (the last `:` splits, so paths may hold colons).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.rsplit_once(':') {
            Some((t, f)) if !t.is_empty() && !f.is_empty() => {
                Ok(Self { target: t.to_string(), function: f.to_string(), args: MAX_ARGS as u8 })
            }
            _ => Err(format!(
                "`{s}` is not TARGET:FUNCTION (e.g. /usr/sbin/apache2:ap_read_request or libapr-1:apr_socket_recv)"
            )),
        }
    }
}

impl std::fmt::Display for ProbeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.target, self.function)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_target_and_function() {
        let p: ProbeRequest = "libapr-1:apr_socket_recv".parse().unwrap();
        assert_eq!(p.target, "libapr-1");
        assert_eq!(p.function, "apr_socket_recv");
        let p: ProbeRequest = "/usr/sbin/apache2:ap_read_request".parse().unwrap();
        assert_eq!(p.target, "/usr/sbin/apache2");
    }

    #[test]
    fn rejects_missing_parts() {
        for bad in ["ap_read_request", ":f", "t:", ""] {
            assert!(bad.parse::<ProbeRequest>().is_err(), "{bad}");
        }
    }
}
