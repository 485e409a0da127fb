//! `flowdar probes`: what a probe selection would attach to in a live
//! process, and why anything asked for cannot be attached.
use clap::Args;
use serde::Serialize;

use super::{format, select::ProbeSelection};
use crate::probes::{self, Capture, ProcMaps, PROFILES};

/// Show what would be attached: each function's file, address and file
/// offset and what is captured; for every requested name that cannot be
/// attached, why (not mapped, not found in the symbol tables of a stripped
/// binary, a pattern matching nothing). Without --pid, list the built-in
/// profiles. Needs no privileges beyond reading /proc/PID (root for other
/// users' processes).
#[derive(Debug, Args)]
pub struct ProbesArgs {
    /// PID of the server (its memory map names the files).
    #[arg(long, short)]
    pub pid: Option<u32>,
    #[command(flatten)]
    pub select: ProbeSelection,
    /// Print JSON: {"probes": [...], "unresolved": [...]}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Row<'a> {
    function: &'a str,
    object: String,
    address: u64,
    file_offset: u64,
    capture: &'a Capture,
    source: Option<&'a str>,
    params: &'a [String],
}

#[derive(Serialize)]
struct Unresolved {
    request: String,
    reason: String,
}

pub fn run(args: ProbesArgs) -> anyhow::Result<()> {
    let Some(pid) = args.pid else {
        list_profiles();
        return Ok(());
    };
    let requests = args.select.requests()?;
    args.select.check_server(pid)?;
    let maps = ProcMaps::read(pid).map_err(|source| probes::ResolveError::Maps { pid, source })?;
    let r = probes::resolve_all(&maps, &requests, &args.select.debug_dir);
    let unresolved: Vec<Unresolved> = r
        .failures
        .iter()
        .map(|(req, e)| Unresolved {
            request: req.to_string(),
            reason: e.to_string(),
        })
        .collect();
    if args.json {
        let targets: Vec<serde_json::Value> = r
            .targets
            .iter()
            .map(|(t, path, why)| serde_json::json!({"target": t, "file": path, "matched_by": why}))
            .collect();
        let rows: Vec<Row<'_>> = r
            .probes
            .iter()
            .map(|p| Row {
                function: &p.function,
                object: p.path.display().to_string(),
                address: p.address,
                file_offset: p.file_offset,
                capture: &p.capture,
                source: p.source.as_deref(),
                params: &p.params,
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "targets": targets, "probes": rows, "unresolved": unresolved })
            )?
        );
        return Ok(());
    }
    for (t, path, why) in &r.targets {
        println!("target {t:<12} -> {} (matched by {why})", path.display());
    }
    println!();
    println!(
        "{:<36} {:<18} {:>10} {:>10}  capture",
        "function", "object", "address", "offset"
    );
    for p in &r.probes {
        println!(
            "{:<36} {:<18} {:>#10x} {:>#10x}  {}",
            p.function,
            format::short_object(&p.path),
            p.address,
            p.file_offset,
            describe(&p.capture)
        );
    }
    let (kernel, user): (Vec<_>, Vec<_>) = r.probes.iter().partition(|p| p.is_syscall());
    let files: std::collections::BTreeSet<_> = user.iter().map(|p| &p.path).collect();
    println!(
        "\n{} functions in {} files would be attached (2 uprobes each: entry and exit).",
        user.len(),
        files.len()
    );
    if !kernel.is_empty() {
        println!(
            "{} system calls would be watched from the kernel's syscall tracepoints (no uprobe; the address is the syscall number).",
            kernel.len()
        );
    }
    if !unresolved.is_empty() {
        println!("\n{} requested names cannot be attached:", unresolved.len());
        for u in &unresolved {
            println!("  {}: {}", u.request, u.reason);
        }
    }
    Ok(())
}

/// "args 0..1, ret, *arg2 at exit, *(arg0+0x10)".
pub fn describe(c: &Capture) -> String {
    let mut parts = Vec::new();
    parts.push(match c.args {
        0 => "no args".to_string(),
        1 => "arg0".to_string(),
        n => format!("args 0..{}", n - 1),
    });
    if c.entry_only {
        parts.push("entry only (no return probe)".into());
    } else if c.ret {
        parts.push("ret".into());
    }
    for d in &c.deref {
        parts.push(format!("*arg{} at exit ({} B)", d.arg, d.bytes));
    }
    if let Some(r) = c.read {
        let first = format!("*(arg{}+{:#x})", r.arg, r.offset);
        parts.push(match r.then {
            Some(then) => format!("*({first}+{then:#x}) at entry"),
            None => format!("{first} at entry"),
        });
    }
    parts.join(", ")
}

fn list_profiles() {
    println!("Built-in profiles (use --profile NAME:SET[,SET...]):");
    for p in PROFILES {
        let file = p.file();
        println!("\n{} ({})", p.name, p.description);
        for set in file.sets() {
            let reqs = file
                .requests(std::slice::from_ref(&set))
                .unwrap_or_default();
            let names: Vec<String> = reqs.iter().map(|r| r.function.clone()).collect();
            println!("  {}:{set:<12} {}", p.name, names.join(" "));
        }
    }
    println!("\nAdd --pid PID to see what a selection resolves to in a running server.");
}
