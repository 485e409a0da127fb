//! The client of every connection, from the trace's client events (read by
//! the kernel from Apache's `conn_rec` once per connection), and a worker's
//! time over its calls.
use std::{collections::HashMap, net::SocketAddr};

use flowdar_common::Event;

/// Client events by (process, connection address), in trace order. A
/// `conn_rec` address is recycled for later connections, so one address can
/// have several clients over time.
#[derive(Debug, Default)]
pub struct ClientBook {
    by_conn: HashMap<(u32, u64), Vec<(u64, SocketAddr)>>,
}

impl ClientBook {
    /// Takes the event if it is a client event.
    pub fn add(&mut self, e: &Event) {
        if let Some((conn, addr)) = e.client() {
            self.by_conn
                .entry((e.tgid, conn))
                .or_default()
                .push((e.ts_ns, addr));
        }
    }

    /// Forgets what no call from `ts` on can ask for: the clients each
    /// connection had before its latest one older than `ts` (a long live
    /// view keeps one entry a connection address, not one a connection).
    pub fn forget_before(&mut self, ts: u64) {
        for seen in self.by_conn.values_mut() {
            let older = seen.iter().filter(|(t, _)| *t < ts).count();
            if older > 1 {
                seen.drain(..older - 1);
            }
        }
    }

    /// Connections with a known client.
    pub fn len(&self) -> usize {
        self.by_conn.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_conn.is_empty()
    }

    /// The client of connection `conn` in `pid` at `ts`: the last one read
    /// at or before it.
    pub fn client_at(&self, pid: u32, conn: u64, ts: u64) -> Option<SocketAddr> {
        let seen = self.by_conn.get(&(pid, conn))?;
        seen.iter().rev().find(|(t, _)| *t <= ts).map(|&(_, a)| a)
    }

    /// The client of connection `conn` in `pid` during [start, end]: the
    /// first one read inside that window (a recycled address's new client
    /// is read at its first call), else the last one read before it (the
    /// kernel sends a client once per connection, not per call).
    pub fn client_of(&self, pid: u32, conn: u64, start: u64, end: u64) -> Option<SocketAddr> {
        let seen = self.by_conn.get(&(pid, conn))?;
        seen.iter()
            .find(|(ts, _)| (start..=end).contains(ts))
            .or_else(|| seen.iter().rev().find(|(ts, _)| *ts < start))
            .map(|&(_, a)| a)
    }
}

/// Total length of `windows` (thread, start, end), overlaps on one thread
/// counted once: nested calls are one stretch of that worker's time.
pub fn worker_time(windows: &[(u32, u64, u64)]) -> u64 {
    let mut w = windows.to_vec();
    w.sort_unstable();
    let mut total = 0;
    let mut cur: Option<(u32, u64, u64)> = None;
    for (t, a, b) in w {
        match &mut cur {
            Some((ct, _, ce)) if *ct == t && a <= *ce => *ce = (*ce).max(b),
            _ => {
                if let Some((_, s, e)) = cur {
                    total += e - s;
                }
                cur = Some((t, a, b));
            }
        }
    }
    total + cur.map_or(0, |(_, s, e)| e - s)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use flowdar_common::EventKind;

    pub(crate) fn client_event(tgid: u32, ts: u64, conn: u64, ip: [u8; 16], port: u16) -> Event {
        Event {
            tgid,
            tid: tgid,
            ts_ns: ts,
            probe_id: 0,
            kind: EventKind::Client as u32,
            args: [
                u64::from(port) << 48 | conn,
                u64::from_ne_bytes(ip[..8].try_into().unwrap()),
                u64::from_ne_bytes(ip[8..].try_into().unwrap()),
            ],
        }
    }

    #[test]
    fn client_events_decode_ipv4_and_ipv6_and_follow_recycled_connections() {
        let v4: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 2];
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        let mut book = ClientBook::default();
        book.add(&client_event(7, 100, 0xc0, v4, 40000));
        book.add(&client_event(7, 900, 0xc0, v6, 50000));
        assert_eq!(book.len(), 2);
        let first = book.client_of(7, 0xc0, 100, 500).unwrap();
        assert_eq!(first.to_string(), "127.0.0.2:40000");
        // A later call of the first connection, with no client event of its own.
        assert_eq!(book.client_of(7, 0xc0, 300, 400), Some(first));
        assert_eq!(
            book.client_of(7, 0xc0, 850, 1000).unwrap().to_string(),
            "[::1]:50000"
        );
        assert_eq!(book.client_of(8, 0xc0, 100, 500), None, "another process");
    }

    #[test]
    fn worker_time_counts_nested_calls_once_per_thread() {
        let w = [(1, 10, 50), (1, 20, 30), (2, 20, 30), (1, 60, 70)];
        assert_eq!(worker_time(&w), 40 + 10 + 10);
    }
}
