//! What to trace: probe requests from the command line, probe files and
//! built-in profiles, and their resolution to (file, offset) attach points
//! in the target process.
mod config;
mod locate;
mod procmaps;
mod profiles;
mod resolve;
mod syscalls;

use std::collections::BTreeMap;

pub use config::{
    glob_matches, is_glob, line_col, ConfigError, ProbeFile, ProbeGroup, PROBE_FILE_VERSION,
};
/// Capture settings are part of the trace format: the trace crate owns them.
pub use flowdar_trace::{Capture, ClientRead, Deref, ErrorRule, FieldRead};
pub use locate::{locate, Located};
pub use procmaps::{MappedFile, ProcMaps};
pub use profiles::{profile_requests, Profile, ProfileError, PROFILES};
pub use resolve::{
    resolve, resolve_all, resolve_with_targets, Resolution, ResolveError, ResolvedProbe,
};
pub use syscalls::{
    lookup as syscall_lookup, role_of as syscall_role, tracepoint_name as syscall_tracepoint,
    KERNEL_TARGET,
};

/// One function name or glob pattern to probe in one target (a path, or a
/// library short name such as `libapr-1` looked up in the memory map).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProbeRequest {
    pub target: String,
    /// A function name, or a glob pattern (`apr_socket_*`).
    pub function: String,
    /// Names or patterns left out of a glob's matches.
    pub exclude: Vec<String>,
    /// Capture settings of the matched functions...
    pub capture: Capture,
    /// ...unless a function has its own.
    pub overrides: BTreeMap<String, Capture>,
    /// A function the target defines, to recognise it by what it is when no
    /// mapped file has its name (a profile's `[[target]]` rule).
    pub defines: Option<String>,
}

impl ProbeRequest {
    /// A request with the default capture (3 arguments, the return value).
    pub fn new(target: impl Into<String>, function: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            function: function.into(),
            exclude: Vec::new(),
            capture: Capture::default(),
            overrides: BTreeMap::new(),
            defines: None,
        }
    }

    /// The capture settings for a function this request matched.
    pub fn capture_for(&self, function: &str) -> Capture {
        self.overrides
            .get(function)
            .cloned()
            .unwrap_or_else(|| self.capture.clone())
    }

    /// The function that identifies this request's target when its name
    /// does not: only a probe file's `[[target]]` rule gives one (a plain
    /// `--probe libssl:malloc` must not silently land in libc).
    pub fn identifying_function(&self) -> Option<&str> {
        self.defines.as_deref()
    }

    /// True when `name` is one of the exclusions.
    pub fn excludes(&self, name: &str) -> bool {
        self.exclude
            .iter()
            .any(|e| e == name || glob_matches(e, name))
    }
}

impl std::str::FromStr for ProbeRequest {
    type Err = String;

    /// Parses `TARGET:FUNCTION` (the last `:` splits, so paths may hold colons).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.rsplit_once(':') {
            Some((t, f)) if !t.is_empty() && !f.is_empty() => Ok(Self::new(t, f)),
            _ => Err(format!(
                "`{s}` is not TARGET:FUNCTION (e.g. /usr/sbin/apache2:ap_read_request or libapr-1:apr_socket_*)"
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

    #[test]
    fn exclusions_take_names_and_globs() {
        let mut p = ProbeRequest::new("libapr-1", "apr_*");
        p.exclude = vec!["apr_palloc".into(), "apr_table_*".into()];
        assert!(p.excludes("apr_palloc") && p.excludes("apr_table_get"));
        assert!(!p.excludes("apr_socket_recv"));
    }
}
