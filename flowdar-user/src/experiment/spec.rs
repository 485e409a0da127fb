//! The experiment spec (TOML, versioned): the server, the probes, and the
//! phases, each a workload (wrk) and optionally an attack (slowhttptest).
//!
//! ```toml
//! version = 1
//! profile = ["apache:request,io"]
//!
//! [server]                     # a throwaway Apache (default), or
//! mpm = "event"                # pid = 1234 + url, or command = [...] + url
//!
//! [[phase]]
//! name = "normal"
//! duration = "20s"
//! load = { connections = 20, threads = 2 }
//!
//! [[phase]]
//! name = "attack"
//! duration = "20s"
//! load = { connections = 20, threads = 2 }
//! attack = { mode = "headers", connections = 120, rate = 100, interval = "5s", ramp = "5s" }
//! ```
use std::{path::Path, time::Duration};

use serde::Deserialize;

use crate::{probes::ConfigError, server::Mpm};

pub const SPEC_VERSION: u32 = 1;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub version: u32,
    /// Probe selections (as `--profile`).
    pub profile: Vec<String>,
    #[serde(default)]
    pub server: ServerSpec,
    #[serde(rename = "phase")]
    pub phases: Vec<Phase>,
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
    /// The page loads fetch, on a loopback address (`http://127.0.0.1:PORT/PATH`).
    pub url: Option<String>,
    /// Extra lines for the throwaway Apache's configuration.
    #[serde(default)]
    pub config: String,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    pub connections: u32,
    #[serde(default = "two")]
    pub threads: u32,
}

fn two() -> u32 {
    2
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

/// The built-in experiment: normal load, then the same load under a
/// Slowloris attack strong enough to hurt but not to kill the bundled
/// Apache (event MPM, 150 workers like Debian's default).
pub const DEFAULT_SPEC: &str = r#"version = 1
profile = ["apache:request,io"]

[server]
mpm = "event"
# Debian's default worker pool: 150 workers (6 children x 25 threads).
config = "ServerLimit 6\nMaxRequestWorkers 150\n"

[[phase]]
name = "normal"
duration = "20s"
load = { connections = 20, threads = 2 }

[[phase]]
name = "attack"
duration = "25s"
load = { connections = 20, threads = 2 }
attack = { mode = "headers", connections = 120, rate = 60, interval = "5s", ramp = "5s" }
"#;

impl Spec {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let spec: Spec = toml::from_str(text).map_err(|e| {
            let (line, column) = crate::probes::line_col(text, e.span().map_or(0, |s| s.start));
            ConfigError::Syntax {
                path: path.into(),
                line,
                column,
                message: e.message().trim().replace('\n', " "),
            }
        })?;
        if spec.version != SPEC_VERSION {
            return Err(ConfigError::Version {
                path: path.into(),
                found: spec.version,
            });
        }
        if spec.phases.is_empty() {
            return Err(ConfigError::Empty {
                path: path.into(),
                sets: vec![],
            });
        }
        Ok(spec)
    }

    pub fn default_spec() -> Self {
        Self::parse(Path::new("<default experiment>"), DEFAULT_SPEC)
            .expect("the default spec parses")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_spec_parses() {
        let s = Spec::default_spec();
        assert_eq!(s.phases.len(), 2);
        assert_eq!(s.phases[1].attack.as_ref().unwrap().connections, 120);
        assert_eq!(s.phases[0].duration, Duration::from_secs(20));
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
}
