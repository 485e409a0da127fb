//! uftrace's on-disk records (a `uftrace record` directory, uftrace 0.13,
//! file version 3-4): the `info` header, `task.txt`, and the per-thread
//! `<tid>.dat` streams of 16-byte function records. Layouts follow
//! uftrace's `uftrace.h` (`struct uftrace_file_header`,
//! `struct uftrace_record`) and were checked against `uftrace dump --debug`.
use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufReader, Read},
    path::{Path, PathBuf},
};

use super::UftraceError;

/// `UFTRACE_MAGIC_STR`, NUL-terminated.
const FILE_MAGIC: &[u8; 8] = b"Ftrace!\0";
/// `struct uftrace_file_header` up to `info_mask`.
const FILE_HEADER_MIN: usize = 32;
/// Every record carries this in its 3 magic bits (`RECORD_MAGIC`).
const RECORD_MAGIC: u64 = 5;
/// `UFTRACE_FEAT_SYM_REL_ADDR`: symbol files hold addresses relative to the
/// start of their module's mapping.
pub const FEAT_SYM_REL_ADDR: u64 = 1 << 5;

/// What the `info` file says about the run.
#[derive(Debug, Default, Clone)]
pub struct Info {
    pub features: u64,
    /// `key:value` lines after the binary header (`osinfo:hostname`, ...).
    pub fields: BTreeMap<String, String>,
}

impl Info {
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }
}

pub fn read_info(dir: &Path) -> Result<Info, UftraceError> {
    let path = dir.join("info");
    let bytes = std::fs::read(&path).map_err(|source| UftraceError::Io {
        path: path.clone(),
        source,
    })?;
    let bad = |reason: String| UftraceError::Format {
        path: path.clone(),
        reason,
    };
    if bytes.len() < FILE_HEADER_MIN || &bytes[..8] != FILE_MAGIC {
        return Err(bad(
            "no `Ftrace!` magic: not a uftrace data directory".into()
        ));
    }
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let version = u32_at(8);
    let header_size = usize::from(u16::from_le_bytes([bytes[12], bytes[13]]));
    let (endian, class) = (bytes[14], bytes[15]);
    if !(3..=4).contains(&version) {
        return Err(bad(format!(
            "uftrace file version {version}; versions 3 and 4 are read"
        )));
    }
    if endian != 1 || class != 2 {
        return Err(bad(format!(
            "recorded on a {}-endian {}-bit machine; only little-endian 64-bit is read",
            if endian == 1 { "little" } else { "big" },
            if class == 2 { 64 } else { 32 }
        )));
    }
    if header_size < FILE_HEADER_MIN || header_size > bytes.len() {
        return Err(bad(format!("header size {header_size} is out of bounds")));
    }
    let features = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let mut fields = BTreeMap::new();
    for line in String::from_utf8_lossy(&bytes[header_size..]).lines() {
        if let Some((k, v)) = line.split_once(':') {
            // Multi-line keys (cpuinfo:desc=..) keep their first value only.
            fields.entry(k.to_string()).or_insert_with(|| v.to_string());
            if let Some((sub, val)) = v.split_once('=') {
                fields.insert(format!("{k}:{sub}"), val.trim_matches('"').to_string());
            }
        }
    }
    Ok(Info { features, fields })
}

/// A `SESS` line: a process image (after exec) and its memory map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub ts_ns: u64,
    pub pid: u32,
    pub sid: String,
    pub exename: String,
}

/// `task.txt`: sessions, threads (tid -> pid) and forks (pid -> parent).
#[derive(Debug, Default, Clone)]
pub struct Tasks {
    pub sessions: Vec<Session>,
    pub threads: BTreeMap<u32, u32>,
    pub parents: BTreeMap<u32, u32>,
}

impl Tasks {
    /// The session a record of process `pid` at `ts` belongs to: the last
    /// one begun by that process by then, else its parent's (a fork runs its
    /// parent's image until it execs), else its first.
    pub fn session_of(&self, pid: u32, ts: u64) -> Option<&Session> {
        let mut p = pid;
        for _ in 0..64 {
            let begun = self.sessions.iter().rfind(|s| s.pid == p && s.ts_ns <= ts);
            if begun.is_some() {
                return begun;
            }
            match self.parents.get(&p) {
                Some(&parent) => p = parent,
                None => break,
            }
        }
        self.sessions.iter().find(|s| s.pid == pid)
    }
}

/// `SECONDS.NANOS` as nanoseconds.
fn timestamp(s: &str) -> Option<u64> {
    let (sec, frac) = s.split_once('.').unwrap_or((s, "0"));
    let frac = format!("{frac:0<9}");
    Some(sec.parse::<u64>().ok()? * 1_000_000_000 + frac.get(..9)?.parse::<u64>().ok()?)
}

/// The `key=value` fields of one task.txt line (values may be quoted).
fn fields(line: &str) -> BTreeMap<&str, &str> {
    let mut out = BTreeMap::new();
    let mut rest = line;
    while let Some((k, after)) = rest.split_once('=') {
        let key = k.rsplit(' ').next().unwrap_or(k);
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            q.split_once('"').unwrap_or((q, ""))
        } else {
            after.split_once(' ').unwrap_or((after, ""))
        };
        out.insert(key, value);
        rest = tail;
    }
    out
}

pub fn read_tasks(dir: &Path) -> Result<Tasks, UftraceError> {
    let path = dir.join("task.txt");
    let text = std::fs::read_to_string(&path).map_err(|source| UftraceError::Io {
        path: path.clone(),
        source,
    })?;
    let mut tasks = Tasks::default();
    for (n, line) in text.lines().enumerate() {
        let bad = |what: &str| UftraceError::Format {
            path: path.clone(),
            reason: format!("line {}: {what}: {line}", n + 1),
        };
        let f = fields(line);
        let num = |k: &str| f.get(k).and_then(|v| v.parse::<u32>().ok());
        let ts = f.get("timestamp").and_then(|v| timestamp(v));
        match line.split(' ').next().unwrap_or("") {
            "SESS" => tasks.sessions.push(Session {
                ts_ns: ts.ok_or_else(|| bad("no timestamp"))?,
                pid: num("pid").ok_or_else(|| bad("no pid"))?,
                sid: f.get("sid").ok_or_else(|| bad("no sid"))?.to_string(),
                exename: f.get("exename").unwrap_or(&"").to_string(),
            }),
            "TASK" => {
                let tid = num("tid").ok_or_else(|| bad("no tid"))?;
                tasks
                    .threads
                    .insert(tid, num("pid").ok_or_else(|| bad("no pid"))?);
            }
            "FORK" => {
                if let (Some(p), Some(pp)) = (num("pid"), num("ppid")) {
                    tasks.parents.insert(p, pp);
                }
            }
            _ => {} // DLOP and future line kinds: nothing we use.
        }
    }
    // A forked child gets a FORK line but no TASK line: its main thread is
    // the child itself. Any other `<tid>.dat` is read as its own process.
    for &child in tasks.parents.keys() {
        tasks.threads.entry(child).or_insert(child);
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let tid = name
                .to_str()
                .and_then(|n| n.strip_suffix(".dat")?.parse::<u32>().ok());
            if let Some(tid) = tid {
                tasks.threads.entry(tid).or_insert(tid);
            }
        }
    }
    tasks.sessions.sort_by_key(|s| s.ts_ns);
    if tasks.sessions.is_empty() {
        return Err(UftraceError::Format {
            path,
            reason: "no SESS line: the recording has no process".into(),
        });
    }
    Ok(tasks)
}

/// `enum uftrace_record_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Entry,
    Exit,
    Lost,
    Event,
}

/// One `struct uftrace_record`: `u64 time`, then `type:2 more:1 magic:3
/// depth:10 addr:48` (low bits first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub ts_ns: u64,
    pub kind: RecordKind,
    /// Arguments or a return value follow the record.
    pub more: bool,
    pub depth: u16,
    /// The function's run-time address (for `Lost`: how many were lost).
    pub addr: u64,
}

impl Record {
    pub fn decode(b: &[u8; 16]) -> Option<Self> {
        let ts_ns = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        let w = u64::from_le_bytes(b[8..].try_into().expect("8 bytes"));
        if (w >> 3) & 7 != RECORD_MAGIC {
            return None;
        }
        Some(Self {
            ts_ns,
            kind: match w & 3 {
                0 => RecordKind::Entry,
                1 => RecordKind::Exit,
                2 => RecordKind::Lost,
                _ => RecordKind::Event,
            },
            more: (w >> 2) & 1 == 1,
            depth: ((w >> 6) & 0x3ff) as u16,
            addr: w >> 16,
        })
    }
}

/// The records of one thread's `<tid>.dat`, in file (= time) order.
pub struct TaskStream {
    pub tid: u32,
    path: PathBuf,
    file: BufReader<File>,
    offset: u64,
}

impl TaskStream {
    pub fn open(dir: &Path, tid: u32) -> Result<Self, UftraceError> {
        let path = dir.join(format!("{tid}.dat"));
        let file = File::open(&path).map_err(|source| UftraceError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            tid,
            path,
            file: BufReader::new(file),
            offset: 0,
        })
    }

    /// The next record; `None` at the end of the file.
    pub fn next_record(&mut self) -> Result<Option<Record>, UftraceError> {
        let mut b = [0u8; 16];
        match self.file.read_exact(&mut b) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(source) => {
                return Err(UftraceError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
        let at = self.offset;
        self.offset += 16;
        let rec = Record::decode(&b).ok_or_else(|| UftraceError::Format {
            path: self.path.clone(),
            reason: format!("no record magic at byte {at}: the file is damaged"),
        })?;
        if rec.more {
            // Their length depends on the argument spec of the recording
            // (-A/-R/-a); reading it is not implemented, and guessing would
            // misread every record after it.
            return Err(UftraceError::Unsupported {
                path: self.path.clone(),
                what: "arguments or return values (recorded with -A, -R or -a): record without them to import".into(),
            });
        }
        Ok(Some(rec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_records_as_uftrace_dump_shows_them() {
        // From `uftrace dump --debug`: "[entry] strtol(555f4f86b050) depth: 1".
        let b = [
            0x15, 0x80, 0x39, 0x61, 0x64, 0x0a, 0, 0, 0x68, 0x00, 0x50, 0xb0, 0x86, 0x4f, 0x5f,
            0x55,
        ];
        let r = Record::decode(&b).unwrap();
        assert_eq!(
            (r.kind, r.more, r.depth, r.addr),
            (RecordKind::Entry, false, 1, 0x555f_4f86_b050)
        );
        assert_eq!(r.ts_ns, 0x0a64_6139_8015);
        let mut exit = b;
        exit[8] = 0x69;
        assert_eq!(Record::decode(&exit).unwrap().kind, RecordKind::Exit);
        exit[8] = 0x00; // magic bits cleared
        assert_eq!(Record::decode(&exit), None);
    }

    #[test]
    fn task_lines_and_timestamps() {
        let f = fields(r#"SESS timestamp=11426.243959666 pid=17009 sid=1ef7 exename="/tmp/a b""#);
        assert_eq!(f["exename"], "/tmp/a b");
        assert_eq!(f["pid"], "17009");
        assert_eq!(timestamp("11426.243959666"), Some(11_426_243_959_666));
        assert_eq!(timestamp("1.5"), Some(1_500_000_000));
        assert_eq!(timestamp("x.1"), None);
    }
}
