//! `flowdar demo` with its defaults, as a new user runs it (and as the
//! kernel matrix runs it in every guest): 200 connections x 5 keep-alive
//! requests, every one of them in the trace.
use flowdar_common::EventKind::{Entry, Exit};
use flowdar_tests::*;

#[test]
fn the_demo_records_every_request_exactly() {
    require_root();
    let trace = TraceFile::new();
    let out = flowdar(&["demo", "-o", trace.to_str().unwrap()]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("Client: 1000 ok, 0 errors"), "{all}");
    assert!(all.contains("attach mode: "), "{all}");
    assert!(all.contains(", 0 lost,"), "{all}");
    assert!(all.contains("Estimated overhead: "), "{all}");
    let t = Trace::read(&trace);
    // 1000 requests; each of the 200 connections also ends with a read
    // that returns NULL (the client closed it).
    for (function, calls) in [
        ("ap_process_async_request", 1000),
        ("ap_invoke_handler", 1000),
        ("ap_read_request", 1200),
    ] {
        assert_eq!(t.count(function, Entry), calls, "{function} entries");
        assert_eq!(t.count(function, Exit), calls, "{function} returns");
    }
    assert_eq!(t.zero_returns("ap_read_request"), 200);
    let (problems, open) = t.nesting_problems();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(open, 0, "calls left open after the load");
}
