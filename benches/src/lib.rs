//! Benchmarks and the load generator for dlock.
//!
//! The load generator (`loadgen` binary) drives one of several lock services through the same
//! scenarios and reports throughput, latency percentiles and per-client fairness, so dlock can
//! be compared side by side with what users already run:
//!
//! - [`backend::dlock`]: dlock through its client SDK;
//! - [`backend::echo`]: a bare TCP echo server (two round trips per cycle): the floor;
//! - `backend::redis` and `backend::etcd` (cargo feature `peers`): Redis `SET NX PX` + Lua
//!   compare-and-delete, and etcd's lease + Lock/Unlock API.
//!
//! [`fairness`] (the `fairness` binary) measures what one client address's flood of pipelined
//! lock requests does to another address's lock cycle.
//!
//! [`failover`] (the `failover` binary) measures how long a 3-node cluster takes to grant
//! again after its leader is killed.
//!
//! Every backend implements [`Backend`]; [`scenario::run`] runs one [`Scenario`] against one
//! backend and returns a [`Row`].
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use dlock_benches::{Scenario, Spec, backend::echo::EchoBackend, scenario};
//!
//! let backend = EchoBackend::start(std::time::Duration::from_secs(10)).await?;
//! let spec = Spec { clients: 4, ..Spec::new(Scenario::Uncontended) };
//! let row = scenario::run(&backend, &spec).await?;
//! println!("{} cycles/s", row.ops_per_s);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod backend;
pub mod cpu;
pub mod failover;
pub mod fairness;
mod idle;
pub mod limits;
pub mod report;
pub mod rss;
pub mod scenario;
pub mod spec;

pub use backend::{Access, Backend, Conn};
pub use report::Row;
pub use spec::{Scenario, Spec};
