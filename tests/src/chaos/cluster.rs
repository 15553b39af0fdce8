//! Chaos against a cluster: the history merged from the members' audit logs.
//!
//! The members run as a [`TestCluster`](crate::cluster::TestCluster) (with
//! [`audit_logs`](crate::cluster::ClusterOptions::audit_logs) and every peer link through its
//! own proxy, so that a partition isolates one member from the others while its clients
//! still reach it). Every member writes the audit log of what it applies;
//! [`merge_member_logs`] turns them into one committed history: each input index once, in
//! index order, checking that members agree wherever their logs overlap (a replication
//! check), and marking inputs no member's log holds as a hole.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::history::{AuditLine, AuditStats, read_audit_logs};

/// What merging the members' logs found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MergeStats {
    /// Each member's counts.
    pub members: Vec<AuditStats>,
    /// Inputs in the merged history.
    pub inputs: u64,
    /// Inputs found in more than one member's log and compared.
    pub compared: u64,
    /// Inputs on which two members' logs disagree (input or events): the first few.
    pub mismatches: Vec<String>,
    /// How many inputs disagree.
    pub mismatch_count: u64,
    /// Ranges of inputs no member's log holds (each becomes a `Snapshot` line of the merged
    /// history, which the checker reports).
    pub holes: Vec<(u64, u64)>,
}

/// The input indices a member's log covers: `(after, upto]` ranges.
fn coverage(path: &Path) -> Result<(AuditStats, Vec<(u64, u64)>)> {
    let mut ranges = Vec::new();
    let mut from: Option<u64> = None;
    let mut last = 0u64;
    let stats = read_audit_logs(&[path], |_, line| match line {
        AuditLine::Replica { applied, .. } if from.is_none() => {
            from = Some(applied);
            last = applied;
        }
        AuditLine::Snapshot { after, upto, .. } => {
            ranges.push((from.unwrap_or(0), after));
            from = Some(upto);
            last = upto;
        }
        AuditLine::Apply { input, .. } => {
            if from.is_none() {
                from = Some(0);
            }
            last = input.index;
        }
        _ => {}
    })?;
    ranges.push((from.unwrap_or(0), last));
    Ok((stats, ranges))
}

/// A member's `Apply` lines in order, read again after [`coverage`] checked the file (so a
/// line that does not parse is a torn one, skipped).
struct Applies {
    lines: Lines<BufReader<File>>,
}

impl Applies {
    fn open(path: &Path) -> Result<Applies> {
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Applies {
            lines: BufReader::new(f).lines(),
        })
    }

    fn next_apply(&mut self) -> Result<Option<AuditLine>> {
        for line in self.lines.by_ref() {
            if let Ok(l @ AuditLine::Apply { .. }) = serde_json::from_str::<AuditLine>(&line?) {
                return Ok(Some(l));
            }
        }
        Ok(None)
    }
}

fn index_of(line: &AuditLine) -> u64 {
    match line {
        AuditLine::Apply { input, .. } => input.index,
        _ => 0,
    }
}

/// Merges the members' audit logs into one committed history, fed to `each` in index order:
/// a `Replica` line first, then every input once (with the earliest `ts_us` any member
/// applied it at), and a `Snapshot` line wherever no member's log holds an input.
pub fn merge_member_logs(paths: &[PathBuf], mut each: impl FnMut(AuditLine)) -> Result<MergeStats> {
    let mut stats = MergeStats::default();
    let mut covered = Vec::new();
    for p in paths {
        let (s, ranges) = coverage(p)?;
        stats.members.push(s);
        covered.push(ranges);
    }
    let mut readers = paths
        .iter()
        .map(|p| Applies::open(p))
        .collect::<Result<Vec<_>>>()?;
    let mut heads: Vec<Option<AuditLine>> = Vec::with_capacity(readers.len());
    let mut queue = BinaryHeap::new();
    for (i, r) in readers.iter_mut().enumerate() {
        let head = r.next_apply()?;
        if let Some(h) = &head {
            queue.push(Reverse((index_of(h), i)));
        }
        heads.push(head);
    }
    each(AuditLine::Replica {
        ts_us: 0,
        pid: 0,
        node: 0,
        applied: 0,
    });
    let held_anywhere = |a: u64, b: u64| {
        covered
            .iter()
            .any(|ranges| ranges.iter().any(|&(after, upto)| after < a && b <= upto))
    };
    let mut last = 0u64;
    while let Some(Reverse((index, first))) = queue.pop() {
        let Some(AuditLine::Apply {
            mut ts_us,
            input,
            events,
        }) = heads[first].take()
        else {
            continue;
        };
        // The same index from the other members' logs.
        while let Some(&Reverse((i2, m))) = queue.peek() {
            if i2 != index {
                break;
            }
            queue.pop();
            if let Some(AuditLine::Apply {
                ts_us: t2,
                input: in2,
                events: ev2,
            }) = heads[m].take()
            {
                stats.compared += 1;
                ts_us = ts_us.min(t2);
                if in2 != input || ev2 != events {
                    stats.mismatch_count += 1;
                    if stats.mismatches.len() < 10 {
                        stats.mismatches.push(format!(
                            "input {index}: member {} applied {input:?} giving {events:?}, member {} applied {in2:?} giving {ev2:?}",
                            first + 1,
                            m + 1
                        ));
                    }
                }
            }
            if let Some(h) = readers[m].next_apply()? {
                queue.push(Reverse((index_of(&h), m)));
                heads[m] = Some(h);
            }
        }
        if let Some(h) = readers[first].next_apply()? {
            queue.push(Reverse((index_of(&h), first)));
            heads[first] = Some(h);
        }
        if index > last + 1 && !held_anywhere(last + 1, index - 1) {
            // Indices without an input (openraft's own blank and membership entries) are
            // in every member's covered range; these are not.
            stats.holes.push((last, index - 1));
            each(AuditLine::Snapshot {
                ts_us,
                after: last,
                upto: index - 1,
            });
        }
        last = index;
        stats.inputs += 1;
        each(AuditLine::Apply {
            ts_us,
            input,
            events,
        });
    }
    Ok(stats)
}
