//! HTTP/2's protocol engine in a trace (`apache:h2`: libnghttp2 as
//! mod_http2 calls it): the streams the server opened and answered, the
//! resets and GOAWAYs it sent, and the time it spent parsing frames.
use std::path::Path;

use flowdar_trace::StoreError;

/// A stream opened: mod_http2 attaches its state with a non-NULL pointer
/// (and sets NULL when an answered stream is cleaned up).
pub const STREAM_OPENED: &str = "nghttp2_session_set_stream_user_data";
/// A stream answered: its response headers submitted.
pub const STREAM_ANSWERED: &str = "nghttp2_submit_response";
const SERVER_RESET: &str = "nghttp2_submit_rst_stream";
const GOAWAY: &str = "nghttp2_submit_goaway";
const PARSE: &str = "nghttp2_session_mem_recv";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct H2Streams {
    pub opened: u64,
    pub answered: u64,
    /// RST_STREAMs the server sent.
    pub server_resets: u64,
    pub goaways: u64,
    /// Time in `nghttp2_session_mem_recv` (the clients' frames parsed).
    pub parse_ns: u64,
    /// Frames parsed: bytes `nghttp2_session_mem_recv` was given.
    pub parsed_bytes: u64,
}

impl H2Streams {
    /// Opened and never answered: reset by the client, refused, or still
    /// waiting for their headers' end when capture ended.
    pub fn unanswered(&self) -> u64 {
        self.opened.saturating_sub(self.answered)
    }
}

/// The trace's HTTP/2 streams; None when it has no `apache:h2` probes.
pub fn h2_streams(trace: &Path) -> Result<Option<H2Streams>, StoreError> {
    let header = flowdar_trace::TraceReader::open(trace)?.header().clone();
    let id = |f: &str| header.probes.iter().find(|p| p.function == f).map(|p| p.id);
    let Some(opened) = id(STREAM_OPENED) else {
        return Ok(None);
    };
    let (answered, reset, goaway, parse) =
        (id(STREAM_ANSWERED), id(SERVER_RESET), id(GOAWAY), id(PARSE));
    let mut s = H2Streams::default();
    crate::scan(
        trace,
        |_| {},
        |c| {
            let p = Some(c.probe_id);
            if p == Some(opened) && c.args[2] != 0 {
                s.opened += 1;
            } else if p == answered {
                s.answered += 1;
            } else if p == reset {
                s.server_resets += 1;
            } else if p == goaway {
                s.goaways += 1;
            } else if p == parse {
                s.parse_ns += c.duration_ns();
                s.parsed_bytes += c.args[2];
            }
        },
    )?;
    Ok(Some(s))
}
