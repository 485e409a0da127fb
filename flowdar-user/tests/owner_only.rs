//! What the CLI writes outside the exporters (`render --compare`, `diff
//! --flame`) and the experiment's report files hold what the trace holds
//! (pointers, client addresses): each is owner-only, as the trace is,
//! whatever the umask. The exporters' own files: flowdar-analysis's
//! tests/render.rs.
mod common;

use std::{os::unix::fs::PermissionsExt as _, path::Path};

use common::{fixture, flowdar};
use flowdar::experiment::{write_report, Hosts, Outcome, PhaseResult, VariantResult};

/// What a shell usually has: without a mode of flowdar's own, new files
/// would be 0644 and directories 0755.
fn usual_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
}

fn assert_owner_only(files: &[&Path]) {
    for f in files {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", f.display());
    }
}

#[test]
fn side_by_side_pages_and_differential_flame_graphs_are_owner_only() {
    usual_umask();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.flowdar");
    fixture(&trace);
    let (page, flame) = (dir.path().join("cmp.html"), dir.path().join("d.svg"));
    // Already there with a wider mode: replaced, not kept.
    std::fs::write(&page, "old").unwrap();
    let t = trace.to_str().unwrap();
    for args in [
        vec!["render", t, "--compare", t, "-o", page.to_str().unwrap()],
        vec!["diff", t, t, "--flame", flame.to_str().unwrap()],
    ] {
        let o = flowdar().args(&args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {o:?}");
    }
    assert_owner_only(&[&page, &flame]);
}

#[test]
fn experiment_report_files_are_owner_only() {
    usual_umask();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("v")).unwrap();
    let phase = |name: &str| {
        let trace = dir.path().join("v").join(format!("{name}.flowdar"));
        fixture(&trace);
        PhaseResult {
            name: name.into(),
            trace,
            duration_s: 1.0,
            client: None,
            client_error: None,
            attack: None,
            attack_report: None,
            events: 7,
            lost: 0,
            attach_mode: "uprobe_multi".into(),
        }
    };
    let outcome = Outcome {
        variants: vec![VariantResult {
            name: "v".into(),
            config: String::new(),
            server_pid: 1,
            untraced: None,
            phases: vec![phase("normal"), phase("attack")],
        }],
        hosts: Hosts {
            server: "127.0.0.1:8080".parse().unwrap(),
            client: None,
            attacker: None,
            note: None,
        },
        zoom: None,
        zoom_error: None,
    };
    write_report(dir.path(), &outcome, "modes").unwrap();
    let d = dir.path();
    assert_owner_only(&[
        &d.join("report.md"),
        &d.join("report.html"),
        &d.join("experiment.json"),
        &d.join("v/diff.json"),
    ]);
}
