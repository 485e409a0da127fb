//! Tables for query engines (DuckDB, Spark, DataFusion): `events` and
//! `calls` as Parquet (arrow-rs) or CSV files in an output directory, so the
//! traces of a whole fleet can be queried together.
use std::{collections::HashMap, fs::File, path::Path, sync::Arc};

use arrow_array::{
    builder::{BooleanBuilder, StringBuilder, UInt32Builder, UInt64Builder},
    ArrayRef, RecordBatch,
};
use arrow_schema::{DataType, Field, Schema};
use flowdar_common::EventKind;
use parquet::arrow::ArrowWriter;

use super::RenderError;
use crate::{scan, Call, SessionTracker};

/// Rows per record batch: bounded memory whatever the trace size.
const BATCH: usize = 64 * 1024;

/// Version of the `calls` and `events` columns (docs/dataset.md). Bump it
/// when a column is added, removed, renamed or retyped; the test
/// `schema_is_version_2` pins the columns of each version. Written into
/// every Parquet file's key-value metadata as `flowdar.schema_version`.
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    Parquet,
    Csv,
}

fn calls_schema() -> Arc<Schema> {
    let u64f = |n: &str, null: bool| Field::new(n, DataType::UInt64, null);
    Arc::new(Schema::new(vec![
        Field::new("function", DataType::Utf8, false),
        Field::new("object", DataType::Utf8, false),
        Field::new("pid", DataType::UInt32, false),
        Field::new("tid", DataType::UInt32, false),
        u64f("session", true),
        Field::new("client", DataType::Utf8, true),
        u64f("start_ns", false),
        u64f("duration_ns", false),
        u64f("self_ns", false),
        Field::new("depth", DataType::UInt32, false),
        Field::new("in_flight", DataType::Boolean, false),
        u64f("arg0", false),
        u64f("arg1", false),
        u64f("arg2", false),
        u64f("ret", true),
        Field::new("trace_id", DataType::Utf8, false),
    ]))
}

fn events_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("ts_ns", DataType::UInt64, false),
        Field::new("pid", DataType::UInt32, false),
        Field::new("tid", DataType::UInt32, false),
        Field::new("probe_id", DataType::UInt32, false),
        Field::new("function", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("arg0", DataType::UInt64, false),
        Field::new("arg1", DataType::UInt64, false),
        Field::new("arg2", DataType::UInt64, false),
        Field::new("trace_id", DataType::Utf8, false),
    ]))
}

/// A trace's identity: FNV-1a (64 bits) of its header, which holds the
/// host, start times, target and command line of the recording. Stable
/// across exports of the same file, so a dataset can refuse a second copy.
#[expect(
    clippy::expect_used,
    reason = "a TraceHeader serialises to JSON whenever it could be read from one"
)]
pub fn trace_id(header: &flowdar_trace::TraceHeader) -> String {
    let json = serde_json::to_vec(header).expect("header serialises");
    let h = json.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{h:016x}")
}

/// Where [`write_tables`] puts the two tables.
#[derive(Debug, Clone)]
pub struct TablePaths {
    pub events: std::path::PathBuf,
    pub calls: std::path::PathBuf,
}

/// A Parquet or CSV file receiving record batches.
enum Sink {
    Parquet(ArrowWriter<File>),
    Csv(arrow_csv::Writer<File>),
}

impl Sink {
    fn create(path: &Path, schema: Arc<Schema>, format: TableFormat) -> Result<Self, RenderError> {
        let file = flowdar_trace::private::open(path, true)?;
        let props = parquet::file::properties::WriterProperties::builder()
            .set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new(
                "flowdar.schema_version".into(),
                SCHEMA_VERSION.to_string(),
            )]))
            .build();
        Ok(match format {
            TableFormat::Parquet => Sink::Parquet(ArrowWriter::try_new(file, schema, Some(props))?),
            TableFormat::Csv => Sink::Csv(arrow_csv::Writer::new(file)),
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), RenderError> {
        match self {
            Sink::Parquet(w) => w.write(batch)?,
            Sink::Csv(w) => w.write(batch)?,
        }
        Ok(())
    }

    fn close(self) -> Result<(), RenderError> {
        if let Sink::Parquet(w) = self {
            w.close()?;
        }
        Ok(())
    }
}

/// Writes `events` and `calls` tables of `trace` into `dir`; returns the
/// row counts (events, calls).
pub fn export_tables(
    trace: &Path,
    dir: &Path,
    format: TableFormat,
) -> Result<(u64, u64), RenderError> {
    flowdar_trace::private::create_dir_all(dir)?;
    let ext = match format {
        TableFormat::Parquet => "parquet",
        TableFormat::Csv => "csv",
    };
    let paths = TablePaths {
        events: dir.join(format!("events.{ext}")),
        calls: dir.join(format!("calls.{ext}")),
    };
    write_tables(trace, &paths, format)
}

/// Writes the `events` and `calls` tables of `trace` to `paths`; returns
/// the row counts (events, calls).
pub fn write_tables(
    trace: &Path,
    paths: &TablePaths,
    format: TableFormat,
) -> Result<(u64, u64), RenderError> {
    let header = flowdar_trace::TraceReader::open(trace)?.header().clone();
    let id = trace_id(&header);
    let names: Vec<String> = header.probes.iter().map(|p| p.display_name()).collect();
    let objects: Vec<String> = header.probes.iter().map(|p| p.object_name()).collect();
    // Pass 1: sessions (and their clients), to label calls with theirs.
    let sessions = if SessionTracker::new(&header.probes).can_track() {
        crate::sessions_of(trace)?.0
    } else {
        Vec::new()
    };
    let clients: HashMap<u64, String> = sessions
        .iter()
        .filter_map(|s| Some((s.id, s.client?.ip().to_string())))
        .collect();
    let mut windows: Vec<(u32, u64, u64, u64)> = sessions
        .iter()
        .flat_map(|s| s.windows.iter().map(move |&(t, a, b)| (t, a, b, s.id)))
        .collect();
    windows.sort_unstable();
    let session_of = |c: &Call| {
        let i = windows.partition_point(|w| (w.0, w.1) <= (c.tid, c.start_ns));
        let id = windows[..i]
            .iter()
            .rev()
            .take_while(|w| w.0 == c.tid)
            .find(|w| w.1 <= c.start_ns && c.start_ns <= w.2)
            .map(|w| w.3)?;
        Some((id, clients.get(&id).map(String::as_str)))
    };

    let (mut ev_sink, mut call_sink) = (
        Sink::create(&paths.events, events_schema(), format)?,
        Sink::create(&paths.calls, calls_schema(), format)?,
    );
    let (mut ev_rows, mut call_rows) = (EventRows::default(), CallRows::default());
    let (mut n_events, mut n_calls) = (0u64, 0u64);
    let (mut ev_err, mut call_err) = (Ok(()), Ok(()));
    scan(
        trace,
        |e| {
            n_events += 1;
            ev_rows.push(e, &names, &id);
            if ev_rows.len == BATCH && ev_err.is_ok() {
                ev_err = ev_rows.flush(&mut ev_sink);
            }
        },
        |c| {
            n_calls += 1;
            call_rows.push(c, &names, &objects, session_of(c), &id);
            if call_rows.len == BATCH && call_err.is_ok() {
                call_err = call_rows.flush(&mut call_sink);
            }
        },
    )?;
    ev_err?;
    call_err?;
    ev_rows.flush(&mut ev_sink)?;
    call_rows.flush(&mut call_sink)?;
    ev_sink.close()?;
    call_sink.close()?;
    Ok((n_events, n_calls))
}

#[derive(Default)]
struct EventRows {
    len: usize,
    ts: UInt64Builder,
    pid: UInt32Builder,
    tid: UInt32Builder,
    probe: UInt32Builder,
    function: StringBuilder,
    kind: StringBuilder,
    a: [UInt64Builder; 3],
    trace_id: StringBuilder,
}

impl EventRows {
    fn push(&mut self, e: &flowdar_common::Event, names: &[String], trace_id: &str) {
        self.trace_id.append_value(trace_id);
        self.len += 1;
        self.ts.append_value(e.ts_ns);
        self.pid.append_value(e.tgid);
        self.tid.append_value(e.tid);
        self.probe.append_value(e.probe_id);
        self.function
            .append_value(names.get(e.probe_id as usize).map_or("?", String::as_str));
        self.kind.append_value(match EventKind::from_u32(e.kind) {
            Some(EventKind::Entry) => "entry",
            Some(EventKind::Exit) => "exit",
            Some(EventKind::Client) if e.trace_context().is_some() => "trace_context",
            Some(EventKind::Client) => "client",
            _ => "fold",
        });
        for (b, v) in self.a.iter_mut().zip(e.args) {
            b.append_value(v);
        }
    }

    fn flush(&mut self, sink: &mut Sink) -> Result<(), RenderError> {
        if self.len == 0 {
            return Ok(());
        }
        self.len = 0;
        let [a0, a1, a2] = &mut self.a;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.ts.finish()),
            Arc::new(self.pid.finish()),
            Arc::new(self.tid.finish()),
            Arc::new(self.probe.finish()),
            Arc::new(self.function.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(a0.finish()),
            Arc::new(a1.finish()),
            Arc::new(a2.finish()),
            Arc::new(self.trace_id.finish()),
        ];
        sink.write(&RecordBatch::try_new(events_schema(), cols)?)
    }
}

#[derive(Default)]
struct CallRows {
    len: usize,
    function: StringBuilder,
    object: StringBuilder,
    pid: UInt32Builder,
    tid: UInt32Builder,
    session: UInt64Builder,
    client: StringBuilder,
    start: UInt64Builder,
    duration: UInt64Builder,
    self_ns: UInt64Builder,
    depth: UInt32Builder,
    in_flight: BooleanBuilder,
    a: [UInt64Builder; 3],
    ret: UInt64Builder,
    trace_id: StringBuilder,
}

impl CallRows {
    fn push(
        &mut self,
        c: &Call,
        names: &[String],
        objects: &[String],
        session: Option<(u64, Option<&str>)>,
        trace_id: &str,
    ) {
        self.trace_id.append_value(trace_id);
        self.len += 1;
        let i = c.probe_id as usize;
        self.function
            .append_value(names.get(i).map_or("?", String::as_str));
        self.object
            .append_value(objects.get(i).map_or("?", String::as_str));
        self.pid.append_value(c.tgid);
        self.tid.append_value(c.tid);
        self.session.append_option(session.map(|s| s.0));
        self.client.append_option(session.and_then(|s| s.1));
        self.start.append_value(c.start_ns);
        self.duration.append_value(c.duration_ns());
        self.self_ns.append_value(c.self_ns());
        self.depth.append_value(c.depth);
        self.in_flight.append_value(!c.returned);
        for (b, v) in self.a.iter_mut().zip(c.args) {
            b.append_value(v);
        }
        self.ret.append_option(c.ret);
    }

    fn flush(&mut self, sink: &mut Sink) -> Result<(), RenderError> {
        if self.len == 0 {
            return Ok(());
        }
        self.len = 0;
        let [a0, a1, a2] = &mut self.a;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.function.finish()),
            Arc::new(self.object.finish()),
            Arc::new(self.pid.finish()),
            Arc::new(self.tid.finish()),
            Arc::new(self.session.finish()),
            Arc::new(self.client.finish()),
            Arc::new(self.start.finish()),
            Arc::new(self.duration.finish()),
            Arc::new(self.self_ns.finish()),
            Arc::new(self.depth.finish()),
            Arc::new(self.in_flight.finish()),
            Arc::new(a0.finish()),
            Arc::new(a1.finish()),
            Arc::new(a2.finish()),
            Arc::new(self.ret.finish()),
            Arc::new(self.trace_id.finish()),
        ];
        sink.write(&RecordBatch::try_new(calls_schema(), cols)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(schema: &Schema) -> Vec<String> {
        schema
            .fields()
            .iter()
            .map(|f| {
                format!(
                    "{}:{}{}",
                    f.name(),
                    f.data_type(),
                    if f.is_nullable() { "?" } else { "" }
                )
            })
            .collect()
    }

    /// The dataset's columns as docs/dataset.md documents them for this
    /// version. A change here without a new [`SCHEMA_VERSION`] (and docs)
    /// breaks every query written against the old columns.
    #[test]
    fn schema_is_version_2() {
        assert_eq!(SCHEMA_VERSION, 2, "a new version: pin its columns below");
        assert_eq!(
            columns(&calls_schema()).join(" "),
            "function:Utf8 object:Utf8 pid:UInt32 tid:UInt32 session:UInt64? client:Utf8? start_ns:UInt64 \
             duration_ns:UInt64 self_ns:UInt64 depth:UInt32 in_flight:Boolean arg0:UInt64 \
             arg1:UInt64 arg2:UInt64 ret:UInt64? trace_id:Utf8"
        );
        assert_eq!(
            columns(&events_schema()).join(" "),
            "ts_ns:UInt64 pid:UInt32 tid:UInt32 probe_id:UInt32 function:Utf8 kind:Utf8 \
             arg0:UInt64 arg1:UInt64 arg2:UInt64 trace_id:Utf8"
        );
    }
}
