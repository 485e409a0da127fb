//! Out-parameters: `ap_queue_pop_something` returns the socket through its
//! second argument; the `handoff` profile reads it at exit, and it matches
//! the socket the listener pushed with `ap_queue_push_socket`.
use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use flowdar::server::{run_load, LoadPlan};
use flowdar_common::EventKind::{Entry, Exit};
use flowdar_tests::*;

#[test]
fn popped_sockets_match_pushed_ones_across_threads() {
    require_root();
    let apache = small_event_apache();
    // Attached before the recorder and detached after it: the same calls.
    let witness = start_bpftrace_counter(
        apache.pid(),
        &[
            ("/usr/sbin/apache2", "ap_queue_push_socket"),
            ("/usr/sbin/apache2", "ap_queue_pop_something"),
        ],
    );
    let (rec, trace) = record(apache.pid(), &["--profile", "apache:handoff"]);
    let connections = 60;
    let r = run_load(
        apache.addr(),
        &LoadPlan {
            connections,
            ..Default::default()
        },
    );
    assert_eq!(r.ok, connections);
    std::thread::sleep(Duration::from_secs(1));
    let (code, out, err) = rec.stop(libc::SIGINT);
    let (_, bt_out, _) = witness.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "{out}\n{err}");

    let t = Trace::read(&trace);
    let push = t.probe_id("ap_queue_push_socket");
    let pop = t.probe_id("ap_queue_pop_something");
    let pushes = t.count("ap_queue_push_socket", Entry);
    assert_eq!(
        pushes,
        2 * connections,
        "new connection + keep-alive/close pass, per connection"
    );
    // bpftrace saw the same calls: every push and pop entered, every pop
    // returned, by status (0: something popped; 4, APR_EINTR: woken with
    // nothing).
    let bt = parse_bpftrace_counts(&bt_out);
    let pop_exits = t.count("ap_queue_pop_something", Exit);
    let pop_ok = t.zero_returns("ap_queue_pop_something");
    for (key, ours) in [
        ("entryap_queue_push_socket", pushes),
        (
            "entryap_queue_pop_something",
            t.count("ap_queue_pop_something", Entry),
        ),
        ("exitap_queue_pop_something,zero", pop_ok),
        ("exitap_queue_pop_something,nonzero", pop_exits - pop_ok),
    ] {
        assert_eq!(
            bt.get(key).copied().unwrap_or(0),
            ours as u64,
            "{key}\n{bt_out}"
        );
    }
    // Follow each popped socket back to the latest push of that address
    // not popped yet: each push is popped once, by a worker, after it.
    let mut waiting: HashMap<u64, (u32, u64)> = HashMap::new();
    let mut popped = 0;
    let mut workers = BTreeSet::new();
    for e in &t.events {
        if e.probe_id == push && e.kind == Entry as u32 {
            waiting.insert(e.args[1], (e.tid, e.ts_ns));
        } else if e.probe_id == pop && e.kind == Exit as u32 && e.args[0] == 0 && e.args[1] != 0 {
            popped += 1;
            workers.insert(e.tid);
            let (from, at) = waiting
                .remove(&e.args[1])
                .unwrap_or_else(|| panic!("popped {:#x}, not pushed since it last was", e.args[1]));
            assert_ne!(from, e.tid, "pushed by the listener, popped by a worker");
            assert!(at <= e.ts_ns);
        }
    }
    // The pushes no pop matched went to pops whose return was invisible: a
    // worker blocked in ap_queue_pop_something when the probes attached
    // returns without a uretprobe hit, once (README, "Sessions and flows").
    // At most one per worker (4 in small_event_apache).
    assert!(workers.len() <= 4, "{workers:?}");
    assert!(
        pushes - popped <= workers.len(),
        "{popped} pops seen for {pushes} pushes, {} workers",
        workers.len()
    );
}
