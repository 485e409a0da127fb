//! The server and the hosts of an experiment: a throwaway Apache per
//! variant (or the user's server, by PID or command), the lab's client and
//! attacker hosts, and the checks that refuse what cannot be done before
//! anything runs.
use std::{
    net::{IpAddr, SocketAddr},
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{
    error::{ExperimentError, Result},
    Spec, Variant,
};
use crate::server::{process::is_alive, ApacheOptions, Host, Lab, ThrowawayApache};

fn refused<T>(message: String) -> Result<T> {
    Err(ExperimentError::Refused(message))
}

pub(super) enum Server {
    Throwaway(ThrowawayApache),
    Existing { pid: u32 },
    Started { child: Child },
}

impl Server {
    pub(super) fn pid(&self) -> u32 {
        match self {
            Server::Throwaway(a) => a.pid(),
            Server::Existing { pid } => *pid,
            Server::Started { child } => child.id(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Server::Started { child } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `http://IP:PORT/PATH` -> address and path.
fn parse_url(url: &str) -> Result<(SocketAddr, String)> {
    let Some(rest) = url.strip_prefix("http://") else {
        return refused(format!("`{url}`: only http:// URLs"));
    };
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let addr: SocketAddr = host.parse().map_err(|source| ExperimentError::BadUrl {
        url: url.into(),
        source,
    })?;
    Ok((addr, path))
}

/// The server for one variant. `listen`: the lab's server address, for a
/// throwaway Apache.
pub(super) fn start_server(
    spec: &Spec,
    variant: &Variant,
    listen: Option<IpAddr>,
) -> Result<Server> {
    let s = &spec.server;
    match (s.pid, &s.command) {
        (Some(pid), _) => {
            if !is_alive(pid) {
                return Err(ExperimentError::NoSuchProcess(pid));
            }
            Ok(Server::Existing { pid })
        }
        (None, Some(cmd)) => {
            let Some((prog, args)) = cmd.split_first() else {
                return refused("server.command is empty".into());
            };
            let child = Command::new(prog)
                .args(args)
                .stdin(Stdio::null())
                .spawn()
                .map_err(|source| ExperimentError::StartServer {
                    program: prog.clone(),
                    source,
                })?;
            std::thread::sleep(Duration::from_secs(2));
            Ok(Server::Started { child })
        }
        (None, None) => {
            let opts = ApacheOptions {
                mpm: s.mpm,
                extra_config: format!("{}\n{}\n", s.config, variant.config),
                listen: listen.into_iter().collect(),
                tls: s.tls,
                ..Default::default()
            };
            Ok(Server::Throwaway(ThrowawayApache::start(&opts)?))
        }
    }
}

/// Refuses what cannot be done with the spec's server before anything runs.
pub(super) fn check_spec(spec: &Spec) -> Result<Option<(SocketAddr, String)>> {
    let s = &spec.server;
    check_clients(spec)?;
    if s.pid.is_none() && s.command.is_none() {
        return Ok(None);
    }
    if s.tls {
        return refused(
            "server.tls makes the throwaway Apache listen with TLS; a server of yours (server.pid, server.command) is driven over its http:// server.url".into(),
        );
    }
    let what = s
        .pid
        .map_or("a server started from server.command".into(), |p| {
            format!("an existing server (PID {p})")
        });
    if let Some(v) = spec.variants.iter().find(|v| !v.config.trim().is_empty()) {
        return refused(format!(
            "variant `{}` changes the server's configuration, which the experiment cannot do to {what}: \
             remove the variant, or leave out server.pid/server.command to compare it on a throwaway Apache",
            v.name
        ));
    }
    let Some(url) = s.url.as_deref() else {
        return refused(format!("{what} needs server.url"));
    };
    Ok(Some(parse_url(url)?))
}

/// Each phase's client speaks what the server does: h2load over TLS, the
/// built-in client cleartext HTTP/1.1; attacks are cleartext HTTP/1.1.
fn check_clients(spec: &Spec) -> Result<()> {
    use super::spec::{ClientKind, Protocol};
    for p in &spec.phases {
        match (&p.load, spec.server.tls) {
            (Some(l), false) if l.client == ClientKind::H2load => {
                return refused(format!(
                    "phase `{}`: client = \"h2load\" needs server.tls = true (h2load speaks HTTP/2 or HTTP/1.1 over TLS here)",
                    p.name
                ));
            }
            (Some(l), true) if l.client == ClientKind::Builtin => {
                return refused(format!(
                    "phase `{}`: the built-in client speaks cleartext HTTP/1.1; with server.tls use client = \"h2load\"",
                    p.name
                ));
            }
            (Some(l), _)
                if l.client == ClientKind::Builtin && (l.streams != 1 || l.rate.is_some()) =>
            {
                return refused(format!(
                    "phase `{}`: `streams` and `rate` are h2load's; the built-in client runs one request at a time on each connection, as fast as answered",
                    p.name
                ));
            }
            (Some(l), _) if l.protocol == Protocol::Http11 && l.rate.is_some() => {
                return refused(format!(
                    "phase `{}`: `rate` works with h2 only: h2load 1.52 aborts (a libev assertion) when it reconnects under --h1 --rps, as it does after Apache's MaxKeepAliveRequests",
                    p.name
                ));
            }
            _ => {}
        }
        match &p.attack {
            Some(a) if spec.server.tls && !a.mode.needs_tls() => {
                return refused(format!(
                    "phase `{}`: attack `{}` is cleartext HTTP/1.1 (slowhttptest) and server.tls sends the phases to the TLS port; use tls-handshake or an h2-* attack",
                    p.name,
                    a.mode.name()
                ));
            }
            Some(a) if !spec.server.tls && a.mode.needs_tls() => {
                return refused(format!(
                    "phase `{}`: attack `{}` speaks TLS and HTTP/2: set `tls = true` in [server]",
                    p.name,
                    a.mode.name()
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The lab, and where client and attacker send to. For a server of the
/// user's, the lab is used when the server answers there (it listens on
/// all addresses); otherwise everything runs on this host.
pub(super) fn setup_hosts(
    spec: &Spec,
    url: &Option<(SocketAddr, String)>,
) -> Result<(Option<Lab>, Option<String>)> {
    if !spec.lab.namespaces {
        return Ok((None, None));
    }
    if let Some((addr, _)) = url {
        if !addr.ip().is_loopback() {
            return Ok((
                None,
                Some(format!(
                    "{} is not on this machine's loopback: client and attacker run on this host",
                    addr.ip()
                )),
            ));
        }
    }
    // Without network namespaces (a container without CAP_NET_ADMIN, a
    // kernel without veth) the experiment still runs, on this host, and
    // says so on the terminal and in the report.
    let lab = match Lab::create() {
        Ok(lab) => lab,
        Err(e) => {
            return Ok((
                None,
                Some(format!(
                    "no client and attacker hosts ({}): both run on this host",
                    crate::one_line(&e)
                )),
            ))
        }
    };
    if let Some((addr, _)) = url {
        let there = SocketAddr::new(lab.server.into(), addr.port());
        if !reachable(&lab.client, there) {
            return Ok((
                None,
                Some(format!(
                    "the server does not answer on {there} (it listens on {} only): client and attacker run on this host",
                    addr.ip()
                )),
            ));
        }
    }
    Ok((Some(lab), None))
}

/// Whether `host` can open a TCP connection to `addr`.
fn reachable(host: &Host, addr: SocketAddr) -> bool {
    std::thread::scope(|s| {
        s.spawn(|| {
            host.enter().is_ok()
                && std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
        })
        .join()
        .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn spec(server: &str, variants: &str) -> Spec {
        let text = format!(
            "version = 1\nprofile = []\n[server]\n{server}\n{variants}[[phase]]\nname = \"a\"\nduration = \"1s\"\n"
        );
        Spec::parse(Path::new("t.toml"), &text).unwrap()
    }

    #[test]
    fn an_existing_server_takes_no_config_variants() {
        let existing = "pid = 1\nurl = \"http://127.0.0.1:8080/x.html\"";
        let err = check_spec(&spec(
            existing,
            "[[variant]]\nname = \"none\"\n[[variant]]\nname = \"rt\"\nconfig = \"RequestReadTimeout header=1\"\n",
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "variant `rt` changes the server's configuration, which the experiment cannot do to an existing server (PID 1): \
             remove the variant, or leave out server.pid/server.command to compare it on a throwaway Apache"
        );
        let (addr, path) = check_spec(&spec(existing, "")).unwrap().unwrap();
        assert_eq!(
            (addr.to_string(), path.as_str()),
            ("127.0.0.1:8080".into(), "/x.html")
        );
        let err = check_spec(&spec("pid = 1", "")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "an existing server (PID 1) needs server.url"
        );
        assert!(check_spec(&spec("mpm = \"event\"", "")).unwrap().is_none());
    }
}
