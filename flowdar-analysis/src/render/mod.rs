//! Pictures and exports of traces: sequence diagrams (SVG and interactive
//! HTML), flame graphs (inferno), Perfetto/Chrome trace JSON, and Parquet or
//! CSV tables. Every format is one file behind the [`Exporter`] trait.
//! Every file and directory they create has the trace's own mode (0600,
//! 0700: [`flowdar_trace::private`]), since it holds what the trace holds.
mod dataset;
mod flame;
mod html;
mod labels;
mod names;
mod perfetto;
mod scene;
mod sequence;
mod tables;
mod timeline;
mod windows;

use std::path::Path;

use flowdar_trace::private;

pub use dataset::{append as append_to_dataset, Appended, DatasetError, Partition};
pub use flame::{differential, flamegraph, folded};
pub use html::{data_json, page};
pub use names::Named;
pub use perfetto::perfetto_json;
pub use scene::{build as build_scene, component, Lanes, Scene, SceneOptions};
pub use sequence::{dots, svg as sequence_svg};
pub use tables::{export_tables, trace_id, write_tables, TableFormat, TablePaths, SCHEMA_VERSION};
pub use timeline::{
    scales as timeline_scales, svg as timeline_svg, trace_timeline, Counts, Scales, Segment,
    Timeline, HELD_IN,
};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Store(#[from] flowdar_trace::StoreError),
    #[error("writing the output")]
    Io(#[from] std::io::Error),
    #[error("{0}: no calls to draw")]
    Empty(String),
    #[error(transparent)]
    Sessions(#[from] crate::SessionsError),
    #[error("flame graph")]
    Flame(#[source] std::io::Error),
    #[error("arrow")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("parquet")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("json")]
    Json(#[from] serde_json::Error),
}

/// Settings every exporter may use.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    pub scene: SceneOptions,
    /// Duration per dot in sequence diagrams.
    pub unit_ns: u64,
    pub title: String,
}

/// One output format.
pub trait Exporter {
    /// Its name on the command line.
    fn name(&self) -> &'static str;
    /// Writes the export of `trace` to `out` (a file; a directory for tables).
    fn export(&self, trace: &Path, out: &Path, opts: &ExportOptions) -> Result<(), RenderError>;
}

pub struct SequenceSvg;
pub struct SequenceHtml;
pub struct FlameGraph;
pub struct Perfetto;
pub struct Tables(pub TableFormat);

impl Exporter for SequenceSvg {
    fn name(&self) -> &'static str {
        "svg"
    }
    fn export(&self, trace: &Path, out: &Path, o: &ExportOptions) -> Result<(), RenderError> {
        let scene = build_scene(trace, &o.title, &o.scene)?;
        Ok(private::write(
            out,
            sequence_svg(&scene, o.unit_ns, "seq0"),
        )?)
    }
}

impl Exporter for SequenceHtml {
    fn name(&self) -> &'static str {
        "html"
    }
    fn export(&self, trace: &Path, out: &Path, o: &ExportOptions) -> Result<(), RenderError> {
        let scene = build_scene(trace, &o.title, &o.scene)?;
        Ok(private::write(out, page(&[&scene], o.unit_ns))?)
    }
}

impl Exporter for FlameGraph {
    fn name(&self) -> &'static str {
        "flame"
    }
    fn export(&self, trace: &Path, out: &Path, o: &ExportOptions) -> Result<(), RenderError> {
        flamegraph(trace, &o.title, private::open(out, true)?)
    }
}

impl Exporter for Perfetto {
    fn name(&self) -> &'static str {
        "perfetto"
    }
    fn export(&self, trace: &Path, out: &Path, _: &ExportOptions) -> Result<(), RenderError> {
        Ok(private::write(out, perfetto_json(trace)?)?)
    }
}

impl Exporter for Tables {
    fn name(&self) -> &'static str {
        match self.0 {
            TableFormat::Parquet => "parquet",
            TableFormat::Csv => "csv",
        }
    }
    fn export(&self, trace: &Path, out: &Path, _: &ExportOptions) -> Result<(), RenderError> {
        export_tables(trace, out, self.0).map(|_| ())
    }
}
