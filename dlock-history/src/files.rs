//! A history stored in files: which files, in which order, and checking them.
//!
//! The server rotates its log `PATH` into `PATH.1`, `PATH.1` into `PATH.2`, and so on, so a
//! rotated log read oldest first is `PATH.N` .. `PATH.2`, `PATH.1`, `PATH`. A shell glob
//! (`audit.jsonl*`) lists the same files in another order; [`rotation_order`] restores it.

use std::io;
use std::path::{Path, PathBuf};

use crate::checker::Checker;
use crate::property::CheckConfig;
use crate::read::{AuditStats, ReadError, read_audit_logs};
use crate::records::ClientRecord;
use crate::report::CheckReport;

/// Puts the files of each rotated log in `paths` in the order they were written: `PATH.N`
/// .. `PATH.1`, `PATH`. A rotated log is `PATH` with its `PATH.<number>` files (or several
/// `PATH.<number>` files without `PATH`); it takes the place of its first member in `paths`.
/// Every other file keeps its place, so separate logs (one per server lifetime, say) are
/// read in the order given. Duplicates are dropped.
pub fn rotation_order(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut sets: Vec<(PathBuf, Vec<(u64, PathBuf)>)> = Vec::new();
    for path in paths {
        let (base, n) = split_rotation(path);
        match sets.iter_mut().find(|(b, _)| *b == base) {
            Some((_, members)) => {
                if !members.iter().any(|(_, p)| p == path) {
                    members.push((n, path.clone()));
                }
            }
            None => sets.push((base, vec![(n, path.clone())])),
        }
    }
    sets.into_iter()
        .flat_map(|(_, mut members)| {
            // Higher numbers are older; the live file (0) is the newest.
            members.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
            members.into_iter().map(|(_, p)| p)
        })
        .collect()
}

/// `PATH.<number>` → (`PATH`, number); anything else → (itself, 0).
fn split_rotation(path: &Path) -> (PathBuf, u64) {
    let text = path.as_os_str().to_string_lossy();
    if let Some((base, suffix)) = text.rsplit_once('.')
        && !base.is_empty()
        && !suffix.is_empty()
        && suffix.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = suffix.parse::<u64>()
        && n > 0
    {
        return (PathBuf::from(base), n);
    }
    (path.to_owned(), 0)
}

/// The audit logs in the directory `dir`: its files whose names begin with `audit` (such as
/// `audit.jsonl`, `audit.jsonl.1`), each rotated log in [`rotation_order`], logs by name.
pub fn audit_files_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() && entry.file_name().to_string_lossy().starts_with("audit")
        {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(rotation_order(&found))
}

/// Checks the history stored in `paths`, read in that order (see [`rotation_order`]), with
/// `records` from the clients (none to judge the server's log alone). Counterexamples cite
/// each line as `FILE:LINE`, the file as given in `paths`.
pub fn check_files<P: AsRef<Path>>(
    cfg: CheckConfig,
    paths: &[P],
    records: &[ClientRecord],
) -> Result<(AuditStats, CheckReport), ReadError> {
    let mut checker = Checker::new(cfg);
    let mut current = None;
    let stats = read_audit_logs(paths, |at, line| {
        if current != Some(at.file) {
            current = Some(at.file);
            checker.begin_file(paths[at.file].as_ref().display().to_string());
        }
        checker.feed_line(at.line, line);
    })?;
    Ok((stats, checker.finish(records)))
}
