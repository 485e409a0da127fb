//! The layers of `flowdar-user` point one way: each module may use the ones
//! below it, never one above. The README's architecture section draws the
//! same picture; this test keeps the two honest. It also keeps clap and
//! printing in the CLI.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// Top to bottom. A module may use any module on a lower line, and those on
/// its own line that it shares a layer with only if they are the same module.
/// (The trace format is the `flowdar-trace` crate, below all of these.)
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["experiment"],
    &["server"],
    &["render", "import"],
    &["analysis"],
    &["capture"],
    &["probes"],
    &["symbols"],
    &["units", "errors"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
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

/// The top-level module a file belongs to (`src/capture/drain.rs` -> capture).
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Every top-level module named after `crate::`, including inside
/// `crate::{a::x, b}` groups.
fn crate_uses(text: &str) -> BTreeSet<String> {
    uses_after(text, "crate::")
}

/// The first path segments named after `prefix` (`prefix{a::x, b}` too).
fn uses_after(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        rest = &rest[i + prefix.len()..];
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

fn files() -> Vec<(PathBuf, String, String)> {
    let mut paths = Vec::new();
    rust_files(&src(), &mut paths);
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p.clone(), module_of(&p), text)
        })
        .collect()
}

#[test]
fn no_module_uses_a_higher_layer() {
    let mut crossings = Vec::new();
    for (path, module, text) in files() {
        if matches!(module.as_str(), "lib" | "main") {
            continue;
        }
        let own = layer_of(&module)
            .unwrap_or_else(|| panic!("{} is in no layer of LAYERS", path.display()));
        for used in crate_uses(&text) {
            let Some(layer) = layer_of(&used) else {
                continue; // a re-export of lib.rs (`store`) or an item
            };
            if used != module && layer <= own {
                crossings.push(format!("{} uses crate::{used}", path.display()));
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
fn clap_and_printing_stay_in_the_cli() {
    let mut found = Vec::new();
    for (path, module, text) in files() {
        if matches!(module.as_str(), "cli" | "main") {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for what in ["clap", "println!", "eprintln!", "print!("] {
                if code.contains(what) {
                    found.push(format!("{}:{}: {what}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "outside cli/ and main.rs:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_use_scanner_sees_groups() {
    let uses =
        crate_uses("use crate::{analysis::{a, b}, store::X, units};\nlet x = crate::capture::f();");
    let want: BTreeSet<String> = ["analysis", "store", "units", "capture"]
        .map(String::from)
        .into();
    assert_eq!(uses, want);
}

/// The sibling modules a file of module `parent` names (`super::x`,
/// `crate::parent::x`, `super::{x::a, y}`).
fn sibling_uses(text: &str, parent: &str, siblings: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = uses_after(text, "super::");
    out.extend(uses_after(text, &format!("crate::{parent}::")));
    out.retain(|m| siblings.contains(m));
    out
}

/// No two submodules of a module use each other, directly or through
/// others (`mod.rs`, the parent, may be used by all of them).
#[test]
fn no_cycle_among_submodules() {
    let mut cycles = Vec::new();
    for entry in std::fs::read_dir(src()).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let parent = dir.file_name().unwrap().to_string_lossy().to_string();
        // Each submodule: a file `x.rs` or a directory `x/` (all its files).
        let mut texts: std::collections::BTreeMap<String, String> = Default::default();
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_stem().unwrap().to_string_lossy().to_string();
            if name == "mod" {
                continue;
            }
            let mut files = Vec::new();
            if p.is_dir() {
                rust_files(&p, &mut files);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p.clone());
            }
            let text: String = files
                .iter()
                .map(|f| std::fs::read_to_string(f).unwrap())
                .collect();
            texts.insert(name, text);
        }
        let siblings: BTreeSet<String> = texts.keys().cloned().collect();
        let uses: std::collections::BTreeMap<&String, BTreeSet<String>> = texts
            .iter()
            .map(|(n, t)| {
                let mut u = sibling_uses(t, &parent, &siblings);
                u.remove(n);
                (n, u)
            })
            .collect();
        // A cycle: a module reachable from itself.
        for start in uses.keys() {
            let mut seen = BTreeSet::new();
            let mut stack: Vec<&String> = uses[start].iter().collect();
            while let Some(m) = stack.pop() {
                if m == *start {
                    cycles.push(format!("{parent}::{start}"));
                    break;
                }
                if seen.insert(m.clone()) {
                    stack.extend(uses.get(m).into_iter().flatten());
                }
            }
        }
    }
    assert!(cycles.is_empty(), "modules in a cycle: {cycles:?}");
}
