//! The report's picture of time: per variant, the client's requests/s and
//! failures/s second by second through the untraced run and each phase,
//! and the workers held at each second of the traced phases (inside
//! `ap_read_request`, or in a lean trace waiting for a request in read or
//! poll), phase boundaries marked. All variants share their y scales, so
//! `none` and a mitigation compare by eye; failures (a few a second where
//! answers are thousands) have their own scale, on the right. Self-contained
//! SVG.
use flowdar_analysis::{
    held_per_second,
    render::{Counts, Segment, Timeline, HELD_IN},
};

use crate::{
    experiment::{error::Result, VariantResult},
    server::PerSecond,
};

fn counts(p: &PerSecond) -> Counts {
    Counts {
        ok: p.ok.clone(),
        failed: p.failed.clone(),
    }
}

/// The timelines of every variant, from the clients' counts and the traces.
pub(super) fn timelines(variants: &[VariantResult]) -> Result<Vec<Timeline>> {
    let mut out = Vec::new();
    for v in variants {
        let mut segments = Vec::new();
        let mut held_in = HELD_IN.to_string();
        if let Some(c) = v.untraced.as_ref().and_then(|u| u.client.as_ref()) {
            segments.push(Segment {
                label: "untraced".into(),
                client: Some(counts(&c.per_second)),
                client_offset_s: 0.0,
                held: None,
                seconds: c.per_second.ok.len(),
            });
        }
        for p in &v.phases {
            let held = held_per_second(&p.trace)?;
            held_in.clone_from(&held.function);
            let client = p.client.as_ref().map(|c| &c.per_second);
            let offset = client.as_ref().map_or(0.0, |c| {
                (c.start_unix_ns as f64 - held.start_unix_ns as f64).max(0.0) / 1e9
            });
            let client_end = client
                .as_ref()
                .map_or(0, |c| (offset + c.ok.len() as f64).ceil() as usize);
            segments.push(Segment {
                label: p.name.clone(),
                seconds: held.threads.len().max(client_end),
                client: client.map(counts),
                client_offset_s: offset,
                held: Some(held.threads),
            });
        }
        out.push(Timeline {
            variant: v.name.clone(),
            requests_from: "requests/s answered (client)".into(),
            held_in,
            segments,
        });
    }
    Ok(out)
}
