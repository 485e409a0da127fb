//! The one door through which capture issues raw syscalls: the `bpf(2)`
//! commands aya 0.14 does not expose, on the kernel's own `union bpf_attr`
//! (aya-obj's generated binding), never a hand-written one. Every call goes
//! through [`syscall`], which names it in a [`SyscallError`] on failure and
//! which unit tests replace with a fake kernel ([`fake`]), the way aya's
//! `sys` module does. Calls rustix wraps safely (mmap, mount, rlimits...)
//! go through rustix instead.
use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};

/// A raw syscall capture makes, with its arguments.
pub(in crate::capture) enum Syscall<'a> {
    /// `bpf(cmd, attr, sizeof(attr))`.
    Bpf {
        cmd: bpf_cmd,
        attr: &'a mut bpf_attr,
    },
}

impl Syscall<'_> {
    /// The call as errors name it, e.g. `bpf(BPF_LINK_CREATE)`.
    fn name(&self) -> &'static str {
        match self {
            Syscall::Bpf { cmd, .. } => match cmd {
                bpf_cmd::BPF_PROG_LOAD => "bpf(BPF_PROG_LOAD)",
                bpf_cmd::BPF_LINK_CREATE => "bpf(BPF_LINK_CREATE)",
                bpf_cmd::BPF_OBJ_GET_INFO_BY_FD => "bpf(BPF_OBJ_GET_INFO_BY_FD)",
                _ => "bpf",
            },
        }
    }
}

/// A syscall that failed: its Display is the call, the cause stays in
/// `source` (aya's convention), so a chain prints each once.
#[derive(Debug, thiserror::Error)]
#[error("{call}")]
pub struct SyscallError {
    /// The call, e.g. `bpf(BPF_LINK_CREATE)`.
    pub call: &'static str,
    #[source]
    pub io_error: io::Error,
}

impl SyscallError {
    /// The errno the kernel returned, if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.io_error.raw_os_error()
    }
}

/// Issues `call`: the syscall's non-negative return value, or the errno
/// as a [`SyscallError`] naming the call. Under `cfg(test)` a fake
/// installed on this thread ([`fake::install`]) answers instead.
pub(in crate::capture) fn syscall(mut call: Syscall<'_>) -> Result<i64, SyscallError> {
    let name = call.name();
    #[cfg(test)]
    let rc = fake::answer(&mut call).unwrap_or_else(|| kernel(&mut call));
    #[cfg(not(test))]
    let rc = kernel(&mut call);
    rc.map_err(|io_error| SyscallError {
        call: name,
        io_error,
    })
}

/// The real kernel.
fn kernel(call: &mut Syscall<'_>) -> io::Result<i64> {
    let rc = match call {
        Syscall::Bpf { cmd, attr } => {
            // SAFETY: `attr` is a valid, fully initialised bpf_attr of the
            // size passed; the pointers inside it are the caller's, live
            // for the duration of the call.
            unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    *cmd as libc::c_long,
                    &mut **attr as *mut bpf_attr,
                    std::mem::size_of::<bpf_attr>() as libc::c_uint,
                )
            }
        }
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// `bpf(cmd, attr)`. Fields this kernel does not know stay zero, which the
/// kernel accepts (`bpf_check_uarg_tail_zero`).
fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> Result<i64, SyscallError> {
    syscall(Syscall::Bpf { cmd, attr })
}

/// A `bpf(2)` command that returns a new file descriptor.
pub(super) fn bpf_fd(cmd: bpf_cmd, attr: &mut bpf_attr) -> Result<OwnedFd, SyscallError> {
    let fd = bpf(cmd, attr)?;
    // SAFETY: the kernel (or a test's fake, see `fake::fd`) returned a new
    // file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

pub(super) fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is a plain-data union; all zeroes is its "unset" value.
    unsafe { std::mem::zeroed() }
}

/// Runs of a program the kernel skipped because it was already running on
/// that CPU (`bpf_prog_info.recursion_misses`, Linux 5.12+; 0 before).
pub(super) fn recursion_misses(prog: BorrowedFd<'_>) -> Result<u64, SyscallError> {
    // SAFETY: plain-data struct; zeroes are valid.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = zeroed_attr();
    // SAFETY: writing plain fields of the OBJ_GET_INFO_BY_FD member.
    let get = unsafe { &mut attr.info };
    get.bpf_fd = prog.as_raw_fd() as u32;
    get.info_len = std::mem::size_of::<bpf_prog_info>() as u32;
    get.info = &mut info as *mut bpf_prog_info as u64;
    bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
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

/// A fake kernel for unit tests: installed on the test's thread, it
/// answers every [`syscall`] made there until dropped. Threads without one
/// reach the real kernel (the root-only unit tests need it).
#[cfg(test)]
pub(in crate::capture) mod fake {
    use std::{cell::RefCell, io, os::fd::IntoRawFd};

    use super::Syscall;

    type Answer = Box<dyn FnMut(&mut Syscall<'_>) -> io::Result<i64>>;

    thread_local! {
        static FAKE: RefCell<Option<Answer>> = const { RefCell::new(None) };
    }

    /// Keeps the fake installed; dropping it restores the real kernel.
    pub struct Installed(());

    impl Drop for Installed {
        fn drop(&mut self) {
            FAKE.with(|f| f.borrow_mut().take());
        }
    }

    /// Answers this thread's syscalls with `answer` until the guard drops.
    pub fn install(answer: impl FnMut(&mut Syscall<'_>) -> io::Result<i64> + 'static) -> Installed {
        FAKE.with(|f| *f.borrow_mut() = Some(Box::new(answer)));
        Installed(())
    }

    pub(super) fn answer(call: &mut Syscall<'_>) -> Option<io::Result<i64>> {
        FAKE.with(|f| f.borrow_mut().as_mut().map(|answer| answer(call)))
    }

    /// A new file descriptor (on /dev/null) to return where the kernel
    /// returns one: the caller takes ownership and closes it, so a fake
    /// never hands out a number another test's file holds.
    pub fn fd() -> io::Result<i64> {
        Ok(i64::from(std::fs::File::open("/dev/null")?.into_raw_fd()))
    }

    /// An errno, as the kernel returns it.
    pub fn errno(code: i32) -> io::Result<i64> {
        Err(io::Error::from_raw_os_error(code))
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn a_failed_call_is_named_and_keeps_the_errno_as_its_source() {
        let _kernel = fake::install(|_| fake::errno(libc::EPERM));
        let err = bpf(bpf_cmd::BPF_LINK_CREATE, &mut zeroed_attr()).unwrap_err();
        assert_eq!(err.to_string(), "bpf(BPF_LINK_CREATE)");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        let source = std::error::Error::source(&err).expect("the errno as source");
        assert_eq!(
            source.to_string(),
            io::Error::from_raw_os_error(libc::EPERM).to_string()
        );
    }

    #[test]
    fn recursion_misses_reads_the_count_the_kernel_writes_back() {
        let _kernel = fake::install(|call| {
            let Syscall::Bpf { cmd, attr } = call;
            assert_eq!(*cmd, bpf_cmd::BPF_OBJ_GET_INFO_BY_FD);
            // SAFETY: the info member is the one recursion_misses filled.
            let get = unsafe { attr.info };
            assert_eq!(get.info_len as usize, std::mem::size_of::<bpf_prog_info>());
            // SAFETY: `info` points at the caller's live bpf_prog_info.
            unsafe { (*(get.info as *mut bpf_prog_info)).recursion_misses = 7 };
            Ok(0)
        });
        let file = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(recursion_misses(file.as_fd()).unwrap(), 7);
    }
}
