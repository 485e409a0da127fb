//! A throwaway PHP-FPM pool (Debian's `php-fpm8.2`): its config, socket and
//! logs in a temp dir, in the foreground as our child, stopped on drop. An
//! Apache started with [`PhpFpm::apache_config`] hands `*.php` to it
//! through mod_proxy_fcgi, as most PHP sites behind Apache are set up.
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rustix::process::{kill_process, Pid, Signal};

use super::ServerError;

const BINARY: &str = "/usr/sbin/php-fpm8.2";
const MODULES: &str = "/usr/lib/apache2/modules";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

pub struct PhpFpm {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl PhpFpm {
    /// Starts a static pool of `workers` PHP processes (running as
    /// www-data when we are root) and waits for its socket.
    pub fn start(workers: u32) -> Result<Self, ServerError> {
        if !Path::new(BINARY).exists() {
            return Err(ServerError::NoPhpFpm(BINARY.into()));
        }
        let dir = tempfile::Builder::new().prefix("flowdar-php-").tempdir()?;
        // Apache's children (www-data) connect to the socket in it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let d = dir.path().display();
        let user = if rustix::process::geteuid().is_root() {
            "user = www-data\ngroup = www-data\nlisten.owner = www-data\nlisten.group = www-data\n"
        } else {
            ""
        };
        std::fs::write(
            dir.path().join("php-fpm.conf"),
            format!(
                "[global]\npid = {d}/php-fpm.pid\nerror_log = {d}/php-fpm.log\ndaemonize = no\n\n\
                 [flowdar]\n{user}listen = {d}/php.sock\nlisten.mode = 0660\n\
                 pm = static\npm.max_children = {workers}\n"
            ),
        )?;
        let mut cmd = Command::new(BINARY);
        cmd.args(["-F", "-y"])
            .arg(dir.path().join("php-fpm.conf"))
            .arg("-p")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        super::process::die_with_parent(&mut cmd, Signal::TERM);
        let mut pool = Self {
            child: Some(cmd.spawn()?),
            dir,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while !pool.socket().exists() {
            let exited = pool
                .child
                .as_mut()
                .map(|c| matches!(c.try_wait(), Ok(Some(_))));
            if Instant::now() > deadline || exited == Some(true) {
                let log = std::fs::read_to_string(pool.dir.path().join("php-fpm.log"))
                    .unwrap_or_default();
                pool.stop();
                return Err(ServerError::Startup {
                    secs: STARTUP_TIMEOUT.as_secs(),
                    port: 0,
                    log: format!("php-fpm: {}", log.lines().last().unwrap_or("no log output")),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(pool)
    }

    /// The pool's FastCGI socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("php.sock")
    }

    /// Lines for [`super::ApacheOptions::extra_config`]: mod_proxy and
    /// mod_proxy_fcgi loaded, `*.php` handed to this pool.
    pub fn apache_config(&self) -> String {
        format!(
            "LoadModule proxy_module {MODULES}/mod_proxy.so\n\
             LoadModule proxy_fcgi_module {MODULES}/mod_proxy_fcgi.so\n\
             <FilesMatch \"\\.php$\">\n    SetHandler \"proxy:unix:{}|fcgi://localhost\"\n</FilesMatch>\n",
            self.socket().display()
        )
    }

    /// SIGQUIT (a graceful stop), then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill_process(Pid::from_child(&child), Signal::QUIT);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for PhpFpm {
    fn drop(&mut self) {
        self.stop();
    }
}
