//! The command line: one file per subcommand; this file only parses and
//! dispatches.
mod attach;
mod budget;
mod clients;
mod demo;
mod diff;
mod dump;
mod experiment;
mod flows;
mod format;
mod import;
mod info;
mod kernel;
mod manual;
mod otlp;
mod probes;
mod record;
mod render;
mod select;
mod sessions;
mod signals;
mod simplify;
mod stats;
mod top;
mod tracer;
mod values;

use clap::{Parser, Subcommand};

/// Flowdar: see inside a running network server with eBPF.
///
/// Attach uprobes to Apache httpd and APR functions of a live server by PID,
/// record every call to a compressed trace file, and read it back as a call
/// dump or per-function statistics. Recording needs root, or CAP_BPF,
/// CAP_PERFMON, CAP_DAC_READ_SEARCH and (for another user's server)
/// CAP_SYS_PTRACE; see the README's requirements, and `flowdar kernel`.
/// Reading traces needs nothing.
#[derive(Debug, Parser)]
#[command(name = "flowdar", version, propagate_version = true)]
#[command(after_help = "Examples:\n  \
    flowdar record --pid $(cat /run/apache2/apache2.pid) --probe apache2:ap_read_request -o req.flowdar --duration 10s\n  \
    flowdar info req.flowdar\n  \
    flowdar stats req.flowdar\n  \
    flowdar diff normal.flowdar attack.flowdar\n  \
    flowdar dump req.flowdar | less\n  \
    flowdar demo")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Record(record::RecordArgs),
    Probes(probes::ProbesArgs),
    Dump(dump::DumpArgs),
    Stats(stats::StatsArgs),
    Sessions(sessions::SessionsArgs),
    Clients(clients::ClientsArgs),
    Top(top::TopArgs),
    Flows(flows::FlowsArgs),
    Diff(diff::DiffArgs),
    Simplify(simplify::SimplifyArgs),
    Render(render::RenderArgs),
    Export(render::ExportArgs),
    Import(import::ImportArgs),
    Info(info::InfoArgs),
    Demo(demo::DemoArgs),
    Experiment(experiment::ExperimentArgs),
    Kernel(kernel::KernelArgs),
    #[command(hide = true)]
    Completions(manual::CompletionsArgs),
    #[command(hide = true)]
    Man(manual::ManArgs),
}

/// Runs the command line of this process.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Record(a) => record::run(a),
        Command::Probes(a) => probes::run(a),
        Command::Dump(a) => dump::run(a),
        Command::Stats(a) => stats::run(a),
        Command::Sessions(a) => sessions::run(a),
        Command::Clients(a) => clients::run(a),
        Command::Top(a) => top::run(a),
        Command::Flows(a) => flows::run(a),
        Command::Diff(a) => diff::run(a),
        Command::Simplify(a) => simplify::run(a),
        Command::Render(a) => render::run(a),
        Command::Export(a) => render::export(a),
        Command::Import(a) => import::run(a),
        Command::Info(a) => info::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Experiment(a) => experiment::run(a),
        Command::Kernel(a) => kernel::run(a),
        Command::Completions(a) => manual::completions(a),
        Command::Man(a) => manual::man(a),
    }
}

/// On stderr: what a lean trace cannot give, for the commands that show
/// functions (stats, diff, render, export). Nothing when the trace does
/// not open: the command itself says why.
fn note_if_lean(path: &std::path::Path) {
    let Ok(reader) = crate::store::TraceReader::open(path) else {
        return;
    };
    if crate::analysis::is_lean(&reader.header().probes) {
        eprintln!("note: {}: {}", path.display(), crate::analysis::LEAN_LIMITS);
    }
}

/// Warnings of a [`crate::analysis::scan`], to stderr after the output.
fn report_warnings(path: &std::path::Path, s: &crate::analysis::Scanned) {
    print_warnings(path, s.warnings.iter(), s.footer.as_ref());
}

/// Damage found in a trace goes to stderr, one line each, after the output.
fn report_read_warnings(reader: &crate::store::TraceReader) {
    print_warnings(reader.path(), reader.warnings().iter(), reader.footer());
}

/// One line a warning, then one for events lost during capture.
fn print_warnings<W: std::fmt::Display>(
    path: &std::path::Path,
    warnings: impl Iterator<Item = W>,
    footer: Option<&crate::store::TraceFooter>,
) {
    for w in warnings {
        eprintln!("warning: {}: {w}", path.display());
    }
    if let Some(f) = footer {
        let lost = f.total_kernel_drops() + f.total_user_drops();
        if lost > 0 {
            eprintln!(
                "warning: {}: {lost} events were lost during capture ({} in the kernel, {} in user space)",
                path.display(),
                f.total_kernel_drops(),
                f.total_user_drops()
            );
        }
    }
}
