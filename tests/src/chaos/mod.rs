//! Safety under faults: a randomized workload of many clients against a live server while
//! faults are injected, a history of what happened, and a checker that judges the history.
//!
//! - [`history`]: the history: the server's audit log plus the workload's own records.
//! - [`checker`]: replays a history and reports violations of the six properties, with
//!   counterexamples.
//! - [`workload`]: the clients and their random operations.
//! - [`faults`]: the fault injector (cut, black hole, dropped session, paused client, server
//!   kill and restart).
//! - [`server_proc`]: the server as a child process (`chaos serve`) that can be killed.
//! - [`run`]: one chaos run end to end.
//! - [`fuzz`]: seeded random and mutated frames against the decoder and a live server.
//!
//! The `chaos` binary runs all of this from the command line (`chaos --duration 10m`).

pub mod checker;
pub mod cluster;
pub mod faults;
pub mod fuzz;
pub mod history;
pub mod run;
pub mod server_proc;
pub mod workload;

pub use checker::{CheckConfig, CheckReport, Checker, Property, Violation, check};
pub use history::{AuditLine, ClientRecord, read_audit_log};
