//! What Cargo and clippy cannot check about the workspace's structure.
//! Between crates, Cargo keeps the layers (a crate can only use what it
//! depends on) and clippy keeps printing in the CLI (`print_stdout`,
//! `print_stderr` in `[workspace.lints]`). Inside a crate, nothing does:
//! - `flowdar-user`'s modules point one way (the CLI on top, then capture,
//!   probes, symbols);
//! - clap stays in the CLI;
//! - in every crate, no two modules use each other, directly or through
//!   others (at the crate root, and among the submodules of each module).
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// `flowdar-user`'s modules, top to bottom. A module may use any module on
/// a lower line. (The crates below, `flowdar-lab`, `flowdar-analysis` and
/// `flowdar-trace`, are kept below by Cargo.)
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["import", "otlp"],
    &["capture"],
    &["probes"],
    &["symbols"],
    &["errors"],
];

/// The workspace's crates whose modules are checked for cycles.
const CRATES: &[&str] = &[
    "flowdar-common",
    "flowdar-trace",
    "flowdar-analysis",
    "flowdar-lab",
    "flowdar-user",
    "flowdar-ebpf",
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn src_of(krate: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The first path segments named after `prefix` (`prefix{a::x, b}` too).
fn uses_after(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        // `flowdar_lab::server::x` is not `server::x`: a prefix counts only
        // at the start of a path.
        let at_path_start = rest[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'));
        rest = &rest[i + prefix.len()..];
        if !at_path_start {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // The first segment of each item at brace depth 0.
            let mut depth = 0;
            let mut item_start = true;
            let mut word = String::new();
            for c in group.chars() {
                if c.is_alphanumeric() || c == '_' {
                    word.push(c);
                    continue;
                }
                if item_start && depth == 0 && !word.is_empty() && word != "self" {
                    out.insert(word.clone());
                }
                if !word.is_empty() {
                    item_start = false;
                }
                word.clear();
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    _ => {}
                }
            }
        } else {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(word);
        }
    }
    out
}

/// The text of each module of `dir` (a file `x.rs` or a directory `x/`
/// with all its files, up to their tests), leaving out `mod.rs`, `lib.rs`
/// and `main.rs`: the parent, which every child may use. A file `tests.rs`
/// is a test module.
fn modules(dir: &Path) -> BTreeMap<String, String> {
    let mut texts = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        if matches!(name.as_str(), "mod" | "lib" | "main" | "tests") {
            continue;
        }
        let mut files = Vec::new();
        if p.is_dir() {
            rust_files(&p, &mut files);
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p.clone());
        } else {
            continue;
        }
        // Tests (a `#[cfg(test)]` module at the end of a file) may share
        // helpers across modules: not an edge of the architecture.
        let text: String = files
            .iter()
            .map(|f| {
                let t = std::fs::read_to_string(f).unwrap();
                t.split("#[cfg(test)]").next().unwrap_or("").to_string()
            })
            .collect();
        texts.insert(name, text);
    }
    texts
}

/// What a parent file (`lib.rs`, `mod.rs`) re-exports from its children:
/// item name -> the child module it comes from (`pub use m::{A, b::C as
/// D};` gives A -> m and D -> m), so that `super::A` counts as a use of
/// `m`.
fn reexports(parent: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = parent;
    while let Some(i) = rest.find("use ") {
        let before = &rest[..i];
        rest = &rest[i + 4..];
        let line_start = before.rsplit('\n').next().unwrap_or("");
        if !line_start.trim_start().starts_with("pub") {
            continue;
        }
        let Some(end) = rest.find(';') else { break };
        let stmt: String = rest[..end].split_whitespace().collect::<Vec<_>>().join(" ");
        let Some((module, items)) = stmt.split_once("::") else {
            continue;
        };
        let items = items.trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let item = item.trim();
            let name = match item.split_once(" as ") {
                Some((_, alias)) => alias.trim(),
                None => item.rsplit("::").next().unwrap_or(item).trim(),
            };
            if !name.is_empty() && name != "*" && name != "self" {
                out.insert(name.to_string(), module.trim().to_string());
            }
        }
    }
    out
}

/// The sibling modules `text` uses through `prefixes`, items re-exported
/// by the parent mapped to the module that defines them.
fn sibling_uses(
    text: &str,
    prefixes: &[String],
    names: &BTreeSet<String>,
    reexported: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    prefixes
        .iter()
        .flat_map(|p| uses_after(text, p))
        .filter_map(|w| {
            if names.contains(&w) {
                Some(w)
            } else {
                reexported.get(&w).cloned()
            }
        })
        .collect()
}

/// The parent file of a directory module, or a crate's root file.
fn parent_text(dir: &Path) -> String {
    ["mod.rs", "lib.rs", "main.rs"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .collect()
}

/// The modules in a cycle, given who uses whom.
fn cycles(uses: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = Vec::new();
    for start in uses.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = uses[start].iter().collect();
        while let Some(m) = stack.pop() {
            if m == start {
                found.push(start.clone());
                break;
            }
            if seen.insert(m.clone()) {
                stack.extend(uses.get(m).into_iter().flatten());
            }
        }
    }
    found
}

#[test]
fn flowdar_user_uses_no_higher_layer() {
    let mut crossings = Vec::new();
    for (module, text) in modules(&src_of("flowdar-user")) {
        let own = layer_of(&module).unwrap_or_else(|| panic!("{module} is in no layer of LAYERS"));
        for used in uses_after(&text, "crate::") {
            let Some(layer) = layer_of(&used) else {
                continue; // a re-export of lib.rs (`store`, `analysis`) or an item
            };
            if used != module && layer <= own {
                crossings.push(format!("{module} uses crate::{used}"));
            }
        }
    }
    assert!(
        crossings.is_empty(),
        "layers crossed:\n{}",
        crossings.join("\n")
    );
}

#[test]
fn clap_stays_in_the_cli() {
    let mut found = Vec::new();
    for krate in CRATES {
        let mut files = Vec::new();
        rust_files(&src_of(krate), &mut files);
        for path in files {
            let in_cli = path.components().any(|c| c.as_os_str() == "cli")
                || path.ends_with("flowdar-user/src/main.rs");
            let text = std::fs::read_to_string(&path).unwrap();
            if !in_cli
                && text
                    .lines()
                    .any(|l| l.split("//").next().unwrap_or("").contains("clap"))
            {
                found.push(path.display().to_string());
            }
        }
    }
    assert!(found.is_empty(), "clap outside cli/: {found:?}");
}

/// No module cycle at any crate's root (`crate::x`, `super::x`) nor among
/// the submodules of any module (`super::x`, `crate::parent::x`), items
/// re-exported by the parent counted as uses of the module defining them.
#[test]
fn no_module_cycle_in_any_crate() {
    let mut found = Vec::new();
    for krate in CRATES {
        let src = src_of(krate);
        let mut dirs = vec![src.clone()];
        collect_dirs(&src, &mut dirs);
        for dir in dirs {
            let parent = dir
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .replace('/', "::");
            let prefixes: Vec<String> = if parent.is_empty() {
                vec!["crate::".into(), "super::".into()]
            } else {
                vec!["super::".into(), format!("crate::{parent}::")]
            };
            found.extend(
                cycles_in(&dir, &prefixes)
                    .into_iter()
                    .map(|m| format!("{krate}: {parent}::{m}")),
            );
        }
    }
    assert!(found.is_empty(), "modules in a cycle: {found:?}");
}

/// The modules of `dir` in a cycle, uses read through `prefixes`.
fn cycles_in(dir: &Path, prefixes: &[String]) -> Vec<String> {
    let children = modules(dir);
    let names: BTreeSet<String> = children.keys().cloned().collect();
    let reexported = reexports(&parent_text(dir));
    let uses = children
        .iter()
        .map(|(n, t)| {
            let mut u = sibling_uses(t, prefixes, &names, &reexported);
            u.remove(n);
            (n.clone(), u)
        })
        .collect();
    cycles(&uses)
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.push(p.clone());
            collect_dirs(&p, out);
        }
    }
}

#[test]
fn the_use_scanner_sees_groups_and_path_starts() {
    let uses = uses_after(
        "use crate::{analysis::{a, b}, store::X, units};\nlet x = crate::capture::f();\nflowdar_lab::crate::no;",
        "crate::",
    );
    let want: BTreeSet<String> = ["analysis", "store", "units", "capture"]
        .map(String::from)
        .into();
    assert_eq!(uses, want);
}

/// A cycle through a re-exported item, in files: found.
#[test]
fn a_cycle_through_a_reexport_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let w = |f: &str, t: &str| std::fs::write(dir.path().join(f), t).unwrap();
    w(
        "lib.rs",
        "mod a;\nmod b;\npub use a::{Alpha, helper as h};\n",
    );
    w("a.rs", "use super::b::Beta;\npub struct Alpha;\n");
    w("b.rs", "use super::Alpha;\npub struct Beta;\n");
    let prefixes = ["crate::".to_string(), "super::".to_string()];
    assert_eq!(cycles_in(dir.path(), &prefixes), ["a", "b"]);
    w("b.rs", "pub struct Beta;\n");
    assert!(cycles_in(dir.path(), &prefixes).is_empty());
}

/// A deliberately circular graph is found: the check can fail.
#[test]
fn the_cycle_finder_finds_a_cycle() {
    let uses: BTreeMap<String, BTreeSet<String>> = [
        ("calls", vec!["emit"]),
        ("emit", vec!["client"]),
        ("client", vec!["calls"]),
        ("tree", vec![]),
    ]
    .into_iter()
    .map(|(m, u)| (m.to_string(), u.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(cycles(&uses), ["calls", "client", "emit"]);
}
