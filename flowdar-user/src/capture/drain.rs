//! The ring-buffer drain: a dedicated thread that empties the ring on a short
//! timer (the kernel programs never wake it: see [`poll_interval`]), batches
//! events, and hands batches to the writer without ever waiting on it. When
//! the writer falls behind past the memory bound, whole batches are dropped
//! and counted per probe.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{SyncSender, TrySendError},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use flowdar_common::{Event, EventKind};

/// Events per batch handed to the writer (one trace chunk each: see
/// `CHUNK_EVENTS`); a partial batch still goes out every second.
pub const BATCH_EVENTS: usize = crate::store::CHUNK_EVENTS;
/// The longest the drain sleeps between looks at the ring buffer.
const POLL_MS: u64 = 10;
/// Events a second the ring must absorb between two looks without the
/// drain's help. A probed call whose first instruction uprobes emulate
/// costs ~1.1 µs of a CPU on the development VM (BENCHMARKS.md, "the
/// estimated overhead"): ~1.8 M events/s from each CPU doing nothing else,
/// so this covers five such CPUs; past that, see [`busy_records`].
const RING_RATE: u64 = 10_000_000;

/// Bytes a record takes in the ring: the event and the ring's header.
pub(super) const RECORD_BYTES: u64 = (flowdar_common::EVENT_SIZE + 8) as u64;

/// How long the drain sleeps between looks at a ring of `ring_bytes`: at
/// most [`POLL_MS`], and short enough that [`RING_RATE`] events a second
/// fill at most half the ring meanwhile. The kernel programs submit without
/// waking the drain, because asking the ring how full it is costs every
/// event a read of the consumer's cache line; a full ring's losses are
/// still counted per probe.
pub fn poll_interval(ring_bytes: u32) -> Duration {
    let half_ring_ns = u64::from(ring_bytes) / 2 / RECORD_BYTES * 1_000_000_000 / RING_RATE;
    Duration::from_nanos(half_ring_ns.clamp(500_000, POLL_MS * 1_000_000))
}

/// Records read in one pass past which the drain looks again at once
/// instead of sleeping: an eighth of the ring. On a machine whose CPUs
/// fill the ring faster than [`RING_RATE`], the drain then keeps reading
/// as long as the load lasts, as the kernel's wakeups made it do before.
pub fn busy_records(ring_bytes: u32) -> u64 {
    (u64::from(ring_bytes) / RECORD_BYTES / 8).max(1)
}

/// A partial batch is handed over after this long, so a killed tracer loses
/// at most this much of a quiet trace (or one batch of a busy one). Longer
/// than it was (250 ms) because bigger chunks compress better
/// (BENCHMARKS.md, "What cost what").
pub const FLUSH_AFTER: Duration = Duration::from_secs(1);
/// The same for a live view (`flowdar top`): it shows what was written, so
/// batches go out often enough for a 1 s refresh to be current.
pub const LIVE_FLUSH_AFTER: Duration = Duration::from_millis(100);

/// What the drain saw, per probe id.
#[derive(Debug, Clone, Default)]
pub struct DrainCounts {
    pub entries: Vec<u64>,
    pub exits: Vec<u64>,
    /// Events dropped because the writer was behind (memory bound hit).
    pub user_drops: Vec<u64>,
    /// Records that did not decode (wrong size or kind); should stay 0.
    pub malformed: u64,
    /// Events whose probe id is outside the probe table; should stay 0.
    pub unknown_probe: u64,
    /// Client events (one per connection seen).
    pub clients: u64,
}

impl DrainCounts {
    fn new(nprobes: usize) -> Self {
        Self {
            entries: vec![0; nprobes],
            exits: vec![0; nprobes],
            user_drops: vec![0; nprobes],
            ..Default::default()
        }
    }

    pub fn events(&self) -> u64 {
        self.entries.iter().chain(&self.exits).sum::<u64>() + self.clients
    }
}

/// Starts the drain. It runs until `stop` is set, then empties the ring one
/// last time (call it after detaching the probes) and returns its counts.
pub fn spawn(
    mut ring: RingBuf<MapData>,
    tx: SyncSender<Vec<Event>>,
    stop: Arc<AtomicBool>,
    nprobes: usize,
    flush_after: Duration,
    ring_bytes: u32,
) -> std::io::Result<JoinHandle<DrainCounts>> {
    let (poll_every, busy_after) = (poll_interval(ring_bytes), busy_records(ring_bytes));
    std::thread::Builder::new()
        .name("flowdar-drain".into())
        .spawn(move || {
            let mut counts = DrainCounts::new(nprobes);
            let mut batch = Vec::with_capacity(BATCH_EVENTS);
            let mut last_flush = Instant::now();
            let mut busy = false;
            loop {
                let stopping = stop.load(Ordering::Acquire);
                // A plain sleep: the kernel programs never wake the drain
                // (see `poll_interval`), unless the last pass found the
                // ring busy.
                if !busy {
                    std::thread::sleep(poll_every);
                }
                let mut read = 0u64;
                while let Some(item) = ring.next() {
                    read += 1;
                    match Event::from_bytes(&item) {
                        Some(ev) => {
                            let id = ev.probe_id as usize;
                            if id >= nprobes {
                                counts.unknown_probe += 1;
                                continue;
                            }
                            if let Some(call) = ev.expand_call() {
                                counts.entries[id] += 1;
                                counts.exits[id] += 1;
                                batch.extend(call);
                            } else {
                                if ev.kind == EventKind::Entry as u32 {
                                    counts.entries[id] += 1;
                                } else if ev.kind == EventKind::Client as u32 {
                                    counts.clients += 1;
                                } else {
                                    counts.exits[id] += 1;
                                }
                                batch.push(ev);
                            }
                            // A batch is one trace chunk: never past
                            // BATCH_EVENTS, and a whole call adds two.
                            if batch.len() + 1 >= BATCH_EVENTS {
                                hand_over(&tx, &mut batch, &mut counts);
                                last_flush = Instant::now();
                            }
                        }
                        None => counts.malformed += 1,
                    }
                }
                busy = read >= busy_after;
                if !batch.is_empty() && (stopping || last_flush.elapsed() >= flush_after) {
                    hand_over(&tx, &mut batch, &mut counts);
                    last_flush = Instant::now();
                }
                if stopping {
                    return counts;
                }
            }
        })
}

fn hand_over(tx: &SyncSender<Vec<Event>>, batch: &mut Vec<Event>, counts: &mut DrainCounts) {
    let full = std::mem::replace(batch, Vec::with_capacity(BATCH_EVENTS));
    match tx.try_send(full) {
        Ok(()) => {}
        Err(TrySendError::Full(lost)) | Err(TrySendError::Disconnected(lost)) => {
            for ev in &lost {
                counts.user_drops[ev.probe_id as usize] += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(probe_id: u32) -> Event {
        Event {
            tgid: 1,
            tid: 1,
            ts_ns: 1,
            probe_id,
            kind: EventKind::Entry as u32,
            args: [0; 3],
        }
    }

    #[test]
    fn the_drain_looks_before_half_the_ring_could_fill() {
        // The default 16 MiB ring: the 10 ms cap.
        assert_eq!(poll_interval(16 << 20), Duration::from_millis(10));
        // 1 MiB holds 18724 records of 56 bytes; half of them at 10 M
        // events/s take 936.2 us.
        assert_eq!(poll_interval(1 << 20), Duration::from_nanos(936_200));
        // Never a busy loop.
        assert_eq!(poll_interval(4096), Duration::from_micros(500));
        // An eighth of the default ring: 299593 records / 8.
        assert_eq!(busy_records(16 << 20), 37449);
    }

    #[test]
    fn a_whole_call_becomes_its_entry_and_exit() {
        let call = Event {
            tgid: 7,
            tid: 9,
            ts_ns: 10_000,
            probe_id: 2,
            kind: EventKind::Call as u32,
            args: [12 | 1_500 << 32, 1 << 47 | 5, (-11i64) as u64],
        };
        let [entry, exit] = call.expand_call().unwrap();
        assert_eq!(
            (entry.kind, entry.ts_ns, entry.args),
            (EventKind::Entry as u32, 8_500, [12, 1 << 47 | 5, 0])
        );
        assert_eq!(
            (exit.kind, exit.ts_ns, exit.args),
            (EventKind::Exit as u32, 10_000, [(-11i64) as u64, 0, 0])
        );
        assert_eq!((entry.tgid, entry.tid, exit.probe_id), (7, 9, 2));
        assert!(ev(0).expand_call().is_none(), "an entry stays as it is");
    }

    #[test]
    fn a_full_pipeline_drops_whole_batches_and_counts_them_per_probe() {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let mut counts = DrainCounts::new(3);
        let mut batch = vec![ev(0), ev(2), ev(2)];
        hand_over(&tx, &mut batch, &mut counts);
        assert!(batch.is_empty());
        assert_eq!(counts.user_drops, [0, 0, 0], "the first batch fits");
        let mut batch = vec![ev(1), ev(2)];
        hand_over(&tx, &mut batch, &mut counts);
        assert_eq!(
            counts.user_drops,
            [0, 1, 1],
            "the writer is behind: counted, not blocked on"
        );
        assert_eq!(rx.recv().unwrap().len(), 3);
        drop(rx);
        let mut batch = vec![ev(0)];
        hand_over(&tx, &mut batch, &mut counts);
        assert_eq!(
            counts.user_drops,
            [1, 1, 1],
            "a dead writer loses events visibly too"
        );
    }
}
