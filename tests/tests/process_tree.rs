//! The whole server and nothing else: children forked after attach (prefork
//! MPM replacing children) are traced; another Apache mapping the same files
//! is not.
use std::{collections::HashSet, time::Duration};

use flowdar::server::{run_load, ApacheOptions, LoadPlan, Mpm, ThrowawayApache};
use flowdar_common::EventKind::{Entry, Exit};
use flowdar_tests::*;

#[test]
fn prefork_children_forked_after_attach_are_traced_and_strangers_are_not() {
    require_root();
    // Every child exits after 3 connections: 30 connections need new children.
    let opts = ApacheOptions {
        mpm: Mpm::Prefork,
        extra_config: "MaxConnectionsPerChild 3\n".into(),
        ..Default::default()
    };
    let apache = ThrowawayApache::start(&opts).expect("start prefork apache");
    let stranger = ThrowawayApache::start(&ApacheOptions {
        mpm: Mpm::Prefork,
        ..Default::default()
    })
    .expect("second apache");
    let at_attach: HashSet<u32> = flowdar::capture::descendants(apache.pid())
        .into_iter()
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.flowdar");
    let witness =
        start_bpftrace_counter(apache.pid(), &[("/usr/sbin/apache2", "ap_process_request")]);
    let rec = record_profile(apache.pid(), "apache:request", &trace);
    let plan = LoadPlan {
        connections: 30,
        ..Default::default()
    };
    let r = run_load(apache.addr(), &plan);
    assert_eq!(r.ok, 30, "every request answered");
    assert_eq!(
        run_load(
            stranger.addr(),
            &LoadPlan {
                connections: 20,
                ..Default::default()
            }
        )
        .ok,
        20
    );
    std::thread::sleep(Duration::from_secs(1));
    let (code, out, err) = rec.stop(libc::SIGINT);
    let (_, bt_out, _) = witness.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "{out}\n{err}");

    let t = Trace::read(&trace);
    let id = t.probe_id("ap_process_request");
    let serving: HashSet<u32> = t
        .events
        .iter()
        .filter(|e| e.probe_id == id)
        .map(|e| e.tgid)
        .collect();
    let new_children: Vec<&u32> = serving.iter().filter(|p| !at_attach.contains(p)).collect();
    assert!(
        !new_children.is_empty(),
        "children forked after attach served requests: {serving:?} vs {at_attach:?}"
    );
    let stranger_tree: HashSet<u32> = flowdar::capture::descendants(stranger.pid())
        .into_iter()
        .collect();
    assert!(
        t.events
            .iter()
            .all(|e| !stranger_tree.contains(&e.tgid) && e.tgid != stranger.pid()),
        "the other Apache was traced"
    );
    // Exact against an independent tracer in the same window (the parent's
    // internal dummy connections add calls beyond the 30 sent).
    let bt = parse_bpftrace_counts(&bt_out);
    let seen = t.count("ap_process_request", Entry) as u64;
    assert!(seen >= 30, "{seen}");
    assert_eq!(
        bt.get("entryap_process_request").copied(),
        Some(seen),
        "{bt_out}"
    );
    assert_eq!(t.count("ap_process_request", Exit) as u64, seen);
}

/// A fork the in-kernel process filter cannot hold is reported with how
/// many processes went untraced: a prefork Apache with 2 children, a
/// filter that covers pids up to the highest of them, then more children
/// forked under load (with higher pids); each is counted, none is traced.
#[test]
fn a_full_process_filter_counts_every_untraced_child() {
    require_root();
    let opts = ApacheOptions {
        mpm: Mpm::Prefork,
        extra_config: "StartServers 2\nMinSpareServers 1\nMaxSpareServers 20\nServerLimit 20\nMaxRequestWorkers 20\n".into(),
        ..Default::default()
    };
    let apache = ThrowawayApache::start(&opts).expect("start prefork apache");
    let at_attach: HashSet<u32> = flowdar::capture::descendants(apache.pid())
        .into_iter()
        .collect();
    assert_eq!(at_attach.len(), 3, "parent and 2 children: {at_attach:?}");
    let capacity = at_attach.iter().max().unwrap() + 1;
    let capacity_arg = capacity.to_string();
    let (rec, trace) = record(
        apache.pid(),
        &[
            "--probe",
            "apache2:ap_process_request",
            "--filter-capacity",
            &capacity_arg,
        ],
    );
    // Busy children make the parent fork spares (idle < MinSpareServers):
    // keep-alive connections hold both for 3 s of its once-a-second checks.
    let wrk = flowdar::server::run_wrk(
        apache.addr(),
        &flowdar::server::WrkPlan {
            threads: 1,
            connections: 8,
            duration: Duration::from_secs(3),
            ..Default::default()
        },
    )
    .expect("wrk");
    assert!(wrk.requests > 0);
    std::thread::sleep(Duration::from_secs(1));
    let at_end: HashSet<u32> = flowdar::capture::descendants(apache.pid())
        .into_iter()
        .collect();
    let (code, out, err) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(at_attach.is_subset(&at_end), "no child exited");
    // Pids grow until they wrap at kernel.pid_max: a child that got a pid
    // below the limit after a wrap fits the filter and is traced.
    let forked = at_end
        .difference(&at_attach)
        .filter(|p| **p >= capacity)
        .count() as u64;
    assert!(forked > 0, "the parent forked spares under load");
    assert!(
        out.contains(&format!(
            "warning: {forked} processes or threads forked by the server could not join the in-kernel process filter"
        )),
        "{forked} forked:\n{out}"
    );
    let t = Trace::read(&trace);
    assert_eq!(t.footer.as_ref().unwrap().untraced_tasks, Some(forked));
    assert!(
        t.events.iter().all(|e| e.tgid < capacity),
        "only the processes in the filter are traced"
    );
    let info = flowdar(&["info", trace.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&info.stdout).contains(&format!(
        "untraced     {forked} processes or threads forked by the server could not join"
    )));
}
