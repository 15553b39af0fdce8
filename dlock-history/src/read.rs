//! Reading audit logs: one file, or a history stored in several (rotated files, one file per
//! server lifetime), streamed line by line so that a long log is never held in memory.
//!
//! The server writes each line with one `write` call and never fsyncs, so a server killed
//! with `kill -9` leaves at worst one torn line: the last line of the file it was writing.
//! The next server appends its [`AuditLine::Start`] (a cluster member its
//! [`AuditLine::Replica`]; below, "a `Start`" stands for either) after it, possibly on the same line when
//! the torn line has no newline. A line that does not parse is therefore accepted only where
//! a crash can leave one: right before a `Start` (also across a rotation, as `PATH.1` ends
//! torn and `PATH` begins with `Rotated` then `Start`), glued in front of a `Start`, or as the
//! very last line of the history if it has no newline (a crash, or a line being written while
//! the log is read): the newline is the last byte of each write, so a last line that has it
//! was written whole. Anywhere else it is a [`ReadError::Corrupt`]. A file with bytes in it
//! but not one audit line is not an audit log at all ([`ReadError::NotAuditLog`]).

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::line::AuditLine;

/// Counts of what was read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditStats {
    /// Applied inputs.
    pub applied: u64,
    /// Server lifetimes (start lines).
    pub starts: u64,
    /// Lines torn by a crash (skipped).
    pub torn: u64,
    /// Gap lines (each marks lines the server could not write).
    pub gaps: u64,
    /// Opens of the log by a member of a cluster ([`AuditLine::Replica`] lines).
    #[serde(default)]
    pub replicas: u64,
    /// Holes left by snapshots a member of a cluster installed ([`AuditLine::Snapshot`]).
    #[serde(default)]
    pub snapshots: u64,
}

/// Why an audit log could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The file could not be opened.
    #[error("cannot open audit log {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Reading the file failed.
    #[error("cannot read audit log {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A line does not parse, and it is not where a crash can leave a torn line.
    #[error("audit log {}, line {line}, does not parse: {text:?}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The line number (1-based).
        line: u64,
        /// The start of the line.
        text: String,
    },
    /// The file is not empty, but not one of its lines is an audit line.
    #[error("{} is not an audit log: none of its lines is an audit line", path.display())]
    NotAuditLog {
        /// The file.
        path: PathBuf,
    },
}

/// Where a line was read: the index of its file in the list given to [`read_audit_logs`] and
/// its 1-based line number in that file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LineAt {
    /// Index of the file in the list.
    pub file: usize,
    /// Line number in the file, from 1.
    pub line: u64,
}

/// Reads one audit log, calling `each` for every line in order. See [`read_audit_logs`] for
/// which unparsable lines are tolerated.
pub fn read_audit_log(
    path: &Path,
    mut each: impl FnMut(AuditLine),
) -> Result<AuditStats, ReadError> {
    read_audit_logs(&[path], |_, line| each(line))
}

/// Reads a history stored in several files, in the order given (oldest first: for a
/// rotated log `PATH.N` .. `PATH.1`, `PATH`), calling `each` for every line with where it was
/// read.
///
/// A line that does not parse is accepted (skipped, and counted in [`AuditStats::torn`])
/// only where a crash can leave one: right before a `Start` line (also when the file ends
/// there and the next begins with `Rotated` then `Start`), glued in front of a `Start` on the
/// same line, or as the very last line when it has no newline (a crash, or a line being
/// written as the log is read). Anywhere else it is a [`ReadError::Corrupt`]; a file that is
/// not empty but holds no audit line is a [`ReadError::NotAuditLog`].
pub fn read_audit_logs<P: AsRef<Path>>(
    paths: &[P],
    mut each: impl FnMut(LineAt, AuditLine),
) -> Result<AuditStats, ReadError> {
    let mut stats = AuditStats::default();
    // An unparsable line waiting to learn whether a `Start` follows it.
    let mut torn: Option<Torn> = None;
    for (file, path) in paths.iter().enumerate() {
        let path = path.as_ref();
        let reader = File::open(path).map_err(|source| ReadError::Open {
            path: path.to_owned(),
            source,
        })?;
        let mut reader = BufReader::new(reader);
        let mut bytes = Vec::new();
        // Whether the file holds anything at all, and how many audit lines.
        let (mut empty, mut lines) = (true, 0u64);
        for n in 1.. {
            bytes.clear();
            let read = reader
                .read_until(b'\n', &mut bytes)
                .map_err(|source| ReadError::Read {
                    path: path.to_owned(),
                    source,
                })?;
            if read == 0 {
                break;
            }
            empty = false;
            // Kept apart from the text: only a line without it can have been torn (the
            // newline is the last byte of each write).
            let newline = bytes.last() == Some(&b'\n');
            if newline {
                bytes.pop();
            }
            let at = LineAt { file, line: n };
            let parsed = match serde_json::from_slice::<AuditLine>(&bytes) {
                Ok(parsed) => parsed,
                Err(_) if bytes.is_empty() => continue,
                Err(_) => {
                    if let Some(t) = torn.take() {
                        return Err(t.corrupt());
                    }
                    if let Some(start) = glued_start(&bytes) {
                        // A torn line with the next server's start appended to it.
                        stats.torn += 1;
                        match start {
                            AuditLine::Replica { .. } => stats.replicas += 1,
                            _ => stats.starts += 1,
                        }
                        lines += 1;
                        each(at, start);
                        continue;
                    }
                    torn = Some(Torn::new(path, at, &bytes, newline));
                    continue;
                }
            };
            lines += 1;
            if let Some(t) = torn.take() {
                match parsed {
                    AuditLine::Start { .. } | AuditLine::Replica { .. } => stats.torn += 1,
                    // The file ended torn and was rotated before the next server's start.
                    AuditLine::Rotated { .. } if at.line == 1 && t.at.file != file => {
                        torn = Some(t);
                    }
                    _ => return Err(t.corrupt()),
                }
            }
            match parsed {
                AuditLine::Start { .. } => stats.starts += 1,
                AuditLine::Apply { .. } => stats.applied += 1,
                AuditLine::Gap { .. } => stats.gaps += 1,
                AuditLine::Replica { .. } => stats.replicas += 1,
                AuditLine::Snapshot { .. } => stats.snapshots += 1,
                AuditLine::Rotated { .. } => {}
            }
            each(at, parsed);
        }
        if !empty && lines == 0 {
            return Err(ReadError::NotAuditLog {
                path: path.to_owned(),
            });
        }
    }
    match torn {
        // The last line of the history was written whole, newline included: not torn.
        Some(t) if t.newline => return Err(t.corrupt()),
        Some(_) => stats.torn += 1,
        None => {}
    }
    Ok(stats)
}

/// An unparsable line, remembered until what follows it is known.
struct Torn {
    path: PathBuf,
    at: LineAt,
    text: String,
    /// Whether the line ended with a newline.
    newline: bool,
}

impl Torn {
    fn new(path: &Path, at: LineAt, bytes: &[u8], newline: bool) -> Torn {
        Torn {
            path: path.to_owned(),
            at,
            text: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            newline,
        }
    }

    fn corrupt(self) -> ReadError {
        ReadError::Corrupt {
            path: self.path,
            line: self.at.line,
            text: self.text,
        }
    }
}

/// A `Start` (or a cluster member's `Replica`) line glued to the end of a torn line, if
/// `bytes` ends with one.
fn glued_start(bytes: &[u8]) -> Option<AuditLine> {
    const STARTS: [&[u8]; 2] = [b"{\"Start\":", b"{\"Replica\":"];
    let at = STARTS
        .iter()
        .filter_map(|start| bytes.windows(start.len()).rposition(|w| w == *start))
        .max()?;
    match serde_json::from_slice::<AuditLine>(&bytes[at..]) {
        Ok(start @ (AuditLine::Start { .. } | AuditLine::Replica { .. })) if at > 0 => Some(start),
        _ => None,
    }
}
