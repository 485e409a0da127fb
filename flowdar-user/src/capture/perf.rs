//! The perf-event uprobe path (any kernel with uprobes; the fallback when
//! uprobe_multi links are missing, or `--attach-mode perf`): one aya
//! `UProbe` link per function and program. Each detach waits a grace period.
use aya::{
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
        UProbe,
    },
    Ebpf,
};

use super::{
    loader::{program, Attached, Links},
    sys::{io_reason, ENOTSUPP},
    CaptureError,
};
use crate::probes::ResolvedProbe;

pub(super) fn attach_perf(
    attached: &mut Attached,
    probes: &[ResolvedProbe],
    names: [&'static str; 2],
) -> Result<(), CaptureError> {
    for name in names {
        let prog: &mut UProbe = program(&mut attached.ebpf, name)?;
        prog.load().map_err(|e| CaptureError::program(name, e))?;
    }
    let mut links = Vec::new();
    let result = attach_perf_each(
        &mut attached.ebpf,
        probes,
        names,
        &mut links,
        &mut attached.skipped,
    );
    attached.uprobes = links.len();
    attached.links = Links::Perf(links);
    result
}

fn attach_perf_each(
    ebpf: &mut Ebpf,
    probes: &[ResolvedProbe],
    names: [&'static str; 2],
    links: &mut Vec<(&'static str, UProbeLinkId)>,
    skipped: &mut Vec<(String, String)>,
) -> Result<(), CaptureError> {
    for p in probes {
        match attach_pair(ebpf, p, names) {
            Ok(ids) => links.extend(ids),
            // A function matched by a pattern may sit where the kernel
            // refuses a uprobe (e.g. ENOTSUPP on some first instructions):
            // skip it and say so; a function asked for by name must attach.
            Err(e) if p.optional => skipped.push((p.function.clone(), error_reason(&e))),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Attaches the exit and then the entry probe of one function, or neither:
/// return probe first, so that every recorded entry has its return probe.
fn attach_pair(
    ebpf: &mut Ebpf,
    p: &ResolvedProbe,
    [entry_name, exit_name]: [&'static str; 2],
) -> Result<[(&'static str, UProbeLinkId); 2], CaptureError> {
    let attach = |ebpf: &mut Ebpf, name: &'static str| {
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(p.file_offset),
            cookie: Some(u64::from(p.id)),
        };
        let prog: &mut UProbe = program(ebpf, name)?;
        prog.attach(point, &p.attach_path, UProbeScope::AllProcesses)
            .map_err(|source| CaptureError::Attach {
                function: p.function.clone(),
                path: p.path.clone(),
                source: Box::new(source),
            })
    };
    let exit = attach(ebpf, exit_name)?;
    match attach(ebpf, entry_name) {
        Ok(entry) => Ok([(entry_name, entry), (exit_name, exit)]),
        Err(e) => {
            if let Ok(prog) = program::<UProbe>(ebpf, exit_name) {
                let _ = prog.detach(exit);
            }
            Err(e)
        }
    }
}

/// The innermost cause of an attach error, for a compact report.
fn error_reason(e: &CaptureError) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.raw_os_error() == Some(ENOTSUPP) {
                return io_reason(io);
            }
        }
        msg = s.to_string();
        source = s.source();
    }
    msg
}
