//! A throwaway Apache httpd (Debian's `/usr/sbin/apache2`): own config, logs
//! and document root in a temp dir, listening on a loopback port, running in
//! the foreground as our child and stopped (with all its children) on drop.
use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rustix::process::{geteuid, kill_process, kill_process_group, Pid, Signal};

use super::LARGE_PATH;

const INDEX_BODY: &str = "<html><body><h1>flowdar test page</h1></body></html>\n";
const LARGE_BYTES: usize = 1 << 20;
const MODULES: &str = "/usr/lib/apache2/modules";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0} not found: install Debian's apache2 (`cargo xtask setup` does)")]
    NoApache(PathBuf),
    #[error("{0} not found: install Debian's php8.2-fpm (`cargo xtask setup` does)")]
    NoPhpFpm(PathBuf),
    #[error("preparing the Apache directory")]
    Io(#[from] std::io::Error),
    #[error("Apache did not start within {secs} s on port {port}: {log}")]
    Startup { secs: u64, port: u16, log: String },
    #[error("running openssl for the TLS listener's self-signed certificate (`cargo xtask setup` installs it)")]
    CertificateTool(#[source] std::io::Error),
    #[error("openssl could not make the TLS listener's self-signed certificate: {stderr}")]
    Certificate { stderr: String },
}

/// Apache's multi-processing module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mpm {
    #[default]
    Event,
    Worker,
    Prefork,
}

#[derive(Debug, Clone)]
pub struct ApacheOptions {
    pub binary: PathBuf,
    pub mpm: Mpm,
    /// 0 picks a free loopback port.
    pub port: u16,
    /// Extra configuration lines appended to the generated httpd.conf.
    pub extra_config: String,
    /// Environment added to the server's (e.g. LD_LIBRARY_PATH).
    pub env: Vec<(String, String)>,
    /// Addresses to listen on besides 127.0.0.1 (same port), e.g. a lab's.
    pub listen: Vec<std::net::IpAddr>,
    /// Also listen on a second loopback port with TLS (mod_ssl, a
    /// self-signed certificate made for the server) speaking HTTP/2 and
    /// HTTP/1.1 (mod_http2, `Protocols h2 http/1.1`), as most servers in
    /// the field do. The cleartext port stays for the readiness check.
    pub tls: bool,
}

impl Default for ApacheOptions {
    fn default() -> Self {
        Self {
            binary: "/usr/sbin/apache2".into(),
            mpm: Mpm::Event,
            port: 0,
            extra_config: String::new(),
            env: Vec::new(),
            listen: Vec::new(),
            tls: false,
        }
    }
}

/// Debian's apache2 on a loopback port with its own config in a temp dir.
/// Stopped on drop, and by the kernel when the thread that started it ends
/// (however its process dies): it never outlives its creator.
pub struct ThrowawayApache {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    tls_port: Option<u16>,
    binary: PathBuf,
    env: Vec<(String, String)>,
}

impl ThrowawayApache {
    /// Starts Apache and waits until it serves the test page.
    pub fn start(opts: &ApacheOptions) -> Result<Self, ServerError> {
        if !opts.binary.exists() {
            return Err(ServerError::NoApache(opts.binary.clone()));
        }
        let dir = tempfile::Builder::new()
            .prefix("flowdar-apache-")
            .tempdir()?;
        // Apache's children run as www-data: they must reach the doc root.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let htdocs = dir.path().join("htdocs");
        std::fs::create_dir(&htdocs)?;
        std::fs::set_permissions(&htdocs, std::fs::Permissions::from_mode(0o755))?;
        std::fs::write(htdocs.join("index.html"), INDEX_BODY)?;
        // Not compressible, not all one byte: a body like a real download.
        let large: Vec<u8> = (0..LARGE_BYTES as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        std::fs::write(htdocs.join(&LARGE_PATH[1..]), large)?;
        for f in ["index.html", &LARGE_PATH[1..]] {
            std::fs::set_permissions(htdocs.join(f), std::fs::Permissions::from_mode(0o644))?;
        }

        let port = if opts.port == 0 {
            free_port()?
        } else {
            opts.port
        };
        let tls_port = if opts.tls {
            make_certificate(dir.path())?;
            Some(free_port()?)
        } else {
            None
        };
        let conf = dir.path().join("httpd.conf");
        std::fs::write(&conf, config(dir.path(), port, tls_port, opts))?;
        let mut server = Self {
            child: None,
            dir,
            port,
            tls_port,
            binary: opts.binary.clone(),
            env: opts.env.clone(),
        };
        server.spawn()?;
        server.wait_ready()?;
        Ok(server)
    }

    /// Runs the server's command line (the same every time).
    fn spawn(&mut self) -> Result<(), ServerError> {
        let conf = self.dir.path().join("httpd.conf");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))?;
        let mut cmd = Command::new(&self.binary);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.args([
            "-f",
            conf.to_str().expect("utf-8 temp path"),
            "-DFOREGROUND",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Own process group: stopping it reaches every child.
        .process_group(0);
        // A throwaway server must not outlive whoever started it, even when
        // that process dies without unwinding (SIGKILL, SIGPIPE, a timeout):
        // the kernel sends Apache's parent SIGTERM (a clean stop of all its
        // children) when the thread that started it ends.
        super::process::die_with_parent(&mut cmd, Signal::TERM);
        let child = cmd.spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// Kills every server process at once (as a crash would), then starts
    /// the same command line again, as a supervisor would; returns the new
    /// parent PID once it serves.
    pub fn crash_and_restart(&mut self) -> Result<u32, ServerError> {
        if let Some(mut child) = self.child.take() {
            // Our own child's process group.
            let _ = kill_process_group(Pid::from_child(&child), Signal::KILL);
            let _ = child.wait();
        }
        // The kernel frees the listening port once the group is gone.
        std::thread::sleep(Duration::from_millis(200));
        self.spawn()?;
        // Ready once it accepts: no HTTP request, so a tracer following the
        // restart sees only the requests the caller sends.
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while std::net::TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200))
            .is_err()
        {
            if Instant::now() > deadline {
                return Err(ServerError::Startup {
                    secs: STARTUP_TIMEOUT.as_secs(),
                    port: self.port,
                    log: "not accepting connections after a restart".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(self.pid())
    }

    /// Apache's graceful restart (SIGUSR1 to the parent): the parent stays,
    /// its children finish their requests and are replaced by new ones.
    pub fn graceful_restart(&self) {
        if let Some(child) = &self.child {
            let _ = kill_process(Pid::from_child(child), Signal::USR1);
        }
    }

    /// The parent (control) process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The TLS port (HTTP/2 and HTTP/1.1), when started with `tls`.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_port
            .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Apache's error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) -> Result<(), ServerError> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                break; // exited: report its log
            }
            let plan = super::LoadPlan {
                connections: 1,
                requests_per_connection: 1,
                concurrency: 1,
                ..Default::default()
            };
            if super::run_load(self.addr(), &plan).ok == 1 {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut log = self.error_log();
        log.push_str(
            &std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default(),
        );
        let last = log
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no log output")
            .to_string();
        self.stop();
        Err(ServerError::Startup {
            secs: STARTUP_TIMEOUT.as_secs(),
            port: self.port,
            log: last,
        })
    }

    /// Graceful stop (SIGTERM to the parent), then SIGKILL to the group.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Our own child, the leader of its process group.
        let leader = Pid::from_child(&child);
        let _ = kill_process(leader, Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The group may already be gone.
        let _ = kill_process_group(leader, Signal::KILL);
        let _ = child.wait();
    }
}

impl Drop for ThrowawayApache {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A self-signed certificate and its key, `cert.pem` and `key.pem` in `dir`.
fn make_certificate(dir: &Path) -> Result<(), ServerError> {
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdin(Stdio::null())
        .output()
        .map_err(ServerError::CertificateTool)?;
    if !out.status.success() {
        return Err(ServerError::Certificate {
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn config(dir: &Path, port: u16, tls_port: Option<u16>, opts: &ApacheOptions) -> String {
    let d = dir.display();
    let mut c = String::new();
    let mpm = match opts.mpm {
        Mpm::Event => "event",
        Mpm::Worker => "worker",
        Mpm::Prefork => "prefork",
    };
    let _ = writeln!(c, "# Generated by flowdar: a throwaway server on loopback.");
    let _ = writeln!(
        c,
        "ServerRoot {d}\nServerName 127.0.0.1\nListen 127.0.0.1:{port}"
    );
    for ip in &opts.listen {
        let _ = writeln!(c, "Listen {}", SocketAddr::new(*ip, port));
    }
    let _ = writeln!(
        c,
        "PidFile {d}/httpd.pid\nErrorLog {d}/error.log\nLogLevel warn"
    );
    let _ = writeln!(c, "DefaultRuntimeDir {d}\nMutex file:{d} default");
    let _ = writeln!(c, "LoadModule mpm_{mpm}_module {MODULES}/mod_mpm_{mpm}.so");
    let _ = writeln!(
        c,
        "LoadModule authz_core_module {MODULES}/mod_authz_core.so"
    );
    if geteuid().is_root() {
        let _ = writeln!(c, "User www-data\nGroup www-data");
    }
    let _ = writeln!(c, "DocumentRoot {d}/htdocs");
    let _ = writeln!(
        c,
        "<Directory {d}/htdocs>\n    Require all granted\n</Directory>"
    );
    // A fixed pool: no children are started or reaped while a test runs, so
    // the parent sends no internal dummy connections that would add calls.
    match opts.mpm {
        Mpm::Prefork => {
            let _ = writeln!(
                c,
                "StartServers 5\nMinSpareServers 1\nMaxSpareServers 100\nMaxRequestWorkers 100"
            );
        }
        Mpm::Event | Mpm::Worker => {
            let _ = writeln!(
                c,
                "StartServers 2\nServerLimit 16\nThreadsPerChild 25\nMinSpareThreads 1\nMaxSpareThreads 400\nMaxRequestWorkers 400"
            );
        }
    }
    let _ = writeln!(c, "KeepAlive On\nKeepAliveTimeout 5\nTimeout 30");
    if let Some(tls) = tls_port {
        let _ = writeln!(c, "Listen 127.0.0.1:{tls}");
        for ip in &opts.listen {
            let _ = writeln!(c, "Listen {}", SocketAddr::new(*ip, tls));
        }
        for m in ["socache_shmcb", "ssl", "http2"] {
            let _ = writeln!(c, "LoadModule {m}_module {MODULES}/mod_{m}.so");
        }
        let _ = writeln!(
            c,
            "SSLSessionCache shmcb:{d}/ssl_scache(512000)\n\
             <VirtualHost *:{tls}>\n    SSLEngine on\n    \
             SSLCertificateFile {d}/cert.pem\n    SSLCertificateKeyFile {d}/key.pem\n    \
             Protocols h2 http/1.1\n</VirtualHost>"
        );
    }
    c.push_str(&opts.extra_config);
    c
}
