//! The uprobe_multi strategy: which links it asks for, in which order, and
//! what it makes of the kernel's refusals (against a fake link function,
//! and against a fake kernel behind `capture::sys`).
use std::{cell::RefCell, fs::File, os::fd::AsRawFd, rc::Rc};

use aya_obj::generated::{bpf_cmd, BPF_F_UPROBE_MULTI_RETURN};

use super::*;
use crate::{
    capture::sys::{fake, Syscall, SyscallError, ENOTSUPP},
    errors::chain,
};

fn probe(id: u32, optional: bool) -> ResolvedProbe {
    ResolvedProbe::new(flowdar_trace::TraceProbe {
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
    })
}

/// A link function standing in for the kernel: it refuses the offsets
/// in `refuse`, takes the others as one link, and logs each call.
type Log = std::cell::RefCell<Vec<(Side, Vec<u64>)>>;

fn kernel<'a>(
    refuse: &'static [u64],
    log: &'a Log,
) -> impl FnMut(Side, &[(u64, u64)]) -> Result<Linked<usize>, LinkError> + 'a {
    move |side, points| {
        log.borrow_mut()
            .push((side, points.iter().map(|p| p.0).collect()));
        let refused: Vec<(usize, SyscallError)> = points
            .iter()
            .enumerate()
            .filter(|(_, p)| refuse.contains(&p.0))
            .map(|(i, _)| {
                let io_error = std::io::Error::from_raw_os_error(ENOTSUPP);
                let call = "bpf(BPF_LINK_CREATE)";
                (i, SyscallError { call, io_error })
            })
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

// The strategy against a fake kernel: the real `bpf(2)` code path, with
// the kernel's answers chosen per offset.

/// One BPF_LINK_CREATE as the fake kernel saw it.
#[derive(Debug, PartialEq, Eq)]
struct LinkCall {
    prog: u32,
    ret: bool,
    offsets: Vec<u64>,
    cookies: Vec<u64>,
}

/// A kernel that refuses a link holding any offset of `refuse` with that
/// offset's errno, and creates every other one.
fn fake_kernel(refuse: &'static [(u64, i32)]) -> (fake::Installed, Rc<RefCell<Vec<LinkCall>>>) {
    let calls = Rc::new(RefCell::new(Vec::new()));
    let log = calls.clone();
    let installed = fake::install(move |call| {
        let Syscall::Bpf { cmd, attr } = call;
        assert_eq!(*cmd, bpf_cmd::BPF_LINK_CREATE);
        // SAFETY: the BPF_LINK_CREATE member, which `link` filled.
        let create = unsafe { attr.link_create };
        // SAFETY: its uprobe_multi member, as above.
        let multi = unsafe { create.__bindgen_anon_3.uprobe_multi };
        let cnt = multi.cnt as usize;
        // SAFETY: `offsets` and `cookies` point at the caller's live
        // arrays of `cnt` elements for the duration of the call.
        let (offsets, cookies) = unsafe {
            (
                std::slice::from_raw_parts(multi.offsets as *const u64, cnt).to_vec(),
                std::slice::from_raw_parts(multi.cookies as *const u64, cnt).to_vec(),
            )
        };
        let refused = refuse.iter().find(|(off, _)| offsets.contains(off));
        log.borrow_mut().push(LinkCall {
            // SAFETY: the prog_fd member of the target union, as above.
            prog: unsafe { create.__bindgen_anon_1.prog_fd },
            ret: multi.flags & BPF_F_UPROBE_MULTI_RETURN != 0,
            offsets,
            cookies,
        });
        match refused {
            Some((_, errno)) => fake::errno(*errno),
            None => fake::fd(),
        }
    });
    (installed, calls)
}

fn link_call(prog: u32, ret: bool, ids: &[u64]) -> LinkCall {
    LinkCall {
        prog,
        ret,
        offsets: ids.iter().map(|id| 0x1000 + id).collect(),
        cookies: ids.to_vec(),
    }
}

/// What [`attach_loaded`] did against a fake kernel.
struct Run {
    calls: Vec<LinkCall>,
    links: MultiLinks,
    skipped: Vec<(String, String)>,
    result: Result<(), CaptureError>,
    /// The stand-ins for the loaded entry and exit programs.
    entry: u32,
    exit: u32,
}

/// Attaches probes `(id, optional)` with stand-in programs against a fake
/// kernel refusing `refuse`. Their file cannot be read, so that no refusal
/// is predicted: the kernel decides them all.
fn run(refuse: &'static [(u64, i32)], probes: &[(u32, bool)]) -> Run {
    let (_kernel, calls) = fake_kernel(refuse);
    let open = || OwnedFd::from(File::open("/dev/null").unwrap());
    let programs = vec![open(), open()];
    let (entry, exit) = (programs[0].as_raw_fd(), programs[1].as_raw_fd());
    let probes: Vec<ResolvedProbe> = probes
        .iter()
        .map(|&(id, optional)| {
            ResolvedProbe::new(flowdar_trace::TraceProbe {
                attach_path: "/nonexistent/libapr-1.so.0".into(),
                ..probe(id, optional).trace_probe().clone()
            })
        })
        .collect();
    let (links, skipped, result) = attach_loaded(programs, &probes);
    let calls = calls.take();
    Run {
        calls,
        links,
        skipped,
        result,
        entry: entry as u32,
        exit: exit as u32,
    }
}

#[test]
fn the_kernel_refusing_a_pattern_match_with_enotsupp_skips_it_and_links_the_rest() {
    let run = run(&[(0x1001, ENOTSUPP)], &[(0, false), (1, true), (2, false)]);
    run.result.unwrap();
    assert_eq!(
        run.skipped,
        [(
            "f1".to_string(),
            "ENOTSUPP: the kernel cannot place a uprobe on its first instruction".to_string()
        )]
    );
    // Returns first, halved around the refused offset; then one entry link
    // on exactly the offsets the return links took.
    let (entry, exit) = (run.entry, run.exit);
    assert_eq!(
        run.calls,
        [
            link_call(exit, true, &[0, 1, 2]),
            link_call(exit, true, &[0]),
            link_call(exit, true, &[1, 2]),
            link_call(exit, true, &[1]),
            link_call(exit, true, &[2]),
            link_call(entry, false, &[0, 2]),
        ]
    );
    assert_eq!(run.links.uprobes(), 4);
    assert_eq!((run.links.entries.len(), run.links.returns.len()), (1, 2));
}

#[test]
fn the_kernel_refusing_a_named_function_with_einval_fails_naming_the_call() {
    let run = run(&[(0x1001, libc::EINVAL)], &[(0, false), (1, false)]);
    let err = run.result.unwrap_err();
    assert!(
        matches!(&err, CaptureError::AttachFile { function, source: LinkError::Kernel(e), .. }
            if function == "f1" && e.raw_os_error() == Some(libc::EINVAL)),
        "{err:?}"
    );
    assert_eq!(
        chain(&err),
        "attaching to f1 in /lib/libapr-1.so.0: bpf(BPF_LINK_CREATE): Invalid argument (os error 22)"
    );
    assert!(run.skipped.is_empty());
    // No entry link was tried; f0's return link is handed back to be closed.
    assert!(run.calls.iter().all(|c| c.ret && c.prog == run.exit));
    assert_eq!((run.links.entries.len(), run.links.returns.len()), (0, 1));
}

#[test]
fn an_error_about_the_whole_link_fails_the_file_without_halving_it() {
    let run = run(&[(0x1000, libc::EPERM)], &[(0, true), (1, true)]);
    assert_eq!(
        chain(&run.result.unwrap_err()),
        "attaching to f0 in /lib/libapr-1.so.0: bpf(BPF_LINK_CREATE): Operation not permitted (os error 1)"
    );
    assert!(run.skipped.is_empty(), "EPERM is not a refused function");
    assert_eq!(run.calls.len(), 1);
    assert_eq!(run.links.uprobes(), 0);
}
