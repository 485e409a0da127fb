//! Whether this kernel creates uprobe_multi links, asked of the kernel
//! itself (never read from its release string): what `auto` and
//! `flowdar kernel` decide on.
use std::{io, os::fd::AsFd};

use aya_obj::generated::bpf_insn;

use super::link::{link, load_one, MultiError};
use crate::capture::sys::{own_code_offset, SyscallError};

/// The feature probe's program name.
const PROBE_PROGRAM: &str = "flowdar_probe";

/// Why this kernel gives no uprobe_multi links.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error(transparent)]
    Load(MultiError),
    #[error("cannot place the test probe")]
    Place(#[source] io::Error),
    #[error("a uprobe_multi link is refused")]
    Link(#[source] SyscallError),
}

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
pub fn probe_support() -> Result<(), Unavailable> {
    // r0 = 0; exit
    let insns = [
        bpf_insn_new(0xb7, 0, 0, 0, 0),
        bpf_insn_new(0x95, 0, 0, 0, 0),
    ];
    let prog = load_one(PROBE_PROGRAM, &insns, c"GPL").map_err(Unavailable::Load)?;
    let offset = own_code_offset(flowdar_feature_probe_target as *const () as usize)
        .map_err(Unavailable::Place)?;
    // The kernel resolves the magic link to our executable's inode.
    let path = c"/proc/self/exe";
    let linked = [false, true].into_iter().try_for_each(|ret| {
        link(prog.as_fd(), path, &[offset], &[0], ret)
            .map(drop)
            .map_err(Unavailable::Link)
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

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    use aya_obj::generated::{bpf_attach_type::BPF_TRACE_UPROBE_MULTI, bpf_cmd};

    use super::*;
    use crate::{
        capture::sys::{fake, Syscall},
        errors::chain,
    };

    /// What the fake kernel saw: (command, uprobe_multi link flags).
    type Seen = std::rc::Rc<std::cell::RefCell<Vec<(bpf_cmd, u32)>>>;

    /// A kernel that loads programs (`load` answers BPF_PROG_LOAD) and
    /// answers BPF_LINK_CREATE with `link`, logging each call.
    fn kernel(
        load: fn() -> io::Result<i64>,
        link: fn() -> io::Result<i64>,
    ) -> (fake::Installed, Seen) {
        let seen = Seen::default();
        let log = seen.clone();
        let installed = fake::install(move |call| {
            let Syscall::Bpf { cmd, attr } = call;
            match cmd {
                bpf_cmd::BPF_PROG_LOAD => {
                    // SAFETY: the BPF_PROG_LOAD member, which load_one filled.
                    let load_attr = unsafe { &attr.__bindgen_anon_3 };
                    assert_eq!(
                        load_attr.expected_attach_type,
                        BPF_TRACE_UPROBE_MULTI as u32
                    );
                    log.borrow_mut().push((*cmd, 0));
                    load()
                }
                bpf_cmd::BPF_LINK_CREATE => {
                    // SAFETY: the uprobe_multi member, which link filled.
                    let multi = unsafe { attr.link_create.__bindgen_anon_3.uprobe_multi };
                    // SAFETY: `path` points at the caller's live C string.
                    let path = unsafe { CStr::from_ptr(multi.path as *const libc::c_char) };
                    assert_eq!(path, c"/proc/self/exe");
                    log.borrow_mut().push((*cmd, multi.flags));
                    link()
                }
                other => panic!("unexpected bpf({other:?})"),
            }
        });
        (installed, seen)
    }

    #[test]
    fn a_kernel_that_refuses_the_link_with_einval_has_no_uprobe_multi() {
        let (_kernel, seen) = kernel(fake::fd, || fake::errno(libc::EINVAL));
        let err = probe_support().unwrap_err();
        assert!(
            matches!(&err, Unavailable::Link(e) if e.call == "bpf(BPF_LINK_CREATE)" && e.raw_os_error() == Some(libc::EINVAL)),
            "{err:?}"
        );
        assert_eq!(
            chain(&err),
            "a uprobe_multi link is refused: bpf(BPF_LINK_CREATE): Invalid argument (os error 22)"
        );
        // The entry link was tried, and nothing after it.
        assert_eq!(
            *seen.borrow(),
            [(bpf_cmd::BPF_PROG_LOAD, 0), (bpf_cmd::BPF_LINK_CREATE, 0)]
        );
    }

    #[test]
    fn a_kernel_that_creates_both_links_has_uprobe_multi() {
        let (_kernel, seen) = kernel(fake::fd, fake::fd);
        probe_support().unwrap();
        assert_eq!(
            *seen.borrow(),
            [
                (bpf_cmd::BPF_PROG_LOAD, 0),
                (bpf_cmd::BPF_LINK_CREATE, 0),
                (
                    bpf_cmd::BPF_LINK_CREATE,
                    aya_obj::generated::BPF_F_UPROBE_MULTI_RETURN
                ),
            ]
        );
    }

    #[test]
    fn a_program_load_refused_without_a_verifier_log_is_no_uprobe_multi() {
        let (_kernel, seen) = kernel(|| fake::errno(libc::EINVAL), fake::fd);
        let err = probe_support().unwrap_err();
        assert!(
            matches!(&err, Unavailable::Load(MultiError::Unsupported(e)) if e.call == "bpf(BPF_PROG_LOAD)"),
            "{err:?}"
        );
        // Loaded twice (the second time for the verifier's log), never linked.
        assert_eq!(
            *seen.borrow(),
            [(bpf_cmd::BPF_PROG_LOAD, 0), (bpf_cmd::BPF_PROG_LOAD, 0)]
        );
    }
}
