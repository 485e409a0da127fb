//! Depth where symbols exist: a module built against apache2-dev with
//! debug symbols (`tests/fixtures/mod_depth.c`, compiled by the test with
//! apxs) is found by `probes --pid`, recorded by `apache:full` with its
//! static functions nested under Apache's handler hook, and descended into
//! by the zoom. Debian's stripped modules add nothing.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use flowdar::{
    analysis::CallTree,
    server::{run_load, ApacheOptions, LoadPlan, ThrowawayApache},
};
use flowdar_tests::*;

const MODULE: &str = include_str!("../fixtures/mod_depth.c");
const REQUESTS: u64 = 50;

/// Builds mod_depth.so with `-g` in `dir`; its path.
fn build_module(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("mod_depth.c"), MODULE).unwrap();
    run_ok(
        Command::new("apxs")
            .args(["-c", "-Wc,-g", "-Wc,-O1", "mod_depth.c"])
            .current_dir(dir),
    );
    let so = dir.join(".libs/mod_depth.so");
    assert!(so.is_file(), "apxs built {}", so.display());
    so
}

/// The module's static functions.
const FUNCTIONS: [&str; 4] = [
    "depth_handler",
    "depth_leaf",
    "depth_register_hooks",
    "depth_work",
];

/// `probes --pid PID --profile apache:full --json`, and the functions it
/// found in the module `so`.
fn module_probes(pid: &str, so: &Path) -> (serde_json::Value, Vec<String>) {
    let probes = flowdar_json(&["probes", "--pid", pid, "--profile", "apache:full", "--json"]);
    let in_module = probes["probes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["object"] == so.to_str().unwrap())
        .map(|p| p["function"].as_str().unwrap().to_string())
        .collect();
    (probes, in_module)
}

fn module_config(so: &Path) -> String {
    format!(
        "LoadModule depth_module {}\n<Location /depth>\n    SetHandler depth\n</Location>\n",
        so.display()
    )
}

#[test]
fn full_finds_and_records_a_modules_own_functions_where_it_has_symbols() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let so = build_module(dir.path());
    let apache = ThrowawayApache::start(&ApacheOptions {
        extra_config: module_config(&so),
        ..Default::default()
    })
    .expect("start apache with mod_depth");
    let pid = apache.pid().to_string();

    // probes --pid: the module's static functions, from its symbol table.
    let (probes, in_module) = module_probes(&pid, &so);
    assert_eq!(in_module, FUNCTIONS, "{probes}");
    // The glob matched the module with symbols, and no stripped one
    // (mod_authz_core and mod_mpm_event are loaded, stripped).
    let globbed: Vec<&str> = probes["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["target"] == "mod_*")
        .map(|t| t["file"].as_str().unwrap())
        .collect();
    assert_eq!(globbed, [so.to_str().unwrap()], "{probes}");
    assert!(
        probes["unresolved"].as_array().unwrap().is_empty(),
        "{probes}"
    );

    // Recorded by apache:full: every call, nested under the handler hook.
    let (rec, trace) = record(apache.pid(), &["--profile", "apache:full"]);
    let r = run_load(
        apache.addr(),
        &LoadPlan {
            connections: 5,
            requests_per_connection: REQUESTS as usize / 5,
            concurrency: 1,
            path: "/depth".into(),
            timeout: Duration::from_secs(10),
        },
    );
    assert_eq!(
        (r.ok as u64, r.errors),
        (REQUESTS, 0),
        "{}",
        apache.error_log()
    );
    std::thread::sleep(Duration::from_millis(300));
    let (code, out, err) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");
    let path = trace.to_str().unwrap();
    let stats = flowdar_json(&["stats", "--json", path]);
    let calls = |f: &str| {
        stats["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["function"] == f)
            .and_then(|r| r["calls"].as_u64())
            .unwrap_or(0)
    };
    for f in ["depth_handler", "depth_work", "depth_leaf"] {
        assert_eq!(calls(f), REQUESTS, "{f}: {stats}");
    }
    let tree = CallTree::of(&trace).unwrap();
    for (caller, callee) in [
        ("ap_run_handler", "depth_handler"),
        ("depth_handler", "depth_work"),
        ("depth_work", "depth_leaf"),
    ] {
        assert!(
            tree.callees(caller).contains(&(callee, REQUESTS)),
            "{caller} -> {callee} x{REQUESTS}: {:?}",
            tree.callees(caller)
        );
    }
    assert!(left_behind().is_empty(), "{:?}", left_behind());
}

/// The zoom starts from the request probes, and its discovery window
/// (`apache:full`) sees the module's functions: when the module's loop
/// gets long (an attacker's requests ask for the expensive page: complete
/// requests, that hold no worker waiting on the client), the chain goes
/// from the handler hook down into the module.
#[test]
fn the_zoom_descends_into_a_module_with_symbols() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let so = build_module(dir.path());
    let spec = dir.path().join("spec.toml");
    let config = module_config(&so).replace('\n', "\\n");
    std::fs::write(
        &spec,
        format!(
            r#"version = 1
profile = ["apache:request"]
[server]
config = "{config}"
[lab]
namespaces = true
[[phase]]
name = "normal"
duration = "5s"
load = {{ connections = 4, path = "/depth" }}
[[phase]]
name = "attack"
duration = "5s"
load = {{ connections = 4, path = "/depth" }}
attack = {{ mode = "range", connections = 200, rate = 50, path = "/depth?s" }}
"#
        ),
    )
    .unwrap();
    let out = dir.path().join("exp");
    let o = flowdar(&[
        "experiment",
        spec.to_str().unwrap(),
        "--zoom=4",
        "-o",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    let zoom = read_json(&out.join("none/zoom/zoom.json"));
    let chain: Vec<&str> = zoom["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    // Below the handler hook, into the module: its functions exist only
    // in its symbol table. How far down a run gets depends on how many of
    // the attacker's slow requests each level's phases saw; each link in
    // the module was significantly slower under attack at a level that
    // probed it.
    assert_eq!(chain.first(), Some(&"ap_run_handler"), "{zoom}\n{stderr}");
    let in_module: Vec<&str> = chain
        .iter()
        .copied()
        .filter(|f| f.starts_with("depth_"))
        .collect();
    assert!(
        !in_module.is_empty(),
        "the chain {chain:?} enters mod_depth\n{stderr}"
    );
    for link in in_module {
        let found = zoom["levels"].as_array().unwrap().iter().any(|l| {
            l["level"] != 0
                && l["rows"].as_array().unwrap().iter().any(|r| {
                    r["function"] == link
                        && r["significant"] == true
                        && r["ratio"].as_f64().is_none_or(|x| x > 1.5)
                })
        });
        assert!(found, "{link} significant in a level: {zoom}");
    }
    assert!(left_behind().is_empty(), "{:?}", left_behind());
}

/// A module stripped as distributions ship theirs, its symbols in a
/// separate debug file named by its `.gnu_debuglink` in its `.debug/`
/// folder (as a build of one's own installs it; a -dbgsym package or
/// debuginfod gives the same file by build id): `probes --pid` finds its
/// static functions there, and without the file finds none.
#[test]
fn a_stripped_module_is_found_through_its_debug_file() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let so = build_module(dir.path());
    let debug_dir = so.parent().unwrap().join(".debug");
    std::fs::create_dir(&debug_dir).unwrap();
    let debug = debug_dir.join("mod_depth.so.debug");
    run_ok(
        Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(&so)
            .arg(&debug),
    );
    run_ok(
        Command::new("objcopy")
            .arg("--strip-all")
            .arg(format!("--add-gnu-debuglink={}", debug.display()))
            .arg(&so),
    );
    let symtab = Command::new("readelf").arg("-S").arg(&so).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&symtab.stdout).contains(".symtab"),
        "stripped: no symbol table left"
    );
    let apache = ThrowawayApache::start(&ApacheOptions {
        extra_config: module_config(&so),
        ..Default::default()
    })
    .expect("start apache with the stripped mod_depth");
    let pid = apache.pid().to_string();
    let (probes, in_module) = module_probes(&pid, &so);
    assert_eq!(in_module, FUNCTIONS, "{probes}");
    std::fs::rename(&debug_dir, dir.path().join("elsewhere")).unwrap();
    let (probes, in_module) = module_probes(&pid, &so);
    assert!(in_module.is_empty(), "without its debug file: {probes}");
}
