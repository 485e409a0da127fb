//! TLS per session, from OpenSSL's exported functions (mod_ssl's own have
//! no names in a stripped build): `SSL_accept` is the server's handshake,
//! `SSL_read` and `SSL_write` move a connection's records. They take an
//! `SSL *`, not a connection, so each call goes to the session whose call
//! on the same thread was running around it (a connection's pass, or the
//! request read inside it).
use std::collections::HashMap;

use super::Call;
use flowdar_trace::TraceProbe;

const HANDSHAKE: &str = "SSL_accept";
const READ: &str = "SSL_read";
const WRITE: &str = "SSL_write";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Handshake,
    Read,
    Write,
}

/// A TLS call: (process, thread, start, end, kind).
type TlsCall = (u32, u32, u64, u64, Kind);
/// A session's call on a thread: (start, end, session index).
type Window = (u64, u64, usize);

/// Collects the TLS calls of a trace; [`TlsCalls::attribute`] gives them to
/// the sessions at the end, when every session's windows are known.
#[derive(Default)]
pub(crate) struct TlsCalls {
    kinds: HashMap<u32, Kind>,
    calls: Vec<TlsCall>,
}

impl TlsCalls {
    pub fn new(probes: &[TraceProbe]) -> Self {
        let kinds = probes
            .iter()
            .filter_map(|p| {
                let kind = match p.function.as_str() {
                    HANDSHAKE => Kind::Handshake,
                    READ => Kind::Read,
                    WRITE => Kind::Write,
                    _ => return None,
                };
                Some((p.id, kind))
            })
            .collect();
        Self {
            kinds,
            calls: Vec::new(),
        }
    }

    /// True when the trace probed OpenSSL.
    pub fn probed(&self) -> bool {
        !self.kinds.is_empty()
    }

    /// Keeps `c` when it is a TLS call; false when it is not one.
    pub fn add(&mut self, c: &Call) -> bool {
        let Some(&kind) = self.kinds.get(&c.probe_id) else {
            return false;
        };
        self.calls.push((c.tgid, c.tid, c.start_ns, c.end_ns, kind));
        true
    }

    /// Gives each TLS call's time to the session whose window on its
    /// thread contains its start. `sessions` are each session's process
    /// and `(thread, start, end)` windows; the answer is one [`TlsTime`]
    /// per session, in their order, or None without TLS probes (whether a
    /// session was over TLS is then unknown).
    pub fn attribute<'s>(
        &self,
        sessions: impl IntoIterator<Item = (u32, &'s [(u32, u64, u64)])>,
    ) -> Option<Vec<TlsTime>> {
        if !self.probed() {
            return None;
        }
        // (process, thread) -> (start, end, session index), by start.
        let mut windows: HashMap<(u32, u32), Vec<Window>> = HashMap::new();
        let mut out = Vec::new();
        for (i, (pid, session_windows)) in sessions.into_iter().enumerate() {
            out.push(TlsTime::default());
            for &(tid, start, end) in session_windows {
                windows.entry((pid, tid)).or_default().push((start, end, i));
            }
        }
        for w in windows.values_mut() {
            w.sort_unstable();
        }
        for &(pid, tid, start, end, kind) in &self.calls {
            let Some(w) = windows.get(&(pid, tid)) else {
                continue;
            };
            // The latest window that began by the call's start and had not
            // ended: windows nest (a pass holds its reads), all the
            // same session's.
            let upto = w.partition_point(|&(s, _, _)| s <= start);
            let Some(&(_, _, i)) = w[..upto].iter().rev().find(|&&(_, e, _)| e >= start) else {
                continue;
            };
            let t = &mut out[i];
            t.tls = true;
            let ns = end.saturating_sub(start);
            match kind {
                Kind::Handshake => t.handshake_ns += ns,
                Kind::Read => t.read_ns += ns,
                Kind::Write => t.write_ns += ns,
            }
        }
        Some(out)
    }
}

/// A session's TLS: whether any OpenSSL call was its, and their times.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TlsTime {
    pub tls: bool,
    pub handshake_ns: u64,
    pub read_ns: u64,
    pub write_ns: u64,
}
