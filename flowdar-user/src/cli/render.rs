//! `flowdar render`: sequence diagrams and flame graphs; `flowdar export`:
//! Perfetto JSON, Parquet and CSV.
use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};

use super::values::LanesArg;
use crate::render::{self, ExportOptions, Exporter, SceneOptions, TableFormat};

/// Draw a trace: a sequence diagram (lifelines per component or thread,
/// call and return arrows in time order, durations as dots: one per --unit,
/// a number past four; hand-offs between threads as orange arrows labelled
/// with the object's address) as SVG, or as one self-contained HTML page
/// with pan, zoom, hover details and a side-by-side mode (--compare); an
/// inclusive-time flame graph (--flame); or the trace's timeline
/// (--timeline): requests answered a second and workers inside
/// ap_read_request at each second, the picture of a Slowloris and its fix.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    flowdar render t.flowdar --session 3 -o s3.svg\n  \
    flowdar render normal.flowdar --session 1 --compare attack.flowdar --compare-session 1 -o cmp.html\n  \
    flowdar render t.flowdar --window 100ms..150ms --by thread --min-duration 20us -o w.html\n  \
    flowdar render t.flowdar --flame -o flame.svg\n  \
    flowdar render attack.flowdar --timeline -o attack-timeline.svg")]
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
    #[arg(long = "by", value_enum, default_value_t = LanesArg::Component)]
    pub lanes: LanesArg,
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
    #[arg(long, conflicts_with = "timeline")]
    pub flame: bool,
    /// The trace's timeline instead of a sequence diagram: requests answered
    /// a second (returns of ap_process_async_request; its calls in a lean
    /// trace) and workers inside ap_read_request at each second (a lean
    /// trace: workers waiting for a request in read or poll). SVG.
    #[arg(long, conflicts_with_all = ["compare", "session", "window"])]
    pub timeline: bool,
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
    if !args.timeline {
        super::note_if_lean(&args.trace);
        if let Some(other) = &args.compare {
            super::note_if_lean(other);
        }
    }
    let ext = args
        .output
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let scene = SceneOptions {
        lanes: args.lanes.into(),
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
    if args.timeline {
        if ext != "svg" {
            bail!("a timeline is an SVG: name the output *.svg");
        }
        let name = title(&args.trace, None);
        let t = render::trace_timeline(&args.trace, &name)?;
        if t.segments.iter().all(|s| s.seconds == 0) {
            bail!(
                "{} covers less than a second: a timeline counts whole seconds (record for longer)",
                args.trace.display()
            );
        }
        let svg = render::timeline_svg(&t, render::timeline_scales(std::slice::from_ref(&t)));
        crate::store::private::write(&args.output, svg)
            .with_context(|| format!("writing {}", args.output.display()))?;
        let seg = &t.segments[0];
        let peak = |v: Option<&Vec<u64>>| v.and_then(|v| v.iter().max().copied()).unwrap_or(0);
        // The key's words: returns (requests answered) or, in a lean
        // trace, entry-only calls (requests begun).
        let requests = match &seg.client {
            Some(c) => format!(
                "at most {} a second ({})",
                peak(Some(&c.ok)),
                t.requests_from
            ),
            None => t.requests_from.clone(),
        };
        println!(
            "wrote {}: {} s; {requests}; at most {} workers in {} at a second's end",
            args.output.display(),
            seg.seconds,
            peak(seg.held.as_ref()),
            t.held_in
        );
        return Ok(());
    }
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
        crate::store::private::write(&args.output, render::page(&[&a, &b], opts.unit_ns))
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
    /// OpenTelemetry spans, sent over OTLP/HTTP to --endpoint: one server
    /// span per request, child spans for --span-functions.
    Otlp,
}

/// Export a trace for other tools: Perfetto/Chrome trace JSON (one track
/// per thread, nested slices, arguments, hand-off flow arrows), or `events`
/// and `calls` tables (function, object, pid, tid, session, start, duration,
/// self time, depth, in_flight, arguments, return value, trace id) as
/// Parquet or CSV for DuckDB, Spark or DataFusion. With --dataset, the
/// Parquet tables are appended to a hive-partitioned dataset shared by many
/// traces: DIR/calls/host=H/run=R/phase=P/calls-<trace id>.parquet and the
/// same under DIR/events (schema and layout: docs/dataset.md). With
/// --format otlp, the requests go to an OpenTelemetry collector as spans
/// (OTLP/HTTP protobuf): one server span per request (client address and
/// port, protocol version), child spans for the functions named by
/// --span-functions, held calls as unfinished spans.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    flowdar export t.flowdar --format perfetto -o t.json\n  \
    flowdar export t.flowdar --format parquet -o t-tables\n  \
    flowdar export normal.flowdar --format parquet --dataset lab --host web1 --run r1 --phase normal\n  \
    flowdar export t.flowdar --format otlp --endpoint http://127.0.0.1:4318 --span-functions ap_invoke_handler")]
pub struct ExportArgs {
    pub trace: PathBuf,
    #[arg(long, value_enum)]
    pub format: Format,
    /// Output file (perfetto) or directory (parquet, csv).
    #[arg(long, short, required_unless_present_any = ["dataset", "endpoint"])]
    pub output: Option<PathBuf>,
    /// Append to this Parquet dataset instead (created if missing). A trace
    /// already in it is refused.
    #[arg(long, value_name = "DIR", conflicts_with = "output")]
    pub dataset: Option<PathBuf>,
    /// The dataset's host partition [default: the host named in the trace].
    #[arg(long)]
    pub host: Option<String>,
    /// The run partition [default: the trace's file name without .flowdar;
    /// for a trace in a `flowdar experiment` directory, that directory's name].
    #[arg(long)]
    pub run: Option<String>,
    /// The phase partition [default: `all`; for a trace in a `flowdar
    /// experiment` directory, its phase: the file name without .flowdar].
    #[arg(long)]
    pub phase: Option<String>,
    #[command(flatten)]
    pub otlp: super::otlp::OtlpArgs,
}

pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    super::note_if_lean(&args.trace);
    if let Some(root) = &args.dataset {
        return export_dataset(&args, root);
    }
    match (args.format, &args.otlp.endpoint) {
        (Format::Otlp, Some(endpoint)) => {
            return super::otlp::export(&args.trace, endpoint, &args.otlp)
        }
        (Format::Otlp, None) => {
            bail!("--format otlp sends spans to a collector: add --endpoint http://HOST:4318")
        }
        (_, Some(_)) => bail!("--endpoint is where --format otlp sends spans: add --format otlp"),
        _ => {}
    }
    if args.host.is_some() || args.run.is_some() || args.phase.is_some() {
        bail!("--host, --run and --phase label a --dataset export: add --dataset DIR");
    }
    let output = args
        .output
        .as_ref()
        .expect("clap requires --output or --dataset");
    let exporter: Box<dyn Exporter> = match args.format {
        Format::Perfetto => Box::new(render::Perfetto),
        Format::Parquet => Box::new(render::Tables(TableFormat::Parquet)),
        Format::Csv => Box::new(render::Tables(TableFormat::Csv)),
        Format::Otlp => bail!("--format otlp needs --endpoint"),
    };
    exporter
        .export(&args.trace, output, &ExportOptions::default())
        .map_err(|e| named(e, output))?;
    println!("wrote {} ({})", output.display(), exporter.name());
    Ok(())
}

/// The partition a trace goes to when flags leave it open: a trace in a
/// `flowdar experiment` output directory (it holds report.md) is phase
/// FILE of run DIR; any other is run FILE, phase `all`.
fn default_partition(args: &ExportArgs, host: &str) -> render::Partition {
    let stem = args
        .trace
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let dir = args
        .trace
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()));
    let name = |d: &std::path::Path| {
        d.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    };
    // An experiment keeps DIR/report.md and DIR/VARIANT/PHASE.flowdar (or,
    // before variants, DIR/PHASE.flowdar): run DIR-VARIANT, phase PHASE.
    let (run, phase) = match dir {
        Some(d) if d.join("report.md").is_file() => (name(&d), stem),
        Some(d) if d.parent().is_some_and(|p| p.join("report.md").is_file()) => (
            format!("{}-{}", name(d.parent().expect("checked")), name(&d)),
            stem,
        ),
        _ => (stem, "all".to_string()),
    };
    render::Partition {
        host: args.host.clone().unwrap_or_else(|| host.to_string()),
        run: args.run.clone().unwrap_or(run),
        phase: args.phase.clone().unwrap_or(phase),
    }
}

fn export_dataset(args: &ExportArgs, root: &std::path::Path) -> anyhow::Result<()> {
    if !matches!(args.format, Format::Parquet) {
        bail!("--dataset writes Parquet: pass --format parquet");
    }
    let header = crate::store::TraceReader::open(&args.trace)?
        .header()
        .clone();
    let partition = default_partition(args, &header.host);
    let done = render::append_to_dataset(&args.trace, root, &partition)?;
    println!(
        "appended {} (trace {}) to {}: host={} run={} phase={}, {} calls, {} events",
        args.trace.display(),
        done.trace_id,
        root.display(),
        partition.host,
        partition.run,
        partition.phase,
        done.rows.1,
        done.rows.0
    );
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
