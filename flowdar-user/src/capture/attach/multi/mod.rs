//! uprobe_multi links (Linux 6.6+): one BPF link attaches a program to every
//! probed offset of one file, and closing it unregisters them all behind a
//! single grace period. This module attaches a probe table through them
//! (return links before entry links, file by file) and owns the links it
//! made ([`MultiLinks`]); `link` holds the `bpf(2)` side: loading the
//! programs with the uprobe_multi attach type, creating links on aya-obj's
//! generated `bpf_attr`, isolating refused offsets; `probe` asks the kernel
//! whether it has such links at all.
//!
//! A shim: aya 0.15+ attaches uprobe_multi links itself, but needs a newer
//! rustc than this project's toolchain (shared/TOOLCHAIN.md). It goes when
//! aya can be upgraded.
mod link;
mod probe;

use std::{
    collections::BTreeMap,
    os::fd::{AsFd, OwnedFd},
    path::Path,
};

use aya::Ebpf;
use link::{attach, load, predicted_refusals, Linked};
pub use link::{LinkError, MultiError};
pub use probe::{probe_support, Unavailable};

use super::{Attachment, Closing, Detaching, Links, Side, Strategy};
use crate::{capture::CaptureError, probes::ResolvedProbe};

/// One uprobe_multi link per program and file, from the programs of
/// `object` (the eBPF object file), loaded by the shim itself.
pub(super) struct Multi {
    pub object: &'static [u8],
}

/// The uprobe_multi links made (entry and return links apart, so that
/// entries can go first on detach) and the programs they hold.
#[derive(Default)]
struct MultiLinks {
    entries: Vec<OwnedFd>,
    returns: Vec<OwnedFd>,
    /// Loaded by this strategy, not by aya: the links keep them alive.
    programs: Vec<OwnedFd>,
    uprobes: usize,
}

impl Links for MultiLinks {
    fn uprobes(&self) -> usize {
        self.uprobes
    }

    fn detach(self: Box<Self>, _: &mut Ebpf) -> Detaching {
        let closing = |links: Vec<OwnedFd>| -> Closing {
            links
                .into_iter()
                .map(|l| Box::new(l) as Box<dyn Send>)
                .collect()
        };
        let Self {
            entries,
            returns,
            programs,
            ..
        } = *self;
        drop(programs);
        Detaching {
            entries: closing(entries),
            returns: closing(returns),
        }
    }
}

impl Strategy for Multi {
    fn attach(
        &self,
        ebpf: &mut Ebpf,
        probes: &[ResolvedProbe],
        [entry, exit]: [&'static str; 2],
    ) -> (Attachment, Result<(), CaptureError>) {
        let (links, skipped, result) = match load(self.object, ebpf, &[entry, exit]) {
            Ok(programs) => attach_loaded(programs, probes),
            Err(e) => (MultiLinks::default(), Vec::new(), Err(e.into())),
        };
        let attachment = Attachment {
            links: Box::new(links),
            skipped,
        };
        (attachment, result)
    }
}

/// Attaches `probes` file by file with the loaded `[entry, exit]`
/// `programs`: the links made (also on failure, to be detached), the
/// functions skipped, and the error that stopped it.
fn attach_loaded(
    programs: Vec<OwnedFd>,
    probes: &[ResolvedProbe],
) -> (MultiLinks, Vec<(String, String)>, Result<(), CaptureError>) {
    let mut made = (Vec::new(), Vec::new());
    let mut uprobes = 0;
    let mut skipped = Vec::new();
    let mut by_file: BTreeMap<&Path, Vec<&ResolvedProbe>> = BTreeMap::new();
    for p in probes {
        by_file.entry(&p.attach_path).or_default().push(p);
    }
    let mut result = Ok(());
    for (path, group) in by_file {
        let offsets: Vec<u64> = group.iter().map(|p| p.file_offset).collect();
        let predicted = predicted_refusals(path, &offsets);
        let mut link = |side: Side, points: &[(u64, u64)]| {
            let prog = match side {
                Side::Entry => &programs[0],
                Side::Exit => &programs[1],
            };
            attach(prog.as_fd(), path, points, side == Side::Exit)
        };
        match attach_file(&group, &predicted, &mut link, &mut made) {
            Ok((kept, file_skipped)) => {
                // An entry-only probe that got this far was kept: its
                // refusal would have failed the file.
                let entry_only = group
                    .iter()
                    .zip(&predicted)
                    .filter(|(p, refused)| p.capture.entry_only && !**refused)
                    .count();
                uprobes += 2 * kept - entry_only.min(kept);
                skipped.extend(file_skipped);
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let (entries, returns) = made;
    let links = MultiLinks {
        entries,
        returns,
        programs,
        uprobes,
    };
    (links, skipped, result)
}

/// Attaches one program (by side) to `(offset, cookie)` points of a file.
type LinkFn<'a, L> = dyn FnMut(Side, &[(u64, u64)]) -> Result<Linked<L>, LinkError> + 'a;

/// One file's return links, then its entry links on exactly the offsets
/// whose return probes the kernel took, through `link`. `predicted` marks
/// offsets the kernel is known to refuse (not tried). A refused function
/// matched by a pattern is skipped (and reported); one asked for by name
/// fails the file. Links made go to `made` (entries, exits) even on
/// failure, for the caller to detach. Returns the functions kept and those
/// skipped.
fn attach_file<L>(
    group: &[&ResolvedProbe],
    predicted: &[bool],
    link: &mut LinkFn<'_, L>,
    made: &mut (Vec<L>, Vec<L>),
) -> Result<(usize, Vec<(String, String)>), CaptureError> {
    let attach_err = |p: &ResolvedProbe, source: LinkError| CaptureError::AttachFile {
        function: p.function.clone(),
        path: p.path.clone(),
        source,
    };
    let points: Vec<(u64, u64)> = group
        .iter()
        .map(|p| (p.file_offset, u64::from(p.id)))
        .collect();
    let mut refused = predicted.to_vec();
    let mut refusals: Vec<(usize, LinkError)> = refused
        .iter()
        .enumerate()
        .filter(|(_, r)| **r)
        .map(|(i, _)| (i, LinkError::Predicted))
        .collect();
    // Entry-only probes have no return side: the kernel's refusals of
    // those show at the entry link.
    let tried: Vec<usize> = (0..points.len())
        .filter(|&i| !refused[i] && !group[i].capture.entry_only)
        .collect();
    let tried_points: Vec<(u64, u64)> = tried.iter().map(|&i| points[i]).collect();
    if !tried_points.is_empty() {
        let returns = link(Side::Exit, &tried_points).map_err(|e| attach_err(group[0], e))?;
        made.1.extend(returns.links);
        refusals.extend(
            returns
                .refused
                .into_iter()
                .map(|(i, e)| (tried[i], LinkError::Kernel(e))),
        );
    }
    let mut skipped = Vec::new();
    for (i, e) in refusals {
        let p = group[i];
        if !p.optional {
            return Err(attach_err(p, e));
        }
        refused[i] = true;
        skipped.push((p.function.clone(), e.reason()));
    }
    let kept: Vec<(u64, u64)> = points
        .iter()
        .zip(&refused)
        .filter(|(_, r)| !**r)
        .map(|(pt, _)| *pt)
        .collect();
    // The same offsets as the return probes, which the kernel just took.
    let calls = link(Side::Entry, &kept).map_err(|e| attach_err(group[0], e))?;
    made.0.extend(calls.links);
    if let Some((i, e)) = calls.refused.into_iter().next() {
        let p = group
            .iter()
            .find(|p| u64::from(p.id) == kept[i].1)
            .unwrap_or(&group[0]);
        return Err(attach_err(p, e.into()));
    }
    Ok((kept.len(), skipped))
}

#[cfg(test)]
mod tests;
