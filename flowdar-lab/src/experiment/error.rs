//! Why an experiment stopped, in one line: its own context in `Display`,
//! the cause (a server, the lab, the tracer, a trace) kept as `source`.
use std::path::{Path, PathBuf};

use crate::{
    server::{AttackError, ServerError, TargetError},
    tracer::TracerError,
};

#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// Why the run cannot go on, in a sentence of its own: the spec or the
    /// options ask for what this run cannot do, or a step found nothing to
    /// work with (no phases, no client figures).
    #[error("{0}")]
    Refused(String),
    #[error("{} exists and is not empty (pass --force to write into it)", .0.display())]
    DirNotEmpty(PathBuf),
    #[error("reading {}", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting {program}")]
    StartServer {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{url}`: give an IP:PORT host, e.g. 127.0.0.1:8080")]
    BadUrl {
        url: String,
        #[source]
        source: std::net::AddrParseError,
    },
    #[error("no process with PID {0}")]
    NoSuchProcess(u32),
    #[error(transparent)]
    Tracing(#[from] TracerError),
    #[error("{context}")]
    Tracer {
        context: String,
        #[source]
        source: TracerError,
    },
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Attack(#[from] AttackError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Trace(#[from] flowdar_trace::StoreError),
    #[error(transparent)]
    Sessions(#[from] flowdar_analysis::SessionsError),
    #[error(transparent)]
    Render(#[from] flowdar_analysis::render::RenderError),
    #[error("encoding JSON")]
    Json(#[from] serde_json::Error),
}

impl ExperimentError {
    /// The tracer's error `source`, with what the experiment was doing.
    pub(super) fn tracer(context: impl Into<String>) -> impl FnOnce(TracerError) -> Self {
        let context = context.into();
        move |source| Self::Tracer { context, source }
    }
}

pub type Result<T, E = ExperimentError> = std::result::Result<T, E>;

/// `mkdir -p`, with the path in the error. New directories are 0700, as
/// for every export: they hold traces and reports.
pub(super) fn create_dir(dir: &Path) -> Result<()> {
    flowdar_trace::private::create_dir_all(dir).map_err(|source| ExperimentError::CreateDir {
        path: dir.into(),
        source,
    })
}
