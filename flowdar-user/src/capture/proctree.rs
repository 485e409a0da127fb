//! The target's process tree as `/proc` shows it now: the seed of the
//! in-kernel filter (forks after that are followed in the kernel).
use std::collections::HashMap;

/// Parent pid from `/proc/PID/stat` (the field after the parenthesised comm,
/// which may itself hold spaces and parentheses).
pub fn parent_of(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// `root` and all its live descendants. Walks the kernel's per-thread
/// `children` lists (CONFIG_PROC_CHILDREN) from `root`, which costs the size
/// of the tree; without them, scans every process's parent in /proc.
pub fn descendants(root: u32) -> Vec<u32> {
    if std::path::Path::new(&format!("/proc/{root}/task/{root}/children")).exists() {
        let mut out = vec![root];
        let mut i = 0;
        while i < out.len() {
            let pid = out[i];
            for task in std::fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let children =
                    std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
                out.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok())
                        .filter(|c| !out.contains(c))
                        .collect::<Vec<_>>(),
                );
            }
            i += 1;
        }
        return out;
    }
    descendants_by_scan(root)
}

/// [`descendants`] by reading every process's parent from /proc.
fn descendants_by_scan(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .as_deref()
                .and_then(parent_of)
            {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c);
        }
        i += 1;
    }
    out
}

/// Adds `root`'s tree to a filter with `insert` so that no process slips
/// between reading /proc and the filter: the root goes in first (from then
/// on the kernel's fork tracepoint follows its children), then its
/// descendants, again until a pass over /proc finds none not yet added (a
/// child forked by a process not yet added shows up in the next pass).
/// Returns every PID added.
pub fn seed<E>(root: u32, insert: &mut impl FnMut(u32) -> Result<(), E>) -> Result<Vec<u32>, E> {
    insert(root)?;
    let mut added = vec![root];
    loop {
        let fresh: Vec<u32> = descendants(root)
            .into_iter()
            .filter(|p| !added.contains(p))
            .collect();
        if fresh.is_empty() {
            return Ok(added);
        }
        for p in fresh {
            insert(p)?;
            added.push(p);
        }
    }
}

/// The process's command name, for messages.
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// `pid` as its own PID namespace numbers it (the last `NSpid` of
/// /proc/PID/status): 1 for a container's init; `pid` itself outside
/// containers or when the kernel does not say.
pub fn ns_pid(pid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|v| v.split_whitespace().last()?.parse().ok())
        })
        .unwrap_or(pid)
}

/// True while `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

/// What makes a server "the same server" after a restart: the same
/// executable file (device and inode, so an upgraded binary is told apart)
/// and the same command line. A recycled PID never matches by accident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerIdentity {
    pub exe: (u64, u64),
    pub cmdline: Vec<u8>,
}

impl ServerIdentity {
    pub fn of(pid: u32) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        Some(Self {
            exe: (meta.dev(), meta.ino()),
            cmdline,
        })
    }

    /// The command line as people read it.
    pub fn command(&self) -> String {
        String::from_utf8_lossy(&self.cmdline)
            .split('\0')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// How a restarted server was found, if it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restarted {
    /// Same binary, same command line: the root of its process tree.
    Same(u32),
    /// Same command line, but the executable is another file (upgraded).
    OtherBinary(u32),
}

/// Looks for a live process running `identity`'s command line whose parent
/// does not run it too (the new server's parent process), other than the
/// old server's processes in `exclude` (orphans may outlive their parent).
pub fn find_restarted(identity: &ServerIdentity, exclude: &[u32]) -> Option<Restarted> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if std::fs::read(format!("/proc/{pid}/cmdline"))
            .ok()
            .as_deref()
            == Some(&identity.cmdline[..])
            && !exclude.contains(&pid)
            && is_alive(pid)
        {
            found.push(pid);
        }
    }
    let parent_matches = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .as_deref()
            .and_then(parent_of)
            .is_some_and(|ppid| found.contains(&ppid))
    };
    let root = *found.iter().filter(|&&p| !parent_matches(p)).min()?;
    match ServerIdentity::of(root) {
        Some(id) if id.exe == identity.exe => Some(Restarted::Same(root)),
        Some(_) => Some(Restarted::OtherBinary(root)),
        None => None,
    }
}

/// Changes in a server's process tree seen by polling `/proc`: child
/// processes replaced by a graceful restart or recycled after
/// MaxConnectionsPerChild. (The kernel filter follows them anyway; this is
/// what the operator is told.)
#[derive(Debug, Default)]
pub struct TreeWatch {
    current: Vec<u32>,
    pub at_start: usize,
    pub started: usize,
    pub exited: usize,
}

/// One poll's difference.
#[derive(Debug, PartialEq, Eq)]
pub struct TreeChange {
    pub started: Vec<u32>,
    pub exited: Vec<u32>,
    /// Processes now in the tree.
    pub now: usize,
}

impl TreeWatch {
    pub fn new(root: u32) -> Self {
        let current = descendants(root);
        Self {
            at_start: current.len(),
            current,
            ..Default::default()
        }
    }

    /// Starts watching another root (a followed restart), counting its
    /// processes as started.
    pub fn reroot(&mut self, root: u32) {
        self.exited += self.current.len();
        self.current = descendants(root);
        self.started += self.current.len();
    }

    /// The processes seen at the last poll.
    pub fn current(&self) -> &[u32] {
        &self.current
    }

    pub fn poll(&mut self, root: u32) -> Option<TreeChange> {
        let now = descendants(root);
        let started: Vec<u32> = now
            .iter()
            .filter(|p| !self.current.contains(p))
            .copied()
            .collect();
        let exited: Vec<u32> = self
            .current
            .iter()
            .filter(|p| !now.contains(p))
            .copied()
            .collect();
        self.current = now;
        if started.is_empty() && exited.is_empty() {
            return None;
        }
        self.started += started.len();
        self.exited += exited.len();
        Some(TreeChange {
            started,
            exited,
            now: self.current.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ppid_past_odd_comms() {
        assert_eq!(parent_of("123 (apache2) S 1 123 123 0"), Some(1));
        assert_eq!(parent_of("9 (a) b (c) R 77 9 9 0"), Some(77));
    }

    #[test]
    fn children_lists_and_the_full_scan_agree() {
        // A shell with two children of its own: a tree no other test touches.
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & sleep 5 & wait"])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while descendants_by_scan(sh.id()).len() < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let mut walked = descendants(sh.id());
        let mut scanned = descendants_by_scan(sh.id());
        let _ = std::process::Command::new("pkill")
            .args(["-P", &sh.id().to_string()])
            .status();
        sh.kill().unwrap();
        sh.wait().unwrap();
        walked.sort_unstable();
        scanned.sort_unstable();
        assert_eq!(walked.len(), 3, "{walked:?}");
        assert_eq!(walked, scanned);
    }

    #[test]
    fn finds_a_child_of_ours() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let tree = descendants(std::process::id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(tree[0], std::process::id());
        assert!(tree.contains(&child.id()), "{tree:?}");
        assert!(!is_alive(child.id()));
        assert!(is_alive(std::process::id()));
    }

    #[test]
    fn seeding_adds_the_root_first_then_every_descendant_once() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let mut order = Vec::new();
        let added = seed(std::process::id(), &mut |p| {
            order.push(p);
            Ok::<_, ()>(())
        })
        .unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(order[0], std::process::id());
        assert!(order.contains(&child.id()));
        assert_eq!(order, added);
        let mut dedup = order.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(dedup.len(), order.len(), "each PID once");
    }
}
