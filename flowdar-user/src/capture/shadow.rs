//! `record --min-duration`: the kernel holds each call's entry on a
//! per-thread shadow stack until the call proves long enough (see
//! flowdar-ebpf's `shadow.rs`). Calls still open at the end have had no
//! chance to: their entries are read here, once the probes are gone.
use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use flowdar_common::{Event, EventKind, ShadowStack};

/// The held entries of calls open at `end_ns` that had lasted at least
/// `min_ns` by then, oldest first: what the trace would hold had the
/// minimum not been set (an open call is recorded by its entry alone).
pub fn held_entries(map: Map, end_ns: u64, min_ns: u64, nprobes: usize) -> Vec<Event> {
    let Ok(stacks) = BpfHashMap::<MapData, u32, ShadowStack>::try_from(map) else {
        return Vec::new();
    };
    let mut out: Vec<Event> = stacks
        .iter()
        .filter_map(Result::ok)
        .flat_map(|(tid, s)| open_entries(tid, &s, end_ns, min_ns, nprobes).collect::<Vec<_>>())
        .collect();
    out.sort_by_key(|e| (e.ts_ns, e.tid));
    out
}

fn open_entries(
    tid: u32,
    s: &ShadowStack,
    end_ns: u64,
    min_ns: u64,
    nprobes: usize,
) -> impl Iterator<Item = Event> + '_ {
    let depth = (s.depth as usize).min(s.frames.len());
    let from = (s.emitted as usize).min(depth);
    s.frames[from..depth]
        .iter()
        // Frames nest, so their ages fall: the long-enough ones come first.
        .take_while(move |f| end_ns.saturating_sub(f.ts_ns) >= min_ns)
        .filter(move |f| (f.probe_id as usize) < nprobes)
        .map(move |f| Event {
            tgid: s.tgid,
            tid,
            ts_ns: f.ts_ns,
            probe_id: f.probe_id,
            kind: EventKind::Entry as u32,
            args: f.args,
        })
}

#[cfg(test)]
mod tests {
    use flowdar_common::{ShadowFrame, MAX_SHADOW_DEPTH};

    use super::*;

    fn stack(ts: &[u64], emitted: u32) -> ShadowStack {
        let mut s = ShadowStack {
            tgid: 7,
            depth: ts.len() as u32,
            emitted,
            overflow: 0,
            frames: [ShadowFrame::default(); MAX_SHADOW_DEPTH],
        };
        for (i, t) in ts.iter().enumerate() {
            s.frames[i] = ShadowFrame {
                ts_ns: *t,
                probe_id: i as u32,
                _pad: 0,
                args: [i as u64, 0, 0],
            };
        }
        s
    }

    #[test]
    fn open_calls_past_the_minimum_are_entries_not_already_sent() {
        // Frame 0 was sent (a long child returned); frames 1 and 2 were
        // held; frame 3 began too recently to have lasted the minimum.
        let s = stack(&[100, 200, 300, 950], 1);
        let got: Vec<(u64, u32)> = open_entries(9, &s, 1000, 500, 8)
            .map(|e| (e.ts_ns, e.probe_id))
            .collect();
        assert_eq!(got, vec![(200, 1), (300, 2)]);
        let e = open_entries(9, &s, 1000, 500, 8).next().unwrap();
        assert_eq!((e.tgid, e.tid, e.kind, e.args[0]), (7, 9, 1, 1));
    }

    #[test]
    fn a_corrupt_depth_is_clamped_and_unknown_probes_skipped() {
        // Depth 1000 reads the 32 frames there are; frame 1's probe is
        // outside a one-probe table.
        let mut s = stack(&[1, 2], 0);
        s.depth = 1000;
        assert_eq!(open_entries(1, &s, 10, 1, 1).count(), MAX_SHADOW_DEPTH - 1);
    }
}
