//! The TOML probe file: named sets of functions (names or globs, with
//! exclusions) in binaries or libraries, and what to capture of each.
//!
//! ```toml
//! version = 1
//!
//! [[probe]]
//! set = "io"                            # optional name, selected with --set
//! target = "libapr-1"                   # a path, or a library short name
//! functions = ["apr_socket_*"]          # names or glob patterns
//! exclude = ["apr_socket_close"]        # names or glob patterns
//! args = 1                              # leading arguments kept (0..=3, default 3)
//! ret = true                            # keep the return value (default)
//! entry_only = false                    # true: no return probe, one trap a call
//!
//! [[probe.capture]]                     # per-function overrides
//! function = "apr_socket_recv"
//! deref = [{ arg = 2 }]                 # out-parameter read at exit (bytes = 4 or 8)
//! read = { arg = 0, offset = 16 }       # u64 at *(arg0 + 16), read at entry
//! client = { arg = 0 }                  # arg0 is Apache's conn_rec *: its client
//!
//! [[probe.capture]]                     # two hops: *(*(arg0 + 8) + 192)
//! function = "ap_process_request"
//! read = { arg = 0, offset = 8, then = 192 }
//! client = { read = true }              # the client of the conn_rec * read
//! ```
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use toml::Spanned;

use super::{Capture, ClientRead, Deref, ErrorRule, FieldRead, ProbeRequest};

/// The probe-file format version this build reads.
pub const PROBE_FILE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read probe file {path}")]
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
    #[error("{path}: no functions to probe{}", if .sets.is_empty() { String::new() } else { format!(" in set {}", .sets.join(", ")) })]
    Empty { path: PathBuf, sets: Vec<String> },
    #[error("{path}: no probe set named `{set}` (sets: {known})")]
    UnknownSet {
        path: PathBuf,
        set: String,
        known: String,
    },
}

/// A parsed probe file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeFile {
    #[serde(skip)]
    path: PathBuf,
    pub version: u32,
    #[serde(rename = "probe", default)]
    pub groups: Vec<ProbeGroup>,
    /// How to recognise a short-named target by what it is.
    #[serde(rename = "target", default)]
    pub targets: Vec<TargetRule>,
}

/// `[[target]] name = "apache2", defines = "ap_read_request"`: a probe group
/// whose target is `name` attaches to the file the process maps under that
/// name or, failing that, to the mapped file that defines the function
/// (Apache built as `httpd`, APR linked into it, ...).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetRule {
    pub name: String,
    pub defines: String,
}

/// Functions of one target, with their capture settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeGroup {
    /// The set this group belongs to (`--set`, `--profile apache:SET`).
    pub set: Option<String>,
    pub target: String,
    pub functions: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    pub args: Option<Spanned<u8>>,
    pub ret: Option<bool>,
    /// No return probe (see `Capture::entry_only`).
    pub entry_only: Option<bool>,
    /// Which return values are failures: "nonzero", "zero" or "negative".
    pub errors: Option<ErrorRule>,
    #[serde(default)]
    pub capture: Vec<Spanned<FunctionCapture>>,
}

/// Capture overrides for one function of a group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionCapture {
    pub function: String,
    pub args: Option<u8>,
    pub ret: Option<bool>,
    pub entry_only: Option<bool>,
    #[serde(default)]
    pub deref: Vec<Deref>,
    pub read: Option<FieldRead>,
    pub errors: Option<ErrorRule>,
    pub client: Option<ClientRead>,
    /// `request_rec->headers_in` (see `Capture::traceparent`).
    pub traceparent: Option<FieldRead>,
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
        let at = |offset: usize, message: String| {
            let (line, column) = line_col(text, offset);
            ConfigError::Syntax {
                path: path.into(),
                line,
                column,
                message,
            }
        };
        let mut file: ProbeFile = toml::from_str(text).map_err(|e| {
            at(
                e.span().map_or(0, |s| s.start),
                e.message().trim().replace('\n', " "),
            )
        })?;
        file.path = path.into();
        if file.version != PROBE_FILE_VERSION {
            return Err(ConfigError::Version {
                path: path.into(),
                found: file.version,
            });
        }
        for g in &file.groups {
            if let Some(a) = &g.args {
                g.default_capture()
                    .check()
                    .map_err(|m| at(a.span().start, m))?;
            }
            for c in &g.capture {
                let name = &c.get_ref().function;
                if !g
                    .functions
                    .iter()
                    .any(|f| f == name || glob_matches(f, name))
                {
                    return Err(at(
                        c.span().start,
                        format!("capture for `{name}`, which is not among this group's functions"),
                    ));
                }
                g.capture_for(c.get_ref())
                    .check()
                    .map_err(|m| at(c.span().start, format!("{name}: {m}")))?;
            }
        }
        if file.groups.iter().all(|g| g.functions.is_empty()) {
            return Err(ConfigError::Empty {
                path: path.into(),
                sets: Vec::new(),
            });
        }
        Ok(file)
    }

    /// Names of the sets defined, in file order.
    pub fn sets(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in self.groups.iter().filter_map(|g| g.set.clone()) {
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }

    /// The probe requests of the chosen sets (all when `sets` is empty), in
    /// file order.
    pub fn requests(&self, sets: &[String]) -> Result<Vec<ProbeRequest>, ConfigError> {
        let known = self.sets();
        for s in sets {
            if !known.contains(s) {
                return Err(ConfigError::UnknownSet {
                    path: self.path.clone(),
                    set: s.clone(),
                    known: if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    },
                });
            }
        }
        let chosen =
            |g: &ProbeGroup| sets.is_empty() || g.set.as_ref().is_some_and(|s| sets.contains(s));
        let out: Vec<ProbeRequest> = self
            .groups
            .iter()
            .filter(|g| chosen(g))
            .flat_map(|g| {
                let overrides: BTreeMap<String, Capture> = g
                    .capture
                    .iter()
                    .map(|c| (c.get_ref().function.clone(), g.capture_for(c.get_ref())))
                    .collect();
                let defines = self
                    .targets
                    .iter()
                    .find(|t| t.name == g.target)
                    .map(|t| t.defines.clone());
                g.functions.iter().map(move |f| ProbeRequest {
                    target: g.target.clone(),
                    function: f.clone(),
                    exclude: g.exclude.clone(),
                    capture: g.default_capture(),
                    overrides: overrides.clone(),
                    defines: defines.clone(),
                })
            })
            .collect();
        if out.is_empty() {
            return Err(ConfigError::Empty {
                path: self.path.clone(),
                sets: sets.to_vec(),
            });
        }
        Ok(out)
    }
}

impl ProbeGroup {
    fn default_capture(&self) -> Capture {
        let d = Capture::default();
        Capture {
            args: self.args.as_ref().map_or(d.args, |a| *a.get_ref()),
            ret: self.ret.unwrap_or(d.ret),
            errors: self.errors,
            entry_only: self.entry_only.unwrap_or(d.entry_only),
            ..d
        }
    }

    fn capture_for(&self, c: &FunctionCapture) -> Capture {
        let base = self.default_capture();
        Capture {
            args: c.args.unwrap_or(base.args),
            ret: c.ret.unwrap_or(base.ret),
            deref: c.deref.clone(),
            read: c.read,
            errors: c.errors.or(base.errors),
            client: c.client,
            entry_only: c.entry_only.unwrap_or(base.entry_only),
            traceparent: c.traceparent,
        }
    }
}

/// True when `pattern` is a glob (has `*`, `?` or `[`) matching `name`.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    is_glob(pattern) && glob::Pattern::new(pattern).is_ok_and(|p| p.matches(name))
}

pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

pub use flowdar_trace::text::line_col;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ProbeFile, ConfigError> {
        ProbeFile::parse(Path::new("p.toml"), text)
    }

    #[test]
    fn parses_the_shipped_example() {
        let text = include_str!("../../examples/apache-request.toml");
        let reqs = parse(text).unwrap().requests(&[]).unwrap();
        assert_eq!(reqs.len(), 4);
        assert_eq!(reqs[0].target, "/usr/sbin/apache2");
        assert_eq!(reqs[0].function, "ap_read_request");
        assert_eq!(reqs[0].capture.args, 1);
        assert_eq!(reqs[3].target, "libapr-1");
        assert_eq!(reqs[3].capture, Capture::default());
    }

    const SETS: &str = r#"version = 1
[[probe]]
set = "io"
target = "libapr-1"
functions = ["apr_socket_*"]
exclude = ["apr_socket_close"]
args = 1

[[probe.capture]]
function = "apr_socket_recv"
deref = [{ arg = 2 }]

[[probe]]
set = "handoff"
target = "apache2"
functions = ["ap_queue_pop_something"]
args = 0
ret = false

[[probe.capture]]
function = "ap_queue_pop_something"
deref = [{ arg = 1 }, { arg = 3, bytes = 4 }]
read = { arg = 0, offset = 16 }
"#;

    #[test]
    fn sets_globs_exclusions_and_captures() {
        let f = parse(SETS).unwrap();
        assert_eq!(f.sets(), ["io", "handoff"]);
        let io = f.requests(&["io".into()]).unwrap();
        assert_eq!(io.len(), 1);
        assert_eq!(io[0].function, "apr_socket_*");
        assert_eq!(io[0].exclude, ["apr_socket_close"]);
        assert_eq!(io[0].capture.args, 1);
        assert_eq!(
            io[0].capture_for("apr_socket_recv").deref,
            [Deref { arg: 2, bytes: 8 }]
        );
        assert_eq!(io[0].capture_for("apr_socket_send").deref, []);
        let all = f.requests(&[]).unwrap();
        let pop = all[1].capture_for("ap_queue_pop_something");
        assert_eq!((pop.args, pop.ret), (0, false));
        assert_eq!(
            pop.deref,
            [Deref { arg: 1, bytes: 8 }, Deref { arg: 3, bytes: 4 }]
        );
        assert_eq!(
            pop.read,
            Some(FieldRead {
                arg: 0,
                offset: 16,
                then: None
            })
        );
        let err = f.requests(&["nope".into()]).unwrap_err().to_string();
        assert_eq!(err, "p.toml: no probe set named `nope` (sets: io, handoff)");
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
    fn impossible_captures_name_their_line() {
        let err = parse("version = 1\n[[probe]]\ntarget = \"x\"\nfunctions = [\"f\"]\nargs = 5\n")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.toml:5:8: args = 5, but at most 3 arguments are captured"
        );
        let text = "version = 1\n[[probe]]\ntarget = \"x\"\nfunctions = [\"f\"]\n[[probe.capture]]\nfunction = \"g\"\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(
            err.starts_with("p.toml:5:1: capture for `g`, which is not among"),
            "{err}"
        );
        let text = "version = 1\n[[probe]]\ntarget = \"x\"\nfunctions = [\"f\"]\n[[probe.capture]]\nfunction = \"f\"\nread = { arg = 0 }\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(
            err.contains("f: a field read needs a free entry slot"),
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
