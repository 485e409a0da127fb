//! How uprobes are attached, chosen on the command line of `record`, `demo`
//! and `experiment` alike.
use clap::{Args, ValueEnum};

use crate::capture::{AttachMode, AttachPlan, SyscallHooks};

/// `--attach-mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum AttachModeArg {
    /// uprobe_multi links where this kernel creates them (Linux 6.6+,
    /// detected at start), perf-event uprobes otherwise.
    #[default]
    Auto,
    /// One uprobe_multi link per program and file: thousands of probes
    /// attach in tens of milliseconds and detach in under a second.
    Multi,
    /// One perf-event uprobe per function and program (any kernel with
    /// uprobes); each detach waits a kernel grace period.
    Perf,
}

/// `--syscall-hooks` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum SyscallHooksArg {
    /// The syscall tracepoints: while attached, every system call of every
    /// process takes the kernel's slower syscall path.
    #[default]
    Tracepoint,
    /// fentry/fexit programs on the kernel's syscall entry points (x86-64,
    /// BTF): other processes' calls cost a BPF trampoline, other system
    /// calls nothing. Opt-in: see README, "Kernels".
    Fentry,
    /// fentry/fexit where this kernel allows them, tracepoints otherwise.
    Auto,
}

#[derive(Debug, Args, Default, Clone)]
pub struct AttachArgs {
    /// How uprobes are attached. Which mode was used is printed, and kept in
    /// the trace (`flowdar info`); `flowdar kernel` shows what this kernel has.
    #[arg(long, value_enum, default_value_t = AttachModeArg::Auto)]
    pub attach_mode: AttachModeArg,
    /// Attach more than 200 functions with perf-event uprobes anyway
    /// (kernels before 6.6, or --attach-mode perf): detaching them takes
    /// minutes, one kernel grace period per uprobe.
    #[arg(long)]
    pub slow_detach: bool,
    /// How the lean capture's system calls (`target = "kernel"`) are
    /// hooked. Which way was used is printed.
    #[arg(long, value_enum, default_value_t = SyscallHooksArg::Tracepoint)]
    pub syscall_hooks: SyscallHooksArg,
}

impl AttachArgs {
    pub fn plan(&self, floor: bool) -> AttachPlan {
        AttachPlan {
            mode: match self.attach_mode {
                AttachModeArg::Auto => AttachMode::Auto,
                AttachModeArg::Multi => AttachMode::Multi,
                AttachModeArg::Perf => AttachMode::Perf,
            },
            floor,
            slow_detach_ok: self.slow_detach,
            filter_capacity: None,
            min_duration_ns: 0,
            syscall_hooks: match self.syscall_hooks {
                SyscallHooksArg::Auto => SyscallHooks::Auto,
                SyscallHooksArg::Fentry => SyscallHooks::Fentry,
                SyscallHooksArg::Tracepoint => SyscallHooks::Tracepoint,
            },
        }
    }
}
