//! The audit log's line format, shared by the server that writes it and the readers and the
//! checker that judge it.

use dlock_core::{Event, Input};
use serde::{Deserialize, Serialize};

/// One line of the audit log: a JSON object, one per line, in the order the server wrote it.
///
/// A log is one or more server lifetimes, each beginning with [`AuditLine::Start`]; a
/// rotated file begins with [`AuditLine::Rotated`] and continues the lifetime of the file
/// before it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditLine {
    /// A server opened the log: a new server lifetime begins (no sessions, no locks).
    Start {
        /// Wall clock, microseconds since the Unix epoch.
        ts_us: u64,
        /// The server's process id.
        pid: u32,
    },
    /// The log was rotated: this file continues the history of the previous one (same
    /// server lifetime).
    Rotated {
        /// Wall clock, microseconds since the Unix epoch.
        ts_us: u64,
        /// The server's process id.
        pid: u32,
    },
    /// This many lines before this one could not be written (a full disk, an IO error):
    /// the history has a hole here.
    Gap {
        /// Wall clock, microseconds since the Unix epoch.
        ts_us: u64,
        /// How many lines were dropped.
        dropped: u64,
    },
    /// One applied input and the events it produced, in order.
    Apply {
        /// Wall clock, microseconds since the Unix epoch, read just before applying.
        ts_us: u64,
        /// The input.
        input: Input,
        /// Its events.
        events: Vec<Event>,
    },
}
