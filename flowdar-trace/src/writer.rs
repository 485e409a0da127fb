//! Writing a trace: header first, then one self-contained chunk per batch,
//! each handed to the OS as soon as it is complete (a killed tracer loses at
//! most the batch in flight), then the footer.
use std::{
    fs::File,
    io::Write,
    path::{Path, PathBuf},
};

use flowdar_common::Event;

use super::{codec::ChunkEncoder, format::*};

/// zstd level: 3 is zstd's default, fast enough to keep up with the drain.
const ZSTD_LEVEL: i32 = 3;

pub struct TraceWriter {
    path: PathBuf,
    file: File,
    events: u64,
    bytes: u64,
    encoder: ChunkEncoder,
    encoded: Vec<u8>,
    index: Vec<ChunkIndex>,
    /// Per probe id: entry slots kept, return value kept, exit slots kept.
    kept: Vec<(usize, bool, usize)>,
    masked: Vec<Event>,
}

impl TraceWriter {
    /// Creates `path` with mode 0600 (traces hold pointers and timings of a
    /// production server; see [`crate::private::open`]) and writes the
    /// header. Refuses an existing file unless `force`.
    pub fn create(path: &Path, header: &TraceHeader, force: bool) -> Result<Self, StoreError> {
        let file = crate::private::open(path, force).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                StoreError::Exists { path: path.into() }
            } else {
                StoreError::Create {
                    path: path.into(),
                    source,
                }
            }
        })?;
        let mut w = Self {
            path: path.into(),
            file,
            events: 0,
            bytes: 0,
            encoder: ChunkEncoder::default(),
            encoded: Vec::new(),
            index: Vec::new(),
            kept: header
                .probes
                .iter()
                .map(|p| {
                    (
                        p.capture.entry_slots(),
                        p.capture.ret,
                        1 + p.capture.deref.len(),
                    )
                })
                .collect(),
            masked: Vec::new(),
        };
        let mut prefix = Vec::with_capacity(12);
        prefix.extend_from_slice(MAGIC);
        prefix.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        w.write_all(&prefix)?;
        let json = serde_json::to_vec(header).map_err(|e| w.write_error(e.into()))?;
        w.write_frame(FRAME_HEADER, &json)?;
        Ok(w)
    }

    /// Appends one chunk holding `events`.
    pub fn write_chunk(&mut self, events: &[Event]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        // Arguments past a probe's declared count are register noise: zero
        // them so they cost nothing after compression.
        self.masked.clear();
        self.masked.extend(events.iter().map(|e| {
            let mut e = *e;
            let (entry_slots, ret, exit_slots) = self
                .kept
                .get(e.probe_id as usize)
                .copied()
                .unwrap_or((3, true, 3));
            let keep = if e.kind == flowdar_common::EventKind::Fold as u32
                || e.kind == flowdar_common::EventKind::Client as u32
            {
                3
            } else if e.kind == flowdar_common::EventKind::Entry as u32 {
                entry_slots
            } else {
                if !ret {
                    e.args[0] = 0;
                }
                exit_slots
            };
            for a in e.args.iter_mut().skip(keep) {
                *a = 0;
            }
            e
        }));
        self.encoder.encode(&self.masked, &mut self.encoded);
        let compressed = zstd::bulk::compress(&self.encoded, ZSTD_LEVEL).map_err(|source| {
            StoreError::Write {
                path: self.path.clone(),
                source,
            }
        })?;
        let mut payload = Vec::with_capacity(4 + compressed.len());
        payload.extend_from_slice(&(self.encoded.len() as u32).to_le_bytes());
        payload.extend_from_slice(&compressed);
        let (first_ts, last_ts) = events.iter().fold((u64::MAX, 0), |(lo, hi), e| {
            (lo.min(e.ts_ns), hi.max(e.ts_ns))
        });
        self.index.push(ChunkIndex {
            offset: self.bytes,
            events: events.len() as u64,
            first_ts,
            last_ts,
        });
        self.write_frame(FRAME_EVENTS, &payload)?;
        self.events += events.len() as u64;
        Ok(())
    }

    /// Writes the footer and syncs the file.
    pub fn finish(mut self, mut footer: TraceFooter) -> Result<u64, StoreError> {
        footer.events = self.events;
        footer.index = std::mem::take(&mut self.index);
        let json = serde_json::to_vec(&footer).map_err(|e| self.write_error(e.into()))?;
        self.write_frame(FRAME_FOOTER, &json)?;
        self.file.sync_all().map_err(|source| StoreError::Write {
            path: self.path.clone(),
            source,
        })?;
        Ok(self.bytes)
    }

    pub fn events_written(&self) -> u64 {
        self.events
    }

    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    fn write_frame(&mut self, kind: u8, payload: &[u8]) -> Result<(), StoreError> {
        let mut frame = Vec::with_capacity(FRAME_PREFIX_LEN + payload.len());
        frame.push(kind);
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        frame.extend_from_slice(payload);
        self.write_all(&frame)
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.file
            .write_all(bytes)
            .map_err(|source| self.write_error(source))?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    fn write_error(&self, source: std::io::Error) -> StoreError {
        StoreError::Write {
            path: self.path.clone(),
            source,
        }
    }
}
