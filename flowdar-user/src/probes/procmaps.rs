//! The files a process maps (`/proc/PID/maps`), seen through its mount
//! namespace (`/proc/PID/root`), so a server in a container resolves too.
use std::path::{Path, PathBuf};

/// A file mapped executable by the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedFile {
    /// The path as the target sees it (from its maps).
    pub path: PathBuf,
    /// The same file reached from our mount namespace.
    pub host_path: PathBuf,
}

/// Where we reach a file the target maps. Normally through the target's own
/// root (`/proc/PID/root/PATH`): a container's files, whatever our mount
/// namespace holds. A process that chroot()ed into a directory we can see
/// has its maps written relative to our root (`/srv/jail/usr/sbin/httpd`),
/// so that prefix, the target of the `/proc/PID/root` link, is taken off
/// (and the target's own view, `/usr/sbin/httpd`, kept as its path). A
/// candidate is taken only if it is the mapped inode.
fn host_path(pid: u32, path: &Path, id: Option<FileId>) -> (PathBuf, PathBuf) {
    let proc_root = PathBuf::from(format!("/proc/{pid}/root"));
    let relative = path.strip_prefix("/").unwrap_or(path);
    // (the path as the target sees it, where we reach it)
    let mut candidates = vec![(path.to_path_buf(), proc_root.join(relative))];
    if let Ok(jail) = std::fs::read_link(&proc_root) {
        if let Ok(inside) = path.strip_prefix(&jail) {
            if jail != Path::new("/") {
                candidates.push((Path::new("/").join(inside), proc_root.join(inside)));
            }
        }
    }
    let meta = |p: &Path| std::fs::metadata(p).ok();
    let same_file = |p: &Path| id.is_some_and(|id| meta(p).is_some_and(|m| id.is(&m)));
    // Some filesystems (9p, overlays) report another device in the maps
    // than stat does: fall back to the inode alone.
    let same_inode = |p: &Path| {
        id.is_some_and(|id| {
            meta(p).is_some_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == id.inode)
        })
    };
    candidates
        .iter()
        .find(|(_, host)| same_file(host))
        .or_else(|| candidates.iter().find(|(_, host)| same_inode(host)))
        .unwrap_or(&candidates[0])
        .clone()
}

/// A mapped file's identity as /proc/PID/maps gives it: device
/// (`major:minor`, hex) and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    major: u32,
    minor: u32,
    inode: u64,
}

impl FileId {
    fn parse(dev: &str, inode: &str) -> Option<Self> {
        let (major, minor) = dev.split_once(':')?;
        let id = Self {
            major: u32::from_str_radix(major, 16).ok()?,
            minor: u32::from_str_radix(minor, 16).ok()?,
            inode: inode.parse().ok()?,
        };
        (id.inode != 0).then_some(id)
    }

    fn is(&self, m: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::MetadataExt;
        m.ino() == self.inode
            && libc::major(m.dev()) == self.major
            && libc::minor(m.dev()) == self.minor
    }
}

/// The executable file mappings of one process.
#[derive(Debug, Clone)]
pub struct ProcMaps {
    pub pid: u32,
    pub files: Vec<MappedFile>,
}

impl ProcMaps {
    pub fn read(pid: u32) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
        Ok(Self::parse(pid, &text))
    }

    /// Parses maps text; only executable file-backed mappings are kept.
    pub fn parse(pid: u32, text: &str) -> Self {
        let mut files: Vec<MappedFile> = Vec::new();
        // Paths as the maps spell them (before a chroot prefix comes off).
        let mut seen: Vec<PathBuf> = Vec::new();
        for line in text.lines() {
            // address perms offset dev inode path (path may contain spaces)
            let mut parts = line.splitn(6, ' ');
            let (Some(_), Some(perms), Some(_), Some(dev), Some(inode), Some(rest)) = (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            ) else {
                continue;
            };
            let path = rest.trim_start();
            if !perms.contains('x') || !path.starts_with('/') || path.ends_with(" (deleted)") {
                continue;
            }
            let path = PathBuf::from(path);
            if seen.contains(&path) {
                continue;
            }
            seen.push(path.clone());
            let id = FileId::parse(dev, inode);
            let (path, host_path) = host_path(pid, &path, id);
            files.push(MappedFile { path, host_path });
        }
        Self { pid, files }
    }

    /// The mapped file `target` names: a path the process maps, or a short
    /// name matching a mapped file's name (`libapr-1` -> `libapr-1.so.0`,
    /// `apache2` -> `/usr/sbin/apache2`). `Err` lists the candidates seen.
    pub fn find(&self, target: &str) -> Result<&MappedFile, Vec<&MappedFile>> {
        if target.contains('/') {
            let want = Path::new(target);
            let canon = std::fs::canonicalize(want).ok();
            return self
                .files
                .iter()
                .find(|f| f.path == want || Some(&f.path) == canon.as_ref())
                .ok_or_else(Vec::new);
        }
        let matches: Vec<&MappedFile> = self
            .files
            .iter()
            .filter(|f| {
                let name = f.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name == target
                    || name
                        .strip_prefix(target)
                        .is_some_and(|rest| rest.starts_with(".so") || rest.starts_with('.'))
            })
            .collect();
        match matches.as_slice() {
            [one] => Ok(one),
            _ => Err(matches),
        }
    }

    /// The main executable (first mapping).
    pub fn executable(&self) -> Option<&MappedFile> {
        self.files.first()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a39000 r--p 00000000 fe:01 1234 /usr/sbin/apache2
55d0c0a39000-55d0c0a88000 r-xp 00039000 fe:01 1234 /usr/sbin/apache2
7f1c2a000000-7f1c2a020000 r-xp 00004000 fe:01 99 /usr/lib/x86_64-linux-gnu/libapr-1.so.0.7.2
7f1c2b000000-7f1c2b020000 r-xp 00004000 fe:01 98 /usr/lib/x86_64-linux-gnu/libaprutil-1.so.0.6.3
7f1c2c000000-7f1c2c020000 rw-p 00000000 00:00 0 [heap]
7f1c2d000000-7f1c2d020000 r-xp 00000000 fe:01 97 /tmp/gone (deleted)
";

    #[test]
    fn keeps_executable_file_mappings_once() {
        let m = ProcMaps::parse(42, MAPS);
        let paths: Vec<_> = m.files.iter().map(|f| f.path.to_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "/usr/sbin/apache2",
                "/usr/lib/x86_64-linux-gnu/libapr-1.so.0.7.2",
                "/usr/lib/x86_64-linux-gnu/libaprutil-1.so.0.6.3"
            ]
        );
        assert_eq!(
            m.files[0].host_path,
            Path::new("/proc/42/root/usr/sbin/apache2")
        );
    }

    #[test]
    fn short_names_match_one_library() {
        let m = ProcMaps::parse(42, MAPS);
        assert_eq!(
            m.find("libapr-1").unwrap().path,
            Path::new("/usr/lib/x86_64-linux-gnu/libapr-1.so.0.7.2")
        );
        assert_eq!(
            m.find("apache2").unwrap().path,
            Path::new("/usr/sbin/apache2")
        );
        assert!(m.find("libapr").unwrap_err().is_empty());
        assert!(m.find("libssl").is_err());
        assert_eq!(
            m.find("/usr/sbin/apache2").unwrap().path,
            Path::new("/usr/sbin/apache2")
        );
        assert!(m.find("/usr/bin/nginx").is_err());
    }

    #[test]
    fn a_file_is_known_by_its_device_and_inode() {
        use std::os::unix::fs::MetadataExt;
        let exe = std::env::current_exe().unwrap();
        let m = std::fs::metadata(&exe).unwrap();
        let dev = format!("{:x}:{:x}", libc::major(m.dev()), libc::minor(m.dev()));
        let id = FileId::parse(&dev, &m.ino().to_string()).unwrap();
        assert!(id.is(&m));
        let other = std::fs::metadata("/proc/self/maps").unwrap();
        assert!(!id.is(&other));
        assert_eq!(FileId::parse("00:00", "0"), None, "anonymous mappings");
    }

    #[test]
    fn our_own_files_are_reached_through_our_root() {
        let maps = ProcMaps::read(std::process::id()).unwrap();
        let exe = std::env::current_exe().unwrap();
        let me = maps.files.iter().find(|f| f.path == exe).unwrap();
        assert_eq!(
            me.host_path,
            Path::new(&format!("/proc/{}/root", std::process::id()))
                .join(exe.strip_prefix("/").unwrap())
        );
    }
}
