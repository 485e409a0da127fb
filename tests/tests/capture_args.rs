//! What a probe without capture settings records: the argument registers
//! and the return value as they are, and no user memory read. The loop
//! program calls `f(acc, i, 2)` and keeps `acc = f(...) = acc + i + 3`, so
//! every recorded value is known in advance.
use flowdar_common::EventKind::{Entry, Exit};
use flowdar_tests::{looper, *};

const CALLS: u64 = 5000;

#[test]
fn registers_are_recorded_exactly_and_no_memory_is_read() {
    require_root();
    let target = looper::build();
    let run = looper::Running::start(&target.bin, CALLS);
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.flowdar");
    let probe = format!("{}:{}", target.bin.display(), looper::FUNCTION);
    let rec = start_recorder(&[
        "--pid",
        &run.pid().to_string(),
        "--probe",
        &probe,
        "-o",
        trace.to_str().unwrap(),
    ]);
    run.go();
    let (code, out, err) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");
    let t = Trace::read(&trace);
    assert_eq!(t.count(looper::FUNCTION, Entry), CALLS as usize);
    assert_eq!(t.count(looper::FUNCTION, Exit), CALLS as usize);
    let mut acc = 0u64;
    let mut i = 0u64;
    for e in &t.events {
        if e.kind == Entry as u32 {
            // The raw registers: a zeroed probe-config entry must not turn
            // argument 0 into a pointer to dereference (it did once).
            assert_eq!(e.args, [acc, i, 2], "call {i}");
        } else {
            acc = acc + i + 3;
            assert_eq!(e.args[0], acc, "return of call {i}");
            assert_eq!(&e.args[1..], &[0, 0], "exit slots without derefs stay 0");
            i += 1;
        }
    }
    assert_eq!(i, CALLS);
}
