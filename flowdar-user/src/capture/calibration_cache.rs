//! The overhead calibration, kept on disk per kernel, binary, CPU and
//! attach mechanism, so that a recording does not spend its launch on it
//! (issue #28: calls that begin while a recording starts are invisible to
//! it, and the calibration took most of the start).
//!
//! One JSON file, `calibration.json`, in `$FLOWDAR_CACHE_DIR`, else (root)
//! `/var/cache/flowdar` (not the invoking user's home under `sudo -E`),
//! else `$XDG_CACHE_HOME/flowdar` or `$HOME/.cache/flowdar`. A missing,
//! unreadable or foreign file, an entry older than [`MAX_AGE_S`] or a
//! figure out of [`PLAUSIBLE_NS`] only means measuring again; a failed
//! write costs nothing but the next run's measurement. Two processes
//! storing at once may lose one's entry (the rename is atomic: a reader
//! never sees a torn file). `flowdar kernel` always measures and refreshes
//! the entry.
use std::{
    fs,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::Mechanism;

/// Entries kept: the newest, one per key.
const KEEP: usize = 16;
/// A week: machines change under a kernel (firmware, microcode, load).
pub const MAX_AGE_S: u64 = 7 * 24 * 3600;
/// What a probed or recorded system call can cost (0.2 to 19 µs measured
/// on the VMs here).
pub const PLAUSIBLE_NS: std::ops::Range<u64> = 50..1_000_000;

/// What was measured: a probed call of a function whose first instruction
/// is single-stepped, or one that begins with a `push`, or a system call
/// the lean capture records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stepped,
    Push,
    /// A recorded system call, hooked as asked.
    Syscall(super::SyscallHooks),
}

/// What a measurement depends on. Another kernel, binary or CPU, or
/// another attach mechanism, is another figure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    /// `uname -r`, the kernel's build string and its command line (which
    /// turns mitigations that change a trap's cost on and off).
    pub kernel: String,
    /// Flowdar's own binary: its GNU build id, else its size and mtime.
    pub binary: String,
    /// CPU model and count.
    pub cpu: String,
    pub mechanism: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    #[serde(flatten)]
    key: Key,
    ns_per_call: u64,
    measured_unix: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    entries: Vec<Entry>,
}

impl Key {
    /// This machine's key for `mechanism` and `kind` (the single-stepped
    /// call keeps the mechanism's bare name, as before the kinds were told
    /// apart).
    pub fn here(mechanism: Mechanism, kind: Kind) -> Self {
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default().trim().to_owned();
        Key {
            kernel: format!(
                "{} {} [{}]",
                read("/proc/sys/kernel/osrelease"),
                read("/proc/sys/kernel/version"),
                read("/proc/cmdline")
            ),
            binary: own_binary(),
            cpu: cpu_model(&read("/proc/cpuinfo")),
            mechanism: match kind {
                Kind::Stepped => mechanism.name().to_owned(),
                Kind::Push => format!("{}, push first", mechanism.name()),
                // The tracepoints keep the key of the figures measured
                // before there was a choice: they were theirs.
                Kind::Syscall(super::SyscallHooks::Tracepoint) => {
                    format!("{}, system call", mechanism.name())
                }
                Kind::Syscall(hooks) => {
                    format!("{}, system call ({})", mechanism.name(), hooks.name())
                }
            },
        }
    }
}

/// Where the cache lives, if anywhere.
pub fn path() -> Option<PathBuf> {
    let var = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    let root = rustix::process::geteuid().is_root();
    let dir = var("FLOWDAR_CACHE_DIR")
        .or_else(|| root.then(|| PathBuf::from("/var/cache/flowdar")))
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("flowdar")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/flowdar")))?;
    Some(dir.join("calibration.json"))
}

/// The cached cost for `key`, if one was stored less than [`MAX_AGE_S`]
/// before `now_unix` and is plausible.
pub fn lookup(file: &Path, key: &Key, now_unix: u64) -> Option<u64> {
    let text = fs::read_to_string(file).ok()?;
    let f: File = serde_json::from_str(&text).ok()?;
    f.entries
        .iter()
        .find(|e| &e.key == key)
        .filter(|e| now_unix.saturating_sub(e.measured_unix) < MAX_AGE_S)
        .map(|e| e.ns_per_call)
        .filter(|ns| PLAUSIBLE_NS.contains(ns))
}

/// [`lookup`] for a figure that may have been stored as not measurable
/// here (0): `Some(None)` then, `Some(Some(ns))` for a plausible figure,
/// `None` when there is nothing usable.
pub fn lookup_or_unmeasured(file: &Path, key: &Key, now_unix: u64) -> Option<Option<u64>> {
    let text = fs::read_to_string(file).ok()?;
    let f: File = serde_json::from_str(&text).ok()?;
    let e = f
        .entries
        .iter()
        .find(|e| &e.key == key)
        .filter(|e| now_unix.saturating_sub(e.measured_unix) < MAX_AGE_S)?;
    match e.ns_per_call {
        0 => Some(None),
        ns => PLAUSIBLE_NS.contains(&ns).then_some(Some(ns)),
    }
}

/// Seconds since the epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Stores `ns_per_call` for `key` (replacing its old entry), atomically:
/// a concurrent reader sees the old file or the new one.
pub fn store(file: &Path, key: &Key, ns_per_call: u64) -> std::io::Result<()> {
    let mut f: File = fs::read_to_string(file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    f.entries.retain(|e| &e.key != key);
    f.entries.push(Entry {
        key: key.clone(),
        ns_per_call,
        measured_unix: now_unix(),
    });
    let excess = f.entries.len().saturating_sub(KEEP);
    f.entries.drain(..excess);
    let dir = file.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer_pretty(tmp.as_file(), &f)?;
    tmp.persist(file).map_err(|e| e.error)?;
    Ok(())
}

/// "build-id:HEX" of the running binary, or "size:N mtime:S" without one.
fn own_binary() -> String {
    let Ok(exe) = fs::File::open("/proc/self/exe") else {
        return String::new();
    };
    // Read lazily: the release binary with its debug info is ~170 MB, and
    // the build id is a note near its start.
    let cache = object::ReadCache::new(&exe);
    let id = object::File::parse(&cache).ok().and_then(|f| {
        object::Object::build_id(&f)
            .ok()
            .flatten()
            .map(<[u8]>::to_vec)
    });
    if let Some(id) = id {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        return format!("build-id:{hex}");
    }
    exe.metadata().map_or(String::new(), |m| {
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        format!("size:{} mtime:{mtime}", m.len())
    })
}

/// "MODEL x N" from /proc/cpuinfo's text.
fn cpu_model(cpuinfo: &str) -> String {
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("", |(_, m)| m.trim());
    let n = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    format!("{model} x {n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(mechanism: &str) -> Key {
        Key {
            kernel: "6.18.44 #1 SMP".into(),
            binary: "build-id:abcd".into(),
            cpu: "Some CPU x 2".into(),
            mechanism: mechanism.into(),
        }
    }

    #[test]
    fn a_stored_cost_is_found_for_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/calibration.json");
        assert_eq!(lookup(&file, &key("perf_link"), now_unix()), None);
        store(&file, &key("perf_link"), 9_800).unwrap();
        store(&file, &key("uprobe_multi"), 7_100).unwrap();
        store(&file, &key("perf_link"), 10_200).unwrap();
        assert_eq!(lookup(&file, &key("perf_link"), now_unix()), Some(10_200));
        assert_eq!(lookup(&file, &key("uprobe_multi"), now_unix()), Some(7_100));
        let other_kernel = Key {
            kernel: "6.1.0-57 #1 SMP".into(),
            ..key("perf_link")
        };
        assert_eq!(lookup(&file, &other_kernel, now_unix()), None);
        let text = fs::read_to_string(&file).unwrap();
        assert_eq!(text.matches("\"ns_per_call\"").count(), 2, "{text}");
    }

    #[test]
    fn a_foreign_file_is_measured_over() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("calibration.json");
        fs::write(&file, "not json").unwrap();
        assert_eq!(lookup(&file, &key("perf_link"), now_unix()), None);
        store(&file, &key("perf_link"), 5_000).unwrap();
        assert_eq!(lookup(&file, &key("perf_link"), now_unix()), Some(5_000));
    }

    #[test]
    fn the_oldest_entries_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("calibration.json");
        for i in 0..KEEP + 3 {
            store(&file, &key(&format!("m{i}")), 1_000 + i as u64).unwrap();
        }
        assert_eq!(lookup(&file, &key("m0"), now_unix()), None);
        assert_eq!(lookup(&file, &key("m2"), now_unix()), None);
        assert_eq!(lookup(&file, &key("m3"), now_unix()), Some(1_003));
        assert_eq!(
            lookup(&file, &key(&format!("m{}", KEEP + 2)), now_unix()),
            Some(1_000 + KEEP as u64 + 2)
        );
    }

    #[test]
    fn old_or_implausible_figures_are_measured_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("calibration.json");
        store(&file, &key("perf_link"), 9_800).unwrap();
        let week_later = now_unix() + MAX_AGE_S;
        assert_eq!(lookup(&file, &key("perf_link"), week_later), None);
        store(&file, &key("perf_link"), 3).unwrap();
        assert_eq!(lookup(&file, &key("perf_link"), now_unix()), None);
    }

    #[test]
    fn a_figure_stored_as_not_measurable_is_found_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("calibration.json");
        let k = key("perf_link, system call");
        assert_eq!(lookup_or_unmeasured(&file, &k, now_unix()), None);
        store(&file, &k, 0).unwrap();
        assert_eq!(lookup_or_unmeasured(&file, &k, now_unix()), Some(None));
        assert_eq!(lookup(&file, &k, now_unix()), None);
        store(&file, &k, 210).unwrap();
        assert_eq!(lookup_or_unmeasured(&file, &k, now_unix()), Some(Some(210)));
        store(&file, &k, 3).unwrap();
        assert_eq!(lookup_or_unmeasured(&file, &k, now_unix()), None);
        let week_later = now_unix() + MAX_AGE_S;
        assert_eq!(lookup_or_unmeasured(&file, &k, week_later), None);
    }

    #[test]
    fn the_cpu_is_its_model_and_count() {
        let info = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(info), "AMD EPYC 7B13 x 2");
    }

    #[test]
    fn this_binary_has_an_identity() {
        assert!(!own_binary().is_empty());
    }
}
