//! Workers already blocked on a client's socket when the probes go in. A
//! call in progress at attach time never reaches its return probe (the
//! return address is swapped at entry), so a worker a Slowloris client
//! holds in `ap_read_request` from before attach sends nothing until its
//! connection ends. The kernel's view through /proc still shows it: the
//! thread sits in `read`, `recvfrom` or `poll` on a TCP socket whose peer
//! /proc/PID/net/tcp names. Nothing of the target is stopped or probed.
use std::{
    io::{Read, Seek, SeekFrom},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
};

use super::proctree;

/// A thread blocked on a connected TCP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedThread {
    pub pid: u32,
    pub tid: u32,
    pub peer: SocketAddr,
    /// Waiting to read (a read, or a poll for input); else to write.
    pub reading: bool,
}

/// x86-64 system call numbers a worker blocks in on a socket.
const SYS_READ: u64 = 0;
const SYS_POLL: u64 = 7;
const SYS_RECVFROM: u64 = 45;
const SYS_PPOLL: u64 = 271;
const POLLIN: u16 = 1;

/// The threads of `root`'s tree blocked on a connected TCP socket now
/// (x86-64: the system call numbers are that architecture's).
pub fn blocked_on_sockets(root: u32) -> Vec<BlockedThread> {
    if !cfg!(target_arch = "x86_64") {
        return Vec::new();
    }
    let mut out = Vec::new();
    for pid in proctree::descendants(root) {
        let sockets = tcp_peers(pid);
        if sockets.is_empty() {
            continue;
        }
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            let Ok(syscall) = std::fs::read_to_string(task.path().join("syscall")) else {
                continue;
            };
            let Some((fd, reading)) = waiting_fd(pid, &syscall) else {
                continue;
            };
            let Some(inode) = socket_inode(pid, fd) else {
                continue;
            };
            if let Some(peer) = sockets.iter().find(|(i, _)| *i == inode).map(|(_, p)| *p) {
                out.push(BlockedThread {
                    pid,
                    tid,
                    peer,
                    reading,
                });
            }
        }
    }
    out
}

/// The descriptor a thread waits on, from its /proc/PID/task/TID/syscall
/// line ("nr arg0 arg1 ..." in hex), and whether it waits to read.
pub(super) fn waiting_fd(pid: u32, line: &str) -> Option<(i32, bool)> {
    let mut f = line.split_whitespace();
    let nr: u64 = f.next()?.parse().ok()?;
    let arg0 = u64::from_str_radix(f.next()?.trim_start_matches("0x"), 16).ok()?;
    match nr {
        SYS_READ | SYS_RECVFROM => Some((arg0 as i32, true)),
        // The first pollfd of the array: Apache polls one socket.
        SYS_POLL | SYS_PPOLL => {
            let mut buf = [0u8; 8];
            let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
            mem.seek(SeekFrom::Start(arg0)).ok()?;
            mem.read_exact(&mut buf).ok()?;
            let fd = i32::from_ne_bytes(buf[..4].try_into().ok()?);
            let events = u16::from_ne_bytes(buf[4..6].try_into().ok()?);
            Some((fd, events & POLLIN != 0))
        }
        _ => None,
    }
}

pub(super) fn socket_inode(pid: u32, fd: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// (inode, peer) of the established TCP sockets in `pid`'s network
/// namespace.
fn tcp_peers(pid: u32) -> Vec<(u64, SocketAddr)> {
    tcp_sockets(pid)
        .into_iter()
        .filter(|s| s.established)
        .map(|s| (s.inode, s.peer))
        .collect()
}

/// One TCP socket of /proc/PID/net/tcp{,6}.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TcpSocket {
    pub inode: u64,
    pub local_port: u16,
    pub peer: SocketAddr,
    /// State 01; else listening (0A), the only other state kept.
    pub established: bool,
}

/// The established and listening TCP sockets in `pid`'s network namespace.
pub(super) fn tcp_sockets(pid: u32) -> Vec<TcpSocket> {
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(parse_tcp_socket)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One line of /proc/net/tcp{,6}, if established (01) or listening (0A).
fn parse_tcp_socket(line: &str) -> Option<TcpSocket> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 10 || (f[3] != "01" && f[3] != "0A") {
        return None;
    }
    let (_, local_port) = f[1].split_once(':')?;
    let (ip, port) = f[2].split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.swap_bytes()).into(),
        32 => {
            // Four 32-bit words, each in host (little-endian) order.
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let w = u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok()?;
                chunk.copy_from_slice(&w.swap_bytes().to_be_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            v6.to_ipv4_mapped().map_or(v6.into(), Into::into)
        }
        _ => return None,
    };
    Some(TcpSocket {
        inode: f[9].parse().ok()?,
        local_port: u16::from_str_radix(local_port, 16).ok()?,
        peer: SocketAddr::new(ip, port),
        established: f[3] == "01",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The peer and inode of an established socket (state 01).
    fn parse_tcp_line(line: &str) -> Option<(u64, SocketAddr)> {
        parse_tcp_socket(line)
            .filter(|s| s.established)
            .map(|s| (s.inode, s.peer))
    }

    #[test]
    fn tcp_lines_give_established_peers() {
        let v4 = "   3: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000    33        0 912345 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(
            parse_tcp_line(v4),
            Some((912345, "127.0.0.1:54321".parse().unwrap()))
        );
        let listen = v4.replace(" 01 ", " 0A ");
        assert_eq!(parse_tcp_line(&listen), None);
        let l = parse_tcp_socket(&listen).unwrap();
        assert_eq!(
            (l.established, l.local_port, l.inode),
            (false, 8080, 912345)
        );
        let v6 = "   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:C350 01 00000000:00000000 00:00000000 00000000    33        0 777 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(
            parse_tcp_line(v6),
            Some((777, "[::1]:50000".parse().unwrap()))
        );
        let mapped = "   0: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF0000060012C6:C350 01 00000000:00000000 00:00000000 00000000    33        0 778 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(
            parse_tcp_line(mapped),
            Some((778, "198.18.0.6:50000".parse().unwrap()))
        );
    }

    #[test]
    fn syscall_lines_name_the_fd_read() {
        assert_eq!(
            waiting_fd(1, "0 0xc 0x7ffd 0x2000 0x0 0x0 0x0 0x7ffd 0x7f00"),
            Some((12, true))
        );
        assert_eq!(
            waiting_fd(1, "202 0x7f00 0x80 0x0 0x0 0x0 0x0 0x7ffd 0x7f00"),
            None
        );
        assert_eq!(waiting_fd(1, "running"), None);
    }
}
