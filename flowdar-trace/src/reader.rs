//! Streaming trace reader: one chunk in memory at a time. Damage is reported
//! as warnings and skipped; only an unreadable header is fatal.
use std::{
    fmt,
    fs::File,
    io::{BufReader, ErrorKind, Read},
    path::{Path, PathBuf},
};

use std::sync::mpsc;

use flowdar_common::Event;

use super::{codec, format::*};

/// Damage found while reading; the reader carries on past it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadWarning {
    /// The file ends inside a frame (tracer killed, disk full).
    Truncated { at: u64, last_complete: u64 },
    /// A chunk failed its checksum or did not decode; it was skipped.
    CorruptChunk { offset: u64, reason: String },
    /// A frame length is impossible: nothing after `offset` can be trusted.
    Unframed { offset: u64 },
    /// The file has no footer: the tracer did not finish.
    NoFooter,
}

impl ReadWarning {
    /// Where in the file the damage is (a missing footer is at the end).
    fn file_position(&self) -> u64 {
        match self {
            Self::Truncated { last_complete, .. } => *last_complete,
            Self::CorruptChunk { offset, .. } | Self::Unframed { offset } => *offset,
            Self::NoFooter => u64::MAX,
        }
    }
}

impl fmt::Display for ReadWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { at, last_complete } => write!(
                f,
                "trace is truncated at byte {at}; read up to the last complete chunk (byte {last_complete})"
            ),
            Self::CorruptChunk { offset, reason } => {
                write!(f, "chunk at byte {offset} is corrupt ({reason}); skipped")
            }
            Self::Unframed { offset } => {
                write!(f, "impossible frame length at byte {offset}; the rest of the file was not read")
            }
            Self::NoFooter => write!(
                f,
                "trace has no footer (the tracer did not finish); drop counters are unknown"
            ),
        }
    }
}

pub struct TraceReader {
    path: PathBuf,
    input: BufReader<Box<dyn Read + Send>>,
    header: TraceHeader,
    footer: Option<TraceFooter>,
    warnings: Vec<ReadWarning>,
    offset: u64,
    done: bool,
    chunks: u64,
    decoder: Decoder,
}

enum Frame {
    Complete {
        kind: u8,
        payload: Vec<u8>,
        crc_ok: bool,
    },
    End,
    Truncated,
    Unframed,
}

impl TraceReader {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let file = File::open(path).map_err(|source| StoreError::Open {
            path: path.into(),
            source,
        })?;
        Self::from_reader(path, file)
    }

    /// Reads a trace from any byte stream; `path` names it in messages.
    pub fn from_reader(path: &Path, input: impl Read + Send + 'static) -> Result<Self, StoreError> {
        let input: Box<dyn Read + Send> = Box::new(input);
        let mut input = BufReader::with_capacity(1 << 20, input);
        let mut prefix = [0u8; 12];
        let n = read_full(&mut input, &mut prefix).map_err(|source| StoreError::Read {
            path: path.into(),
            source,
        })?;
        if n == 0 {
            return Err(StoreError::Empty { path: path.into() });
        }
        if n < 8 || &prefix[..8] != MAGIC {
            return Err(StoreError::NotATrace { path: path.into() });
        }
        if n < 12 {
            return Err(StoreError::BadHeader {
                path: path.into(),
                reason: "file ends inside the preamble".into(),
            });
        }
        let version = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
        if !(super::format::OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(StoreError::Version {
                path: path.into(),
                found: version,
            });
        }
        let mut r = Self {
            path: path.into(),
            input,
            header: placeholder_header(),
            footer: None,
            warnings: Vec::new(),
            offset: 12,
            done: false,
            chunks: 0,
            decoder: Decoder::default(),
        };
        let bad = |reason: &str| StoreError::BadHeader {
            path: path.into(),
            reason: reason.into(),
        };
        match r.read_frame()? {
            Frame::Complete {
                kind: FRAME_HEADER,
                payload,
                crc_ok: true,
            } => {
                r.header =
                    serde_json::from_slice(&payload).map_err(|source| StoreError::HeaderJson {
                        path: path.into(),
                        source,
                    })?;
            }
            Frame::Complete { crc_ok: false, .. } => return Err(bad("checksum mismatch")),
            Frame::Complete { .. } => return Err(bad("first frame is not a header")),
            Frame::End | Frame::Truncated => return Err(bad("file ends inside the header")),
            Frame::Unframed => return Err(bad("impossible header length")),
        }
        Ok(r)
    }

    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// The footer, once the reader has reached it.
    pub fn footer(&self) -> Option<&TraceFooter> {
        self.footer.as_ref()
    }

    pub fn warnings(&self) -> &[ReadWarning] {
        &self.warnings
    }

    /// Complete, intact event chunks read so far.
    pub fn chunks_read(&self) -> u64 {
        self.chunks
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next intact chunk's events; `None` at the end of the trace.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<Event>>, StoreError> {
        while let Some((offset, payload)) = self.next_event_payload()? {
            let mut events = Vec::new();
            match self.decoder.decode(&payload, &mut events) {
                Ok(()) => {
                    self.chunks += 1;
                    return Ok(Some(events));
                }
                Err(reason) => self
                    .warnings
                    .push(ReadWarning::CorruptChunk { offset, reason }),
            }
        }
        Ok(None)
    }

    /// The next event frame that passed its checksum, still compressed, with
    /// its offset; every other frame (footer, damage) is handled here.
    fn next_event_payload(&mut self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        while !self.done {
            let start = self.offset;
            match self.read_frame()? {
                Frame::End => {
                    self.done = true;
                    if self.footer.is_none() {
                        self.warnings.push(ReadWarning::NoFooter);
                    }
                }
                Frame::Truncated => {
                    self.done = true;
                    self.warnings.push(ReadWarning::Truncated {
                        at: self.offset,
                        last_complete: start,
                    });
                    self.warnings.push(ReadWarning::NoFooter);
                }
                Frame::Unframed => {
                    self.done = true;
                    self.warnings.push(ReadWarning::Unframed { offset: start });
                    self.warnings.push(ReadWarning::NoFooter);
                }
                Frame::Complete { crc_ok: false, .. } => {
                    self.warnings.push(ReadWarning::CorruptChunk {
                        offset: start,
                        reason: "checksum mismatch".into(),
                    });
                }
                Frame::Complete {
                    kind: FRAME_EVENTS,
                    payload,
                    ..
                } => return Ok(Some((start, payload))),
                Frame::Complete {
                    kind: FRAME_FOOTER,
                    payload,
                    ..
                } => {
                    self.done = true;
                    match serde_json::from_slice(&payload) {
                        Ok(f) => self.footer = Some(f),
                        Err(e) => self.warnings.push(ReadWarning::CorruptChunk {
                            offset: start,
                            reason: format!("footer does not decode: {e}"),
                        }),
                    }
                }
                Frame::Complete { kind, .. } => self.warnings.push(ReadWarning::CorruptChunk {
                    offset: start,
                    reason: format!("unknown frame kind {kind}"),
                }),
            }
        }
        Ok(None)
    }

    /// Calls `f` on every event in file order; returns the reader (for its
    /// footer and warnings) when done.
    ///
    /// With more than one CPU, chunks are read on one helper thread and
    /// decompressed and decoded (the costly part) on several, a few chunks
    /// ahead of `f`, and handed to `f` in file order: analysis runs at the
    /// speed of the slower side, and memory stays bounded by the chunks in
    /// flight (64 k events, 3 MiB each).
    pub fn for_each_event(self, f: impl FnMut(&Event)) -> Result<Self, StoreError> {
        self.for_each_event_on(Self::default_decoders(), f)
    }

    /// The decoding threads [`Self::for_each_event`] uses: none on one CPU
    /// (all on the calling thread), else one per CPU up to 4.
    pub fn default_decoders() -> usize {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus < 2 {
            0
        } else {
            cpus.min(4)
        }
    }

    /// [`Self::for_each_event`] with `decoders` decoding threads (0: all on
    /// the calling thread, no helper threads at all).
    pub fn for_each_event_on(
        mut self,
        decoders: usize,
        mut f: impl FnMut(&Event),
    ) -> Result<Self, StoreError> {
        if decoders == 0 {
            while let Some(chunk) = self.next_chunk()? {
                chunk.iter().for_each(&mut f);
            }
            return Ok(self);
        }
        type Decoded = (u64, Result<Vec<Event>, String>);
        let path = self.path.clone();
        let no_thread = |source| StoreError::Thread {
            path: path.clone(),
            source,
        };
        std::thread::scope(|scope| {
            // Owned here: an early return drops the senders before the scope
            // joins, so decoders already started end instead of waiting.
            let mut to_decoders = Vec::new();
            let mut from_decoders = Vec::new();
            for _ in 0..decoders {
                let (tx, rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(1);
                let (out_tx, out_rx) = mpsc::sync_channel::<Decoded>(1);
                // Event vectors come back once `f` is done with them.
                let (spare_tx, spare_rx) = mpsc::channel::<Vec<Event>>();
                to_decoders.push(tx);
                from_decoders.push((out_rx, spare_tx));
                std::thread::Builder::new()
                    .name("flowdar-decode".into())
                    .spawn_scoped(scope, move || {
                        let mut decoder = Decoder::default();
                        for (offset, payload) in rx {
                            let mut events = spare_rx.try_recv().unwrap_or_default();
                            let result = decoder.decode(&payload, &mut events).map(|()| events);
                            if out_tx.send((offset, result)).is_err() {
                                break;
                            }
                        }
                    })
                    .map_err(no_thread)?;
            }
            let reader = std::thread::Builder::new()
                .name("flowdar-read".into())
                .spawn_scoped(scope, move || {
                    let mut next = 0;
                    while let Some(frame) = self.next_event_payload()? {
                        if to_decoders[next % decoders].send(frame).is_err() {
                            break;
                        }
                        next += 1;
                    }
                    drop(to_decoders);
                    Ok::<_, StoreError>(self)
                })
                .map_err(no_thread)?;
            // Frames went to decoders round-robin: collect them the same way.
            let mut damaged = Vec::new();
            let mut chunks = 0;
            'chunks: for next in 0.. {
                let (decoded, spare) = &from_decoders[next % decoders];
                match decoded.recv() {
                    Ok((_, Ok(events))) => {
                        chunks += 1;
                        events.iter().for_each(&mut f);
                        let _ = spare.send(events);
                    }
                    Ok((offset, Err(reason))) => {
                        damaged.push(ReadWarning::CorruptChunk { offset, reason })
                    }
                    Err(_) => break 'chunks,
                }
            }
            drop(from_decoders);
            // A panic of the reader thread is this thread's panic.
            let mut reader = reader
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))?;
            reader.chunks += chunks;
            // Keep the warnings in file order, as the sequential path does.
            reader.warnings.extend(damaged);
            reader.warnings.sort_by_key(ReadWarning::file_position);
            Ok(reader)
        })
    }

    fn read_frame(&mut self) -> Result<Frame, StoreError> {
        let io = |source| StoreError::Read {
            path: self.path.clone(),
            source,
        };
        let mut prefix = [0u8; FRAME_PREFIX_LEN];
        let n = read_full(&mut self.input, &mut prefix).map_err(io)?;
        self.offset += n as u64;
        if n == 0 {
            return Ok(Frame::End);
        }
        if n < FRAME_PREFIX_LEN {
            return Ok(Frame::Truncated);
        }
        let kind = prefix[0];
        let len = u32::from_le_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
        let crc = u32::from_le_bytes([prefix[5], prefix[6], prefix[7], prefix[8]]);
        if len > MAX_FRAME_LEN || !(FRAME_HEADER..=FRAME_FOOTER).contains(&kind) {
            return Ok(Frame::Unframed);
        }
        let mut payload = vec![0u8; len as usize];
        let n = read_full(&mut self.input, &mut payload).map_err(|source| StoreError::Read {
            path: self.path.clone(),
            source,
        })?;
        self.offset += n as u64;
        if n < payload.len() {
            return Ok(Frame::Truncated);
        }
        let crc_ok = crc32fast::hash(&payload) == crc;
        Ok(Frame::Complete {
            kind,
            payload,
            crc_ok,
        })
    }
}

/// Decodes an events payload: `u32 encoded_len` then zstd of the encoding.
/// Decompression and decoding with buffers kept from chunk to chunk (a
/// fresh 3 MiB vector per chunk costs page faults on every chunk).
#[derive(Default)]
struct Decoder {
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    encoded: Vec<u8>,
}

impl Decoder {
    /// Decodes one event frame's payload into `events` (cleared first).
    fn decode(&mut self, payload: &[u8], events: &mut Vec<Event>) -> Result<(), String> {
        events.clear();
        let len = payload
            .first_chunk::<4>()
            .map(|b| u32::from_le_bytes(*b) as usize)
            .ok_or("payload shorter than its length")?;
        if len > MAX_ENCODED_LEN {
            return Err(format!("impossible encoded length {len}"));
        }
        let zstd = match &mut self.zstd {
            Some(z) => z,
            empty => {
                empty.insert(zstd::bulk::Decompressor::new().map_err(|e| format!("zstd: {e}"))?)
            }
        };
        self.encoded.clear();
        self.encoded.reserve(len);
        let n = zstd
            .decompress_to_buffer(&payload[4..], &mut self.encoded)
            .map_err(|e| format!("zstd: {e}"))?;
        if n != len {
            return Err(format!("decompresses to {n} bytes, expected {len}"));
        }
        codec::decode(&self.encoded, events)
    }
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn placeholder_header() -> TraceHeader {
    TraceHeader {
        tool_version: String::new(),
        host: String::new(),
        kernel: String::new(),
        command_line: Vec::new(),
        start_unix_ns: 0,
        start_monotonic_ns: 0,
        target_pid: 0,
        probes: Vec::new(),
        attach_mode: String::new(),
        attached_monotonic_ns: 0,
        target_ns_pid: 0,
    }
}
