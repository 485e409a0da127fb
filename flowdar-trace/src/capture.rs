//! What to capture of one function's calls, and its kernel form.
use flowdar_common::{ProbeConfig, MAX_ARGS, MAX_ARG_INDEX, MAX_DEREFS, NO_ARG};
use serde::{Deserialize, Serialize};

/// An out-parameter read at exit: the pointee of argument `arg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deref {
    pub arg: u8,
    /// 4 or 8.
    #[serde(default = "eight")]
    pub bytes: u8,
}

fn eight() -> u8 {
    8
}

/// A u64 read at entry at `offset` bytes from pointer argument `arg`; with
/// `then`, that u64 is a pointer too, and the u64 at `then` bytes from it
/// is the value (`r->connection->master`: two hops, NULL-safe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRead {
    pub arg: u8,
    #[serde(default)]
    pub offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<u64>,
}

/// The client of an Apache connection (`conn_rec *`): the one argument
/// `arg` names, or (`read = true`) the one the field read yields, an
/// HTTP/2 stream's primary connection. Read at entry, sent once per
/// connection (see `flowdar_common::EventKind::Client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRead {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg: Option<u8>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read: bool,
}

/// Capture settings of one function. Where values land in events: entry
/// slots 0..`args` hold the first arguments and the slot after them the
/// field read; exit slot 0 the return value, slots 1 and 2 the out-parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Capture {
    /// Leading integer arguments kept (0..=3).
    pub args: u8,
    /// Keep the return value.
    pub ret: bool,
    /// Out-parameters read at exit (at most 2).
    #[serde(default)]
    pub deref: Vec<Deref>,
    #[serde(default)]
    pub read: Option<FieldRead>,
    /// Which return values mean failure (counted as `errors` by stats).
    #[serde(default)]
    pub errors: Option<ErrorRule>,
    /// The connection's client, from an Apache `conn_rec *` argument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientRead>,
    /// No return probe: each call is its entry alone, of no length (one
    /// trap a call instead of two; `ret`, `deref` and durations are lost).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub entry_only: bool,
    /// Where the request's headers table is (`request_rec->headers_in`:
    /// `offset` bytes from argument `arg`): its W3C `traceparent` header
    /// is read at entry and sent as the request's trace context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<FieldRead>,
}

/// How a function's return value says it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorRule {
    /// A status code: 0 is success (APR's `apr_status_t`).
    Nonzero,
    /// A pointer: NULL is failure.
    Zero,
    /// A signed int (32-bit): negative is failure.
    Negative,
}

impl ErrorRule {
    pub fn is_error(self, ret: u64) -> bool {
        match self {
            Self::Nonzero => ret != 0,
            Self::Zero => ret == 0,
            Self::Negative => (ret as u32 as i32) < 0,
        }
    }
}

impl Default for Capture {
    fn default() -> Self {
        Self {
            args: MAX_ARGS as u8,
            ret: true,
            deref: Vec::new(),
            read: None,
            errors: None,
            client: None,
            entry_only: false,
            traceparent: None,
        }
    }
}

impl Capture {
    /// Why these settings cannot be honoured, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if usize::from(self.args) > MAX_ARGS {
            return Err(format!(
                "args = {}, but at most {MAX_ARGS} arguments are captured",
                self.args
            ));
        }
        if self.deref.len() > MAX_DEREFS {
            return Err(format!(
                "{} out-parameters, but at most {MAX_DEREFS} can be read at exit",
                self.deref.len()
            ));
        }
        for d in &self.deref {
            if d.arg > MAX_ARG_INDEX {
                return Err(format!(
                    "deref of argument {}: only arguments 0..={MAX_ARG_INDEX} are in registers",
                    d.arg
                ));
            }
            if d.bytes != 4 && d.bytes != 8 {
                return Err(format!(
                    "deref of argument {} reads {} bytes; 4 or 8 are supported",
                    d.arg, d.bytes
                ));
            }
        }
        if let Some(c) = &self.client {
            match (c.arg, c.read) {
                (Some(arg), false) if arg > MAX_ARG_INDEX => {
                    return Err(format!(
                        "client of argument {arg}: only arguments 0..={MAX_ARG_INDEX} are in registers"
                    ));
                }
                (Some(_), false) => {}
                (None, true) if self.read.is_none() => {
                    return Err("client = { read = true } needs a field read (`read = ...`)".into());
                }
                (None, true) => {}
                _ => {
                    return Err(
                        "client takes either `arg` (a conn_rec * argument) or `read = true`".into(),
                    )
                }
            }
        }
        if let Some(t) = &self.traceparent {
            if t.arg > MAX_ARG_INDEX || t.then.is_some() || t.offset == 0 || t.offset > 0xffff {
                return Err(format!(
                    "traceparent = {{ arg = {}, offset = {} }}: the headers table is one pointer at an offset (1..=65535) from an argument 0..={MAX_ARG_INDEX}",
                    t.arg, t.offset
                ));
            }
        }
        if self.entry_only && !self.deref.is_empty() {
            return Err(
                "entry_only: out-parameters are read at the return, which is not probed".into(),
            );
        }
        if let Some(r) = &self.read {
            if r.arg > MAX_ARG_INDEX {
                return Err(format!(
                    "read from argument {}: only arguments 0..={MAX_ARG_INDEX} are in registers",
                    r.arg
                ));
            }
            if usize::from(self.args) >= MAX_ARGS {
                return Err(format!(
                    "a field read needs a free entry slot: keep at most {} arguments (args = {})",
                    MAX_ARGS - 1,
                    self.args
                ));
            }
        }
        Ok(())
    }

    /// The entry slot that receives the field read.
    pub fn read_slot(&self) -> Option<usize> {
        self.read.map(|_| usize::from(self.args))
    }

    /// Entry slots that carry data (kept arguments and the field read).
    pub fn entry_slots(&self) -> usize {
        usize::from(self.args) + usize::from(self.read.is_some())
    }

    /// The settings the kernel programs read from `PROBE_CONFIG`.
    pub fn to_kernel(&self) -> ProbeConfig {
        let mut k = ProbeConfig::default();
        for (i, d) in self.deref.iter().take(MAX_DEREFS).enumerate() {
            k.deref[i] = d.arg;
            k.deref_bytes[i] = d.bytes;
        }
        if let Some(r) = self.read {
            k.read_arg = r.arg;
            k.read_slot = self.args;
            k.read_offset = r.offset;
            if let Some(then) = r.then {
                k.read_offset2 = then;
                k.read_hops = 2;
            }
        }
        if let Some(c) = self.client {
            if let Some(arg) = c.arg {
                k.client_arg = arg;
            }
            k.client_from_read = u8::from(c.read);
        }
        if let Some(t) = self.traceparent {
            k.traceparent_arg = t.arg;
            k.traceparent_off = t.offset as u16;
        }
        debug_assert!(k.deref[0] != NO_ARG || k.deref[1] == NO_ARG);
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_form_places_values() {
        let c = Capture {
            args: 1,
            ret: true,
            deref: vec![Deref { arg: 1, bytes: 8 }, Deref { arg: 3, bytes: 4 }],
            read: Some(FieldRead {
                arg: 0,
                offset: 0x10,
                then: None,
            }),
            errors: None,
            client: None,
            entry_only: false,
            traceparent: Some(FieldRead {
                arg: 0,
                offset: 232,
                then: None,
            }),
        };
        c.check().unwrap();
        let k = c.to_kernel();
        assert_eq!((k.traceparent_arg, k.traceparent_off), (0, 232));
        assert_eq!(k.deref, [1, 3]);
        assert_eq!(k.deref_bytes, [8, 4]);
        assert_eq!((k.read_arg, k.read_slot, k.read_offset), (0, 1, 0x10));
        assert!(k.reads_memory());
        assert!(
            !Capture::default().to_kernel().reads_memory(),
            "nothing read unless asked"
        );
    }

    #[test]
    fn a_stream_reads_its_primary_connection_and_that_connections_client() {
        // ap_process_request(r): r->connection->master, and its client.
        let c = Capture {
            args: 1,
            read: Some(FieldRead {
                arg: 0,
                offset: 8,
                then: Some(192),
            }),
            client: Some(ClientRead {
                arg: None,
                read: true,
            }),
            ..Default::default()
        };
        c.check().unwrap();
        let k = c.to_kernel();
        assert_eq!(
            (k.read_offset, k.read_offset2, k.read_hops, k.read_slot),
            (8, 192, 2, 1)
        );
        assert_eq!((k.client_arg, k.client_from_read), (NO_ARG, 1));
        assert_eq!(Capture::default().to_kernel().read_hops, 1);
        let both = Capture {
            client: Some(ClientRead {
                arg: Some(0),
                read: true,
            }),
            ..c.clone()
        };
        assert!(both.check().unwrap_err().contains("either"));
        let no_read = Capture { read: None, ..c };
        assert!(no_read.check().unwrap_err().contains("needs a field read"));
    }

    #[test]
    fn impossible_settings_are_refused() {
        let bad = |c: Capture| c.check().unwrap_err();
        assert!(bad(Capture {
            args: 4,
            ..Default::default()
        })
        .contains("at most 3"));
        let d = Deref { arg: 1, bytes: 8 };
        assert!(bad(Capture {
            deref: vec![d, d, d],
            ..Default::default()
        })
        .contains("at most 2"));
        assert!(bad(Capture {
            deref: vec![Deref { arg: 6, bytes: 8 }],
            ..Default::default()
        })
        .contains("0..=5"));
        assert!(bad(Capture {
            deref: vec![Deref { arg: 1, bytes: 2 }],
            ..Default::default()
        })
        .contains("4 or 8"));
        let read = Some(FieldRead {
            arg: 0,
            offset: 8,
            then: None,
        });
        assert!(bad(Capture {
            args: 3,
            read,
            ..Default::default()
        })
        .contains("free entry slot"));
    }
}
