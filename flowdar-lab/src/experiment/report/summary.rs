//! The report's first paragraphs, in plain words: the denial (or not), its
//! cause in the trace (the held workers, where, how long), the clients that
//! held them, the observer effect, and what each further variant changed.
use std::{fmt::Write as _, path::Path};

use flowdar_analysis::{units::ns, DiffRow, Session};

use super::{super::held::Held, no_phases, rps};
use crate::experiment::{error::Result, Hosts, Outcome, VariantResult};

/// What the held workers were doing, from the functions they were in.
fn doing(stack: &[String]) -> &'static str {
    let has = |f: &str| stack.iter().any(|s| s.split(' ').next() == Some(f));
    // A lean trace names where a worker waits for a request
    // (`read-wait: poll`), after the request began or before.
    let lean_wait = stack
        .iter()
        .any(|s| s.starts_with(crate::experiment::held::LEAN_READ_WAIT));
    if has("SSL_accept") {
        ": the TLS handshake (SSL_accept), waiting in read or poll for a ClientHello or key exchange that the attacker never finishes, before any HTTP is read"
    } else if lean_wait && has(flowdar_analysis::LEAN_REQUEST) {
        ": waiting in read or poll for a request body that comes a few bytes at a time"
    } else if lean_wait {
        ": the read path, waiting in read or poll for request headers that the attacker sends slowly or never"
    } else if has("poll(POLLOUT)") || has("writev") || has("write") || has("sendfile") {
        ": the write path, waiting to send a response to a client that reads it a few bytes at a time"
    } else if has("ap_read_request") {
        ": the read path, reading request headers that the attacker sends slowly or never"
    } else if has("apr_socket_recv") {
        ": the read path inside the handler, reading a request body that comes a few bytes at a time"
    } else if has("ap_pass_brigade")
        || has("apr_socket_sendv")
        || has("ap_core_output_filter")
        // The output filter's blocking write waits in apr_poll (APR reads
        // wait inside apr_socket_recv instead): the write path, even with
        // only the default profile's probes.
        || (has("ap_run_handler") && has("apr_poll"))
    {
        ": the write path, sending a response to a client that reads it a few bytes at a time"
    } else {
        ""
    }
}

/// Which clients held the workers, by address, from the trace's client
/// events (issue #16): the connections still open at the end of capture
/// with calls in flight, grouped by client address, the lab's hosts named.
/// None when the trace has no client addresses (recorded without them).
fn held_by_clients(test_trace: &Path, hosts: &Hosts) -> Result<Option<String>> {
    let sessions = match flowdar_analysis::sessions_of(test_trace) {
        Ok((s, _)) => s,
        Err(flowdar_analysis::SessionsError::NoConnections { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let open: Vec<Session> = sessions
        .into_iter()
        .filter(|s| !s.closed && s.in_flight > 0)
        .collect();
    let rows = flowdar_analysis::by_client(&open);
    if rows.is_empty() || rows.iter().all(|r| r.address == "unknown") {
        return Ok(None);
    }
    let label = |a: &str| host_label(hosts, a);
    let parts: Vec<String> = rows
        .iter()
        .take(3)
        .map(|r| {
            format!(
                "{}{}: {} connections, {} calls in flight, {} of worker time",
                r.address,
                label(&r.address),
                r.connections,
                r.in_flight,
                ns(r.worker_ns)
            )
        })
        .collect();
    Ok(Some(format!(
        "Held by client address (`flowdar clients`): {}{}.",
        parts.join("; "),
        if rows.len() > 3 {
            format!("; {} more", rows.len() - 3)
        } else {
            String::new()
        }
    )))
}

/// (client address, count), most first.
type ByAddress = Vec<(String, u64)>;

/// Connections open when capture ended on which no request was seen, per
/// client address, most first: what a flood of idle or never-finished
/// connections (HTTP/2 streams whose headers never end) holds instead of
/// workers. None when the trace has no connections.
fn open_without_request(trace: &Path) -> Result<Option<(u64, ByAddress)>> {
    let sessions = match flowdar_analysis::sessions_of(trace) {
        Ok((s, _)) => s,
        Err(flowdar_analysis::SessionsError::NoConnections { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut by: std::collections::BTreeMap<String, u64> = Default::default();
    for s in sessions.iter().filter(|s| !s.closed && s.requests == 0) {
        let ip = s.client.map_or("unknown".into(), |a| a.ip().to_string());
        *by.entry(ip).or_default() += 1;
    }
    let total = by.values().sum();
    let mut rows: Vec<(String, u64)> = by.into_iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok((total > 0).then_some((total, rows)))
}

/// What HTTP/2's streams cost in the attack phase, from the `apache:h2`
/// probes (libnghttp2) and what the attack client says it sent. None
/// without those probes.
fn h2_streams(test: &crate::experiment::PhaseResult) -> Result<Option<String>> {
    let Some(h2) = flowdar_analysis::h2_streams(&test.trace)? else {
        return Ok(None);
    };
    let secs = test.duration_s.max(1e-3);
    let mut line = format!(
        "HTTP/2 in the trace (libnghttp2, `apache:h2`): the server opened {} streams in phase `{}` ({:.0} a second) and answered {}; \
         {} were reset by the client, refused, or still without the end of their headers. It sent {} resets and {} GOAWAYs, \
         and parsing the clients' {} bytes of frames (`nghttp2_session_mem_recv`) took {} of server time.",
        h2.opened,
        test.name,
        h2.opened as f64 / secs,
        h2.answered,
        h2.unanswered(),
        h2.server_resets,
        h2.goaways,
        h2.parsed_bytes,
        ns(h2.parse_ns)
    );
    if let Some(a) = test.attack_report.as_ref().filter(|a| a.streams_opened > 0) {
        let _ = write!(
            line,
            " The attack client reports {} streams opened ({} reset, {} refused after a GOAWAY) with {} bytes sent, and {} connections closed by the server.",
            a.streams_opened,
            a.streams_reset,
            a.streams_refused,
            a.bytes_sent,
            a.connections_closed_by_server,
        );
    }
    Ok(Some(line))
}

/// ` (the attacker's host)` or ` (the legitimate client's host)` after an
/// address of the lab's.
fn host_label(hosts: &Hosts, a: &str) -> &'static str {
    let is = |h: &Option<(std::net::IpAddr, String)>| {
        h.as_ref().is_some_and(|(ip, _)| ip.to_string() == a)
    };
    if is(&hosts.attacker) {
        " (the attacker's host)"
    } else if is(&hosts.client) {
        " (the legitimate client's host)"
    } else {
        ""
    }
}

/// The first paragraph: the denial, its cause and the attacker, then what
/// each further variant changed.
/// `first_diff`: the first variant's diff (last phase against first), for
/// the backend verdict where the runs probed a backend.
pub(super) fn summary(outcome: &Outcome, held: &[Held], first_diff: &[DiffRow]) -> Result<String> {
    let mut out = String::new();
    let first = &outcome.variants[0];
    let (base, test) = (&first.phases[0], first.phases.last().ok_or_else(no_phases)?);
    let h = &outcome.hosts;
    let attacker = h
        .attacker
        .as_ref()
        .map_or("this host".into(), |(ip, ns)| format!("{ip} (host {ns})"));
    let client = h
        .client
        .as_ref()
        .map_or("this host".into(), |(ip, _)| ip.to_string());
    let attack = test.attack.as_deref().unwrap_or("no attack");
    let (b, t) = (rps(base), rps(test));
    let pct = if b > 0.0 { 100.0 * t / b } else { 0.0 };
    let failures = test.client.as_ref().map_or(0, |c| c.errors());
    if first.phases.iter().all(|p| p.attack.is_none()) {
        let _ = write!(
            out,
            "**No attack: phase `{}` against phase `{}`.** The client at {client} got {t:.0} requests/s in `{}` against {b:.0} in `{}` ({pct:.1}%, {failures} requests timed out or failed; counted over wall time).",
            test.name, base.name, test.name, base.name
        );
    } else if test.client.is_none() {
        let _ = write!(
            out,
            "**The attack alone.** Phase `{}` ran `{attack}` from {attacker} without legitimate load: \
             the diff below compares the attack's requests with the legitimate ones of phase `{}` ({b:.0} requests/s from {client}).",
            test.name, base.name
        );
    } else {
        let verdict = if pct <= 10.0 {
            "Denial of service"
        } else if pct < 90.0 {
            "Degraded service"
        } else {
            "No denial"
        };
        let _ = write!(
            out,
            "**{verdict}.** Without mitigation (variant `{}`), under `{attack}` from {attacker}, \
             the legitimate client at {client} got {t:.0} requests/s against {b:.0} in phase `{}` \
             ({pct:.1}% of normal, {failures} connects or requests timed out or failed; counted over wall time).",
            first.name, base.name
        );
    }
    let held_now = &held[0];
    // With no worker held, the connections held instead (read once: the
    // variants below compare with it).
    let open_unmitigated = match held_now.workers {
        0 => open_without_request(&test.trace)?,
        _ => None,
    };
    if held_now.workers > 0 {
        let _ = write!(
            out,
            " The trace says why: when capture ended {} workers were held in {}{}, for up to {} (median {}; capture began with the attack){}.",
            held_now.workers,
            held_now
                .stack
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(" > "),
            if held_now.with_stack < held_now.workers {
                format!(" ({} of them; the others elsewhere)", held_now.with_stack)
            } else {
                String::new()
            },
            ns(held_now.longest_ns),
            ns(held_now.median_ns),
            doing(&held_now.stack)
        );
    } else if let Some((n, rows)) = &open_unmitigated {
        let by: Vec<String> = rows
            .iter()
            .take(3)
            .map(|(ip, c)| format!("{c} from {ip}{}", host_label(h, ip)))
            .collect();
        let _ = write!(
            out,
            " The trace says why: no worker was held when capture ended, but {n} connections were open on which no request had come ({}). \
             The server had accepted them (over TLS, finished their handshakes) and keeps them in its event loop, waiting for a request that never completes (HTTP/2: headers that never end); \
             they fill its connection slots, and once those are full the event MPM stops accepting new connections: the legitimate client's connects time out.",
            by.join(", ")
        );
    } else {
        let _ = write!(out, " No worker was held when capture ended.");
    }
    match held_by_clients(&test.trace, h)? {
        Some(line) => {
            let _ = write!(out, " {line}");
        }
        None if test.attack.is_some() => {
            let _ = write!(
                out,
                " The attack came from {attacker}, the client from {client}."
            );
        }
        None => {}
    }
    if let Some(line) = h2_streams(test)? {
        let _ = write!(out, " {line}");
    }
    // After the held workers and their clients, which it does not explain.
    if let Some(v) = flowdar_analysis::backend_verdict(first_diff) {
        let _ = write!(out, " {v}");
    }
    if let Some(n) = &h.note {
        let _ = write!(out, " Lab: {n}.");
    }
    if let Some(line) = observer_effect(first) {
        let _ = write!(out, " {line}");
    }
    for (v, h) in outcome.variants.iter().zip(held).skip(1) {
        let last = v.phases.last().ok_or_else(no_phases)?;
        let (vb, vt) = (rps(&v.phases[0]), rps(last));
        let gain = if t > 0.0 { vt / t } else { f64::INFINITY };
        let settings = v
            .config
            .trim()
            .lines()
            .filter(|l| !l.starts_with("LoadModule"))
            .collect::<Vec<_>>()
            .join("; ");
        let _ = write!(
            out,
            "\n\nWith `{}` ({settings}): {vt:.0} requests/s under the same attack ({:.1}% of its normal {vb:.0}; {}). \
             In the trace, {} workers were held when capture ended{} (without mitigation: {}){}.",
            v.name,
            if vb > 0.0 { 100.0 * vt / vb } else { 0.0 },
            if gain.is_finite() {
                format!("{gain:.1}x the unmitigated {t:.0}")
            } else {
                format!("against {t:.0} without mitigation")
            },
            h.workers,
            if h.workers > 0 {
                format!(
                    ", in {}",
                    h.stack
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(" > ")
                )
            } else {
                String::new()
            },
            held_now.workers,
            ["ap_read_request", crate::experiment::held::LEAN_READ_WAIT]
                .iter()
                .find_map(|f| Some((*f, h.longest_returned_ns.get(*f)?)))
                .filter(|_| held_now.workers > 0)
                .map_or(String::new(), |(f, l)| format!(
                    "; the longest {} that {} took {} (without mitigation, workers were held for up to {})",
                    if f == "ap_read_request" {
                        "`ap_read_request`".to_string()
                    } else {
                        "wait for a request (read, poll)".to_string()
                    },
                    if f == "ap_read_request" { "returned" } else { "ended" },
                    ns(*l),
                    ns(held_now.longest_ns)
                ))
        );
        if let Some((n0, _)) = &open_unmitigated {
            let n = open_without_request(&last.trace)?.map_or(0, |(n, _)| n);
            let _ = write!(
                out,
                " Connections open without a request when capture ended: {n} (without mitigation: {n0})."
            );
        }
        if let Some(line) = last
            .client
            .as_ref()
            .and_then(|c| recovery(&c.per_second, vb))
        {
            let _ = write!(out, " {line}");
        }
    }
    Ok(out)
}

/// Seconds over which the report states the throughput a mitigation
/// settled at: the end of the attack phase's load.
pub(crate) const SETTLED_S: usize = 5;

/// When service came back under the attack, second by second: the first
/// second from which every second served at least half the normal rate,
/// and the rate over the last [`SETTLED_S`] seconds. The phase's mean
/// mixes the first seconds (the attack's connections queued before the
/// mitigation closed them) with the rest.
fn recovery(p: &crate::server::PerSecond, normal_rps: f64) -> Option<String> {
    let settled = p.last_rps(SETTLED_S)?;
    if normal_rps <= 0.0 || p.ok.len() < 2 * SETTLED_S {
        return None;
    }
    let pct = 100.0 * settled / normal_rps;
    Some(match p.back_from(0.5 * normal_rps) {
        Some(s) => format!(
            "Second by second: service came back {s} s into the attack phase's load, and served {settled:.0} requests/s over its last {SETTLED_S} s ({pct:.1}% of its normal)."
        ),
        None => format!(
            "Second by second: service did not come back to half its normal rate; {settled:.0} requests/s over the last {SETTLED_S} s ({pct:.1}% of its normal)."
        ),
    })
}

/// What tracing cost the normal load: its traced phase against the same load
/// untraced.
fn observer_effect(v: &VariantResult) -> Option<String> {
    let u = v.untraced.as_ref()?;
    let phase = v.phases.iter().find(|p| p.name == u.phase)?;
    let ratio = v.throughput_ratio(phase)?;
    Some(format!(
        "Observer effect: traced, phase `{}` served {:.0} requests/s; the same load untraced served {:.0} ({:.2}x).",
        phase.name,
        rps(phase),
        u.client.as_ref()?.requests_per_s,
        ratio
    ))
}

#[cfg(test)]
mod tests {
    use super::doing;

    fn stack(fs: &[&str]) -> Vec<String> {
        fs.iter().map(|f| format!("{f} (12.0 s)")).collect()
    }

    #[test]
    fn recovery_says_when_service_came_back_and_where_it_settled() {
        let mut ok = vec![0, 0, 0, 0, 40, 90];
        ok.extend([100; 9]);
        let p = crate::server::PerSecond {
            ok,
            failed: vec![],
            start_unix_ns: 0,
        };
        assert_eq!(
            super::recovery(&p, 100.0).unwrap(),
            "Second by second: service came back 5 s into the attack phase's load, and served 100 requests/s over its last 5 s (100.0% of its normal)."
        );
        let never = crate::server::PerSecond {
            ok: vec![0; 15],
            failed: vec![],
            start_unix_ns: 0,
        };
        assert!(super::recovery(&never, 100.0)
            .unwrap()
            .contains("did not come back to half its normal rate; 0 requests/s over the last 5 s (0.0% of its normal)"));
        // Too short a load to say: nothing rather than a guess.
        assert_eq!(
            super::recovery(&crate::server::PerSecond::new(6), 100.0),
            None
        );
    }

    #[test]
    fn held_stacks_name_the_path_they_wait_in() {
        assert!(doing(&stack(&["ap_read_request", "apr_socket_recv"])).contains("request headers"));
        assert!(doing(&stack(&["ap_invoke_handler", "apr_socket_recv"])).contains("request body"));
        // A slow read with only apache:request,io probed.
        assert!(
            doing(&stack(&["ap_invoke_handler", "ap_run_handler", "apr_poll"]))
                .contains("the write path")
        );
        assert_eq!(doing(&stack(&["apr_pollset_poll"])), "");
        // A stalled TLS handshake, in a lean trace with `handshake`.
        assert!(doing(&stack(&["SSL_accept", "read-wait: poll"])).contains("TLS handshake"));
    }
}
