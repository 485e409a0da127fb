//! Row r: the time workers spent reading per client (`flowdar clients`'
//! `read_ns`), from the uprobes the experiment used before the lean
//! capture (`apache:request,io`: `ap_read_request`) and from the lean
//! capture's system calls (`apache:lean`: reads and polls for input), on
//! the same run: two recorders attached to one Apache at once, stopped
//! together, under one Slowloris from a lab host and wrk on loopback.
use std::{net::IpAddr, time::Duration};

use flowdar::server::{run_wrk, ApacheOptions, Lab, ThrowawayApache, WrkPlan};
use flowdar_tests::{flowdar_json, start_recorder};

/// Slowloris connections (each holds a worker for the whole run).
const ATTACK_CONNECTIONS: u32 = 60;

#[derive(Debug, Clone)]
pub struct ClientReads {
    pub address: String,
    /// `read_ns` under `apache:request,io` and under `apache:lean`.
    pub uprobes_ns: u64,
    pub lean_ns: u64,
    pub uprobes_requests: u64,
    pub lean_requests: u64,
}

pub struct Run {
    pub clients: Vec<ClientReads>,
    pub attacker: String,
    pub lost: (u64, u64),
}

fn read_ns(trace: &std::path::Path) -> Vec<(String, u64, u64)> {
    let rows = flowdar_json(&["clients", "--json", trace.to_str().unwrap()]);
    rows.as_array()
        .expect("clients --json is an array")
        .iter()
        .map(|r| {
            (
                r["address"].as_str().unwrap_or_default().to_string(),
                r["read_ns"].as_u64().unwrap_or(0),
                r["requests"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

pub fn measure(secs: u64, out_dir: &std::path::Path) -> Run {
    let lab = Lab::create().expect("lab hosts");
    let apache = ThrowawayApache::start(&ApacheOptions {
        listen: vec![lab.server.into()],
        ..Default::default()
    })
    .expect("start apache");
    let pid = apache.pid().to_string();
    let traces = [
        (
            "apache:request,io",
            out_dir.join("readtime-uprobes.flowdar"),
        ),
        ("apache:lean", out_dir.join("readtime-lean.flowdar")),
    ];
    let recorders: Vec<_> = traces
        .iter()
        .map(|(profile, path)| {
            start_recorder(&[
                "--pid",
                &pid,
                "--profile",
                profile,
                "--force",
                "-o",
                path.to_str().unwrap(),
            ])
        })
        .collect();
    let mut attack = flowdar_tests::Slowloris {
        connections: ATTACK_CONNECTIONS,
        rate: 60,
        interval_s: 2,
        length_s: secs as u32 + 10,
    }
    .spawn(&lab, apache.port());
    std::thread::sleep(Duration::from_secs(2));
    let wrk = run_wrk(
        apache.addr(),
        &WrkPlan {
            threads: 1,
            connections: 4,
            duration: Duration::from_secs(secs),
            ..Default::default()
        },
    )
    .expect("wrk");
    assert_eq!(wrk.errors, 0, "wrk saw errors: {wrk:?}");
    std::thread::sleep(Duration::from_secs(1));
    // Both stop at once: the attacker's reads are in flight until the end.
    for r in &recorders {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(r.pid() as i32, libc::SIGINT) };
    }
    let mut lost = Vec::new();
    for r in recorders {
        let (code, out, err) = r.stop(0);
        assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");
        lost.push(crate::common::parse_summary(&out).lost);
    }
    let _ = attack.kill();
    let _ = attack.wait();
    let (a, b) = (read_ns(&traces[0].1), read_ns(&traces[1].1));
    let mut clients: Vec<ClientReads> = a
        .iter()
        .map(|(address, ns, requests)| {
            let lean = b.iter().find(|(x, _, _)| x == address);
            ClientReads {
                address: address.clone(),
                uprobes_ns: *ns,
                lean_ns: lean.map_or(0, |l| l.1),
                uprobes_requests: *requests,
                lean_requests: lean.map_or(0, |l| l.2),
            }
        })
        .collect();
    for (address, ns, requests) in &b {
        if !clients.iter().any(|c| &c.address == address) {
            clients.push(ClientReads {
                address: address.clone(),
                uprobes_ns: 0,
                lean_ns: *ns,
                uprobes_requests: 0,
                lean_requests: *requests,
            });
        }
    }
    Run {
        clients,
        attacker: IpAddr::from(lab.attacker.addr).to_string(),
        lost: (lost[0], lost[1]),
    }
}

/// Clients holding at least this share of the run's read time (under
/// `request,io`) are judged by the 5% target; the figures of the others
/// differ by what each side counts as reading (`ap_read_request` parses
/// the request and pays its probes' traps, `read` is the copy alone), a
/// few microseconds a request that no worker is held for.
const JUDGED_SHARE: f64 = 0.01;

pub fn render(run: &Run, secs: u64) -> String {
    let mut md = format!(
        "### r. Read time per client, `apache:request,io` against `apache:lean` (one Apache, both recorders attached at once and stopped together; a {ATTACK_CONNECTIONS}-connection Slowloris from a lab host, wrk -t1 -c4 for {secs} s on 127.0.0.1)\n\n"
    );
    md.push_str("| client | requests (uprobes / lean) | read time, `request,io` (`ap_read_request`) | read time, `lean` (read, poll) | share of the read time | lean / uprobes | within 5% |\n|---|---:|---:|---:|---:|---:|---|\n");
    let total = |f: fn(&ClientReads) -> u64| run.clients.iter().map(f).sum::<u64>() as f64;
    let (uprobes_total, lean_total) = (total(|c| c.uprobes_ns), total(|c| c.lean_ns));
    let (mut judged, mut met) = (0, 0);
    for c in &run.clients {
        let role = if c.address == run.attacker {
            " (attacker)"
        } else {
            ""
        };
        let ratio = c.lean_ns as f64 / c.uprobes_ns.max(1) as f64;
        // Either side's share: a client only one recorder saw reading
        // is the largest mismatch there can be, and is judged.
        let share = (c.uprobes_ns as f64 / uprobes_total.max(1.0))
            .max(c.lean_ns as f64 / lean_total.max(1.0));
        let verdict = if share >= JUDGED_SHARE {
            judged += 1;
            let ok = (ratio - 1.0).abs() <= 0.05;
            met += usize::from(ok);
            crate::verdict(ok).to_string()
        } else {
            let per_request =
                (c.uprobes_ns as f64 - c.lean_ns as f64) / c.uprobes_requests.max(1) as f64 / 1e3;
            format!("not judged (under 1%: {per_request:.1} µs a request apart)")
        };
        md.push_str(&format!(
            "| {}{role} | {} / {} | {:.3} s | {:.3} s | {:.1}% | {ratio:.3} | {verdict} |\n",
            c.address,
            c.uprobes_requests,
            c.lean_requests,
            c.uprobes_ns as f64 / 1e9,
            c.lean_ns as f64 / 1e9,
            100.0 * share,
        ));
    }
    let all = lean_total / uprobes_total.max(1.0);
    let attacker_judged = run.clients.iter().any(|c| {
        c.address == run.attacker
            && (c.uprobes_ns as f64 >= JUDGED_SHARE * uprobes_total
                || c.lean_ns as f64 >= JUDGED_SHARE * lean_total)
    });
    md.push_str(&format!(
        "\nRead time per client, lean / uprobes, within 5% for every client holding at least {:.0}% of the run's read time: {met} of {judged} ({}; the attacker among them: {}); all clients together: {all:.3}. Lost: {} (uprobes), {} (lean).\n\n",
        100.0 * JUDGED_SHARE,
        crate::verdict(attacker_judged && met == judged),
        if attacker_judged { "yes" } else { "NO" },
        run.lost.0,
        run.lost.1,
    ));
    md
}
