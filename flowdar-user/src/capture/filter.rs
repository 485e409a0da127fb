//! The in-kernel process filter as user space sees it: the `TARGETS`
//! bitmap over pids (bit `pid % 64` of word `pid / 64`), mapped into this
//! process (`BPF_F_MMAPABLE`) so that seeding it uses the same atomic bit
//! operations as the kernel's fork and exit programs: a fork the kernel
//! records while user space seeds is never overwritten.
use std::{
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

/// The most pids a 64-bit kernel hands out (`PID_MAX_LIMIT`, 4 Mi):
/// `kernel.pid_max` can be raised to it at any time, and from Linux 6.14
/// differs per PID namespace, so the bitmap covers them all (512 KiB).
pub const PID_MAX_LIMIT: u32 = 1 << 22;

/// Pids the filter covers: every pid, or those below `capacity`, which
/// tests use to see the filter refuse a fork.
pub fn pid_limit(capacity: Option<u32>) -> u32 {
    capacity.map_or(PID_MAX_LIMIT, |c| c.min(PID_MAX_LIMIT))
}

/// The bitmap's words for pids below `limit`.
pub fn words_for(limit: u32) -> u32 {
    limit.div_ceil(64).max(1)
}

/// `TARGETS`, mapped.
pub struct PidFilter {
    words: NonNull<AtomicU64>,
    limit: u32,
    bytes: usize,
}

/// A pid past the filter's bitmap.
#[derive(Debug, thiserror::Error)]
#[error("PID {pid} is beyond the process filter's {limit} pids (--filter-capacity)")]
pub struct BeyondFilter {
    pub pid: u32,
    pub limit: u32,
}

impl PidFilter {
    /// Maps `map`, the loaded `TARGETS` array for pids below `limit`.
    pub fn map(map: &MapData, limit: u32) -> std::io::Result<Self> {
        let len = map.info().map_err(std::io::Error::other)?.max_entries() as usize;
        if len < words_for(limit) as usize {
            return Err(std::io::Error::other(
                "the filter map is smaller than its pid limit",
            ));
        }
        let page = rustix::param::page_size();
        let bytes = (len * 8).div_ceil(page) * page;
        // SAFETY: a fresh shared mapping of the map's fd, as long as the
        // array (the kernel refuses a longer one); unmapped on drop.
        let addr = unsafe {
            mmap(
                std::ptr::null_mut(),
                bytes,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                map.fd(),
                0,
            )
        }?;
        let words = NonNull::new(addr.cast::<AtomicU64>()).ok_or(std::io::ErrorKind::Other)?;
        Ok(Self {
            words,
            limit,
            bytes,
        })
    }

    fn word(&self, pid: u32) -> Result<&AtomicU64, BeyondFilter> {
        if pid >= self.limit {
            return Err(BeyondFilter {
                pid,
                limit: self.limit,
            });
        }
        let i = (pid / 64) as usize;
        // SAFETY: `i` is inside the mapping, which lives as long as `self`;
        // the kernel only touches these words atomically too.
        Ok(unsafe { &*self.words.as_ptr().add(i) })
    }

    pub fn add(&self, pid: u32) -> Result<(), BeyondFilter> {
        self.word(pid)?.fetch_or(1 << (pid % 64), Ordering::SeqCst);
        Ok(())
    }

    pub fn remove(&self, pid: u32) {
        if let Ok(w) = self.word(pid) {
            w.fetch_and(!(1 << (pid % 64)), Ordering::SeqCst);
        }
    }
}

impl Drop for PidFilter {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, not used after this.
        let _ = unsafe { munmap(self.words.as_ptr().cast(), self.bytes) };
    }
}
