//! A request's W3C trace context, from its `traceparent` header, read at
//! the entry of a probe whose config says where the request's headers
//! table is (`request_rec->headers_in`). Bounded, and no payload leaves
//! the kernel: at most [`MAX_HEADERS`] entries of APR's table are looked
//! at, by the 4-byte key checksum APR keeps in each (the first four
//! letters, case-folded: "TRAC"), the key compared in full, the value's
//! 55 bytes parsed here, and only the ids sent, in two Client-kind events
//! with port 0 (`flowdar_common::Event::trace_context`).
use aya_ebpf::{cty::c_void, helpers::generated};
use flowdar_common::{EventKind, TRACE_CONTEXT_SECOND};

use crate::emit::emit;

/// Header entries looked at (a request has about ten).
const MAX_HEADERS: u64 = 32;
/// APR's key checksum of "trac...": 't' 'r' 'a' 'c', upper-cased.
const TRAC: u32 = 0x5452_4143;
/// `apr_table_t`: its array's `nelts` (int) and `elts` (pointer).
const NELTS_OFF: u64 = 12;
const ELTS_OFF: u64 = 24;
/// `apr_table_entry_t`: key, val, key_checksum; 24 bytes.
const ENTRY_SIZE: u64 = 24;
const VAL_OFF: u64 = 8;
const CHECKSUM_OFF: u64 = 16;

/// `size` (4 or 8) bytes at `addr` into `slot`, zero-extended: one stack
/// slot for every read of the header scan, which the compiler unrolls (a
/// fresh value per read would overflow the BPF stack).
#[inline(always)]
fn read_into(slot: &mut u64, addr: u64, size: u32) -> Option<u64> {
    *slot = 0;
    // SAFETY: `slot` is 8 bytes of this program's stack; the source is a
    // user address, which the helper reads or faults on safely.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            (slot as *mut u64).cast::<c_void>(),
            size,
            addr as *const c_void,
        )
    };
    (rc == 0).then_some(*slot)
}

/// Sends `r`'s trace context, if its headers (the table pointer at
/// `headers_off` from `r`) carry a valid `traceparent`. A BPF function of
/// its own (not inlined): the unrolled scan needs a stack frame of its
/// own beside the entry program's.
#[inline(never)]
pub fn send(pid_tgid: u64, probe_id: u32, r: u64, headers_off: u64) {
    if r == 0 || r & !((1u64 << 47) - 1) != 0 {
        return;
    }
    let Some([hi, lo, parent, flags]) = find(r, headers_off) else {
        return;
    };
    if emit(pid_tgid, probe_id, EventKind::Client, [r, hi, lo]) {
        emit(
            pid_tgid,
            probe_id,
            EventKind::Client,
            [r | TRACE_CONTEXT_SECOND, parent, flags],
        );
    }
}

#[inline(always)]
fn find(r: u64, headers_off: u64) -> Option<[u64; 4]> {
    parse(value_of(r, headers_off)?)
}

/// The address of the `traceparent` header's value, if the request has one.
#[inline(never)]
fn value_of(r: u64, headers_off: u64) -> Option<u64> {
    let mut w = 0u64;
    let table = read_into(&mut w, r + headers_off, 8)?;
    if table == 0 {
        return None;
    }
    let n = read_into(&mut w, table + NELTS_OFF, 4)?.min(MAX_HEADERS);
    let elts = read_into(&mut w, table + ELTS_OFF, 8)?;
    // "traceparent\0" as two little-endian words, letters folded to lower
    // case by or-ing 0x20 into each (the NUL is left alone).
    let fold0 = 0x2020_2020_2020_2020u64;
    let fold1 = 0x0020_2020u64;
    let want0 = u64::from_le_bytes(*b"tracepar");
    let want1 = u64::from(u32::from_le_bytes(*b"ent\0"));
    let mut i = 0;
    while i < n {
        let entry = elts + i * ENTRY_SIZE;
        i += 1;
        if read_into(&mut w, entry + CHECKSUM_OFF, 4) != Some(u64::from(TRAC)) {
            continue;
        }
        let Some(key) = read_into(&mut w, entry, 8) else {
            continue;
        };
        let k0 = read_into(&mut w, key, 8).unwrap_or(0);
        let k1 = read_into(&mut w, key + 8, 4).unwrap_or(0);
        if k0 | fold0 == want0 && k1 | fold1 == want1 {
            return read_into(&mut w, entry + VAL_OFF, 8);
        }
    }
    None
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, nothing
/// after, read word by word into one stack slot (no buffer: the BPF stack
/// is small). This, the scan and the digits are BPF functions of their
/// own: inlined and unrolled together, their spills overflowed the 512
/// bytes the entry program and its calls share.
#[inline(never)]
fn parse(v: u64) -> Option<[u64; 4]> {
    let mut w = 0u64;
    let head = read_into(&mut w, v, 4)?;
    let dash1 = read_into(&mut w, v + 35, 1)?;
    let dash2 = read_into(&mut w, v + 52, 1)?;
    let end = read_into(&mut w, v + 55, 1)?;
    let dash = u64::from(b'-');
    if head & 0x00ff_ffff != u64::from(u32::from_le_bytes(*b"00-\0"))
        || dash1 != dash
        || dash2 != dash
        || end != 0
    {
        return None;
    }
    // Every digit is checked: `bad` collects the invalid ones.
    let mut bad = 0u64;
    let hi = hex8(read_into(&mut w, v + 3, 8)?, &mut bad) << 32
        | hex8(read_into(&mut w, v + 11, 8)?, &mut bad);
    let lo = hex8(read_into(&mut w, v + 19, 8)?, &mut bad) << 32
        | hex8(read_into(&mut w, v + 27, 8)?, &mut bad);
    let parent = hex8(read_into(&mut w, v + 36, 8)?, &mut bad) << 32
        | hex8(read_into(&mut w, v + 44, 8)?, &mut bad);
    let f = read_into(&mut w, v + 53, 2)?;
    let (f0, f1) = (nibble(f as u8), nibble((f >> 8) as u8));
    bad |= (f0 | f1) >> 4;
    // All-zero ids are invalid (W3C Trace Context).
    if bad != 0 || (hi == 0 && lo == 0) || parent == 0 {
        return None;
    }
    Some([hi, lo, parent, f0 << 4 | f1])
}

/// Eight hex digits (a little-endian word of text) as 32 bits; an invalid
/// digit sets `bad`.
#[inline(never)]
fn hex8(w: u64, bad: &mut u64) -> u64 {
    let mut x = 0u64;
    let mut j = 0;
    while j < 8 {
        let n = nibble((w >> (8 * j)) as u8);
        *bad |= n >> 4;
        x = x << 4 | (n & 0xf);
        j += 1;
    }
    x
}

/// A lower-case hex digit's value, 16 for anything else.
#[inline(always)]
fn nibble(c: u8) -> u64 {
    match c {
        b'0'..=b'9' => u64::from(c - b'0'),
        b'a'..=b'f' => u64::from(c - b'a' + 10),
        _ => 16,
    }
}
