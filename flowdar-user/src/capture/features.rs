//! Kernel features capture depends on, checked up front so an old or
//! stripped-down kernel gets one clear sentence instead of a verifier log or
//! an `EINVAL` from deep inside the loader.
//!
//! Needed: Linux 5.15+ (BPF ring buffer 5.8, `bpf_get_attach_cookie` for
//! uprobes 5.15) and uprobes (CONFIG_UPROBES with the perf `uprobe` event
//! source). uprobe_multi links (6.6+) are used when present, with a
//! fallback to perf-event uprobes.

/// Oldest kernel with everything the programs use.
pub const MIN_KERNEL: (u32, u32) = (5, 15);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FeatureError {
    #[error("this kernel ({release}) is too old: flowdar needs Linux {}.{} or newer (BPF ring buffer, attach cookies on uprobes)", MIN_KERNEL.0, MIN_KERNEL.1)]
    TooOld { release: String },
    #[error("this kernel has no uprobes (CONFIG_UPROBES and the perf `uprobe` event source are needed; {path} is missing)")]
    NoUprobes { path: String },
}

/// The running kernel's release must be new enough and it must have uprobes.
pub fn check() -> Result<(), FeatureError> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    check_release(release.trim())?;
    let uprobe_pmu = "/sys/bus/event_source/devices/uprobe/type";
    if !std::path::Path::new(uprobe_pmu).exists() {
        return Err(FeatureError::NoUprobes {
            path: uprobe_pmu.into(),
        });
    }
    Ok(())
}

/// Accepts `6.18.44-fc-v669`, `5.15.0-91-generic`...; an unparsable release
/// is let through (the loader will say what fails).
pub fn check_release(release: &str) -> Result<(), FeatureError> {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>());
    let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) else {
        return Ok(());
    };
    if (major, minor) < MIN_KERNEL {
        return Err(FeatureError::TooOld {
            release: release.into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_judged_by_major_and_minor() {
        assert_eq!(check_release("6.18.44-fc-v669"), Ok(()));
        assert_eq!(check_release("5.15.0-91-generic"), Ok(()));
        assert_eq!(check_release("6.1"), Ok(()));
        let old = check_release("5.10.0-28-amd64").unwrap_err();
        assert_eq!(
            old.to_string(),
            "this kernel (5.10.0-28-amd64) is too old: flowdar needs Linux 5.15 or newer (BPF ring buffer, attach cookies on uprobes)"
        );
        assert!(check_release("4.19.0").is_err());
        assert_eq!(check_release("weird"), Ok(()));
    }

    #[test]
    fn this_machine_has_what_capture_needs() {
        assert_eq!(check(), Ok(()));
    }
}
