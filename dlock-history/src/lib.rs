//! dlock's history checker: it replays what a dlock server decided, as recorded in its audit
//! log, and reports every violation of dlock's safety and liveness properties, each with a
//! counterexample that cites the audit lines involved. The test suite runs it after chaos
//! runs; operators run it as `dlock verify AUDIT_LOG...`.
//!
//! ```
//! use dlock_history::{AuditLine, CheckConfig, check};
//!
//! // A history is audit lines in the order the server wrote them (here: a server that
//! // started and did nothing), plus, optionally, what the clients recorded.
//! let history = vec![AuditLine::Start { ts_us: 1_700_000_000_000_000, pid: 42 }];
//! let report = check(CheckConfig::default(), history, &[]);
//! assert!(report.is_ok(), "{report}");
//! assert_eq!(report.lifetimes, 1);
//! ```
//!
//! Logs on disk are read with [`read_audit_log`] / [`read_audit_logs`] (which tolerate the
//! torn line a crash leaves), or checked at once with [`check_files`]:
//!
//! ```no_run
//! # fn main() -> Result<(), dlock_history::ReadError> {
//! use dlock_history::{CheckConfig, check_files, rotation_order};
//!
//! let files = rotation_order(&["audit.jsonl".into(), "audit.jsonl.1".into()]);
//! let (_stats, report) = check_files(CheckConfig::default(), &files, &[])?;
//! for v in &report.examples {
//!     println!("{v}");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # What is judged
//!
//! The [`Checker`] replays the server's audit log ([`AuditLine`]) in apply order. Inputs say
//! which resource, session and mode each lock id has (`LockId` = the index of the `Lock`
//! input); events say when locks are queued, granted, converted, released, cancelled and when
//! sessions end. From that it keeps its own model of every resource's holders and its convert
//! and wait queues, and judges:
//!
//! 1. [`Property::Compatibility`]: after every input, the granted modes on a resource are
//!    pairwise compatible (R7; a converting lock still holds its old mode, R9, R18).
//! 2. [`Property::Fencing`]: fencing tokens on a resource strictly increase from grant to
//!    grant, across server restarts; the tokens clients saw are the ones the server granted.
//! 3. [`Property::Completion`]: every request gets exactly one immediate answer; every queued
//!    request completes exactly once (granted, cancelled, timed out, deadlock victim) unless
//!    its session ends or the server restarts; completions only complete pending requests;
//!    no client operation hangs; at the end of a quiescent run nothing is pending.
//! 4. [`Property::Fifo`]: grant order follows R10–R13: a new request is granted on arrival
//!    only with both queues empty; a queued request is granted only from the head of its
//!    queue, and waiters only when no conversion is queued; and after every input the head of
//!    the queue in charge is not grantable (no lost wake-up, R12).
//! 5. [`Property::LostBeforeGrant`]: a client whose lock was lost (lease lapsed locally,
//!    session expired) saw `lost()` before the server granted an incompatible lock on that
//!    resource to another session.
//! 6. [`Property::DeadRelease`]: a session that stops renewing is expired, and its locks
//!    released, within its lease TTL plus [`CheckConfig::expiry_allowance_us`] after its last
//!    renewal (and not before the lease ends); a session dropped abruptly by a client is
//!    gone within TTL plus the allowance after the drop.
//!
//! A [`AuditLine::Gap`] (lines the server could not write) is reported as a violation of
//! [`Property::History`]: after it, nothing can be judged soundly. So is an input index that
//! a single server's lifetime skips with no `Gap` line for it (a line lost or removed): such
//! a server numbers its inputs one by one. It is judged from an [`AuditLine::Start`] on, not
//! in a cluster member's log, whose inputs skip the indices of entries without commands.
//!
//! **A history that begins mid-lifetime.** A server keeps only its newest rotated files, so
//! a history often begins with [`AuditLine::Rotated`] rather than [`AuditLine::Start`]. The
//! sessions and locks created before it are unknown: events about them are not judged, and
//! the no-lost-wake-up check (which needs every holder) is off until the next server start;
//! [`CheckReport::partial_start`] says so.
//!
//! **The server's log alone** decides properties 1 to 4 and 6, except their client-side
//! parts (the tokens clients saw, operations that hung, dropped sessions); property 5 needs
//! the client records ([`ClientRecord`]). See [`Property::decided_by_server_log`].
//!
//! **Clock assumption.** Properties 5 and 6 compare wall-clock times: the server stamps each
//! audit line with `SystemTime` when it applies the input, and clients stamp `lost()` and
//! drops with `SystemTime`. Both run on one host and read the same clock, so the stamps are
//! comparable up to scheduling delays (microseconds to a few milliseconds). The client-side
//! checks are only meaningful under that assumption; they are not for a multi-host run.
//!
//! **A cluster's history.** Each member of a cluster writes the inputs it applies from the
//! replicated log, so one member's log is the committed history; it begins (and, after each
//! restart of that member, goes on) with [`AuditLine::Replica`], which is not a new lifetime:
//! sessions and locks survive. In such a history leases are judged in engine time, the
//! leader-stamped `now_ms` of each input, not by `ts_us`: time stands still while there is
//! no leader, and a new leader's [`ExtendLeases`](dlock_core::Command::ExtendLeases) moves
//! every lease's end to at least `clock + grace`. An expiry must come at a tick stamped no
//! earlier than the lease's end and no later than the allowance after it, and a tick must
//! leave no session alive whose lease ended by its stamp. A member that received entries in
//! a snapshot marks the hole with [`AuditLine::Snapshot`] (a [`Property::History`] violation
//! in that log alone; another member's log fills it).
//!
//! The "tick" of property 6: the server has no fixed tick; it wakes at the engine's next
//! deadline. So the bound is TTL plus a scheduling allowance for the timer wake-up and the
//! batch in progress (default 250 ms on a loaded two-core machine).
#![forbid(unsafe_code)]

mod checker;
mod files;
mod line;
mod model;
mod property;
mod read;
mod records;
mod report;
mod subject;
mod text;

#[cfg(test)]
mod tests;

pub use checker::{Checker, check};
pub use files::{audit_files_in, check_files, rotation_order};
pub use line::AuditLine;
pub use property::{CheckConfig, Location, Property, Violation};
pub use read::{AuditStats, LineAt, ReadError, read_audit_log, read_audit_logs};
pub use records::{ClientRecord, LostKind, LostRecord, OpKind, OpOutcome, OpRecord};
pub use report::CheckReport;
