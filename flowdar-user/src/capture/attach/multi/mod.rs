//! uprobe_multi links (Linux 6.6+): one BPF link attaches a program to every
//! probed offset of one file, and closing it unregisters them all behind a
//! single grace period. This module attaches a probe table through them
//! (return links before entry links, file by file); `link` holds the
//! `bpf(2)` side: loading the programs with the uprobe_multi attach type,
//! creating links on aya-obj's generated `bpf_attr`, isolating refused
//! offsets, and the kernel feature probe.
//!
//! A shim: aya 0.15+ attaches uprobe_multi links itself, but needs a newer
//! rustc than this project's toolchain (shared/TOOLCHAIN.md). It goes when
//! aya can be upgraded.
mod link;

use std::{collections::BTreeMap, io, os::fd::AsFd, path::Path};

use aya::Ebpf;
use link::{attach, load, predicted_refusals, Linked};
pub use link::{probe_support, MultiError};

use super::{Attachment, Links, Side, Strategy};
use crate::{
    capture::{
        sys::{io_reason, ENOTSUPP},
        CaptureError,
    },
    probes::ResolvedProbe,
};

/// One uprobe_multi link per program and file, from the programs of
/// `object` (the eBPF object file), loaded by the shim itself.
pub(super) struct Multi {
    pub object: &'static [u8],
}

impl Strategy for Multi {
    fn attach(
        &self,
        ebpf: &mut Ebpf,
        probes: &[ResolvedProbe],
        [entry, exit]: [&'static str; 2],
    ) -> (Attachment, Result<(), CaptureError>) {
        let mut links = (Vec::new(), Vec::new());
        let mut attachment = Attachment::empty(Links::Perf(Vec::new()));
        let programs = match load(self.object, ebpf, &[entry, exit]) {
            Ok(p) => p,
            Err(e) => return (attachment, Err(e.into())),
        };
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
            match attach_file(&group, &predicted, &mut link, &mut links) {
                Ok((kept, skipped)) => {
                    attachment.uprobes += 2 * kept;
                    attachment.skipped.extend(skipped);
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let (entries, exits) = links;
        attachment.links = Links::Multi {
            entries,
            exits,
            programs,
        };
        (attachment, result)
    }
}

/// Attaches one program (by side) to `(offset, cookie)` points of a file.
type LinkFn<'a, L> = dyn FnMut(Side, &[(u64, u64)]) -> io::Result<Linked<L>> + 'a;

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
    let attach_err = |p: &ResolvedProbe, source: io::Error| CaptureError::AttachFile {
        function: p.function.clone(),
        path: p.path.clone(),
        source,
    };
    let points: Vec<(u64, u64)> = group
        .iter()
        .map(|p| (p.file_offset, u64::from(p.id)))
        .collect();
    let mut refused = predicted.to_vec();
    let mut refusals: Vec<(usize, io::Error)> = refused
        .iter()
        .enumerate()
        .filter(|(_, r)| **r)
        .map(|(i, _)| (i, io::Error::from_raw_os_error(ENOTSUPP)))
        .collect();
    let tried: Vec<usize> = (0..points.len()).filter(|&i| !refused[i]).collect();
    let tried_points: Vec<(u64, u64)> = tried.iter().map(|&i| points[i]).collect();
    let returns = link(Side::Exit, &tried_points).map_err(|e| attach_err(group[0], e))?;
    made.1.extend(returns.links);
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
    let calls = link(Side::Entry, &kept).map_err(|e| attach_err(group[0], e))?;
    made.0.extend(calls.links);
    if let Some((i, e)) = calls.refused.into_iter().next() {
        let p = group
            .iter()
            .find(|p| u64::from(p.id) == kept[i].1)
            .unwrap_or(&group[0]);
        return Err(attach_err(p, e));
    }
    Ok((kept.len(), skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(id: u32, optional: bool) -> ResolvedProbe {
        ResolvedProbe {
            id,
            function: format!("f{id}"),
            path: "/lib/libapr-1.so.0".into(),
            attach_path: "/lib/libapr-1.so.0".into(),
            address: 0x1000 + u64::from(id),
            file_offset: 0x1000 + u64::from(id),
            capture: Default::default(),
            optional,
            source: None,
            params: Vec::new(),
        }
    }

    /// A link function standing in for the kernel: it refuses the offsets
    /// in `refuse`, takes the others as one link, and logs each call.
    type Log = std::cell::RefCell<Vec<(Side, Vec<u64>)>>;

    fn kernel<'a>(
        refuse: &'static [u64],
        log: &'a Log,
    ) -> impl FnMut(Side, &[(u64, u64)]) -> io::Result<Linked<usize>> + 'a {
        move |side, points| {
            log.borrow_mut()
                .push((side, points.iter().map(|p| p.0).collect()));
            let refused: Vec<(usize, io::Error)> = points
                .iter()
                .enumerate()
                .filter(|(_, p)| refuse.contains(&p.0))
                .map(|(i, _)| (i, io::Error::from_raw_os_error(ENOTSUPP)))
                .collect();
            Ok(Linked {
                links: vec![log.borrow().len()],
                refused,
            })
        }
    }

    #[test]
    fn returns_first_then_entries_on_the_offsets_taken_skipping_refused_patterns() {
        let probes = [
            probe(0, false),
            probe(1, true),
            probe(2, true),
            probe(3, false),
        ];
        let group: Vec<&ResolvedProbe> = probes.iter().collect();
        let log = std::cell::RefCell::new(Vec::new());
        let mut made = (Vec::new(), Vec::new());
        // f2 predicted (never tried), f1 refused by the "kernel".
        let (kept, skipped) = attach_file(
            &group,
            &[false, false, true, false],
            &mut kernel(&[0x1001], &log),
            &mut made,
        )
        .unwrap();
        assert_eq!(
            log.into_inner(),
            [
                (Side::Exit, vec![0x1000, 0x1001, 0x1003]),
                (Side::Entry, vec![0x1000, 0x1003]),
            ]
        );
        assert_eq!(kept, 2);
        let names: Vec<&str> = skipped.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(names, ["f2", "f1"]);
        assert_eq!(made, (vec![2], vec![1]));
    }

    #[test]
    fn a_refused_function_asked_for_by_name_fails_before_any_entry() {
        let probes = [probe(0, false), probe(1, false)];
        let group: Vec<&ResolvedProbe> = probes.iter().collect();
        let log = std::cell::RefCell::new(Vec::new());
        let mut made = (Vec::new(), Vec::new());
        let err = attach_file(
            &group,
            &[false, false],
            &mut kernel(&[0x1001], &log),
            &mut made,
        )
        .unwrap_err();
        assert!(matches!(err, CaptureError::AttachFile { ref function, .. } if function == "f1"));
        // The return link made is handed back to be detached; no entry went in.
        assert_eq!(log.into_inner().len(), 1);
        assert_eq!(made, (vec![], vec![1]));
    }
}
