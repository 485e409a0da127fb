//! The kernel probe (`capture::features`) against the real kernel, whichever
//! it is: it can trace, and `auto` picks what it found. Needs root (the
//! probes load BPF programs), so it lives here rather than among the unit
//! tests, where it could only skip when run without root.
use flowdar::capture::{kernel_features, AttachMode, Mechanism};
use flowdar_tests::require_root;

#[test]
fn this_machine_can_trace_and_auto_follows_what_it_has() {
    require_root();
    let k = kernel_features();
    k.check_required()
        .unwrap_or_else(|e| panic!("{e:?}: {k:?}"));
    let want = match k.uprobe_multi {
        Ok(()) => Mechanism::UprobeMulti,
        Err(_) => Mechanism::PerfEvent,
    };
    assert_eq!(k.mechanism(AttachMode::Auto).unwrap(), want);
}
