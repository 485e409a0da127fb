//! Choosing probes on the command line: probe files, single probes, and
//! built-in profiles, shared by `record`, `probes` and `demo`.
use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use crate::probes::{profile_requests, ProbeFile, ProbeRequest};

#[derive(Debug, Args, Default, Clone)]
pub struct ProbeSelection {
    /// Built-in profile as NAME:SET[,SET...]: apache:lean, apache:connection,
    /// apache:request, apache:tls, apache:backend, apache:io, apache:handoff,
    /// apache:full (repeatable, combinable; `flowdar probes` lists them).
    #[arg(long, value_name = "NAME:SETS")]
    pub profile: Vec<String>,
    /// TOML probe file.
    #[arg(long, value_name = "FILE")]
    pub probes: Option<PathBuf>,
    /// Only these sets of the probe file (repeatable; default: all).
    #[arg(long, value_name = "SET", requires = "probes")]
    pub set: Vec<String>,
    /// A probe as TARGET:FUNCTION, e.g. apache2:ap_read_request or
    /// libapr-1:apr_socket_* (repeatable; FUNCTION may be a glob).
    #[arg(long = "probe", value_name = "TARGET:FUNCTION")]
    pub probe: Vec<ProbeRequest>,
    /// Where separate debug files live (build-id and debuglink lookups).
    #[arg(long, value_name = "DIR", default_value = crate::symbols::DEBUG_ROOT)]
    pub debug_dir: PathBuf,
}

impl ProbeSelection {
    /// A built-in profile is for one kind of server: refuse a PID that maps
    /// none of the profile's files (`--profile apache:...` on a shell, say)
    /// with a sentence naming both, rather than a per-probe lookup failure.
    pub fn check_server(&self, pid: u32) -> anyhow::Result<()> {
        let Ok(maps) = crate::probes::ProcMaps::read(pid) else {
            return Ok(()); // resolution reports an unreadable map itself
        };
        for spec in &self.profile {
            let mut requests = profile_requests(spec)?;
            requests.dedup_by(|a, b| a.target == b.target);
            let mut targets: Vec<String> = requests.iter().map(|r| r.target.clone()).collect();
            targets.sort();
            targets.dedup();
            if requests
                .iter()
                .all(|r| crate::probes::locate(&maps, r).is_err())
            {
                let name = spec.split(':').next().unwrap_or(spec);
                bail!(
                    "PID {pid} ({}) is not the server profile `{spec}` is for: it maps none of {}, by name or by the functions they define (is it the {name} parent process?)",
                    crate::capture::comm(pid).unwrap_or_else(|| "?".into()),
                    targets.join(", "),
                );
            }
        }
        Ok(())
    }

    /// Whether nothing was chosen.
    pub fn is_empty(&self) -> bool {
        self.profile.is_empty() && self.probes.is_none() && self.probe.is_empty()
    }

    /// This selection, or `profile` when nothing was chosen.
    pub fn or_profile(mut self, profile: &str) -> Self {
        if self.is_empty() {
            self.profile.push(profile.into());
        }
        self
    }

    /// The requests of the profiles, then the probe file, then the command line.
    pub fn requests(&self) -> anyhow::Result<Vec<ProbeRequest>> {
        let mut out = Vec::new();
        for p in &self.profile {
            out.extend(profile_requests(p)?);
        }
        if let Some(path) = &self.probes {
            out.extend(ProbeFile::load(path)?.requests(&self.set)?);
        }
        out.extend_from_slice(&self.probe);
        if out.is_empty() {
            bail!("nothing to probe: give --profile NAME:SET, --probes FILE or --probe TARGET:FUNCTION");
        }
        Ok(out)
    }
}
