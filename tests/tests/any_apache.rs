//! Apache as users have it: a server binary called `httpd` in a directory
//! of its own and APR loaded from another through LD_LIBRARY_PATH. The
//! built-in profile finds both by what they are, and counts stay exact.
use std::path::Path;

use flowdar::server::{run_load, ApacheOptions, LoadPlan, ThrowawayApache};
use flowdar_common::EventKind::{Entry, Exit};
use flowdar_tests::*;

const CONNECTIONS: usize = 30;

#[test]
fn an_httpd_named_build_with_its_own_apr_is_traced_by_the_profile() {
    require_root();
    let root = tempfile::tempdir().unwrap();
    let (bin, lib) = (root.path().join("bin"), root.path().join("apr/lib"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&lib).unwrap();
    let httpd = bin.join("httpd");
    std::fs::copy("/usr/sbin/apache2", &httpd).unwrap();
    let apr = std::fs::read_dir("/usr/lib/x86_64-linux-gnu")
        .unwrap()
        .flatten()
        .find(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("libapr-1.so.0.") && !e.path().is_symlink()
        })
        .expect("Debian's libapr-1.so.0.x")
        .path();
    let apr_copy = lib.join(apr.file_name().unwrap());
    std::fs::copy(&apr, &apr_copy).unwrap();
    std::os::unix::fs::symlink(apr_copy.file_name().unwrap(), lib.join("libapr-1.so.0")).unwrap();
    // The server's children (www-data) must reach the binary's directory.
    for d in [root.path(), &bin, &lib, lib.parent().unwrap()] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let apache = ThrowawayApache::start(&ApacheOptions {
        binary: httpd.clone(),
        env: vec![("LD_LIBRARY_PATH".into(), lib.display().to_string())],
        ..Default::default()
    })
    .expect("start httpd");
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", apache.pid())).unwrap();
    assert!(
        maps.contains(apr_copy.to_str().unwrap()) && !maps.contains("/usr/sbin/apache2"),
        "the server runs our httpd with our libapr:\n{maps}"
    );

    // `flowdar probes` says what matched and why.
    let pid = apache.pid().to_string();
    let out = flowdar(&[
        "probes",
        "--pid",
        &pid,
        "--profile",
        "apache:request,io",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let target = |name: &str| {
        v["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["target"] == name)
            .unwrap_or_else(|| panic!("no target {name}: {v}"))
            .clone()
    };
    assert_eq!(target("apache2")["file"], httpd.to_str().unwrap());
    assert_eq!(target("apache2")["matched_by"], "defines ap_read_request");
    assert_eq!(target("libapr-1")["file"], apr_copy.to_str().unwrap());
    assert_eq!(target("libapr-1")["matched_by"], "file name");
    assert_eq!(v["unresolved"].as_array().unwrap().len(), 0, "{v}");

    let (rec, trace) = record(apache.pid(), &["--profile", "apache:request,io"]);
    let plan = LoadPlan {
        connections: CONNECTIONS,
        requests_per_connection: 1,
        concurrency: 1,
        ..Default::default()
    };
    let r = run_load(apache.addr(), &plan);
    assert_eq!((r.ok, r.errors), (CONNECTIONS, 0));
    std::thread::sleep(std::time::Duration::from_secs(1));
    let (code, out, err) = rec.stop(libc::SIGINT);
    assert_eq!(code, Some(0), "record failed:\n{out}\n{err}");

    let t = Trace::read(&trace);
    let n = CONNECTIONS;
    for f in ["ap_process_async_request", "ap_invoke_handler"] {
        assert_eq!((t.count(f, Entry), t.count(f, Exit)), (n, n), "{f}");
    }
    assert_eq!(t.count("ap_read_request", Exit), 2 * n);
    let path_of = |f: &str| {
        t.header
            .probes
            .iter()
            .find(|p| p.function == f)
            .unwrap()
            .path
            .clone()
    };
    assert_eq!(path_of("ap_read_request"), httpd);
    assert_eq!(path_of("apr_socket_recv"), apr_copy);
    assert!(
        t.count("apr_socket_recv", Exit) >= n,
        "reads go through our libapr"
    );
    assert!(Path::new(&apr_copy).exists());
}
