//! tracefs: mounted if it is not (fresh VMs often lack it), and read for the
//! field offsets of the scheduler tracepoints, which move between kernels.
use std::path::{Path, PathBuf};

use flowdar_common::{ExitLayout, ForkLayout};

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted and mounting it on {TRACEFS} failed (mount it with `mount -t tracefs nodev {TRACEFS}`)")]
    Mount(#[source] std::io::Error),
    #[error("cannot read tracepoint format {path} (kernel without CONFIG_FTRACE?)")]
    Format {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tracepoint format {path} has no field `{field}`")]
    Field { path: PathBuf, field: String },
}

/// The tracefs root, mounting it on `/sys/kernel/tracing` if needed.
pub fn ensure_mounted() -> Result<PathBuf, TracefsError> {
    for root in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(root).join("events").is_dir() {
            return Ok(root.into());
        }
    }
    rustix::mount::mount(
        "nodev",
        TRACEFS,
        "tracefs",
        rustix::mount::MountFlags::empty(),
        None::<&std::ffi::CStr>,
    )
    .map_err(|e| TracefsError::Mount(e.into()))?;
    Ok(TRACEFS.into())
}

/// Offset of `field` in a tracepoint's format description, if present.
pub fn field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let line = line.trim();
        let decl = line.strip_prefix("field:")?.split(';').next()?;
        let name = decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        let off = line
            .split(';')
            .find_map(|p| p.trim().strip_prefix("offset:"))?;
        off.trim().parse().ok()
    })
}

fn read_format(root: &Path, group: &str, name: &str) -> Result<(PathBuf, String), TracefsError> {
    let path = root.join("events").join(group).join(name).join("format");
    let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Format {
        path: path.clone(),
        source,
    })?;
    Ok((path, text))
}

/// Where `sched_process_fork` keeps its pids on this kernel.
pub fn fork_layout(root: &Path) -> Result<ForkLayout, TracefsError> {
    let (path, text) = read_format(root, "sched", "sched_process_fork")?;
    let get = |f: &str| {
        field_offset(&text, f).ok_or_else(|| TracefsError::Field {
            path: path.clone(),
            field: f.into(),
        })
    };
    Ok(ForkLayout {
        parent_pid_off: get("parent_pid")?,
        child_pid_off: get("child_pid")?,
    })
}

/// Where `sched_process_exit` keeps `group_dead` (absent before ~6.16).
pub fn exit_layout(root: &Path) -> Result<ExitLayout, TracefsError> {
    let (_, text) = read_format(root, "sched", "sched_process_exit")?;
    Ok(ExitLayout {
        group_dead_off: field_offset(&text, "group_dead").unwrap_or(u32::MAX),
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORK_6_18: &str = "name: sched_process_fork
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;
\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;
";
    const FORK_OLD: &str = "\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;
\tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;
";

    #[test]
    fn finds_offsets_on_both_layouts() {
        assert_eq!(field_offset(FORK_6_18, "parent_pid"), Some(12));
        assert_eq!(field_offset(FORK_6_18, "child_pid"), Some(20));
        assert_eq!(field_offset(FORK_6_18, "child_comm"), Some(16));
        assert_eq!(field_offset(FORK_OLD, "child_pid"), Some(44));
        assert_eq!(field_offset(FORK_OLD, "parent_comm"), Some(8));
        assert_eq!(field_offset(FORK_OLD, "group_dead"), None);
    }
}
