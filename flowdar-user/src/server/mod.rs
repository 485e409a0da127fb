//! Servers and clients for demos, experiments and tests: a throwaway Apache
//! on a loopback port with its own config in a temp dir, a bounded HTTP/1.1
//! load, the experiment's wall-time client, a `wrk` driver, slow-HTTP
//! attacks, the lab of client and attacker hosts (network namespaces), and
//! the rule of which addresses traffic may go to.
mod apache;
mod client;
mod lab;
mod load;
mod slowhttptest;
mod targets;
mod wrk;

pub use apache::{ApacheOptions, Mpm, ServerError, ThrowawayApache, INDEX_PATH, LARGE_PATH};
pub use client::{run as run_client, ClientPlan, ClientReport};
pub use lab::{lab_namespaces, sweep_leftovers, Host, Lab, LabError};
pub use load::{run as run_load, LoadPlan, LoadResult};
pub use slowhttptest::{Attack, AttackError, AttackMode, AttackPlan};
pub use targets::{TargetError, Targets};
pub use wrk::{run as run_wrk, WrkError, WrkPlan, WrkReport};
