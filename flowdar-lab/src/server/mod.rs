//! Servers and clients for demos, experiments and tests: a throwaway Apache
//! on a loopback port with its own config in a temp dir (optionally with
//! TLS and HTTP/2, and a PHP-FPM pool behind it), a bounded HTTP/1.1
//! load, the experiment's wall-time client, a `wrk` driver, slow-HTTP,
//! TLS and HTTP/2 attacks, the lab of client and attacker hosts (network namespaces), and
//! the rule of which addresses traffic may go to.
mod apache;
mod attack;
mod attack_plan;
mod client;
mod h2attack;
mod h2load;
mod lab;
mod load;
pub mod otlp_receiver;
mod per_second;
mod php;
pub(crate) mod process;
mod slowhttptest;
mod targets;
mod wrk;

pub use apache::{ApacheOptions, Mpm, ServerError, ThrowawayApache};
pub use attack::{Attack, AttackError, AttackMode, AttackPlan, AttackReport};
pub use client::{run as run_client, ClientPlan, ClientReport};
pub use h2load::{run as run_h2load, H2loadError, H2loadPlan, H2LOAD};
pub use lab::{lab_namespaces, sweep_leftovers, Host, Lab, LabError};
pub use load::{run as run_load, LoadPlan, LoadResult};
pub use per_second::PerSecond;
pub use php::PhpFpm;
pub use targets::{TargetError, Targets};
pub use wrk::{run as run_wrk, WrkError, WrkPlan, WrkReport};

/// The page every test request fetches.
pub const INDEX_PATH: &str = "/index.html";
/// A response larger than the kernel's socket buffers, for the attacks
/// that work on the response (slow read, byte ranges).
pub const LARGE_PATH: &str = "/large.bin";
