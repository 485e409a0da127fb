//! Time waited on an application backend: Debian's PHP-FPM behind
//! mod_proxy_fcgi (the pool and its socket in the test's temp dir, started
//! and stopped by the test), recorded with `apache:request,backend`.
use std::time::Duration;

use flowdar::server::{run_load, ApacheOptions, LoadPlan, PhpFpm, ThrowawayApache};
use flowdar_tests::*;

const SLEEP_MS: u64 = 50;

#[test]
fn php_fpm_time_is_the_backends_and_apaches_own_is_what_remains() {
    require_root();
    let php = PhpFpm::start(4).expect("start a php-fpm pool");
    let apache = ThrowawayApache::start(&ApacheOptions {
        extra_config: php.apache_config(),
        ..Default::default()
    })
    .expect("start apache with mod_proxy_fcgi");
    let script = apache.dir().join("htdocs/sleep.php");
    std::fs::write(
        &script,
        format!("<?php usleep({}); echo \"ok\\n\";\n", SLEEP_MS * 1000),
    )
    .unwrap();
    let plan = |connections, requests_per_connection| LoadPlan {
        connections,
        requests_per_connection,
        concurrency: 1,
        path: "/sleep.php".into(),
        timeout: Duration::from_secs(10),
    };
    // PHP's first request of each worker compiles the script: not ours.
    let warm = run_load(apache.addr(), &plan(4, 1));
    assert_eq!(warm.ok, 4, "PHP answers: {}", apache.error_log());

    let (rec, trace) = record(apache.pid(), &["--profile", "apache:request,backend"]);
    // 20 requests over 2 keep-alive connections, one after the other.
    let r = run_load(apache.addr(), &plan(2, 10));
    assert_eq!((r.ok, r.errors), (20, 0));
    std::thread::sleep(Duration::from_millis(500));
    let (code, out, err) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");
    let path = trace.to_str().unwrap();

    let expected = 20 * SLEEP_MS * 1_000_000;
    let sessions = flowdar_json(&["sessions", "--json", path]);
    let sessions = sessions.as_array().unwrap();
    let with_requests: Vec<_> = sessions
        .iter()
        .filter(|s| s["requests"].as_u64().unwrap() > 0)
        .collect();
    assert_eq!(with_requests.len(), 2, "{sessions:?}");
    assert!(with_requests.iter().all(|s| s["requests"] == 10));
    let backend: u64 = sessions
        .iter()
        .map(|s| s["backend_ns"].as_u64().unwrap())
        .sum();
    assert!(
        backend >= expected * 95 / 100 && backend <= expected * 130 / 100,
        "20 x {SLEEP_MS} ms on the backend: {backend} ns"
    );
    let clients = flowdar_json(&["clients", "--json", path]);
    assert_eq!(
        clients[0]["backend_ns"].as_u64(),
        Some(backend),
        "{clients}"
    );

    // Per function: the scheme handler is all backend; the request's
    // processing holds it, and Apache's own time is what remains.
    let stats = flowdar_json(&["stats", "--json", path]);
    let row = |f: &str| {
        stats["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["function"] == f)
            .unwrap_or_else(|| panic!("{f} in {stats}"))
            .clone()
    };
    let handler = row("proxy_run_scheme_handler");
    assert_eq!(handler["calls"], 20);
    assert_eq!(handler["backend_ns"], handler["total_ns"]);
    let request = row("ap_process_async_request");
    assert_eq!(request["calls"], 20);
    let (total, in_backend) = (
        request["total_ns"].as_u64().unwrap(),
        request["backend_ns"].as_u64().unwrap(),
    );
    assert_eq!(in_backend, backend, "every exchange inside a request");
    assert!(
        (total - in_backend) * 4 < in_backend,
        "Apache's own time {} ns is under a quarter of the backend's {in_backend} ns",
        total - in_backend
    );
}

/// Two runs, the PHP backend answering in 50 ms then in 150 ms (two
/// scripts: PHP's opcache would keep serving a rewritten one for a while):
/// `diff` says the backend got slower, with the time it added.
#[test]
fn diff_says_the_backend_got_slower() {
    require_root();
    let php = PhpFpm::start(4).expect("start a php-fpm pool");
    let apache = ThrowawayApache::start(&ApacheOptions {
        extra_config: php.apache_config(),
        ..Default::default()
    })
    .expect("start apache with mod_proxy_fcgi");
    let mut traces = Vec::new();
    for ms in [50, 150] {
        std::fs::write(
            apache.dir().join(format!("htdocs/sleep{ms}.php")),
            format!("<?php usleep({}); echo \"ok\\n\";\n", ms * 1000),
        )
        .unwrap();
        let plan = LoadPlan {
            connections: 2,
            requests_per_connection: 10,
            concurrency: 1,
            path: format!("/sleep{ms}.php"),
            timeout: Duration::from_secs(10),
        };
        // PHP compiles the script once per worker: not ours.
        assert_eq!(
            run_load(
                apache.addr(),
                &LoadPlan {
                    connections: 4,
                    requests_per_connection: 1,
                    ..plan.clone()
                }
            )
            .ok,
            4
        );
        let (rec, trace) = record(apache.pid(), &["--profile", "apache:request,backend"]);
        assert_eq!(run_load(apache.addr(), &plan).ok, 20);
        std::thread::sleep(Duration::from_millis(500));
        let (code, out, err) = rec.stop(libc::SIGINT);
        assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");
        traces.push(trace);
    }
    let out = flowdar(&[
        "diff",
        traces[0].to_str().unwrap(),
        traces[1].to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let verdict = text
        .lines()
        .find(|l| l.starts_with("The backend got slower: "))
        .unwrap_or_else(|| panic!("no backend verdict:\n{text}"));
    about_100_ms_more_nearly_all_on_the_backend(verdict);
}

/// The experiment's report says it too: a spec whose server hands `.php`
/// to a PHP-FPM pool the test started, a `normal` phase on a script that
/// answers in 20 ms and a `slow` phase on one that answers in 120 ms: the
/// variant's comparison ends with the backend verdict, about 100 ms more a
/// call, nearly all of it on the backend.
#[test]
fn the_experiment_report_says_the_backend_got_slower() {
    use std::os::unix::fs::PermissionsExt;
    require_root();
    let php = PhpFpm::start(4).expect("start a php-fpm pool");
    // PHP-FPM's workers run as www-data: the scripts must be theirs to read.
    let docs = tempfile::tempdir().unwrap();
    std::fs::set_permissions(docs.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for ms in [20, 120] {
        std::fs::write(
            docs.path().join(format!("sleep{ms}.php")),
            format!("<?php usleep({}); echo \"ok\\n\";\n", ms * 1000),
        )
        .unwrap();
    }
    let config = format!(
        "{}LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so\nAlias /php/ \"{d}/\"\n<Directory \"{d}\">\n    Require all granted\n</Directory>\n",
        php.apache_config(),
        d = docs.path().display()
    );
    let spec = docs.path().join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            r#"version = 1
profile = ["apache:request", "apache:backend"]
[server]
config = '''
{config}'''
[[phase]]
name = "normal"
duration = "5s"
load = {{ connections = 2, path = "/php/sleep20.php" }}
[[phase]]
name = "slow"
duration = "5s"
load = {{ connections = 2, path = "/php/sleep120.php" }}
"#
        ),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = flowdar(&[
        "experiment",
        spec.to_str().unwrap(),
        "--force",
        "-o",
        out.path().to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    let verdict = md
        .lines()
        .find(|l| l.starts_with("The backend got slower: "))
        .unwrap_or_else(|| panic!("no backend verdict in the report:\n{md}"));
    // The same sentence in the report's first paragraph, for the reader
    // who reads no further.
    let first = md.split("\n\n").nth(1).unwrap();
    assert!(
        first.starts_with("**No attack: phase `slow` against phase `normal`.**")
            && first.contains(verdict),
        "{first}"
    );
    about_100_ms_more_nearly_all_on_the_backend(verdict);
}

/// A backend verdict of 95 to 130 ms more a call, 90% or more of it
/// waiting on the backend.
fn about_100_ms_more_nearly_all_on_the_backend(verdict: &str) {
    let added: f64 = verdict
        .split(" took ")
        .nth(1)
        .and_then(|t| t.split(" ms more").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{verdict}"));
    assert!((95.0..=130.0).contains(&added), "{verdict}");
    let share: f64 = verdict
        .rsplit(": ")
        .next()
        .and_then(|t| t.trim_end_matches("%.").parse().ok())
        .unwrap_or_else(|| panic!("{verdict}"));
    assert!(share >= 90.0, "{verdict}");
}
