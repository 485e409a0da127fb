//! `flowdar kernel`: what this kernel offers Flowdar, as detected at start
//! of every recording.
use clap::Args;

use crate::capture;

/// Show the kernel features Flowdar uses, detected the way a recording
/// detects them (a test program and link on Flowdar's own binary), and the
/// attach mode `auto` would use here, and measure what a probed call costs
/// (for a function that begins with a `push`, and for one whose first
/// instruction is single-stepped) and what a recorded system call costs
/// (recordings reuse the figures for this kernel, binary and CPU instead of
/// measuring them as they start; this refreshes them). Needs root, or CAP_BPF, CAP_PERFMON
/// and CAP_DAC_READ_SEARCH (tracefs is root's).
#[derive(Debug, Args)]
pub struct KernelArgs {}

pub fn run(_: KernelArgs) -> anyhow::Result<()> {
    capture::check_privileges("kernel")?;
    let k = capture::kernel_features();
    for (what, value) in k.report() {
        println!("{what:<20} {value}");
    }
    match k.mechanism(capture::AttachMode::Auto) {
        Ok(m) => {
            println!("{:<20} {m}", "attach mode (auto)");
            // What every capture's overhead estimate starts from.
            match capture::remeasure_ns_per_call(m, capture::SyscallHooks::default()) {
                Ok((costs, stored)) => {
                    let d = |ns| super::format::duration(std::time::Duration::from_nanos(ns));
                    println!(
                        "{:<20} {} for a function that begins with a push, {} for one whose first instruction is single-stepped (both probes of one call, measured now on flowdar's own code; {})",
                        "probed call cost",
                        d(costs.push_ns),
                        d(costs.stepped_ns),
                        stored.map_or("not cached: recordings will measure them again".into(), |p| {
                            format!("recordings reuse them, cached in {}", p.display())
                        })
                    );
                    println!(
                        "{:<20} {}",
                        "system call cost",
                        costs.syscall_ns.map_or(
                            "not measured (no loopback connection, or the programs missed calls): lean captures' system calls go unpriced".into(),
                            |ns| format!("{} a recorded system call (a non-blocking `read` of a loopback connection accepted under the lean programs)", d(ns))
                        )
                    );
                }
                Err(e) => println!(
                    "{:<20} not measured: {}",
                    "probed call cost",
                    crate::errors::chain(&e)
                ),
            }
        }
        Err(e) => println!("{:<20} none: {e}", "attach mode (auto)"),
    }
    Ok(())
}
