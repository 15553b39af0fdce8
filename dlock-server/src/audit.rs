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
//!
//! Operational bounds:
//! - **Rotation by size.** When the file grows past [`AuditConfig::max_size`] it is renamed
//!   to `PATH.1` (an older `PATH.1` to `PATH.2`, and so on; the oldest beyond
//!   [`AuditConfig::keep`] is deleted) and a new file is started with an
//!   [`AuditLine::Rotated`] line, so a reader that reads `PATH.N` .. `PATH.1`, `PATH` in that
//!   order sees one continuous history.
//! - **A failing disk never stops the server.** A line that cannot be written (a full disk,
//!   an IO error) is dropped: the server logs the error (once, then once per
//!   [`ERROR_LOG_EVERY`] further failures) and counts the dropped lines; the next line that can be written is preceded by an
//!   [`AuditLine::Gap`] saying how many were lost, so a checker knows the history has a hole.
//! - **No secrets.** The resume secret of an `OpenSession` input is written as 0.
//! - **Private files.** The log and its rotated files are created with mode 0600.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use dlock_core::{Command, Event, Input};
use serde::Serialize;

use crate::ServerError;

// The line format is shared with the readers and the checker, so it is defined with them.
pub use dlock_history::AuditLine;

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

/// After the first failed write, an error is logged again only every this many failures.
pub const ERROR_LOG_EVERY: u64 = 10_000;

/// Where and how big the audit log may grow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// The log file.
    pub path: PathBuf,
    /// Rotate when the file grows past this many bytes.
    pub max_size: u64,
    /// Rotated files kept (`PATH.1` .. `PATH.keep`); 0 keeps none (the file is truncated
    /// by starting anew).
    pub keep: usize,
}

impl AuditConfig {
    /// Default rotation size: 256 MiB.
    pub const DEFAULT_MAX_SIZE: u64 = 256 << 20;
    /// Default number of rotated files kept.
    pub const DEFAULT_KEEP: usize = 4;

    /// The smallest size before rotation `--audit-log-max-size` accepts: a few hundred
    /// lines (an `AuditConfig` built in code may rotate sooner, as tests of rotation do).
    pub const MIN_MAX_SIZE: u64 = 64 * 1024;

    /// `path` with the default rotation settings.
    pub fn new(path: impl Into<PathBuf>) -> AuditConfig {
        AuditConfig {
            path: path.into(),
            max_size: Self::DEFAULT_MAX_SIZE,
            keep: Self::DEFAULT_KEEP,
        }
    }
}

/// An open audit log.
#[derive(Debug)]
pub(crate) struct Audit {
    config: AuditConfig,
    file: Option<File>,
    size: u64,
    buf: Vec<u8>,
    /// Lines dropped since the last line written.
    pending_gap: u64,
    /// Lines dropped since the log was opened.
    dropped: u64,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

pub(crate) fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl Audit {
    /// Opens the log for appending (creating it, mode 0600) and writes a
    /// [`AuditLine::Start`] line. Failing to open it is a configuration error: the operator
    /// asked for a log the server cannot write.
    pub(crate) fn open(config: AuditConfig) -> Result<Audit, ServerError> {
        let start = AuditLine::Start {
            ts_us: now_us(),
            pid: std::process::id(),
        };
        Audit::open_with(config, &start)
    }

    /// Opens the log for appending like [`open`](Self::open), with `first` as the first
    /// line written (a cluster member's [`AuditLine::Replica`]).
    pub(crate) fn open_with(config: AuditConfig, first: &AuditLine) -> Result<Audit, ServerError> {
        let file = open_append(&config.path).map_err(|e| {
            ServerError::Config(format!("audit log {}: {e}", config.path.display()))
        })?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut audit = Audit {
            config,
            file: Some(file),
            size,
            buf: Vec::new(),
            pending_gap: 0,
            dropped: 0,
        };
        audit.write(first);
        Ok(audit)
    }

    /// Appends one applied input with its events. `ts_us` is when it was applied. Never
    /// fails: a line that cannot be written is counted and logged (see the module docs).
    pub(crate) fn record(&mut self, ts_us: u64, input: &Input, events: &[Event]) {
        if let Command::OpenSession { name, ttl_ms, .. } = &input.command {
            let redacted = Input {
                index: input.index,
                now_ms: input.now_ms,
                command: Command::OpenSession {
                    name: name.clone(),
                    ttl_ms: *ttl_ms,
                    secret: 0,
                },
            };
            return self.write(&ApplyRef::Apply {
                ts_us,
                input: &redacted,
                events,
            });
        }
        self.write(&ApplyRef::Apply {
            ts_us,
            input,
            events,
        });
    }

    /// Appends `line` (see [`record`](Self::record) for what a failure does).
    pub(crate) fn write(&mut self, line: &impl Serialize) {
        if self.pending_gap > 0 {
            let gap = AuditLine::Gap {
                ts_us: now_us(),
                dropped: self.pending_gap,
            };
            if self.write_line(&gap).is_err() {
                self.drop_line(line_kind(&gap));
                return;
            }
            self.pending_gap = 0;
        }
        if self.write_line(line).is_err() {
            self.drop_line("apply");
        }
    }

    fn drop_line(&mut self, what: &str) {
        self.pending_gap += 1;
        self.dropped += 1;
        if self.dropped % ERROR_LOG_EVERY == 1 {
            tracing::error!(
                path = %self.config.path.display(),
                dropped = self.dropped,
                "audit log line ({what}) not written; the server goes on without it"
            );
        }
    }

    fn write_line(&mut self, line: &impl Serialize) -> std::io::Result<()> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, line)?;
        self.buf.push(b'\n');
        if self.size > 0 && self.size + self.buf.len() as u64 > self.config.max_size {
            self.rotate();
        }
        if self.file.is_none() {
            // A failed rotation or reopen: try again with each line.
            self.file = Some(open_append(&self.config.path)?);
            self.size = 0;
        }
        let file = self.file.as_mut().ok_or(std::io::ErrorKind::NotFound)?;
        // One write per line: a crash tears at most the last line.
        let written = file.write_all(&self.buf).and_then(|()| file.flush());
        if let Err(e) = written {
            // Drop the handle: the next line reopens (a full disk may have room again).
            self.file = None;
            if self.dropped == 0 {
                tracing::error!(path = %self.config.path.display(), error = %e, "writing audit log");
            }
            return Err(e);
        }
        self.size += self.buf.len() as u64;
        Ok(())
    }

    /// Shifts `PATH` to `PATH.1` and older files up by one, and starts a new `PATH` with a
    /// `Rotated` line.
    fn rotate(&mut self) {
        let path = self.config.path.clone();
        self.file = None;
        if self.config.keep == 0 {
            let _ = std::fs::remove_file(&path);
        } else {
            let _ = std::fs::remove_file(rotated(&path, self.config.keep));
            for n in (1..self.config.keep).rev() {
                let _ = std::fs::rename(rotated(&path, n), rotated(&path, n + 1));
            }
            let _ = std::fs::rename(&path, rotated(&path, 1));
        }
        let Ok(file) = open_append(&path) else {
            return;
        };
        self.file = Some(file);
        self.size = 0;
        let mut head = Vec::new();
        let line = AuditLine::Rotated {
            ts_us: now_us(),
            pid: std::process::id(),
        };
        if serde_json::to_writer(&mut head, &line).is_ok() {
            head.push(b'\n');
            if let Some(f) = self.file.as_mut()
                && f.write_all(&head).is_ok()
            {
                self.size = head.len() as u64;
            }
        }
    }
}

fn line_kind(line: &AuditLine) -> &'static str {
    match line {
        AuditLine::Start { .. } => "start",
        AuditLine::Rotated { .. } => "rotated",
        AuditLine::Gap { .. } => "gap",
        AuditLine::Apply { .. } => "apply",
        AuditLine::Replica { .. } => "replica",
        AuditLine::Snapshot { .. } => "snapshot",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlock_core::{EventKind, SessionId};

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
        Audit::open(AuditConfig::new(&path))
            .unwrap()
            .record(42, &input, &events);
        Audit::open(AuditConfig::new(&path)).unwrap();
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

    fn read(path: &Path) -> Vec<AuditLine> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn open_session(index: u64, secret: u128) -> Input {
        Input {
            index,
            now_ms: 0,
            command: Command::OpenSession {
                name: "s".into(),
                ttl_ms: 1000,
                secret,
            },
        }
    }

    #[test]
    fn the_resume_secret_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut audit = Audit::open(AuditConfig::new(&path)).unwrap();
        audit.record(1, &open_session(1, 0xfeed_beef_cafe), &[]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&0xfeed_beef_cafe_u128.to_string()));
        assert_eq!(
            read(&path)[1],
            AuditLine::Apply {
                ts_us: 1,
                input: open_session(1, 0),
                events: vec![],
            }
        );
    }

    #[test]
    fn rotation_keeps_the_newest_files_and_marks_continuations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let config = AuditConfig {
            path: path.clone(),
            max_size: 300,
            keep: 2,
        };
        let mut audit = Audit::open(config).unwrap();
        for i in 1..=40 {
            audit.record(i, &open_session(i, 1), &[]);
        }
        assert!(rotated(&path, 1).exists() && rotated(&path, 2).exists());
        assert!(
            !rotated(&path, 3).exists(),
            "only two rotated files are kept"
        );
        for p in [rotated(&path, 2), rotated(&path, 1), path.clone()] {
            assert!(
                std::fs::metadata(&p).unwrap().len() <= 300,
                "{}",
                p.display()
            );
        }
        // The newest files, oldest first, are one continuous run of indices.
        let mut indices = Vec::new();
        for p in [rotated(&path, 2), rotated(&path, 1), path.clone()] {
            let lines = read(&p);
            assert!(matches!(lines[0], AuditLine::Rotated { .. }));
            indices.extend(lines.iter().filter_map(|l| match l {
                AuditLine::Apply { input, .. } => Some(input.index),
                _ => None,
            }));
        }
        assert_eq!(indices.last(), Some(&40));
        assert!(indices.windows(2).all(|w| w[1] == w[0] + 1), "{indices:?}");
    }

    #[cfg(unix)]
    #[test]
    fn the_log_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        Audit::open(AuditConfig::new(&path)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_drops_lines_and_leaves_a_gap_marker() {
        // /dev/full accepts the open and fails every write with ENOSPC.
        let mut audit = Audit::open(AuditConfig::new("/dev/full")).unwrap();
        audit.record(1, &open_session(1, 1), &[]);
        audit.record(2, &open_session(2, 1), &[]);
        assert_eq!((audit.dropped, audit.pending_gap), (3, 3));
        // Pointed back at a writable file (as when space frees up), the next line is
        // preceded by the gap.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        audit.config.path = path.clone();
        audit.file = None;
        audit.record(3, &open_session(3, 1), &[]);
        let lines = read(&path);
        assert!(
            matches!(lines[0], AuditLine::Gap { dropped: 3, .. }),
            "{lines:?}"
        );
        assert!(matches!(&lines[1], AuditLine::Apply { input, .. } if input.index == 3));
        assert_eq!(audit.pending_gap, 0);
    }
}
