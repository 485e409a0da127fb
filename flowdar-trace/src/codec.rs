//! The event chunk codec: a columnar, delta-and-varint encoding that zstd
//! then compresses well.
//!
//! ```text
//! varint n_events, varint n_threads, u64le base_ts
//! n_threads x (varint tgid, varint tid)            thread table
//! 7 columns, each varint byte_len + bytes:
//!   thread   varint thread index
//!   code     varint 0 when code (probe_id << 2 | kind - 1) is the one that
//!            followed the thread's previous code last time, else code + 1:
//!            threads loop through the same call sequences
//!   time_lo  u8: low byte of the time delta (noise; kept apart so that it
//!            does not dilute the predictable high part for zstd)
//!   time_hi  varint: the rest of zigzag(ts - previous ts on the same thread)
//!   arg0..2  zigzag varint: arg - previous arg of the same slot for the
//!            same (thread, code): pointers and sizes repeat per thread
//! ```
//! Measured on a recorded Apache request+io trace (BENCHMARKS.md): the
//! split time column and the code prediction took it from 4.02 to 3.85
//! bytes/event at 16k events a chunk; 64k-event chunks to 3.48.
//! Varints are LEB128, written by hand: a crate's `io::Write` plumbing would
//! cost more than the encoding itself in this hot loop.
use flowdar_common::{Event, EventKind, MAX_ARGS};
use rustc_hash::FxHashMap;

const COLUMNS: usize = 4 + MAX_ARGS;

/// Reusable encoder state (buffers are kept between chunks).
#[derive(Default)]
pub struct ChunkEncoder {
    threads: FxHashMap<u32, u32>,
    thread_table: Vec<(u32, u32)>,
    last_ts: Vec<u64>,
    last_args: FxHashMap<(u32, u32), [u64; MAX_ARGS]>,
    last_code: Vec<u32>,
    next_code: FxHashMap<(u32, u32), u32>,
    cols: [Vec<u8>; COLUMNS],
}

impl ChunkEncoder {
    /// Encodes `events` into `out` (cleared first).
    pub fn encode(&mut self, events: &[Event], out: &mut Vec<u8>) {
        self.threads.clear();
        self.thread_table.clear();
        self.last_ts.clear();
        self.last_args.clear();
        self.last_code.clear();
        self.next_code.clear();
        for c in &mut self.cols {
            c.clear();
        }
        let base_ts = events.first().map_or(0, |e| e.ts_ns);
        let [thread_col, code_col, time_lo, time_col, arg_cols @ ..] = &mut self.cols;
        for ev in events {
            let next = self.thread_table.len() as u32;
            let t = *self.threads.entry(ev.tid).or_insert_with(|| {
                self.thread_table.push((ev.tgid, ev.tid));
                self.last_ts.push(base_ts);
                self.last_code.push(u32::MAX);
                next
            });
            // A tid seen under another tgid (pid reuse within a chunk) gets its own entry.
            let t = if self.thread_table[t as usize].0 == ev.tgid {
                t
            } else {
                self.thread_table.push((ev.tgid, ev.tid));
                self.last_ts.push(base_ts);
                self.last_code.push(u32::MAX);
                self.threads.insert(ev.tid, next);
                next
            };
            put_varint(thread_col, u64::from(t));
            let code = ev.probe_id << 2 | (ev.kind.wrapping_sub(1) & 3);
            // Threads loop through the same call sequences: predict the code
            // from the one before it on this thread; a hit costs a 0.
            let prev = std::mem::replace(&mut self.last_code[t as usize], code);
            let predicted = self.next_code.insert((t, prev), code);
            put_varint(
                code_col,
                if predicted == Some(code) {
                    0
                } else {
                    u64::from(code) + 1
                },
            );
            let last = &mut self.last_ts[t as usize];
            let z = zigzag(ev.ts_ns.wrapping_sub(*last) as i64);
            time_lo.push(z as u8);
            put_varint(time_col, z >> 8);
            *last = ev.ts_ns;
            let prev = self.last_args.entry((t, code)).or_insert([0; MAX_ARGS]);
            for (slot, col) in arg_cols.iter_mut().enumerate() {
                put_varint(col, zigzag(ev.args[slot].wrapping_sub(prev[slot]) as i64));
                prev[slot] = ev.args[slot];
            }
        }
        out.clear();
        put_varint(out, events.len() as u64);
        put_varint(out, self.thread_table.len() as u64);
        out.extend_from_slice(&base_ts.to_le_bytes());
        for &(tgid, tid) in &self.thread_table {
            put_varint(out, u64::from(tgid));
            put_varint(out, u64::from(tid));
        }
        for c in &self.cols {
            put_varint(out, c.len() as u64);
            out.extend_from_slice(c);
        }
    }
}

/// Decodes a chunk written by [`ChunkEncoder::encode`], appending to `out`.
/// Every length and index is checked: bad input is an `Err`, never a panic.
pub fn decode(bytes: &[u8], out: &mut Vec<Event>) -> Result<(), String> {
    let mut r = Cursor { b: bytes, pos: 0 };
    let n = r.varint()? as usize;
    let n_threads = r.varint()? as usize;
    // Every event takes at least one byte in each column.
    if n > bytes.len() || n_threads > n.max(1) {
        return Err(format!(
            "impossible counts: {n} events, {n_threads} threads in {} bytes",
            bytes.len()
        ));
    }
    let base_ts = r.u64le()?;
    let mut threads = Vec::with_capacity(n_threads);
    for _ in 0..n_threads {
        let tgid = r.varint_u32()?;
        let tid = r.varint_u32()?;
        threads.push((tgid, tid));
    }
    let mut cols: [Cursor<'_>; COLUMNS] = Default::default();
    for c in &mut cols {
        let len = r.varint()? as usize;
        *c = Cursor {
            b: r.take(len)?,
            pos: 0,
        };
    }
    if r.pos != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - r.pos));
    }
    // Per (thread, code) state lives in `slots`; each slot remembers which
    // code followed it last time and where that code's slot is, so a
    // predicted code (the common case) costs no hash lookup at all. Slots
    // 0..n_threads are each thread's "before its first event" state.
    struct Slot {
        code: u32,
        next_code: u32,
        next_slot: u32,
        args: [u64; MAX_ARGS],
    }
    let mut slots: Vec<Slot> = (0..n_threads)
        .map(|_| Slot {
            code: u32::MAX,
            next_code: u32::MAX,
            next_slot: u32::MAX,
            args: [0; MAX_ARGS],
        })
        .collect();
    let mut index: FxHashMap<(u32, u32), u32> = FxHashMap::default();
    let mut last_ts = vec![base_ts; n_threads];
    let mut last_slot: Vec<u32> = (0..n_threads as u32).collect();
    out.reserve(n);
    let [thread_col, code_col, time_lo, time_col, arg_cols @ ..] = &mut cols;
    for i in 0..n {
        let t = thread_col.varint()? as usize;
        let &(tgid, tid) = threads
            .get(t)
            .ok_or_else(|| format!("event {i}: thread index {t} out of range"))?;
        let prev = last_slot[t] as usize;
        let (code, slot) = match code_col.varint_u32()? {
            0 => match slots[prev].next_slot {
                u32::MAX => return Err(format!("event {i}: nothing to predict from")),
                s => (slots[prev].next_code, s),
            },
            c if slots[prev].next_code == c - 1 => (c - 1, slots[prev].next_slot),
            c => {
                let code = c - 1;
                let fresh = slots.len() as u32;
                let s = *index.entry((t as u32, code)).or_insert(fresh);
                if s == fresh {
                    slots.push(Slot {
                        code,
                        next_code: u32::MAX,
                        next_slot: u32::MAX,
                        args: [0; MAX_ARGS],
                    });
                }
                (code, s)
            }
        };
        slots[prev].next_code = code;
        slots[prev].next_slot = slot;
        last_slot[t] = slot;
        debug_assert_eq!(slots[slot as usize].code, code);
        let &[lo] = time_lo.take(1)? else {
            return Err("time column: short read".into());
        };
        let lo = u64::from(lo);
        let ts = last_ts[t].wrapping_add(unzigzag(time_col.varint()? << 8 | lo) as u64);
        last_ts[t] = ts;
        let prev_args = &mut slots[slot as usize].args;
        let mut args = [0; MAX_ARGS];
        for (a, col) in arg_cols.iter_mut().enumerate() {
            args[a] = prev_args[a].wrapping_add(unzigzag(col.varint()?) as u64);
        }
        *prev_args = args;
        let kind = match code & 3 {
            0 => EventKind::Entry,
            1 => EventKind::Exit,
            2 => EventKind::Fold,
            _ => EventKind::Client,
        };
        out.push(Event {
            tgid,
            tid,
            ts_ns: ts,
            probe_id: code >> 2,
            kind: kind as u32,
            args,
        });
    }
    if cols.iter().any(|c| c.pos != c.b.len()) {
        return Err("column longer than its events".into());
    }
    Ok(())
}

#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[inline]
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[derive(Default)]
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.pos).ok_or("varint runs past the end")?;
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn varint_u32(&mut self) -> Result<u32, String> {
        u32::try_from(self.varint()?).map_err(|_| "value exceeds 32 bits".to_string())
    }

    fn u64le(&mut self) -> Result<u64, String> {
        let bytes: [u8; 8] = self
            .take(8)?
            .try_into()
            .map_err(|_| "short read".to_string())?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.b.len())
            .ok_or("section runs past the end")?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn arb_event() -> impl Strategy<Value = Event> {
        (
            0u32..4,
            0u32..6,
            any::<u64>(),
            0u32..3000,
            prop::bool::ANY,
            prop::array::uniform3(any::<u64>()),
        )
            .prop_map(|(p, t, ts, probe_id, exit, args)| Event {
                tgid: 100 + p,
                tid: 100 + p * 10 + t,
                ts_ns: ts,
                probe_id,
                kind: if exit {
                    EventKind::Exit
                } else {
                    EventKind::Entry
                } as u32,
                args,
            })
    }

    proptest! {
        #[test]
        fn round_trips_any_event_stream(events in prop::collection::vec(arb_event(), 0..400)) {
            let mut enc = ChunkEncoder::default();
            let mut bytes = Vec::new();
            enc.encode(&events, &mut bytes);
            let mut back = Vec::new();
            decode(&bytes, &mut back).unwrap();
            prop_assert_eq!(back, events);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes, &mut Vec::new());
        }
    }

    #[test]
    fn a_tid_reused_by_another_process_keeps_its_tgid() {
        let ev = |tgid, ts| Event {
            tgid,
            tid: 5,
            ts_ns: ts,
            probe_id: 1,
            kind: 1,
            args: [1, 2, 3],
        };
        let events = vec![ev(5, 10), ev(9, 20), ev(5, 30)];
        let mut bytes = Vec::new();
        ChunkEncoder::default().encode(&events, &mut bytes);
        let mut back = Vec::new();
        decode(&bytes, &mut back).unwrap();
        assert_eq!(back, events);
    }

    #[test]
    fn varints_and_zigzag() {
        for v in [0i64, 1, -1, 63, -64, 1 << 40, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
            let mut b = Vec::new();
            put_varint(&mut b, zigzag(v));
            assert_eq!(Cursor { b: &b, pos: 0 }.varint().unwrap(), zigzag(v));
        }
    }
}
