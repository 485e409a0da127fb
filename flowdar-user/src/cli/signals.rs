//! The signals that stop a recording (`record`, `top`): installed before
//! anything is attached, so a signal during attach still detaches cleanly.
use tokio::signal::unix::{signal, Signal, SignalKind};

pub(super) struct StopSignals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl StopSignals {
    /// Takes over SIGINT, SIGTERM and SIGHUP (inside a tokio runtime).
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next one; its name is the trace's stop reason.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}
