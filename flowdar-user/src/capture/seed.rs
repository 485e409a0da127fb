//! Lean capture at attach: the connections the server already has, and the
//! workers already waiting on them. The syscall programs only know the
//! sockets accepted while they run; a worker a Slowloris client has held
//! since before the recording would stay invisible until its connection
//! ends. From /proc (nothing of the target is stopped or probed): each
//! established socket of the server's processes whose local port one of
//! them listens on becomes a connection the kernel knows (`CONN_FDS`),
//! with its client event; each thread blocked in a watched `read` or
//! `poll` on one of them gets an entry event, marked
//! [`HELD_AT_ATTACH`], and its exit will be recorded (`IN_SYSCALL`).
use std::collections::{HashMap, HashSet};

use aya::{
    maps::{HashMap as BpfHashMap, MapData},
    Ebpf,
};
use flowdar_common::{
    Event, EventKind, InSyscall, HELD_AT_ATTACH, SEEDED_CONN_BIT, SOCKET_CONN_BIT,
};

use super::{
    blocked::{socket_inode, tcp_sockets, waiting_fd},
    proctree, CaptureError,
};
use crate::probes::ResolvedProbe;

/// What seeding found.
#[derive(Debug, Default)]
pub struct Seeded {
    /// Client events for the connections, then entries for the held calls,
    /// all stamped `ts_ns`.
    pub events: Vec<Event>,
    pub connections: usize,
    pub held: usize,
}

/// Seeds `root`'s tree; `probes` is the whole probe table (its system
/// calls say which probe ids to use). Nothing when it watches no accept.
pub(super) fn seed(
    ebpf: &mut Ebpf,
    root: u32,
    probes: &[ResolvedProbe],
    ts_ns: u64,
) -> Result<Seeded, CaptureError> {
    let syscall = |name: &str| probes.iter().find(|p| p.is_syscall() && p.function == name);
    let Some(accept) = syscall("accept4").or_else(|| syscall("accept")) else {
        return Ok(Seeded::default());
    };
    let by_nr: HashMap<u64, u32> = probes
        .iter()
        .filter(|p| p.is_syscall())
        .map(|p| (p.address, p.id))
        .collect();
    let mut out = Seeded::default();
    let mut next = 0u64;
    for pid in proctree::descendants(root) {
        {
            let mut accepting: BpfHashMap<&mut MapData, u32, u64> = BpfHashMap::try_from(
                ebpf.map_mut("ACCEPTING")
                    .ok_or(CaptureError::MissingMap("ACCEPTING"))?,
            )
            .map_err(CaptureError::map)?;
            for (tid, addr) in accepting_threads(pid) {
                let _ = accepting.insert(tid, addr, BPF_NOEXIST);
            }
        }
        let conns = connections_of(pid);
        if conns.is_empty() {
            continue;
        }
        let mut by_fd = HashMap::new();
        {
            let mut map: BpfHashMap<&mut MapData, u64, u64> = BpfHashMap::try_from(
                ebpf.map_mut("CONN_FDS")
                    .ok_or(CaptureError::MissingMap("CONN_FDS"))?,
            )
            .map_err(CaptureError::map)?;
            for (fd, inode, peer) in conns {
                next += 1;
                let conn = SOCKET_CONN_BIT | SEEDED_CONN_BIT | next;
                let key = u64::from(pid) << 32 | fd as u64;
                // The programs run already: a socket accepted since they
                // went in is theirs (insert only where there is nothing),
                // and one closed and reused since /proc was read is not
                // this connection (the fd's inode says).
                if map.insert(key, conn, BPF_NOEXIST).is_err() {
                    continue;
                }
                if socket_inode(pid, fd) != Some(inode) {
                    let _ = map.remove(&key);
                    continue;
                }
                by_fd.insert(fd, conn);
                out.events.push(Event {
                    tgid: pid,
                    tid: pid,
                    ts_ns,
                    probe_id: accept.id,
                    kind: EventKind::Client as u32,
                    args: Event::client_args(conn, peer),
                });
                out.connections += 1;
            }
        }
        let mut held: BpfHashMap<&mut MapData, u32, InSyscall> = BpfHashMap::try_from(
            ebpf.map_mut("IN_SYSCALL")
                .ok_or(CaptureError::MissingMap("IN_SYSCALL"))?,
        )
        .map_err(CaptureError::map)?;
        for (tid, nr, fd) in waiting_threads(pid) {
            let (Some(&conn), Some(&probe_id)) = (by_fd.get(&fd), by_nr.get(&nr)) else {
                continue;
            };
            // A thread the entry program has seen since attach has an
            // entry (its value stays between calls, NOT_IN_SYSCALL): its
            // call now was sent, or began after attach. Only an insert
            // that fails where the key exists is safe against the program
            // writing it meanwhile (user space has no compare-and-swap).
            // Its entry is sent here (`conn` 0): the exit goes alone.
            let call = InSyscall {
                probe_id,
                fd: fd as u32,
                conn: 0,
                ts_ns,
            };
            if held.insert(tid, call, BPF_NOEXIST).is_err() {
                continue;
            }
            out.events.push(Event {
                tgid: pid,
                tid,
                ts_ns,
                probe_id,
                kind: EventKind::Entry as u32,
                args: [fd as u64, conn, HELD_AT_ATTACH],
            });
            out.held += 1;
        }
    }
    Ok(out)
}

/// Uprobe traces (no system call watched): the workers blocked reading a
/// client's socket at attach, from /proc, are taken to be inside
/// `ap_read_request` (a worker reading a request body in a handler looks
/// the same from /proc, and is labelled so too),
/// whose entry came before the probes: each gets that entry, marked held
/// at attach ([`flowdar_common::held_uprobe_at_attach`]), on a connection
/// named by its socket (a client event each), so the trace shows them in
/// flight with their client from the first instant. Their return is never
/// seen; readers end the call at the thread's next event. Nothing when
/// `ap_read_request` is not probed with its return.
pub(super) fn seed_readers(root: u32, probes: &[ResolvedProbe], ts_ns: u64) -> Seeded {
    // The marker is in the first argument: the probe must keep it.
    let Some(read) = probes.iter().find(|p| {
        !p.is_syscall()
            && p.function == "ap_read_request"
            && !p.capture.entry_only
            && p.capture.args >= 1
    }) else {
        return Seeded::default();
    };
    let mut out = Seeded::default();
    let mut conns: HashMap<(u32, std::net::SocketAddr), u64> = HashMap::new();
    // Only clients' connections (to a port the server listens on): a
    // worker waiting on a backend (mod_proxy) is not reading a request.
    let mut clients: HashMap<u32, Vec<std::net::SocketAddr>> = HashMap::new();
    for b in super::blocked::blocked_on_sockets(root)
        .into_iter()
        .filter(|b| b.reading)
    {
        let peers = clients
            .entry(b.pid)
            .or_insert_with(|| connections_of(b.pid).into_iter().map(|c| c.2).collect());
        if !peers.contains(&b.peer) {
            continue;
        }
        let next = conns.len() as u64 + 1;
        let conn = *conns.entry((b.pid, b.peer)).or_insert_with(|| {
            let conn = SOCKET_CONN_BIT | SEEDED_CONN_BIT | next;
            out.events.push(Event {
                tgid: b.pid,
                tid: b.pid,
                ts_ns,
                probe_id: read.id,
                kind: EventKind::Client as u32,
                args: Event::client_args(conn, b.peer),
            });
            out.connections += 1;
            conn
        });
        out.events.push(Event {
            tgid: b.pid,
            tid: b.tid,
            ts_ns,
            probe_id: read.id,
            kind: EventKind::Entry as u32,
            args: [conn, HELD_AT_ATTACH, HELD_AT_ATTACH],
        });
        out.held += 1;
    }
    out
}

/// (fd, inode, client) of `pid`'s sockets that clients opened to it:
/// established, on a port one of its sockets listens on (not the
/// connections it opened itself, to a backend).
fn connections_of(pid: u32) -> Vec<(i32, u64, std::net::SocketAddr)> {
    let sockets = tcp_sockets(pid);
    let fds: Vec<(i32, u64)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            Some((fd, socket_inode(pid, fd)?))
        })
        .collect();
    let mine: HashSet<u64> = fds.iter().map(|(_, i)| *i).collect();
    let listening: HashSet<u16> = sockets
        .iter()
        .filter(|s| !s.established)
        .map(|s| s.local_port)
        .collect();
    fds.into_iter()
        .filter_map(|(fd, inode)| {
            let s = sockets.iter().find(|s| s.inode == inode)?;
            (s.established && listening.contains(&s.local_port) && mine.contains(&inode))
                .then_some((fd, inode, s.peer))
        })
        .collect()
}

/// `BPF_NOEXIST`: an update that fails where the key exists.
const BPF_NOEXIST: u64 = 1;
/// x86-64's `accept` and `accept4`, as /proc/TID/syscall numbers them.
const SYS_ACCEPT: [u64; 2] = [43, 288];

/// Threads of `pid` inside `accept`/`accept4` now: the entry program never
/// saw their calls, so it would not know the connection they return.
/// (tid, the peer-address buffer they passed). x86-64 numbers.
fn accepting_threads(pid: u32) -> Vec<(u32, u64)> {
    if !cfg!(target_arch = "x86_64") {
        return Vec::new();
    }
    tasks(pid)
        .filter_map(|(tid, line)| {
            let mut f = line.split_whitespace();
            let nr: u64 = f.next()?.parse().ok()?;
            let _listener = f.next()?;
            let addr = u64::from_str_radix(f.next()?.trim_start_matches("0x"), 16).ok()?;
            SYS_ACCEPT.contains(&nr).then_some((tid, addr))
        })
        .collect()
}

/// Whether a thread of `pid` is inside `accept`/`accept4` now.
pub(super) fn accepting_now(pid: u32) -> bool {
    !accepting_threads(pid).is_empty()
}

/// (tid, /proc/PID/task/TID/syscall) of `pid`'s threads.
fn tasks(pid: u32) -> impl Iterator<Item = (u32, String)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| {
            let tid: u32 = task.file_name().to_str()?.parse().ok()?;
            let line = std::fs::read_to_string(task.path().join("syscall")).ok()?;
            Some((tid, line))
        })
}

/// (tid, syscall number, fd) of `pid`'s threads blocked reading a socket
/// (x86-64 numbers, as `blocked::waiting_fd` reads them).
fn waiting_threads(pid: u32) -> Vec<(u32, u64, i32)> {
    if !cfg!(target_arch = "x86_64") {
        return Vec::new();
    }
    tasks(pid)
        .filter_map(|(tid, line)| {
            let nr: u64 = line.split_whitespace().next()?.parse().ok()?;
            let (fd, reading) = waiting_fd(pid, &line)?;
            reading.then_some((tid, nr, fd))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_args_read_back_as_written() {
        for addr in ["198.18.0.6:50000", "[2001:db8::1]:443", "[::1]:8080"] {
            let addr: std::net::SocketAddr = addr.parse().unwrap();
            let conn = SOCKET_CONN_BIT | SEEDED_CONN_BIT | 7;
            let e = Event {
                kind: EventKind::Client as u32,
                args: Event::client_args(conn, addr),
                ..Default::default()
            };
            assert_eq!(e.client(), Some((conn, addr)));
        }
    }
}
