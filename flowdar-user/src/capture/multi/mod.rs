//! uprobe_multi links (Linux 6.6+): one BPF link attaches a program to every
//! probed offset of one file, and closing it unregisters them all behind a
//! single grace period. This module attaches a probe table through them
//! (return links before entry links, file by file); `link` holds the
//! `bpf(2)` side: loading the programs with the uprobe_multi attach type,
//! creating links, isolating refused offsets, and the kernel feature probe.
mod link;

use std::{
    collections::BTreeMap,
    os::fd::{AsFd, OwnedFd},
    path::Path,
};

use link::{attach, load, predicted_refusals};
pub use link::{probe_support, MultiError};

use super::{
    loader::{Attached, Links},
    sys::{io_reason, ENOTSUPP},
    CaptureError,
};
use crate::probes::ResolvedProbe;

/// One uprobe_multi link per program and file; functions the kernel refuses
/// are skipped if a pattern matched them, an error if asked for by name.
/// Return probes go in before entry probes, file by file: a call whose entry
/// is recorded then always has its return probe in place (a call entered
/// before its return probe existed would otherwise look in flight forever).
pub(super) fn attach_multi(
    attached: &mut Attached,
    probes: &[ResolvedProbe],
    [entry, exit]: [&'static str; 2],
    object: &[u8],
) -> Result<(), CaptureError> {
    let programs = load(object, &attached.ebpf, &[entry, exit])?;
    let mut by_file: BTreeMap<&Path, Vec<&ResolvedProbe>> = BTreeMap::new();
    for p in probes {
        by_file.entry(&p.attach_path).or_default().push(p);
    }
    let mut entries = Vec::new();
    let mut exits = Vec::new();
    let mut result = Ok(());
    for (path, group) in by_file {
        match attach_multi_file(&programs, path, &group, &mut entries, &mut exits) {
            Ok((kept, skipped)) => {
                attached.uprobes += 2 * kept;
                attached.skipped.extend(skipped);
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    attached.links = Links::Multi {
        entries,
        exits,
        programs,
    };
    result
}

/// One file's return links, then its entry links on the offsets the kernel
/// took. Returns the functions kept and those skipped (with why).
fn attach_multi_file(
    programs: &[OwnedFd],
    path: &Path,
    group: &[&ResolvedProbe],
    entries: &mut Vec<OwnedFd>,
    exits: &mut Vec<OwnedFd>,
) -> Result<(usize, Vec<(String, String)>), CaptureError> {
    let attach_err = |p: &ResolvedProbe, source: std::io::Error| CaptureError::AttachFile {
        function: p.function.clone(),
        path: p.path.clone(),
        source,
    };
    let points: Vec<(u64, u64)> = group
        .iter()
        .map(|p| (p.file_offset, u64::from(p.id)))
        .collect();
    let mut refused = predicted_refusals(
        path,
        &group.iter().map(|p| p.file_offset).collect::<Vec<_>>(),
    );
    let mut refusals: Vec<(usize, std::io::Error)> = refused
        .iter()
        .enumerate()
        .filter(|(_, r)| **r)
        .map(|(i, _)| (i, std::io::Error::from_raw_os_error(ENOTSUPP)))
        .collect();
    let tried: Vec<usize> = (0..points.len()).filter(|&i| !refused[i]).collect();
    let tried_points: Vec<(u64, u64)> = tried.iter().map(|&i| points[i]).collect();
    let returns = attach(programs[1].as_fd(), path, &tried_points, true)
        .map_err(|e| attach_err(group[0], e))?;
    exits.extend(returns.links);
    refusals.extend(returns.refused.into_iter().map(|(i, e)| (tried[i], e)));
    let mut skipped = Vec::new();
    for (i, e) in refusals {
        let p = group[i];
        if !p.optional {
            return Err(attach_err(p, e));
        }
        refused[i] = true;
        skipped.push((p.function.clone(), io_reason(&e)));
    }
    let kept: Vec<(u64, u64)> = points
        .iter()
        .zip(&refused)
        .filter(|(_, r)| !**r)
        .map(|(pt, _)| *pt)
        .collect();
    // The same offsets as the return probes, which the kernel just took.
    let calls =
        attach(programs[0].as_fd(), path, &kept, false).map_err(|e| attach_err(group[0], e))?;
    entries.extend(calls.links);
    if let Some((i, e)) = calls.refused.into_iter().next() {
        let p = group
            .iter()
            .find(|p| u64::from(p.id) == kept[i].1)
            .unwrap_or(&group[0]);
        return Err(attach_err(p, e));
    }
    Ok((kept.len(), skipped))
}
