//! A lab of hosts on this machine: the legitimate client and the attacker
//! each in a network namespace of their own, joined to the root namespace
//! (where the server stays) by a veth pair, with addresses from the
//! benchmarking range 198.18.0.0/15 (RFC 2544). Attacker and clients reach
//! the server from different addresses, as on a lab of test VMs.
//!
//! Namespaces are named after the run (`flowdar-PID-client`,
//! `flowdar-PID-attacker`) and removed on every exit: on drop; by a guardian
//! process that the kernel signals when the experiment dies without
//! unwinding (`PR_SET_PDEATHSIG`, e.g. SIGKILL or Ctrl-C); and, should both
//! fail, by the sweep that the next lab runs first (namespaces whose
//! experiment is gone).
use std::{
    fs::File,
    net::Ipv4Addr,
    os::{fd::AsFd, unix::process::CommandExt},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rustix::{
    process::{kill_process, Pid, Signal},
    thread::{move_into_link_name_space, LinkNameSpaceType},
};

use super::process::die_with_parent;

/// Where `ip netns` keeps its namespaces (bind mounts).
const NETNS_DIR: &str = "/run/netns";
const PREFIX: &str = "flowdar-";
/// 198.18.0.0/15: 2^17 addresses, split into blocks of 8 (two /30 links)
/// picked by PID, so that two experiments at once get different links.
const RANGE_BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
const BLOCKS: u32 = (1 << 17) / 8;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("`{command}` failed: {stderr} (network namespaces need root and iproute2's `ip`)")]
    Ip { command: String, stderr: String },
    #[error("cannot run `ip` (install iproute2)")]
    Spawn(#[source] std::io::Error),
    #[error("entering network namespace {name}")]
    Enter {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// One host of the lab: a network namespace with one address.
#[derive(Debug, Clone)]
pub struct Host {
    pub netns: String,
    pub addr: Ipv4Addr,
}

impl Host {
    /// Moves the calling thread into this host's network namespace: the
    /// sockets it opens from now on are the host's (setns(2) with
    /// CLONE_NEWNET applies to the calling thread only).
    pub fn enter(&self) -> Result<(), LabError> {
        let err = |source| LabError::Enter {
            name: self.netns.clone(),
            source,
        };
        let f = File::open(PathBuf::from(NETNS_DIR).join(&self.netns)).map_err(err)?;
        // The kernel refuses an fd that is not a network namespace.
        move_into_link_name_space(f.as_fd(), Some(LinkNameSpaceType::Network))
            .map_err(|e| err(e.into()))
    }

    /// `program` run on this host (`ip netns exec`), killed by the kernel
    /// if the experiment dies: a process left inside would keep the
    /// namespace, and its veth, alive after `ip netns del`.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, program]);
        die_with_parent(&mut cmd, Signal::KILL);
        cmd
    }
}

/// The lab: two hosts and the server's address in the root namespace.
pub struct Lab {
    /// The server's address (root side of the client's link; the attacker
    /// reaches it through its own link).
    pub server: Ipv4Addr,
    pub client: Host,
    pub attacker: Host,
    guardian: Option<Child>,
}

impl Lab {
    /// Removes leftovers of dead experiments, then creates this run's hosts.
    pub fn create() -> Result<Self, LabError> {
        sweep_leftovers()?;
        let pid = std::process::id();
        let base = RANGE_BASE + (pid % BLOCKS) * 8;
        let ip = |i: u32| Ipv4Addr::from(base + i);
        let client = Host {
            netns: format!("{PREFIX}{pid}-client"),
            addr: ip(2),
        };
        let attacker = Host {
            netns: format!("{PREFIX}{pid}-attacker"),
            addr: ip(6),
        };
        // The guardian first: from here on, whatever happens, it cleans up.
        let mut lab = Self {
            server: ip(1),
            guardian: Some(spawn_guardian(&[&client.netns, &attacker.netns])?),
            client,
            attacker,
        };
        lab.link(&lab.client.clone(), 'c', ip(1))?;
        lab.link(&lab.attacker.clone(), 'a', ip(5))?;
        Ok(lab)
    }

    /// The namespace, a veth pair between it and the root namespace, the
    /// addresses (/30) and a default route to the root side.
    fn link(&mut self, host: &Host, tag: char, root_side: Ipv4Addr) -> Result<(), LabError> {
        let ns = host.netns.as_str();
        let root_if = format!("fd{}{tag}", std::process::id());
        let host_if = format!("{root_if}h");
        ip(&["netns", "add", ns])?;
        ip(&[
            "link", "add", &root_if, "type", "veth", "peer", "name", &host_if, "netns", ns,
        ])?;
        ip(&["addr", "add", &format!("{root_side}/30"), "dev", &root_if])?;
        ip(&["link", "set", &root_if, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["-n", ns];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["addr", "add", &format!("{}/30", host.addr), "dev", &host_if])?;
        inside(&["link", "set", &host_if, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        inside(&["route", "add", "default", "via", &root_side.to_string()])?;
        Ok(())
    }

    /// Whether `ip` is one of this lab's addresses.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        [self.server, self.client.addr, self.attacker.addr]
            .iter()
            .any(|a| std::net::IpAddr::V4(*a) == ip)
    }

    /// Removes the hosts now (also done on drop).
    pub fn teardown(&mut self) {
        if let Some(mut g) = self.guardian.take() {
            // Our own child; it removes the namespaces.
            let _ = kill_process(Pid::from_child(&g), Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(g.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = g.kill();
            let _ = g.wait();
        }
        for ns in [&self.client.netns, &self.attacker.netns] {
            remove(ns);
        }
        // A namespace goes asynchronously, and its veth pair with it: the
        // root side could still be there for a lab created next by this
        // process (same names). Deleting it takes the pair, at once.
        for tag in ['c', 'a'] {
            let root_if = format!("fd{}{tag}", std::process::id());
            let sys = format!("/sys/class/net/{root_if}");
            if std::path::Path::new(&sys).exists() {
                let _ = ip(&["link", "del", &root_if]);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::path::Path::new(&sys).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// A shell that waits, and on SIGTERM (sent by us, or by the kernel when
/// we die) kills whatever runs in the namespaces and deletes them. In its
/// own process group: a Ctrl-C that kills the experiment does not kill it
/// first.
fn spawn_guardian(names: &[&str]) -> Result<Child, LabError> {
    let list = names.join(" ");
    let script = format!(
        "trap 'for n in {list}; do ip netns pids $n 2>/dev/null | xargs -r kill -9; ip netns del $n 2>/dev/null; done; kill $s 2>/dev/null; exit 0' TERM; \
         while :; do sleep 3600 & s=$!; wait $s; done"
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    die_with_parent(&mut cmd, Signal::TERM);
    cmd.spawn().map_err(LabError::Spawn)
}

/// Runs `ip ARGS`; a failure carries its stderr.
fn ip(args: &[&str]) -> Result<(), LabError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(LabError::Spawn)?;
    if !out.status.success() {
        return Err(LabError::Ip {
            command: format!("ip {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Kills the processes left in namespace `ns`, then deletes it (its veth
/// pair goes with it).
fn remove(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| {
                p.parse::<i32>()
                    .ok()
                    .filter(|&p| p > 0)
                    .and_then(Pid::from_raw)
            })
        {
            // A process inside our lab namespace.
            let _ = kill_process(pid, Signal::KILL);
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
}

/// The lab namespaces on this machine: (name, PID of the experiment).
pub fn lab_namespaces() -> Vec<(String, u32)> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let name = e.ok()?.file_name().into_string().ok()?;
        let pid = name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()?;
        Some((name, pid))
    })
    .collect()
}

/// Removes the namespaces of experiments that are gone (a PID that is dead,
/// or reused by a process that is not flowdar).
pub fn sweep_leftovers() -> Result<Vec<String>, LabError> {
    let mut removed = Vec::new();
    for (name, pid) in lab_namespaces() {
        let ours = pid == std::process::id()
            || std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "flowdar")
                && super::process::is_alive(pid);
        if !ours {
            remove(&name);
            removed.push(name);
        }
    }
    Ok(removed)
}
