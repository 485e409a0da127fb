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
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    path::Path,
};

use aya::{
    maps::{Map, MapData},
    Ebpf,
};
use aya_obj::{generated::bpf_insn, Object};

use aya_obj::generated::{
    bpf_attach_type::BPF_TRACE_UPROBE_MULTI, bpf_cmd, bpf_prog_type::BPF_PROG_TYPE_KPROBE,
    BPF_F_UPROBE_MULTI_RETURN,
};

use crate::capture::sys::{own_code_offset, sys_bpf, zeroed_attr};

use crate::capture::sys::ENOTSUPP;

#[derive(Debug, thiserror::Error)]
pub enum MultiError {
    #[error("parsing the eBPF object: {0}")]
    Parse(String),
    #[error("relocating the eBPF object: {0}")]
    Relocate(String),
    #[error("the eBPF object has no program {0}")]
    MissingProgram(String),
    #[error("map {0} has a kind this loader does not relocate")]
    MapKind(String),
    #[error("the kernel's verifier rejected {name}: {reason}")]
    Verifier { name: String, reason: String },
    /// The kernel predates uprobe_multi (or lacks CONFIG_UPROBES for it).
    #[error("this kernel has no uprobe_multi links")]
    Unsupported(#[source] io::Error),
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
    let mut obj = Object::parse(object).map_err(|e| MultiError::Parse(e.to_string()))?;
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
    .map_err(|e| MultiError::Relocate(e.to_string()))?;
    obj.relocate_calls(&text_sections)
        .map_err(|e| MultiError::Relocate(e.to_string()))?;
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

fn load_one(name: &str, insns: &[bpf_insn], license: &CStr) -> Result<OwnedFd, MultiError> {
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
    match sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr) {
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
            match sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr) {
                Ok(fd) => Ok(fd),
                Err(_) => {
                    let text = CStr::from_bytes_until_nul(&log)
                        .map(|c| c.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    match text.lines().rfind(|l| !l.trim().is_empty()) {
                        Some(last) => Err(MultiError::Verifier {
                            name: name.into(),
                            reason: last.into(),
                        }),
                        None => Err(MultiError::Unsupported(e)),
                    }
                }
            }
        }
    }
}

/// One uprobe_multi link: `prog` on `offsets` of `path`, cookie per offset.
fn link(
    prog: BorrowedFd<'_>,
    path: &CStr,
    offsets: &[u64],
    cookies: &[u64],
    ret: bool,
) -> io::Result<OwnedFd> {
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
    sys_bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr)
}

/// The feature probe's program name.
const PROBE_PROGRAM: &str = "flowdar_probe";

/// A known-good place to put a probe: a function of Flowdar's own binary.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn flowdar_feature_probe_target(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_mul(31)
}

/// Whether this kernel creates uprobe_multi links, asked the way libbpf
/// does (`probe_uprobe_multi_link`): a do-nothing program loaded with the
/// uprobe_multi attach type, then an entry and a return link on a function
/// of our own executable. A kernel before 6.6 accepts the program but
/// refuses the link (EINVAL): that is "no uprobe_multi", never a refusal of
/// the functions the user asked for. The links are closed at once.
pub fn probe_support() -> Result<(), String> {
    // r0 = 0; exit
    let insns = [
        bpf_insn_new(0xb7, 0, 0, 0, 0),
        bpf_insn_new(0x95, 0, 0, 0, 0),
    ];
    let prog = load_one(PROBE_PROGRAM, &insns, c"GPL").map_err(|e| match e {
        MultiError::Unsupported(io) => format!("a uprobe_multi program does not load: {io}"),
        other => other.to_string(),
    })?;
    let offset = own_code_offset(flowdar_feature_probe_target as *const () as usize)
        .map_err(|e| format!("cannot place the test probe: {e}"))?;
    // The kernel resolves the magic link to our executable's inode.
    let path = c"/proc/self/exe";
    let linked = [false, true].into_iter().try_for_each(|ret| {
        link(prog.as_fd(), path, &[offset], &[0], ret)
            .map(drop)
            .map_err(|e| format!("BPF_LINK_CREATE of a uprobe_multi link fails: {e}"))
    });
    drop(prog);
    // The kernel frees a closed link's program after a grace period: wait
    // for it, so that the probe leaves nothing loaded behind it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while probe_program_loaded() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    linked
}

fn probe_program_loaded() -> bool {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .any(|p| p.name_as_str() == Some(PROBE_PROGRAM))
}

fn bpf_insn_new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> bpf_insn {
    let mut insn = bpf_insn {
        code,
        _bitfield_align_1: [],
        _bitfield_1: Default::default(),
        off,
        imm,
    };
    insn.set_dst_reg(dst);
    insn.set_src_reg(src);
    insn
}

/// What attaching one program to one file's offsets did.
pub struct Linked<L = OwnedFd> {
    pub links: Vec<L>,
    /// Indexes into the offsets that the kernel refused, and why.
    pub refused: Vec<(usize, io::Error)>,
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
) -> io::Result<Linked> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
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
) -> io::Result<()> {
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

fn is_per_offset(e: &io::Error) -> bool {
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
    use super::has_bad_prefix;

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
