//! Servers and clients for demos, experiments and tests: a throwaway Apache
//! on a loopback port with its own config in a temp dir, and a bounded
//! HTTP/1.1 load generator and a `wrk` driver (loopback only).
mod apache;
mod load;
mod slowhttptest;
mod wrk;

pub use apache::{ApacheOptions, Mpm, ServerError, ThrowawayApache, INDEX_PATH};
pub use load::{run as run_load, LoadPlan, LoadResult};
pub use slowhttptest::{Attack, AttackMode, AttackPlan};
pub use wrk::{run as run_wrk, WrkError, WrkPlan, WrkReport};
