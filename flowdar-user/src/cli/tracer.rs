//! The lab's recordings, made by this crate's capture: `flowdar-lab` asks
//! for a [`Tracer`]; the CLI hands it this one, with the attach plan of
//! the command line.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use flowdar_lab::{Recorded, Selection, Tracer, TracerError};
use flowdar_trace::TraceProbe;

use crate::{
    capture::{self, AttachPlan, RecordOptions, Recording},
    probes::{self, Capture, ProbeRequest, ResolvedProbe},
    symbols::DEBUG_ROOT,
};

/// Records with Flowdar's kernel programs, attached as `plan` says.
pub struct CaptureTracer {
    pub plan: AttachPlan,
}

impl Tracer for CaptureTracer {
    fn check(&self, pid: Option<u32>) -> Result<(), TracerError> {
        capture::check_privileges(("experiment", pid, self.plan.mode))?;
        Ok(())
    }

    fn allows_wide_sets(&self) -> Result<bool, TracerError> {
        let mechanism = capture::kernel_features().mechanism(self.plan.mode)?;
        Ok(mechanism.detach_secs_each().is_none() || self.plan.slow_detach_ok)
    }

    fn resolve(&self, pid: u32, selection: Selection<'_>) -> Result<Vec<TraceProbe>, TracerError> {
        let requests = match selection {
            Selection::Named { profiles, probes } => named(profiles, probes)?,
            Selection::Functions(functions) => functions.iter().map(function).collect(),
        };
        let resolved = probes::resolve(pid, &requests, Path::new(DEBUG_ROOT))?;
        Ok(resolved.into_iter().map(TraceProbe::from).collect())
    }

    fn mechanism(&self, functions: usize) -> Result<String, TracerError> {
        Ok(capture::attach_mechanism(&self.plan, functions)?.to_string())
    }

    fn start(
        &self,
        pid: u32,
        probes: &[TraceProbe],
        trace: &Path,
    ) -> Result<Box<dyn flowdar_lab::Recording>, TracerError> {
        let recording = Recording::start(RecordOptions {
            pid,
            probes: probes.iter().cloned().map(ResolvedProbe::from).collect(),
            output: trace.to_path_buf(),
            force: true,
            plan: self.plan,
            ..Default::default()
        })?;
        Ok(Box::new(recording))
    }
}

impl flowdar_lab::Recording for Recording {
    fn attach_time(&self) -> Duration {
        Recording::attach_time(self)
    }

    fn stop(self: Box<Self>, reason: &str) -> Result<Recorded, TracerError> {
        let summary = Recording::stop(*self, reason)?;
        Ok(Recorded {
            events: summary.counts.events(),
            lost: summary.total_kernel_drops() + summary.total_user_drops(),
            mechanism: super::record::mechanism_label(summary.mechanism, summary.syscall_hooks),
            refused: summary.skipped.len(),
            detach_time: summary.detach_time,
        })
    }
}

/// Profiles and probe specs as `record` takes them.
fn named(profiles: &[String], specs: &[String]) -> Result<Vec<ProbeRequest>, TracerError> {
    let mut requests = Vec::new();
    for p in profiles {
        requests.extend(probes::profile_requests(p)?);
    }
    for p in specs {
        let request = p
            .parse::<ProbeRequest>()
            .map_err(|e| format!("probe `{p}`: {e}"))?;
        requests.push(request);
    }
    Ok(requests)
}

/// A function of an object file, with its first argument.
fn function((object, name): &(PathBuf, String)) -> ProbeRequest {
    ProbeRequest {
        target: object.to_string_lossy().into_owned(),
        function: name.clone(),
        exclude: Vec::new(),
        capture: Capture {
            args: 1,
            ..Default::default()
        },
        overrides: Default::default(),
        defines: None,
    }
}
