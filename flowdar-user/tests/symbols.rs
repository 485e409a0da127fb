//! Symbolisation on a C fixture built here with gcc -g: static functions,
//! source lines and parameter names from DWARF in the binary, in a separate
//! debug file found by build id or by .gnu_debuglink, and what a stripped
//! copy without its debug file can and cannot resolve.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use flowdar::{
    probes::{resolve_all, ProbeRequest, ProcMaps},
    symbols::{build_id, ElfSymbols, DEBUG_ROOT},
};

const FIXTURE: &str = r#"#include <stdlib.h>
static int __attribute__((noinline)) add_static(int left, int right) { return left + right; }
static inline __attribute__((always_inline)) int tripled(int x) { return x * 3; }
int exported_fn(int count, const char *label) { return add_static(count, label[0]) + tripled(count); }
int main(int argc, char **argv) { return exported_fn(argc, argv[0]) > 0 ? 0 : 1; }
"#;

fn run(cmd: &mut Command) {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Builds the fixture with debug info into `dir`; returns the binary.
fn build(dir: &Path, name: &str) -> PathBuf {
    let src = dir.join("fixture.c");
    std::fs::write(&src, FIXTURE).unwrap();
    let bin = dir.join(name);
    run(Command::new("gcc")
        .args(["-g", "-O1", "-Wl,--build-id", "-o"])
        .arg(&bin)
        .arg(&src));
    bin
}

/// Splits the debug info out of `bin` into `debug`, then strips `bin`.
fn split(bin: &Path, debug: &Path) {
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(bin)
        .arg(debug));
    run(Command::new("strip").arg("--strip-all").arg(bin));
}

#[test]
fn dwarf_in_the_binary_gives_statics_lines_and_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build(dir.path(), "full");
    let syms = ElfSymbols::read(&bin).unwrap();
    let f = &syms.functions["add_static"];
    assert_eq!(f.source.as_deref(), Some("fixture.c:2"));
    assert_eq!(f.params, ["left", "right"]);
    assert!(!f.exported);
    let e = &syms.functions["exported_fn"];
    assert_eq!(
        (e.source.as_deref(), e.params.clone()),
        (
            Some("fixture.c:4"),
            vec!["count".to_string(), "label".into()]
        )
    );
    assert!(
        syms.inlined_only.contains("tripled"),
        "{:?}",
        syms.inlined_only
    );
    assert_eq!(syms.debug_file.as_deref(), Some(bin.as_path()));
}

#[test]
fn a_stripped_binary_finds_its_debug_file_by_build_id() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build(dir.path(), "app");
    let reference = ElfSymbols::read(&bin).unwrap();
    let want = &reference.functions["add_static"];
    let want_offset = reference.file_offset(want).unwrap();
    let data = std::fs::read(&bin).unwrap();
    let id = build_id(&object::File::parse(&*data).unwrap()).expect("gcc wrote a build id");
    let root = dir.path().join("debug-root");
    let debug = root
        .join(".build-id")
        .join(&id[..2])
        .join(format!("{}.debug", &id[2..]));
    std::fs::create_dir_all(debug.parent().unwrap()).unwrap();
    split(&bin, &debug);

    let stripped = ElfSymbols::read_with_debug_root(&bin, Path::new("/nonexistent")).unwrap();
    assert!(!stripped.has_symtab);
    assert!(
        !stripped.functions.contains_key("add_static"),
        "a stripped binary alone has no statics"
    );

    let syms = ElfSymbols::read_with_debug_root(&bin, &root).unwrap();
    assert_eq!(syms.debug_file.as_deref(), Some(debug.as_path()));
    let f = &syms.functions["add_static"];
    assert_eq!(f.address, want.address);
    assert_eq!(
        syms.file_offset(f),
        Some(want_offset),
        "offset from the debug file's address, the binary's segments"
    );
    assert_eq!(
        (f.source.as_deref(), f.params.clone()),
        (
            Some("fixture.c:2"),
            vec!["left".to_string(), "right".into()]
        )
    );
}

#[test]
fn a_stripped_binary_finds_its_debug_file_by_debuglink() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build(dir.path(), "linked");
    let want = ElfSymbols::read(&bin).unwrap().functions["add_static"].address;
    let debug = dir.path().join("linked.debug");
    split(&bin, &debug);
    run(Command::new("objcopy")
        .arg(format!("--add-gnu-debuglink={}", debug.display()))
        .arg(&bin));
    // Drop the build id's route: only the debuglink can find it now.
    let syms = ElfSymbols::read_with_debug_root(&bin, Path::new("/nonexistent")).unwrap();
    assert_eq!(syms.debug_file.as_deref(), Some(debug.as_path()));
    assert_eq!(syms.functions["add_static"].address, want);
    // A debug file whose CRC does not match is not used.
    std::fs::write(&debug, b"not the debug file").unwrap();
    let syms = ElfSymbols::read_with_debug_root(&bin, Path::new("/nonexistent")).unwrap();
    assert!(syms.debug_file.is_none());
}

#[test]
fn resolution_explains_what_cannot_be_attached() {
    let dir = tempfile::tempdir().unwrap();
    let full = build(dir.path(), "withdebug");
    let stripped = dir.path().join("stripped");
    std::fs::copy(&full, &stripped).unwrap();
    run(Command::new("strip").arg("--strip-all").arg(&stripped));
    let maps_line = |p: &Path| format!("5600-5700 r-xp 00001000 fe:01 1 {}\n", p.display());
    let text = maps_line(&full) + &maps_line(&stripped);
    let maps = ProcMaps::parse(std::process::id(), &text);

    let r = resolve_all(
        &maps,
        &[ProbeRequest::new(full.display().to_string(), "add_static")],
        Path::new(DEBUG_ROOT),
    );
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(r.probes[0].source.as_deref(), Some("fixture.c:2"));
    assert_eq!(r.probes[0].params, ["left", "right"]);

    let r = resolve_all(
        &maps,
        &[ProbeRequest::new(full.display().to_string(), "tripled")],
        Path::new(DEBUG_ROOT),
    );
    let err = r.failures[0].1.to_string();
    assert!(
        err.contains("tripled exists in") && err.contains("only inlined into its callers"),
        "{err}"
    );

    let r = resolve_all(
        &maps,
        &[ProbeRequest::new("stripped", "add_static")],
        Path::new(DEBUG_ROOT),
    );
    let err = r.failures[0].1.to_string();
    assert!(err.contains("no such function (the binary is stripped and no debug file was found; 0 exported functions were searched)"), "{err}");
}
