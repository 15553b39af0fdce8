//! The audit log of a cluster member: what it applies from the replicated log.
//!
//! Every member, leader and followers alike, records each input its state machine applies
//! (`(index, now_ms, command)` and the events), so any member's log is the committed
//! history in the format of the single server's ([`crate::audit`]), read by the same
//! checker and `dlock verify`. The differences:
//!
//! - The log begins, and goes on after each restart of the node, with an
//!   [`AuditLine::Replica`] line instead of `Start`: a node's restart is not a new lifetime
//!   (sessions and locks live in the replicated state).
//! - A restarted node applies again the entries after its last snapshot. Each index is
//!   written once: on opening, the node finds the last index its log holds (the live file,
//!   or `PATH.1` when it was just rotated) and skips inputs at or below it.
//! - Entries a node receives in a snapshot (a follower far behind) are never applied one by
//!   one: an [`AuditLine::Snapshot`] line marks the hole, which another member's log fills.
//! - `ts_us` is when this node applied the input; engine time is the leader's stamp
//!   `now_ms`, by which the checker judges a cluster's leases.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use dlock_core::{Event, Input};

use crate::ServerError;
use crate::audit::{Audit, AuditConfig, AuditLine, now_us, rotated};

/// How much of a log's end is read to find its last index (one line is far smaller).
const TAIL_BYTES: u64 = 4 << 20;

/// A cluster member's audit log, fed by its state machine.
#[derive(Debug)]
pub(crate) struct ReplicaAudit {
    audit: Audit,
    /// The last input index the log holds (or marks as a hole).
    last: u64,
}

impl ReplicaAudit {
    /// Opens the log of node `node` for appending and writes its `Replica` line.
    pub(crate) fn open(config: AuditConfig, node: u64) -> Result<ReplicaAudit, ServerError> {
        let last = last_index_of(&config.path).max(last_index_of(&rotated(&config.path, 1)));
        let first = AuditLine::Replica {
            ts_us: now_us(),
            pid: std::process::id(),
            node,
            applied: last,
        };
        let audit = Audit::open_with(config, &first)?;
        Ok(ReplicaAudit { audit, last })
    }

    /// The inputs after the last one written up to `upto` will never be applied here.
    fn hole_until(&mut self, upto: u64) {
        if upto > self.last {
            self.audit.write(&AuditLine::Snapshot {
                ts_us: now_us(),
                after: self.last,
                upto,
            });
            self.last = upto;
        }
    }
}

impl dlock_raft::Auditor for ReplicaAudit {
    fn opened(&mut self, applied: u64) {
        // The snapshot the node starts from covers inputs this log may not hold (it was
        // deleted, or rotated away, or the snapshot was installed by a run that died before
        // writing its mark).
        self.hole_until(applied);
    }

    fn applied(&mut self, input: &Input, events: &[Event]) {
        if input.index <= self.last {
            // Applied again after a restart: written by an earlier run.
            return;
        }
        self.audit.record(now_us(), input, events);
        self.last = input.index;
    }

    fn installed(&mut self, upto: u64) {
        self.hole_until(upto);
    }
}

/// The last input index a log file holds: that of its last `Apply` line, or what its last
/// `Replica` or `Snapshot` line covers; 0 for a missing or empty file.
fn last_index_of(path: &Path) -> u64 {
    let Ok(mut file) = File::open(path) else {
        return 0;
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(TAIL_BYTES);
    let mut tail = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_err() || file.read_to_end(&mut tail).is_err() {
        return 0;
    }
    // From the end: the first line that parses decides (a torn last line does not).
    for line in tail.split(|b| *b == b'\n').rev() {
        let Ok(parsed) = serde_json::from_slice::<AuditLine>(line) else {
            continue;
        };
        match parsed {
            AuditLine::Apply { input, .. } => return input.index,
            AuditLine::Replica { applied, .. } => return applied,
            AuditLine::Snapshot { upto, .. } => return upto,
            AuditLine::Start { .. } | AuditLine::Rotated { .. } | AuditLine::Gap { .. } => {}
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlock_core::{Command, EventKind, SessionId};
    use dlock_raft::Auditor;

    fn tick(index: u64) -> Input {
        Input {
            index,
            now_ms: index * 10,
            command: Command::Tick,
        }
    }

    fn read(path: &Path) -> Vec<AuditLine> {
        let mut lines = Vec::new();
        dlock_history::read_audit_log(path, |l| lines.push(l)).unwrap();
        lines
    }

    fn indices(lines: &[AuditLine]) -> Vec<u64> {
        lines
            .iter()
            .filter_map(|l| match l {
                AuditLine::Apply { input, .. } => Some(input.index),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_restarted_member_writes_each_index_once_and_marks_snapshot_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let expired = [Event {
            session: SessionId(1),
            request: None,
            lock: None,
            kind: EventKind::SessionExpired,
        }];
        let mut a = ReplicaAudit::open(AuditConfig::new(&path), 2).unwrap();
        a.opened(0);
        for i in 1..=5 {
            a.applied(&tick(i), &expired);
        }
        drop(a);
        // Killed mid-line: the torn bytes do not count.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"Apply\":{\"ts_");
        std::fs::write(&path, text).unwrap();
        // Restarted from a snapshot at 3: entries 4.. are applied again, then 6 and 7 are
        // new; a snapshot installed up to 20 leaves a hole; 21 is new.
        let mut a = ReplicaAudit::open(AuditConfig::new(&path), 2).unwrap();
        a.opened(3);
        for i in 4..=7 {
            a.applied(&tick(i), &[]);
        }
        a.installed(20);
        a.applied(&tick(21), &[]);
        drop(a);
        let lines = read(&path);
        assert_eq!(indices(&lines), vec![1, 2, 3, 4, 5, 6, 7, 21]);
        assert!(matches!(
            lines[0],
            AuditLine::Replica {
                node: 2,
                applied: 0,
                ..
            }
        ));
        assert!(
            lines
                .iter()
                .any(|l| matches!(l, AuditLine::Replica { applied: 5, .. })),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| matches!(
                l,
                AuditLine::Snapshot {
                    after: 7,
                    upto: 20,
                    ..
                }
            )),
            "{lines:?}"
        );
        // The first run's events are what was kept for index 5.
        assert!(lines.iter().any(
            |l| matches!(l, AuditLine::Apply { input, events, .. } if input.index == 5 && events.len() == 1)
        ));

        // A node whose snapshot is ahead of its log (the log was lost): the hole is marked.
        let other = dir.path().join("other.jsonl");
        let mut a = ReplicaAudit::open(AuditConfig::new(&other), 3).unwrap();
        a.opened(100);
        a.applied(&tick(101), &[]);
        let lines = read(&other);
        assert!(matches!(
            lines[1],
            AuditLine::Snapshot {
                after: 0,
                upto: 100,
                ..
            }
        ));
        assert_eq!(indices(&lines), vec![101]);
    }

    #[test]
    fn the_last_index_is_found_in_the_rotated_file_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut a = ReplicaAudit::open(AuditConfig::new(&path), 1).unwrap();
        for i in 1..=9 {
            a.applied(&tick(i), &[]);
        }
        drop(a);
        // Rotated just before the node was killed: the live file holds no input yet.
        std::fs::rename(&path, rotated(&path, 1)).unwrap();
        let head = AuditLine::Rotated { ts_us: 1, pid: 1 };
        std::fs::write(
            &path,
            format!("{}\n", serde_json::to_string(&head).unwrap()),
        )
        .unwrap();
        let mut a = ReplicaAudit::open(AuditConfig::new(&path), 1).unwrap();
        for i in 5..=10 {
            a.applied(&tick(i), &[]);
        }
        assert_eq!(indices(&read(&path)), vec![10]);
    }
}
