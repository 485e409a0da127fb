//! Attaching where only a separate debug file knows the function: a static
//! function of a stripped binary, found through its build-id debug file,
//! attached by the file offset computed from it.
use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use flowdar_common::EventKind::{Entry, Exit};
use flowdar_tests::*;

const FIXTURE: &str = r#"#include <stdio.h>
static int __attribute__((noinline, noclone)) add_static(int left, int right) { return left + right; }
int main(void) {
    char go[8];
    if (!fgets(go, sizeof go, stdin)) return 1;
    int sum = 0;
    for (int i = 0; i < 100; i++) sum = add_static(sum, i);
    printf("%d\n", sum);
    return 0;
}
"#;

fn run(cmd: &mut Command) {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_static_function_of_a_stripped_binary_is_traced_through_its_debug_file() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("loop.c");
    std::fs::write(&src, FIXTURE).unwrap();
    let bin = dir.path().join("loop");
    run(Command::new("gcc")
        .args(["-g", "-O1", "-Wl,--build-id", "-o"])
        .arg(&bin)
        .arg(&src));
    let data = std::fs::read(&bin).unwrap();
    let id = flowdar::symbols::build_id(&object::File::parse(&*data).unwrap()).unwrap();
    let root = dir.path().join("debug");
    let debug = root
        .join(".build-id")
        .join(&id[..2])
        .join(format!("{}.debug", &id[2..]));
    std::fs::create_dir_all(debug.parent().unwrap()).unwrap();
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&bin)
        .arg(&debug));
    run(Command::new("strip").arg("--strip-all").arg(&bin));

    let mut target = Command::new(&bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let trace = dir.path().join("t.flowdar");
    let probe = format!("{}:add_static", bin.display());
    let rec = start_recorder(&[
        "--pid",
        &target.id().to_string(),
        "--probe",
        &probe,
        "--debug-dir",
        root.to_str().unwrap(),
        "-o",
        trace.to_str().unwrap(),
    ]);
    target.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = target.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4950");
    // The recorder stops by itself when its target exits.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while flowdar::capture::is_alive(rec.pid()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, stdout, err) = rec.stop(0);
    assert_eq!(code, Some(0), "{stdout}\n{err}");
    assert!(stdout.contains("stopped: target exited"), "{stdout}");
    let t = Trace::read(&trace);
    assert_eq!(
        (t.count("add_static", Entry), t.count("add_static", Exit)),
        (100, 100)
    );
    let p = &t.header.probes[0];
    assert_eq!(
        p.source.as_deref(),
        Some("loop.c:2"),
        "the trace carries the source line"
    );
    assert_eq!(p.params, ["left", "right"]);
    // Entry arguments are the loop's (sum, i): i runs 0..100.
    let seconds: Vec<u64> = t
        .events
        .iter()
        .filter(|e| e.kind == Entry as u32)
        .map(|e| e.args[1] & 0xffff_ffff)
        .collect();
    assert_eq!(seconds, (0..100).collect::<Vec<u64>>());
}
