//! A server in a container: Apache in its own mount and PID namespaces, in
//! a root filesystem assembled from bind mounts where the server binary is
//! `/opt/httpd/bin/httpd` (Debian's `/usr/sbin/apache2` outside). Flowdar
//! records it by its host PID, resolves its files through /proc/PID/root,
//! and the trace and `info` give both PIDs.
use std::{os::unix::fs::PermissionsExt, path::Path, time::Duration};

use flowdar::server::{run_load, ApacheOptions, LoadPlan, ThrowawayApache};
use flowdar_common::EventKind::{Entry, Exit};
use flowdar_tests::*;

const CONNECTIONS: usize = 30;
const INSIDE: &str = "/opt/httpd/bin/httpd";

/// A wrapper that ThrowawayApache runs as its "binary": it enters new mount
/// and PID namespaces, assembles the root from bind mounts (torn down with
/// the mount namespace), and execs the server there, as PID 1.
fn container_wrapper(root: &Path) -> std::path::PathBuf {
    let r = root.display();
    let script = format!(
        r#"#!/bin/sh
# args: -f CONF -DFOREGROUND (from ThrowawayApache)
exec unshare --mount --pid --fork --propagation private /bin/sh -c '
set -e
R={r}
CONFDIR=$(dirname "$2")
mkdir -p "$R$CONFDIR"
mount --bind /usr "$R/usr"
mount --bind /etc "$R/etc"
mount --bind /dev "$R/dev"
mount --bind /usr/sbin/apache2 "$R{INSIDE}"
mount --bind "$CONFDIR" "$R$CONFDIR"
mount -t proc proc "$R/proc"
exec chroot "$R" {INSIDE} "$@"
' sh "$@"
"#
    );
    for d in [
        "usr",
        "etc",
        "dev",
        "proc",
        "tmp",
        "opt/httpd/bin",
        "run",
        "var",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for (link, to) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        std::os::unix::fs::symlink(to, root.join(link)).unwrap();
    }
    std::fs::write(root.join(INSIDE.trim_start_matches('/')), b"").unwrap();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let wrapper = root.parent().unwrap().join("enter-container.sh");
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

/// The host PID of the server's parent: the child of `unshare`.
fn server_in(unshare: u32) -> u32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            let pid: u32 = pid.parse().unwrap();
            // Once the shell has exec'd the server (PID 1 inside).
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "httpd" {
                return pid;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no server under PID {unshare}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_server_in_its_own_namespaces_is_recorded_by_host_pid() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    let wrapper = container_wrapper(&root);
    let apache = ThrowawayApache::start(&ApacheOptions {
        binary: wrapper,
        ..Default::default()
    })
    .expect("start apache in its namespaces");
    let host_pid = server_in(apache.pid());
    let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(nspid.ends_with("\t1"), "PID 1 inside: {nspid}");

    let (rec, trace) = record(host_pid, &["--profile", "apache:request"]);
    let r = run_load(
        apache.addr(),
        &LoadPlan {
            connections: CONNECTIONS,
            requests_per_connection: 1,
            concurrency: 1,
            ..Default::default()
        },
    );
    assert_eq!((r.ok, r.errors), (CONNECTIONS, 0));
    std::thread::sleep(Duration::from_secs(1));
    let (code, out, err) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");
    assert!(
        err.contains(&format!("Recording PID {host_pid} ("))
            && err.contains("PID 1 in its namespace"),
        "{err}"
    );

    let t = Trace::read(&trace);
    let n = CONNECTIONS;
    for f in ["ap_process_async_request", "ap_invoke_handler"] {
        assert_eq!((t.count(f, Entry), t.count(f, Exit)), (n, n), "{f}");
    }
    assert_eq!(t.count("ap_read_request", Exit), 2 * n);
    assert_eq!(t.header.target_pid, host_pid);
    assert_eq!(t.header.target_ns_pid, 1);
    let probe = t
        .header
        .probes
        .iter()
        .find(|p| p.function == "ap_read_request")
        .unwrap();
    assert_eq!(
        probe.path,
        Path::new(INSIDE),
        "the path as the server sees it"
    );
    // Events carry host tgids: the server's children, as the host sees them.
    let children: std::collections::HashSet<u32> = flowdar::capture::descendants(host_pid)
        .into_iter()
        .collect();
    assert!(t.events.iter().all(|e| children.contains(&e.tgid)));

    let info = flowdar(&["info", trace.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(
        text.contains(&format!(
            "target PID {host_pid} (PID 1 in its PID namespace)"
        )),
        "{text}"
    );
    let json = flowdar(&["info", "--json", trace.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        (v["target_pid"].as_u64(), v["target_ns_pid"].as_u64()),
        (Some(host_pid.into()), Some(1))
    );
    drop(apache);
    assert_eq!(left_behind(), Vec::<String>::new());
}
