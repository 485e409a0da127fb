//! System calls a probe file can name under `target = "kernel"` (lean
//! capture): their numbers on this architecture and what the kernel
//! program does with their arguments.
use flowdar_common::SyscallRole;

/// The target name that selects system calls instead of a mapped file.
pub const KERNEL_TARGET: &str = "kernel";

/// Name, number, role. Only socket calls a server makes on its
/// connections; `poll` stands for `ppoll` where there is no `poll`.
#[cfg(target_arch = "x86_64")]
const TABLE: &[(&str, u32, SyscallRole)] = &[
    ("read", 0, SyscallRole::Fd),
    ("write", 1, SyscallRole::Fd),
    ("close", 3, SyscallRole::Close),
    ("poll", 7, SyscallRole::Poll),
    ("readv", 19, SyscallRole::Fd),
    ("writev", 20, SyscallRole::Fd),
    ("sendfile", 40, SyscallRole::Fd),
    ("accept", 43, SyscallRole::Accept),
    ("sendto", 44, SyscallRole::Fd),
    ("recvfrom", 45, SyscallRole::Fd),
    ("sendmsg", 46, SyscallRole::Fd),
    ("recvmsg", 47, SyscallRole::Fd),
    ("shutdown", 48, SyscallRole::FdTwoArgs),
    ("accept4", 288, SyscallRole::Accept),
];

#[cfg(target_arch = "aarch64")]
const TABLE: &[(&str, u32, SyscallRole)] = &[
    ("close", 57, SyscallRole::Close),
    ("read", 63, SyscallRole::Fd),
    ("write", 64, SyscallRole::Fd),
    ("readv", 65, SyscallRole::Fd),
    ("writev", 66, SyscallRole::Fd),
    ("sendfile", 71, SyscallRole::Fd),
    ("ppoll", 73, SyscallRole::Poll),
    ("accept", 202, SyscallRole::Accept),
    ("sendto", 206, SyscallRole::Fd),
    ("recvfrom", 207, SyscallRole::Fd),
    ("shutdown", 210, SyscallRole::FdTwoArgs),
    ("sendmsg", 211, SyscallRole::Fd),
    ("recvmsg", 212, SyscallRole::Fd),
    ("accept4", 242, SyscallRole::Accept),
];

/// The number and role of system call `name`.
pub fn lookup(name: &str) -> Option<(u32, SyscallRole)> {
    let name = if cfg!(target_arch = "aarch64") && name == "poll" {
        "ppoll"
    } else {
        name
    };
    TABLE
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|&(_, nr, role)| (nr, role))
}

/// The name of `name`'s tracepoints (`syscalls/sys_enter_NAME`): the
/// kernel names some by their 64-bit variant.
pub fn tracepoint_name(name: &str) -> &str {
    match name {
        "sendfile" => "sendfile64",
        "poll" if cfg!(target_arch = "aarch64") => "ppoll",
        n => n,
    }
}

/// The role of the system call numbered `nr`.
pub fn role_of(nr: u32) -> Option<SyscallRole> {
    TABLE.iter().find(|(_, n, _)| *n == nr).map(|&(_, _, r)| r)
}

/// Every name a probe file may use, for error messages.
pub fn names() -> Vec<&'static str> {
    TABLE.iter().map(|(n, _, _)| *n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_numbers_and_back() {
        for name in names() {
            let (nr, role) = lookup(name).unwrap();
            assert_eq!(role_of(nr), Some(role), "{name}");
        }
        assert!(lookup("open").is_none());
        assert_eq!(lookup("accept4").map(|(_, r)| r), Some(SyscallRole::Accept));
    }
}
