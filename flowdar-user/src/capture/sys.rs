//! `bpf(2)` commands aya 0.14 does not expose, issued with the kernel's own
//! `union bpf_attr` (aya-obj's generated binding), never a hand-written one.
use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};

/// `bpf(cmd, attr)`. Fields this kernel does not know stay zero, which the
/// kernel accepts (`bpf_check_uarg_tail_zero`).
fn raw_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // SAFETY: `attr` is a valid, fully initialised bpf_attr of its size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// A `bpf(2)` command that returns a new file descriptor.
pub(super) fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    let fd = raw_bpf(cmd, attr)?;
    // SAFETY: the kernel returned a new file descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

pub(super) fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is a plain-data union; all zeroes is its "unset" value.
    unsafe { std::mem::zeroed() }
}

/// Runs of a program the kernel skipped because it was already running on
/// that CPU (`bpf_prog_info.recursion_misses`, Linux 5.12+; 0 before).
pub(super) fn recursion_misses(prog: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: plain-data struct; zeroes are valid.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = zeroed_attr();
    // SAFETY: writing plain fields of the OBJ_GET_INFO_BY_FD member.
    let get = unsafe { &mut attr.info };
    get.bpf_fd = prog.as_raw_fd() as u32;
    get.info_len = std::mem::size_of::<bpf_prog_info>() as u32;
    get.info = &mut info as *mut bpf_prog_info as u64;
    raw_bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info.recursion_misses)
}

/// The kernel's ENOTSUPP (not in libc): an instruction a uprobe cannot replace.
pub const ENOTSUPP: i32 = 524;

/// Why the kernel refused a uprobe, compactly.
pub(super) fn io_reason(e: &std::io::Error) -> String {
    // ENOTSUPP (524) is kernel-internal: libc has no name for it.
    if e.raw_os_error() == Some(ENOTSUPP) {
        "ENOTSUPP: the kernel cannot place a uprobe on its first instruction".into()
    } else {
        e.to_string()
    }
}

/// The file offset of our executable's code at `addr`, read from
/// /proc/self/maps (`addr - start + offset`).
pub(crate) fn own_code_offset(addr: usize) -> io::Result<u64> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(_perms), Some(off)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let parse = |s: &str| u64::from_str_radix(s, 16).ok();
        let (Some(lo), Some(hi), Some(off)) = (parse(lo), parse(hi), parse(off)) else {
            continue;
        };
        let a = addr as u64;
        if (lo..hi).contains(&a) {
            return Ok(a - lo + off);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "own code not found in /proc/self/maps",
    ))
}
