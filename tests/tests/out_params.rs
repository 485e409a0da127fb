//! Out-parameters read at exit: the value the function wrote, or, when the
//! pointer saved at entry is gone, "unknown", never 0. A recursive call of
//! the same function on the same thread replaces the outer call's saved
//! pointer (one slot per thread and probe), so the outer exit has none.
use std::io::{BufRead, Write};

use flowdar_common::{
    EventKind::{Entry, Exit},
    DEREF_UNKNOWN,
};
use flowdar_tests::*;

const CALLS: usize = 100;
const FUNCTION: &str = "flowdar_out";

#[test]
fn an_out_parameter_without_its_saved_pointer_is_unknown_not_zero() {
    require_root();
    let fixture = compile_fixture(
        include_str!("../fixtures/outparam.c"),
        "outparam",
        &["-O1", "-fno-optimize-sibling-calls"],
    );
    let bin = &fixture.bin;
    let dir = tempfile::tempdir().unwrap();
    let probes = dir.path().join("probes.toml");
    std::fs::write(
        &probes,
        format!(
            "version = 1\n[[probe]]\ntarget = \"{}\"\nfunctions = [\"{FUNCTION}\"]\nargs = 2\n\
             [[probe.capture]]\nfunction = \"{FUNCTION}\"\nderef = [{{ arg = 1 }}]\n",
            bin.display()
        ),
    )
    .unwrap();
    let (mut child, mut stdout) = start_fixture(bin, &CALLS.to_string());
    let mut line = String::new();
    let (rec, trace) = record(child.id(), &["--probes", probes.to_str().unwrap()]);
    writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "done 1001");
    assert!(child.wait().unwrap().success());
    let (code, out, err) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");

    let t = Trace::read(&trace);
    assert_eq!(t.count(FUNCTION, Entry), 3 * CALLS);
    // Exits in order: CALLS plain ones (1000 written), then per recursive
    // pair the inner (1000) and the outer, whose saved pointer the inner
    // call replaced and consumed: unknown.
    let exits: Vec<(u64, u64)> = t
        .events
        .iter()
        .filter(|e| e.kind == Exit as u32)
        .map(|e| (e.args[0], e.args[1]))
        .collect();
    let mut want = vec![(0, 1000); CALLS];
    for _ in 0..CALLS {
        want.push((0, 1000));
        want.push((1, DEREF_UNKNOWN));
    }
    assert_eq!(exits, want);
    let dump = flowdar(&["dump", trace.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(text.contains("*arg1=?"), "dump shows unknown as ?:\n{text}");
    assert!(text.contains("*arg1=0x3e8"), "and known values as they are");
}
