//! The experiment spec (TOML, versioned): the server, the lab, the probes,
//! the variants (server settings compared side by side) and the phases,
//! each a legitimate load and optionally a slow-HTTP attack (slowhttptest).
//!
//! ```toml
//! version = 1
//! profile = ["apache:lean"]
//!
//! [server]                     # a throwaway Apache (default), or
//! mpm = "event"                # pid = 1234 + url, or command = [...] + url
//!
//! [[variant]]                  # every variant runs every phase
//! name = "reqtimeout"
//! config = "RequestReadTimeout header=1-3,MinRate=500"
//!
//! [[phase]]
//! name = "attack"
//! duration = "20s"
//! load = { connections = 20 }
//! attack = { mode = "headers", connections = 1000, rate = 200, interval = "10s", ramp = "5s" }
//! ```
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::server::Mpm;

/// Why a spec cannot be used, in one line (with line and column for
/// syntax).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read experiment spec {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: unsupported experiment spec version {found} (this flowdar reads version {SPEC_VERSION})")]
    Version { path: PathBuf, found: u32 },
    #[error("{path}: no phases to run")]
    Empty { path: PathBuf },
}

pub const SPEC_VERSION: u32 = 1;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub version: u32,
    /// Probe selections (as `--profile`).
    pub profile: Vec<String>,
    /// Single functions besides (as `--probe`, e.g. `apache2:ap_byterange_filter`).
    #[serde(default)]
    pub probe: Vec<String>,
    #[serde(default)]
    pub server: ServerSpec,
    #[serde(default)]
    pub lab: LabSpec,
    /// Server settings to compare; none given: one variant, `none`.
    #[serde(rename = "variant", default)]
    pub variants: Vec<Variant>,
    #[serde(rename = "phase")]
    pub phases: Vec<Phase>,
}

/// Where clients and attackers run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabSpec {
    /// Client and attacker each in a network namespace of their own
    /// (198.18.0.0/15 addresses); false: both on this host's loopback.
    #[serde(default = "yes")]
    pub namespaces: bool,
}

impl Default for LabSpec {
    fn default() -> Self {
        Self { namespaces: true }
    }
}

fn yes() -> bool {
    true
}

/// A server configuration to compare: lines added to the throwaway
/// Apache's configuration (after the server's own `config`).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    #[serde(default)]
    pub config: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// MPM of the throwaway Apache.
    #[serde(default)]
    pub mpm: Mpm,
    /// Trace this running server instead (with `url`).
    pub pid: Option<u32>,
    /// Start this command instead (it must stay in the foreground; with `url`).
    pub command: Option<Vec<String>>,
    /// The page loads fetch (`http://IP:PORT/PATH`): loopback, or an
    /// address admitted with `--allow-target`.
    pub url: Option<String>,
    /// Extra lines for the throwaway Apache's configuration.
    #[serde(default)]
    pub config: String,
    /// The throwaway Apache also listens with TLS (mod_ssl, a self-signed
    /// certificate) and speaks HTTP/2 there (mod_http2); the load goes to
    /// that port, with `client = "h2load"`.
    #[serde(default)]
    pub tls: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub name: String,
    #[serde(with = "humantime_serde_compat")]
    pub duration: Duration,
    pub load: Option<Load>,
    pub attack: Option<AttackSpec>,
}

/// The legitimate client (see `server::run_client`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Connections at once, each a closed loop of keep-alive GETs.
    pub connections: u32,
    /// Connect and answer timeout; a timeout counts as a failure.
    #[serde(with = "humantime_serde_compat", default = "one_s")]
    pub timeout: Duration,
    /// What the client fetches; default: the small page (or the server
    /// URL's path). `/large.bin` is the throwaway Apache's 1 MiB file.
    pub path: Option<String>,
    /// Which client: the built-in one (cleartext HTTP/1.1, the default),
    /// or `h2load` over TLS (needs `server.tls`).
    #[serde(default)]
    pub client: ClientKind,
    /// With h2load: streams at a time on each connection (`-m`).
    #[serde(default = "one")]
    pub streams: u32,
    /// With h2load: `h2` (the default) or `http/1.1` over TLS.
    #[serde(default)]
    pub protocol: Protocol,
    /// With h2load: requests per second on each connection (`--rps`);
    /// default: as fast as the server answers.
    pub rate: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    #[default]
    Builtin,
    H2load,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    #[default]
    #[serde(rename = "h2")]
    H2,
    #[serde(rename = "http/1.1")]
    Http11,
}

fn one() -> u32 {
    1
}

fn one_s() -> Duration {
    Duration::from_secs(1)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackSpec {
    pub mode: crate::server::AttackMode,
    pub connections: u32,
    #[serde(default = "hundred")]
    pub rate: u32,
    #[serde(with = "humantime_serde_compat", default = "five_s")]
    pub interval: Duration,
    /// Attack alone for this long before the load starts.
    #[serde(with = "humantime_serde_compat", default = "five_s")]
    pub ramp: Duration,
    /// What the attack requests; default: the throwaway Apache's small page
    /// (headers, body) or its 1 MiB file (read, range), or the server URL's
    /// path.
    pub path: Option<String>,
}

fn hundred() -> u32 {
    100
}

fn five_s() -> Duration {
    Duration::from_secs(5)
}

/// Durations as humantime strings ("20s", "500ms").
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("`{s}`: {e}")))
    }
}

/// The built-in experiments of the HTTP/2 era (`flowdar experiment --h2`),
/// each run into a directory of its name: a TLS and an HTTP/2 attack that
/// deny or degrade service on Debian's Apache with its default settings,
/// each with the mitigation that restores it.
pub const H2_SPECS: &[(&str, &str)] = &[
    (
        "tls-handshake",
        include_str!("../../examples/dos-tls-handshake.toml"),
    ),
    (
        "h2-slow-headers",
        include_str!("../../examples/dos-h2-slow-headers.toml"),
    ),
];

/// The built-in experiment: Debian's default worker pool, normal load,
/// then the same load under a Slowloris attack sized to deny service;
/// without mitigation and with mod_reqtimeout.
pub const DEFAULT_SPEC: &str = r#"version = 1
# The lean capture: socket I/O from the kernel's syscall tracepoints and
# one uprobe a request (`apache:request,io` probes 17 functions of the
# request path, at 0.55-0.65x of untraced throughput).
profile = ["apache:lean"]

[server]
mpm = "event"
# Debian's default worker pool: 150 workers (6 children x 25 threads).
config = "ServerLimit 6\nMaxRequestWorkers 150\n"

# Client and attacker each on a host of their own (network namespaces).
[lab]
namespaces = true

[[variant]]
name = "none"

[[variant]]
name = "reqtimeout"
# Close connections whose headers do not arrive within 1 s (up to 3 s while
# they keep coming at 500 bytes/s or more).
config = "LoadModule reqtimeout_module /usr/lib/apache2/modules/mod_reqtimeout.so\nRequestReadTimeout header=1-3,MinRate=500\n"

[[phase]]
name = "normal"
duration = "15s"
load = { connections = 20 }

[[phase]]
name = "attack"
duration = "40s"
load = { connections = 20 }
attack = { mode = "headers", connections = 1000, rate = 200, interval = "10s", ramp = "5s" }
"#;

impl Spec {
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, SpecError> {
        let spec: Spec = toml::from_str(text).map_err(|e| {
            let (line, column) =
                flowdar_trace::text::line_col(text, e.span().map_or(0, |s| s.start));
            SpecError::Syntax {
                path: path.into(),
                line,
                column,
                message: e.message().trim().replace('\n', " "),
            }
        })?;
        if spec.version != SPEC_VERSION {
            return Err(SpecError::Version {
                path: path.into(),
                found: spec.version,
            });
        }
        if spec.phases.is_empty() {
            return Err(SpecError::Empty { path: path.into() });
        }
        let mut names = std::collections::HashSet::new();
        for v in &spec.variants {
            let ok = !v.name.is_empty()
                && v.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok || !names.insert(v.name.as_str()) {
                let at = text
                    .match_indices(&format!("\"{}\"", v.name))
                    .nth(usize::from(names.contains(v.name.as_str()) && ok));
                let (line, column) = flowdar_trace::text::line_col(text, at.map_or(0, |(i, _)| i));
                return Err(SpecError::Syntax {
                    path: path.into(),
                    line,
                    column,
                    message: format!(
                        "variant `{}`: names are unique and made of letters, digits, - and _ (they name directories)",
                        v.name
                    ),
                });
            }
        }
        Ok(spec)
    }

    /// The variants to run: those given, or one, `none`, without changes.
    pub fn variants(&self) -> Vec<Variant> {
        if self.variants.is_empty() {
            vec![Variant {
                name: "none".into(),
                config: String::new(),
            }]
        } else {
            self.variants.clone()
        }
    }

    pub fn default_spec() -> Self {
        Self::parse(Path::new("<default experiment>"), DEFAULT_SPEC)
            .expect("the default spec parses")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz target starts from these: a seed that no longer parses
    /// would leave the fuzzer exploring only the parser's error paths.
    #[test]
    fn every_fuzz_seed_is_a_valid_spec() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../flowdar-user/fuzz/seeds/experiment_spec");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap();
            Spec::parse(&e.path(), &text)
                .unwrap_or_else(|err| panic!("{}: {err}", e.path().display()));
            n += 1;
        }
        assert!(n >= 4, "{n} seeds in {}", dir.display());
    }

    /// The specs the README's attack table points to.
    #[test]
    fn the_shipped_attack_specs_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        for mode in ["body", "read", "range"] {
            let path = dir.join(format!("attack-{mode}.toml"));
            Spec::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }

    #[test]
    fn the_h2_specs_parse_with_tls_and_their_attack() {
        for (name, text) in H2_SPECS {
            let s = Spec::parse(Path::new(name), text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(s.server.tls, "{name}");
            let attack = s.phases.last().and_then(|p| p.attack.as_ref()).unwrap();
            assert_eq!(attack.mode.name(), *name);
            assert!(s.variants.len() >= 2, "{name}: a mitigation");
        }
    }

    #[test]
    fn the_default_spec_parses() {
        let s = Spec::default_spec();
        assert_eq!(s.phases.len(), 2);
        assert_eq!(s.phases[1].attack.as_ref().unwrap().connections, 1000);
        assert_eq!(s.phases[0].duration, Duration::from_secs(15));
        let names: Vec<String> = s.variants().into_iter().map(|v| v.name).collect();
        assert_eq!(names, ["none", "reqtimeout"]);
        assert!(s.lab.namespaces);
    }

    #[test]
    fn errors_name_line_and_column() {
        let err = Spec::parse(
            Path::new("e.toml"),
            "version = 1\nprofile = []\n[[phase]]\nname = \"a\"\nduration = \"20 parsecs\"\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("e.toml:5:12: `20 parsecs`"),
            "{err}"
        );
        let err = Spec::parse(
            Path::new("e.toml"),
            "version = 1\nprofile = []\nphase = []\nattak = 1\n",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("e.toml:4:1: unknown field `attak`"),
            "{err}"
        );
    }

    #[test]
    fn variant_names_are_unique_directory_names() {
        let base = "version = 1\nprofile = []\n[[phase]]\nname = \"a\"\nduration = \"1s\"\n";
        let err = Spec::parse(
            Path::new("v.toml"),
            &format!("{base}[[variant]]\nname = \"x\"\n[[variant]]\nname = \"x\"\n"),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("v.toml:9:8: variant `x`: names are unique"),
            "{err}"
        );
        let err = Spec::parse(
            Path::new("v.toml"),
            &format!("{base}[[variant]]\nname = \"../up\"\n"),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("v.toml:7:8: variant `../up`"),
            "{err}"
        );
        let one = Spec::parse(Path::new("v.toml"), base).unwrap();
        assert_eq!(one.variants()[0].name, "none");
    }
}
