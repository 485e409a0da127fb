//! `flowdar render`: sequence diagrams and flame graphs; `flowdar export`:
//! Perfetto JSON, Parquet and CSV.
use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};

use crate::render::{self, ExportOptions, Exporter, Lanes, SceneOptions, TableFormat};

/// Draw a trace: a sequence diagram (lifelines per component or thread,
/// call and return arrows in time order, durations as dots: one per --unit,
/// a number past four; hand-offs between threads as orange arrows labelled
/// with the object's address) as SVG, or as one self-contained HTML page
/// with pan, zoom, hover details and a side-by-side mode (--compare); or an
/// inclusive-time flame graph (--flame).
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    flowdar render t.flowdar --session 3 -o s3.svg\n  \
    flowdar render normal.flowdar --session 1 --compare attack.flowdar --compare-session 1 -o cmp.html\n  \
    flowdar render t.flowdar --window 100ms..150ms --by thread --min-duration 20us -o w.html\n  \
    flowdar render t.flowdar --flame -o flame.svg")]
pub struct RenderArgs {
    pub trace: PathBuf,
    /// Output: .svg or .html (for --flame: .svg).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Only this session (see `flowdar sessions`).
    #[arg(long)]
    pub session: Option<u64>,
    /// Only calls starting in this window, from the start of capture (e.g. 1s..1.5s).
    #[arg(long, value_name = "T0..T1", value_parser = parse_window)]
    pub window: Option<(u64, u64)>,
    /// Lifelines per component (Apache core, modules, APR) or per thread.
    #[arg(long = "by", value_enum, default_value_t = Lanes::Component)]
    pub lanes: Lanes,
    /// Duration of one dot.
    #[arg(long, default_value = "500us", value_parser = humantime::parse_duration)]
    pub unit: Duration,
    /// Draw at most this many calls.
    #[arg(long, default_value_t = 400)]
    pub max_calls: usize,
    /// A second trace to draw side by side (HTML output).
    #[arg(long, value_name = "TRACE")]
    pub compare: Option<PathBuf>,
    /// The session of the --compare trace.
    #[arg(long, requires = "compare")]
    pub compare_session: Option<u64>,
    /// An inclusive-time flame graph instead of a sequence diagram.
    #[arg(long)]
    pub flame: bool,
    /// Simplification applied before drawing.
    #[command(flatten)]
    pub simplify: super::simplify::SimplifyFlags,
}

fn parse_window(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("`{s}` is not T0..T1 (e.g. 100ms..250ms)"))?;
    let p = |t: &str| {
        humantime::parse_duration(t.trim())
            .map(|d| d.as_nanos() as u64)
            .map_err(|e| format!("`{t}`: {e}"))
    };
    let (a, b) = (p(a)?, p(b)?);
    if b < a {
        return Err(format!("`{s}`: the window ends before it starts"));
    }
    Ok((a, b))
}

pub fn run(args: RenderArgs) -> anyhow::Result<()> {
    let ext = args
        .output
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let scene = SceneOptions {
        lanes: args.lanes,
        session: args.session,
        window: args.window,
        simplify: args.simplify.options(),
        max_calls: args.max_calls,
    };
    let title = |path: &PathBuf, session: Option<u64>| {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        session.map_or(name.clone(), |s| format!("{name}, session {s}"))
    };
    let opts = ExportOptions {
        scene: scene.clone(),
        unit_ns: args.unit.as_nanos() as u64,
        title: title(&args.trace, args.session),
    };
    if args.flame {
        if ext != "svg" {
            bail!("a flame graph is an SVG: name the output *.svg");
        }
        render::FlameGraph
            .export(&args.trace, &args.output, &opts)
            .map_err(|e| named(e, &args.output))?;
    } else if let Some(other) = &args.compare {
        if ext != "html" {
            bail!("side-by-side diagrams need HTML output: name it *.html");
        }
        let a = render::build_scene(&args.trace, &opts.title, &scene)?;
        let b = render::build_scene(
            other,
            &title(other, args.compare_session),
            &SceneOptions {
                session: args.compare_session,
                ..scene
            },
        )?;
        std::fs::write(&args.output, render::page(&[&a, &b], opts.unit_ns))
            .with_context(|| format!("writing {}", args.output.display()))?;
    } else {
        match ext.as_str() {
            "svg" => render::SequenceSvg
                .export(&args.trace, &args.output, &opts)
                .map_err(|e| named(e, &args.output))?,
            "html" | "htm" => render::SequenceHtml
                .export(&args.trace, &args.output, &opts)
                .map_err(|e| named(e, &args.output))?,
            _ => bail!("{}: name the output *.svg or *.html", args.output.display()),
        }
    }
    println!("wrote {}", args.output.display());
    Ok(())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// Chrome trace-event JSON for the Perfetto UI (a file).
    Perfetto,
    /// events.parquet and calls.parquet (a directory).
    Parquet,
    /// events.csv and calls.csv (a directory).
    Csv,
}

/// Export a trace for other tools: Perfetto/Chrome trace JSON (one track
/// per thread, nested slices, arguments, hand-off flow arrows), or `events`
/// and `calls` tables (function, object, pid, tid, session, start, duration,
/// self time, depth, in_flight, arguments, return value) as Parquet or CSV
/// for DuckDB, Spark or DataFusion.
#[derive(Debug, Args)]
pub struct ExportArgs {
    pub trace: PathBuf,
    #[arg(long, value_enum)]
    pub format: Format,
    /// Output file (perfetto) or directory (parquet, csv).
    #[arg(long, short)]
    pub output: PathBuf,
}

pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    let exporter: Box<dyn Exporter> = match args.format {
        Format::Perfetto => Box::new(render::Perfetto),
        Format::Parquet => Box::new(render::Tables(TableFormat::Parquet)),
        Format::Csv => Box::new(render::Tables(TableFormat::Csv)),
    };
    exporter
        .export(&args.trace, &args.output, &ExportOptions::default())
        .map_err(|e| named(e, &args.output))?;
    println!("wrote {} ({})", args.output.display(), exporter.name());
    Ok(())
}

/// An output error names the file it could not write.
fn named(e: render::RenderError, output: &std::path::Path) -> anyhow::Error {
    match e {
        render::RenderError::Io(io) => {
            anyhow::anyhow!("cannot write {}: {io}", output.display())
        }
        other => other.into(),
    }
}
