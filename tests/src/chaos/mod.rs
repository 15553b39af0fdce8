//! Safety under faults: a randomized workload of many clients against a live server while
//! faults are injected, a history of what happened, and a checker that judges the history.
//!
//! - [`history`]: the history: the server's audit log plus the workload's own records.
//! - [`checker`]: replays a history and reports violations of the six properties, with
//!   counterexamples.
#![allow(clippy::too_many_lines)]

pub mod checker;
pub mod history;

pub use checker::{CheckConfig, CheckReport, Checker, Property, Violation, check};
pub use history::{AuditLine, ClientRecord, read_audit_log};
