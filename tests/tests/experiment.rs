//! A shortened built-in DoS experiment on a real Apache: the report exists,
//! the attack's read path ranks in the top 3, nothing was lost.
use flowdar_tests::*;

#[test]
fn a_short_slowloris_experiment_ranks_the_read_path_first() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exp");
    let o = flowdar(&[
        "experiment",
        "--default",
        "--max-phase",
        "8s",
        "-o",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    for f in [
        "report.md",
        "report.html",
        "diff.json",
        "normal.flowdar",
        "attack.flowdar",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert!(
        stderr.contains("[1/2] phase normal") && stderr.contains("[2/2] phase attack"),
        "progress shown:\n{stderr}"
    );
    let diff: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(out.join("diff.json")).unwrap()).unwrap();
    let top3: Vec<&str> = diff
        .iter()
        .take(3)
        .map(|r| r["function"].as_str().unwrap())
        .collect();
    let read_path = ["ap_read_request", "apr_socket_recv"];
    assert!(
        top3.iter().any(|f| read_path.contains(f)),
        "read path in the top 3: {top3:?}"
    );
    let read = diff
        .iter()
        .find(|r| r["function"] == "ap_read_request")
        .unwrap();
    assert!(
        read["ratio"].as_f64().unwrap_or(f64::INFINITY) >= 100.0
            && read["in_flight"].as_u64().unwrap() > 0,
        "{read}"
    );
    for phase in ["normal", "attack"] {
        let t = Trace::read(&out.join(format!("{phase}.flowdar")));
        let f = t.footer.expect("finalised");
        assert_eq!(
            (f.total_kernel_drops(), f.total_user_drops()),
            (0, 0),
            "{phase}: no events lost"
        );
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("## Client side") && md.contains("| attack |") && md.contains("slowhttptest"),
        "{md}"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("<table>") && html.matches("<svg").count() == 2,
        "side-by-side sessions in the HTML report"
    );
    assert!(leftover_programs().is_empty());
}
