//! What each attack kind is, and the bounds of one attack: shared by the
//! running attack (`attack.rs`) and the command lines of its tools.
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttackMode {
    /// Slowloris (`-H`): headers sent a line at a time, never finished.
    Headers,
    /// R-U-Dead-Yet (`-B`): a POST body sent a few bytes at a time.
    Body,
    /// Slow read (`-X`): a large response read a few bytes at a time
    /// through a tiny receive window.
    Read,
    /// Apache Killer (`-R`): GETs asking for many overlapping byte ranges.
    Range,
    /// TLS ClientHellos sent but for their last byte, then held.
    TlsHandshake,
    /// HTTP/2 streams whose HEADERS never end (a CONTINUATION a interval).
    H2SlowHeaders,
    /// HTTP/2 responses held behind a zero flow-control window, opened a
    /// few bytes an interval.
    H2SlowRead,
    /// CVE-2023-44487: HEADERS then RST_STREAM at once, `rate` streams a
    /// second over `connections` connections.
    H2RapidReset,
    /// CVE-2024-27316's shape: CONTINUATION frames without END_HEADERS,
    /// `rate` a second on each connection.
    H2Continuation,
}

impl AttackMode {
    /// Whether the attack needs a large response (the throwaway Apache's
    /// `LARGE_PATH`) rather than the small page.
    pub fn wants_large_response(self) -> bool {
        matches!(
            self,
            AttackMode::Read | AttackMode::Range | AttackMode::H2SlowRead
        )
    }

    /// Whether it speaks TLS (and HTTP/2): it needs the server's TLS port.
    pub fn needs_tls(self) -> bool {
        !matches!(
            self,
            AttackMode::Headers | AttackMode::Body | AttackMode::Read | AttackMode::Range
        )
    }

    /// Its name in specs and reports (`tls-handshake`).
    pub fn name(self) -> &'static str {
        match self {
            AttackMode::Headers => "headers",
            AttackMode::Body => "body",
            AttackMode::Read => "read",
            AttackMode::Range => "range",
            AttackMode::TlsHandshake => "tls-handshake",
            AttackMode::H2SlowHeaders => "h2-slow-headers",
            AttackMode::H2SlowRead => "h2-slow-read",
            AttackMode::H2RapidReset => "h2-rapid-reset",
            AttackMode::H2Continuation => "h2-continuation",
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AttackPlan {
    pub mode: AttackMode,
    pub connections: u32,
    /// New connections per second (h2-rapid-reset: streams a second;
    /// h2-continuation: frames a second on each connection).
    pub rate: u32,
    /// Seconds between follow-up bytes (or reads) on each connection.
    pub interval: Duration,
    pub duration: Duration,
    /// The address to connect from (TLS and HTTP/2 kinds; e.g. another
    /// loopback address, to tell the attacker from a client on this host).
    pub source: Option<std::net::IpAddr>,
}
