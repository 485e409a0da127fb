//! The `bpf(2)` side of uprobe_multi links (Linux 6.6+). Perf-event uprobes
//! (aya's `UProbe`) cost one grace period *each* on detach, so the `full`
//! Apache profile took minutes to detach; a uprobe_multi link per file
//! takes a fraction of a second.
//!
//! aya 0.14 loads uprobe programs without `expected_attach_type`, which the
//! kernel requires for uprobe_multi, so the two call programs are loaded a
//! second time here from the same object: aya-obj parses and relocates them
//! against the maps aya already created, and the two `bpf(2)` commands aya
//! does not expose (`BPF_PROG_LOAD` with the attach type, `BPF_LINK_CREATE`
//! of kind uprobe_multi) are issued through `capture::sys`.
use std::{
    collections::HashSet,
    ffi::{CStr, CString},
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    path::Path,
};

use aya::{
    maps::{Map, MapData},
    Ebpf,
};
use aya_obj::{
    generated::{
        bpf_attach_type::BPF_TRACE_UPROBE_MULTI, bpf_cmd, bpf_insn,
        bpf_prog_type::BPF_PROG_TYPE_KPROBE, BPF_F_UPROBE_MULTI_RETURN,
    },
    relocation::EbpfRelocationError,
    Object, ParseError,
};

use crate::capture::sys::{bpf_fd, io_reason, zeroed_attr, SyscallError, ENOTSUPP};

#[derive(Debug, thiserror::Error)]
pub enum MultiError {
    #[error("parsing the eBPF object")]
    Parse(#[source] ParseError),
    #[error("relocating the eBPF object")]
    Relocate(#[source] EbpfRelocationError),
    #[error("the eBPF object has no program {0}")]
    MissingProgram(String),
    #[error("map {0} has a kind this loader does not relocate")]
    MapKind(String),
    /// The last line of the verifier's log: its verdict.
    #[error("the kernel's verifier rejected {name}: {reason}")]
    Verifier { name: String, reason: String },
    /// The kernel predates uprobe_multi (or lacks CONFIG_UPROBES for it):
    /// the load failed and left no verifier log.
    #[error("the kernel does not load a program of the uprobe_multi attach type")]
    Unsupported(#[source] SyscallError),
}

/// Why a function's uprobe_multi link was not made.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Not tried: see [`predicted_refusals`].
    #[error(
        "its first instruction has a prefix x86 uprobes refuse (ENOTSUPP, predicted, so not tried)"
    )]
    Predicted,
    #[error("the path holds a NUL byte")]
    NulInPath,
    #[error(transparent)]
    Kernel(#[from] SyscallError),
}

impl LinkError {
    /// Why, compactly, for the list of skipped functions.
    pub fn reason(&self) -> String {
        match self {
            LinkError::Predicted => io_reason(&std::io::Error::from_raw_os_error(ENOTSUPP)),
            LinkError::Kernel(e) => io_reason(&e.io_error),
            LinkError::NulInPath => self.to_string(),
        }
    }
}

fn map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::PerfEventArray(d)
        | Map::RingBuf(d) => Some(d),
        _ => None,
    }
}

/// Loads the named programs of `object` as uprobe_multi programs, using the
/// maps `ebpf` (loaded from the same object) created. Returns one fd per name.
pub fn load(object: &[u8], ebpf: &Ebpf, names: &[&str]) -> Result<Vec<OwnedFd>, MultiError> {
    let mut obj = Object::parse(object).map_err(MultiError::Parse)?;
    let mut fds = Vec::new();
    for (name, map) in ebpf.maps() {
        let data = map_data(map).ok_or_else(|| MultiError::MapKind(name.into()))?;
        fds.push((name.to_string(), data.fd().as_fd().as_raw_fd()));
    }
    let maps = std::mem::take(&mut obj.maps);
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
    obj.relocate_maps(
        fds.iter()
            .filter_map(|(name, fd)| Some((name.as_str(), *fd, maps.get(name)?))),
        &text_sections,
    )
    .map_err(MultiError::Relocate)?;
    obj.relocate_calls(&text_sections)
        .map_err(MultiError::Relocate)?;
    names
        .iter()
        .map(|name| {
            let prog = obj
                .programs
                .get(*name)
                .ok_or_else(|| MultiError::MissingProgram(name.to_string()))?;
            let insns = &obj.functions[&prog.function_key()].instructions;
            load_one(name, insns, &prog.license)
        })
        .collect()
}

pub(super) fn load_one(
    name: &str,
    insns: &[bpf_insn],
    license: &CStr,
) -> Result<OwnedFd, MultiError> {
    let mut attr = zeroed_attr();
    // SAFETY: writing plain fields of the BPF_PROG_LOAD member of a zeroed union.
    let load = unsafe { &mut attr.__bindgen_anon_3 };
    load.prog_type = BPF_PROG_TYPE_KPROBE as u32;
    load.insn_cnt = insns.len() as u32;
    load.insns = insns.as_ptr() as u64;
    load.license = license.as_ptr() as u64;
    load.expected_attach_type = BPF_TRACE_UPROBE_MULTI as u32;
    for (dst, src) in load.prog_name.iter_mut().zip(name.bytes().take(15)) {
        *dst = src as _;
    }
    match bpf_fd(bpf_cmd::BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(fd),
        // An unknown attach type is EINVAL with nothing in the log; a
        // verifier rejection leaves a log: load again to read it.
        Err(e) => {
            let mut log = vec![0u8; 1 << 20];
            // SAFETY: as above.
            let load = unsafe { &mut attr.__bindgen_anon_3 };
            load.log_level = 1;
            load.log_size = log.len() as u32;
            load.log_buf = log.as_mut_ptr() as u64;
            match bpf_fd(bpf_cmd::BPF_PROG_LOAD, &mut attr) {
                Ok(fd) => Ok(fd),
                Err(_) => {
                    let text = CStr::from_bytes_until_nul(&log)
                        .map(|c| c.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    // The verdict is the last line before the statistics.
                    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                    let verdict = lines
                        .iter()
                        .rev()
                        .find(|l| {
                            !l.starts_with("processed ") && !l.starts_with("verification time")
                        })
                        .or(lines.last());
                    match verdict {
                        Some(last) => Err(MultiError::Verifier {
                            name: name.into(),
                            reason: last.to_string(),
                        }),
                        None => Err(MultiError::Unsupported(e)),
                    }
                }
            }
        }
    }
}

/// One uprobe_multi link: `prog` on `offsets` of `path`, cookie per offset.
pub(super) fn link(
    prog: BorrowedFd<'_>,
    path: &CStr,
    offsets: &[u64],
    cookies: &[u64],
    ret: bool,
) -> Result<OwnedFd, SyscallError> {
    let mut attr = zeroed_attr();
    // SAFETY: writing plain fields of the BPF_LINK_CREATE member of a zeroed union.
    let create = unsafe { &mut attr.link_create };
    create.__bindgen_anon_1.prog_fd = prog.as_raw_fd() as u32;
    create.attach_type = BPF_TRACE_UPROBE_MULTI as u32;
    // SAFETY: as above, the uprobe_multi member of the link kinds.
    let multi = unsafe { &mut create.__bindgen_anon_3.uprobe_multi };
    multi.path = path.as_ptr() as u64;
    multi.offsets = offsets.as_ptr() as u64;
    multi.cookies = cookies.as_ptr() as u64;
    multi.cnt = offsets.len() as u32;
    multi.flags = if ret { BPF_F_UPROBE_MULTI_RETURN } else { 0 };
    bpf_fd(bpf_cmd::BPF_LINK_CREATE, &mut attr)
}

/// What attaching one program to one file's offsets did.
pub struct Linked<L = OwnedFd> {
    pub links: Vec<L>,
    /// Indexes into the offsets that the kernel refused, and why.
    pub refused: Vec<(usize, SyscallError)>,
}

/// Attaches `prog` to every `(offset, cookie)` of `path`. One link if the
/// kernel takes them all; when it refuses an instruction (ENOTSUPP, EINVAL)
/// the set is halved until the refused offsets are isolated, so a few bad
/// functions cost a few extra links rather than the whole file. Any other
/// error (no such file, permissions, limits) fails the whole call.
pub fn attach(
    prog: BorrowedFd<'_>,
    path: &Path,
    points: &[(u64, u64)],
    ret: bool,
) -> Result<Linked, LinkError> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| LinkError::NulInPath)?;
    let mut out = Linked {
        links: Vec::new(),
        refused: Vec::new(),
    };
    let indexes: Vec<usize> = (0..points.len()).collect();
    split_attach(prog, &c_path, points, &indexes, ret, &mut out)?;
    Ok(out)
}

fn split_attach(
    prog: BorrowedFd<'_>,
    path: &CStr,
    points: &[(u64, u64)],
    indexes: &[usize],
    ret: bool,
    out: &mut Linked,
) -> Result<(), SyscallError> {
    if indexes.is_empty() {
        return Ok(());
    }
    let offsets: Vec<u64> = indexes.iter().map(|&i| points[i].0).collect();
    let cookies: Vec<u64> = indexes.iter().map(|&i| points[i].1).collect();
    match link(prog, path, &offsets, &cookies, ret) {
        Ok(fd) => {
            out.links.push(fd);
            Ok(())
        }
        Err(e) if is_per_offset(&e) => {
            if let [only] = indexes {
                out.refused.push((*only, e));
                return Ok(());
            }
            let (a, b) = indexes.split_at(indexes.len() / 2);
            split_attach(prog, path, points, a, ret, out)?;
            split_attach(prog, path, points, b, ret, out)
        }
        Err(e) => Err(e),
    }
}

fn is_per_offset(e: &SyscallError) -> bool {
    matches!(e.raw_os_error(), Some(ENOTSUPP | libc::EINVAL))
}

/// Offsets whose first instruction the kernel will refuse to replace with a
/// breakpoint: on x86-64 (arch/x86/kernel/uprobes.c, `is_prefix_bad`) any
/// LOCK or ES/CS/SS/DS segment prefix, e.g. `lock sub %esi,(%rdi)` opening
/// `apr_atomic_sub32`. Predicting them keeps each file to one link instead
/// of halving the set around every refusal (each extra link costs a grace
/// period on detach). Unreadable offsets are left for the kernel to judge.
pub fn predicted_refusals(path: &Path, offsets: &[u64]) -> Vec<bool> {
    use std::os::unix::fs::FileExt;
    let Ok(file) = std::fs::File::open(path) else {
        return vec![false; offsets.len()];
    };
    offsets
        .iter()
        .map(|&off| {
            let mut insn = [0u8; 15];
            file.read_exact_at(&mut insn, off).is_ok() && has_bad_prefix(&insn)
        })
        .collect()
}

fn has_bad_prefix(insn: &[u8]) -> bool {
    if !cfg!(target_arch = "x86_64") {
        return false;
    }
    insn.iter()
        .take_while(|b| {
            matches!(
                b,
                0xf0 | 0xf2 | 0xf3 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67
            )
        })
        .any(|b| matches!(b, 0xf0 | 0x26 | 0x2e | 0x36 | 0x3e))
}

#[cfg(test)]
mod tests {
    use super::{has_bad_prefix, load_one, MultiError};
    use crate::capture::sys::{fake, Syscall};

    #[test]
    fn a_verifier_rejection_reports_the_last_line_of_its_log() {
        let _kernel = fake::install(|call| {
            let Syscall::Bpf { attr, .. } = call;
            // SAFETY: the BPF_PROG_LOAD member, which load_one filled.
            let load = unsafe { &attr.__bindgen_anon_3 };
            if load.log_level > 0 {
                let text = b"0: (95) exit\nR0 !read_ok\n\n\0";
                assert!(load.log_size as usize >= text.len());
                // SAFETY: `log_buf` points at load_one's live buffer of
                // `log_size` bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        text.as_ptr(),
                        load.log_buf as *mut u8,
                        text.len(),
                    )
                };
            }
            fake::errno(libc::EACCES)
        });
        let err = load_one("flowdar_test", &[], c"GPL").unwrap_err();
        assert!(
            matches!(&err, MultiError::Verifier { name, reason } if name == "flowdar_test" && reason == "R0 !read_ok"),
            "{err:?}"
        );
    }

    #[test]
    fn lock_and_segment_prefixes_are_refused() {
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        assert!(has_bad_prefix(&[0xf0, 0x29, 0x37])); // lock sub
        assert!(has_bad_prefix(&[0xf0, 0x48, 0x29, 0x37])); // lock sub (64)
        assert!(has_bad_prefix(&[0x66, 0x2e, 0x0f, 0x1f])); // data16 cs nopw
        assert!(!has_bad_prefix(&[0x89, 0xf0, 0xf0])); // mov %esi,%eax
        assert!(!has_bad_prefix(&[0xf3, 0x0f, 0x1e, 0xfa])); // endbr64
        assert!(!has_bad_prefix(&[0x55])); // push %rbp
    }
}
