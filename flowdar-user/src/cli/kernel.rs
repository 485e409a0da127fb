//! `flowdar kernel`: what this kernel offers Flowdar, as detected at start
//! of every recording.
use clap::Args;

use crate::capture;

/// Show the kernel features Flowdar uses, detected the way a recording
/// detects them (a test program and link on Flowdar's own binary), and the
/// attach mode `auto` would use here, and measure what a probed call costs
/// (recordings reuse the figure for this kernel, binary and CPU instead of
/// measuring it as they start; this refreshes it). Needs root, or CAP_BPF, CAP_PERFMON
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
            match capture::remeasure_ns_per_call(m) {
                Ok((ns, stored)) => println!(
                    "{:<20} {} (both probes of one call, measured now on flowdar's own code; {})",
                    "probed call cost",
                    super::format::duration(std::time::Duration::from_nanos(ns)),
                    stored.map_or("not cached: recordings will measure it again".into(), |p| {
                        format!("recordings reuse it, cached in {}", p.display())
                    })
                ),
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
