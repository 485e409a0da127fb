//! Who a connection is for: the client address of an Apache connection,
//! read from its `conn_rec` at the entry of a probe that names one, and sent
//! as an [`EventKind::Client`] event once per connection (again only when
//! it changes: `conn_rec` addresses are recycled). Two small reads of
//! connection metadata; never a byte of what the client sent.
use aya_ebpf::{helpers::bpf_probe_read_user, macros::map, maps::LruHashMap};
use flowdar_common::{
    EventKind, AF_INET, AF_INET6, CONN_CLIENT_ADDR_OFF, MAX_CLIENT_CONNS, SOCKADDR_SA_OFF,
};

use crate::emit::emit;

/// Key `[tgid, conn]`, value the client event's arguments last sent for it.
#[map]
static CLIENTS: LruHashMap<[u64; 2], [u64; 3]> = LruHashMap::with_max_entries(MAX_CLIENT_CONNS, 0);

/// Connection addresses are user pointers: they fit in 48 bits, which
/// leaves the top 16 of `args[0]` for the port.
const CONN_MASK: u64 = (1 << 48) - 1;

#[inline(always)]
pub fn send_if_new(pid_tgid: u64, probe_id: u32, conn: u64) {
    if conn == 0 || conn & !CONN_MASK != 0 {
        return;
    }
    let Some(args) = read_client(conn) else {
        return;
    };
    let key = [pid_tgid >> 32, conn];
    // SAFETY: read-only copy of the value.
    if unsafe { CLIENTS.get(key) }.is_some_and(|seen| *seen == args) {
        return;
    }
    if emit(pid_tgid, probe_id, EventKind::Client, args) {
        let _ = CLIENTS.insert(key, args, 0);
    }
}

/// `port << 48 | conn` and the address as 16 bytes (IPv4 mapped into
/// IPv6), or None when the connection has no IP client (a Unix socket) or
/// the reads fault.
#[inline(always)]
fn read_client(conn: u64) -> Option<[u64; 3]> {
    // SAFETY: user pointers; the helper faults safely.
    let sockaddr =
        unsafe { bpf_probe_read_user((conn + CONN_CLIENT_ADDR_OFF) as *const u64) }.ok()?;
    if sockaddr == 0 {
        return None;
    }
    // The first 24 bytes of a sockaddr_in6 (family, port, flowinfo, address).
    // SAFETY: as above.
    let sa =
        unsafe { bpf_probe_read_user((sockaddr + SOCKADDR_SA_OFF) as *const [u64; 3]) }.ok()?;
    let family = (sa[0] & 0xffff) as u16;
    // The port is stored big-endian in bytes 2 and 3.
    let port = ((sa[0] >> 16) & 0xff) << 8 | ((sa[0] >> 24) & 0xff);
    let head = port << 48 | conn;
    match family {
        // ::ffff:a.b.c.d: bytes 10 and 11 are 0xff, then the IPv4 address.
        AF_INET => Some([head, 0, 0xffff_0000 | (sa[0] >> 32) << 32]),
        AF_INET6 => Some([head, sa[1], sa[2]]),
        _ => None,
    }
}
