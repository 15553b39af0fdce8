//! The audit log's line format, shared by the server that writes it and the readers and the
//! checker that judge it.

use dlock_core::{Event, Input};
use serde::{Deserialize, Serialize};

/// One line of the audit log: a JSON object, one per line, in the order the server wrote it.
///
/// A log is one or more server lifetimes, each beginning with [`AuditLine::Start`]; a
/// rotated file begins with [`AuditLine::Rotated`] and continues the lifetime of the file
/// before it.
///
/// A member of a cluster writes what it applies from the replicated log, so its log is the
/// committed history: it begins (and goes on after each restart of the node) with
/// [`AuditLine::Replica`], which is not a new lifetime (the replicated sessions and locks
/// survive a node's restart), and marks entries it received in a snapshot, which it never
/// applied one by one, with [`AuditLine::Snapshot`].
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
    /// A member of a cluster opened the log: the committed history goes on after input
    /// `applied` (the node re-applies later entries from its log, and writes none it wrote
    /// before). Not a new lifetime: sessions and locks live in the replicated state.
    Replica {
        /// Wall clock, microseconds since the Unix epoch.
        ts_us: u64,
        /// The server's process id.
        pid: u32,
        /// The node's id in the cluster.
        node: u64,
        /// The last input index this log holds (or that the node's state already covers):
        /// the next input written is above it. Input indices, not log indices: an entry
        /// of several commands is several inputs.
        applied: u64,
    },
    /// Inputs above `after` up to and including `upto` reached this node in a snapshot of
    /// the replicated state, so they are not in this log: the history has a hole here that
    /// another member's log fills.
    Snapshot {
        /// Wall clock, microseconds since the Unix epoch.
        ts_us: u64,
        /// The last input index written before the hole.
        after: u64,
        /// The last input index the snapshot covers.
        upto: u64,
    },
}

impl AuditLine {
    /// The wall-clock time of the line, microseconds since the Unix epoch.
    pub fn ts_us(&self) -> u64 {
        match self {
            AuditLine::Start { ts_us, .. }
            | AuditLine::Rotated { ts_us, .. }
            | AuditLine::Gap { ts_us, .. }
            | AuditLine::Apply { ts_us, .. }
            | AuditLine::Replica { ts_us, .. }
            | AuditLine::Snapshot { ts_us, .. } => *ts_us,
        }
    }
}
