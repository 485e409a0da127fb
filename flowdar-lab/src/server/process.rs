//! The processes the lab starts: each dies with the thread that started
//! it; and whether a PID runs.
use std::{os::unix::process::CommandExt as _, process::Command};

use rustix::process::{getpid, getppid, set_parent_process_death_signal, Signal};

/// The kernel sends `signal` to the child when the thread that spawned it
/// ends, however the process dies.
pub(crate) fn die_with_parent(cmd: &mut Command, signal: Signal) {
    let creator = getpid();
    // SAFETY: only async-signal-safe calls between fork and exec: prctl(2)
    // and getppid(2) (rustix makes them as plain syscalls, without
    // allocating or locking), and _exit(2).
    unsafe {
        cmd.pre_exec(move || {
            set_parent_process_death_signal(Some(signal))?;
            // The creator may have died before the prctl took effect.
            if getppid() != Some(creator) {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Whether process `pid` runs: it exists and is not a zombie (the state
/// in /proc/PID/stat follows the command name's closing parenthesis).
pub(crate) fn is_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .is_some_and(|(_, state)| !state.trim_start().starts_with('Z'))
}
