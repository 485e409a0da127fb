//! Out-parameters: `ap_queue_pop_something` returns the socket through its
//! second argument; the `handoff` profile reads it at exit, and it matches
//! the socket the listener pushed with `ap_queue_push_socket`.
use std::{collections::HashMap, time::Duration};

use flowdar::server::{run_load, LoadPlan};
use flowdar_common::EventKind::{Entry, Exit};
use flowdar_tests::*;

#[test]
fn popped_sockets_match_pushed_ones_across_threads() {
    require_root();
    let apache = small_event_apache();
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
    // Follow each popped socket back to the latest push of that address.
    let mut last_push: HashMap<u64, (u32, u64)> = HashMap::new();
    let (mut matched, mut popped) = (0, 0);
    for e in &t.events {
        if e.probe_id == push && e.kind == Entry as u32 {
            last_push.insert(e.args[1], (e.tid, e.ts_ns));
        } else if e.probe_id == pop && e.kind == Exit as u32 && e.args[0] == 0 && e.args[1] != 0 {
            popped += 1;
            let (from, at) = last_push
                .get(&e.args[1])
                .copied()
                .unwrap_or_else(|| panic!("popped {:#x}, never pushed", e.args[1]));
            assert_ne!(from, e.tid, "pushed by the listener, popped by a worker");
            assert!(at <= e.ts_ns);
            matched += 1;
        }
    }
    assert_eq!(matched, popped);
    // At most one invisible pop per worker (blocked before attach).
    assert!(
        popped >= pushes - 4,
        "{popped} pops seen for {pushes} pushes"
    );
}
