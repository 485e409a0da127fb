//! One row of a trace's probe table, as the file stores it.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Capture;

/// A probed function: an event's `probe_id` indexes the header's table of
/// these. The tracer converts its resolver's probes into this type; the
/// fields are the file's, so renaming one is a format change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceProbe {
    /// Index in the probe table (the attach cookie).
    pub id: u32,
    /// The symbol as the object names it (possibly mangled).
    pub function: String,
    /// The file as the target process sees it.
    pub path: PathBuf,
    /// The file the probe was attached to (through `/proc/PID/root`).
    pub attach_path: PathBuf,
    /// Link-time virtual address of the function.
    pub address: u64,
    /// Offset of the function in the file: the uprobe attach point.
    pub file_offset: u64,
    /// What the probe captured.
    #[serde(default)]
    pub capture: Capture,
    /// Matched by a pattern (skipped if the kernel refused it).
    #[serde(default)]
    pub optional: bool,
    /// `file:line` of the definition, when DWARF was found.
    #[serde(default)]
    pub source: Option<String>,
    /// Parameter names, when DWARF was found.
    #[serde(default)]
    pub params: Vec<String>,
}

/// The path of a system call's probe (lean capture): syscall probes are
/// kernel tracepoints, not functions in a file; their `address` is the
/// syscall number.
pub const KERNEL_PATH: &str = "[kernel]";

impl TraceProbe {
    /// A system call watched through the kernel's syscall tracepoints.
    pub fn syscall(id: u32, name: &str, nr: u32, capture: Capture) -> Self {
        Self {
            id,
            function: name.into(),
            path: KERNEL_PATH.into(),
            attach_path: KERNEL_PATH.into(),
            address: u64::from(nr),
            file_offset: 0,
            capture,
            optional: false,
            source: None,
            params: Vec::new(),
        }
    }

    /// Whether this probe is a system call (lean capture), not a uprobe.
    pub fn is_syscall(&self) -> bool {
        self.path.as_os_str() == KERNEL_PATH
    }

    /// The function's name as people read it (demangled).
    pub fn display_name(&self) -> String {
        crate::demangle(&self.function)
    }

    /// The file name of the object it lives in (`apache2`, `libapr-1.so.0.7.2`).
    pub fn object_name(&self) -> String {
        self.path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    }
}
