//! The opt-in audit log ([`Config::audit_log`](crate::Config::audit_log)): one JSON line per
//! applied engine input with the events it produced, in apply order, written and flushed
//! before those events are dispatched to any client.
//!
//! It exists so that an external checker can replay exactly what the engine decided (the
//! grant and release order, fencing tokens, lease expiries) and judge it against the rule
//! book. Every line carries `ts_us`, the wall clock ([`SystemTime`]) in microseconds since the
//! Unix epoch, read by the server just before it applies the input, so that the server's
//! decisions can be compared with events a client records with the same clock on the same
//! host. A [`AuditLine::Start`] line is written each time a server opens the log, so a log
//! appended to across restarts shows where each server lifetime begins.
//!
//! The file is opened for appending and each line is written with a single `write` call, so
//! a server killed with `kill -9` leaves at worst one torn last line. It is not fsynced: it
//! survives a process crash, not a machine crash.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use dlock_core::{Event, Input};
use serde::{Deserialize, Serialize};

use crate::ServerError;

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditLine {
    /// A server opened the log: a new server lifetime begins (no sessions, no locks).
    Start {
        /// Wall clock, microseconds since the Unix epoch.
        ts_us: u64,
        /// The server's process id.
        pid: u32,
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

/// The borrowed twin of [`AuditLine::Apply`], serialised the same way without copying.
#[derive(Serialize)]
enum ApplyRef<'a> {
    Apply {
        ts_us: u64,
        input: &'a Input,
        events: &'a [Event],
    },
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// An open audit log.
#[derive(Debug)]
pub(crate) struct Audit {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
}

impl Audit {
    /// Opens `path` for appending (creating it) and writes a [`AuditLine::Start`] line.
    pub(crate) fn open(path: &Path) -> Result<Audit, ServerError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| ServerError::Config(format!("audit log {}: {e}", path.display())))?;
        let mut audit = Audit {
            path: path.to_owned(),
            file,
            buf: Vec::new(),
        };
        let start = AuditLine::Start {
            ts_us: now_us(),
            pid: std::process::id(),
        };
        audit.write(&start)?;
        Ok(audit)
    }

    /// Appends one applied input with its events. `ts_us` is when it was applied.
    pub(crate) fn record(
        &mut self,
        ts_us: u64,
        input: &Input,
        events: &[Event],
    ) -> Result<(), ServerError> {
        self.write(&ApplyRef::Apply {
            ts_us,
            input,
            events,
        })
    }

    fn write(&mut self, line: &impl Serialize) -> Result<(), ServerError> {
        self.buf.clear();
        let fail = |e: &dyn std::fmt::Display, path: &Path| {
            ServerError::CoreTask(format!("writing audit log {}: {e}", path.display()))
        };
        serde_json::to_writer(&mut self.buf, line).map_err(|e| fail(&e, &self.path))?;
        self.buf.push(b'\n');
        // One write per line: a crash tears at most the last line.
        self.file
            .write_all(&self.buf)
            .and_then(|()| self.file.flush())
            .map_err(|e| fail(&e, &self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlock_core::{Command, EventKind, SessionId};

    #[test]
    fn lines_round_trip_and_restarts_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let input = Input {
            index: 7,
            now_ms: 3,
            command: Command::Tick,
        };
        let events = vec![Event {
            session: SessionId(2),
            request: None,
            lock: None,
            kind: EventKind::SessionExpired,
        }];
        Audit::open(&path)
            .unwrap()
            .record(42, &input, &events)
            .unwrap();
        Audit::open(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<AuditLine> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert!(matches!(lines[0], AuditLine::Start { .. }));
        assert_eq!(
            lines[1],
            AuditLine::Apply {
                ts_us: 42,
                input,
                events
            }
        );
        assert!(matches!(lines[2], AuditLine::Start { .. }));
    }
}
