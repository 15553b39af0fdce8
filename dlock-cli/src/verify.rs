//! `dlock verify AUDIT_LOG...`: checks a server's audit log with the history checker of
//! `dlock-history` and prints each violation as a counterexample citing `FILE:LINE`.
//!
//! Only what the server's log alone decides is checked; the checks that compare the
//! server's grants with what clients saw (a lost lock seen before another grant, the tokens
//! clients saw, hung operations, dropped sessions) need client records and are skipped, and
//! the output says so. Exit codes: 0 safe, 1 a violation (a gap or a hole in the log included), 2 a
//! usage error or a file that cannot be read, is corrupt or is not an audit log.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use dlock_history::{
    AuditStats, CheckConfig, CheckReport, Property, ReadError, Violation, audit_files_in,
    check_files, rotation_order,
};

use crate::args::VerifyArgs;
use crate::error::{CliError, exit};
use crate::stdout;

/// The exit code of a history with a violation.
const UNSAFE: u8 = 1;

/// Why the history could not be checked at all.
#[derive(Debug, thiserror::Error)]
enum VerifyError {
    /// A directory argument could not be listed.
    #[error("cannot list directory {}: {source}", path.display())]
    Dir { path: PathBuf, source: io::Error },
    /// A directory argument holds no audit log.
    #[error("no audit log (a file named audit*) in directory {}", path.display())]
    EmptyDir { path: PathBuf },
    /// A file could not be read, is corrupt or is not an audit log.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The files hold no audit line at all: an empty history proves nothing, and is more
    /// likely a wrong path than a server that never started.
    #[error("no audit line in {files}: nothing to check (the wrong file?)")]
    Empty { files: String },
}

/// Runs `dlock verify` and returns its exit code. A log that cannot be checked is reported
/// on stderr here (exit 2); the error returned is a stdout that cannot be written.
pub fn run(args: &VerifyArgs) -> Result<u8, CliError> {
    let (files, stats, report) = match verify(args) {
        Ok(checked) => checked,
        Err(e) => {
            eprintln!("dlock: {e}");
            return Ok(exit::USAGE);
        }
    };
    stdout::write(|out| {
        for v in &report.examples {
            write!(out, "{}", counterexample(v))?;
        }
        writeln!(out, "{}", summary(&files, &stats, &report))?;
        if report.partial_start {
            writeln!(
                out,
                "note: {} does not begin with a server start (older rotated files deleted or not given): locks and sessions from before it are not judged, nor lost wake-ups until the next start",
                files
                    .first()
                    .map(|f| f.display().to_string())
                    .unwrap_or_default()
            )?;
        }
        writeln!(out, "{}", skipped())
    })?;
    Ok(if report.is_ok() { exit::OK } else { UNSAFE })
}

/// Reads and checks the logs: the files read, in order, what was read and the verdict.
fn verify(args: &VerifyArgs) -> Result<(Vec<PathBuf>, AuditStats, CheckReport), VerifyError> {
    let files = expand(&args.logs)?;
    let cfg = CheckConfig {
        expiry_allowance_us: u64::try_from(args.expiry_allowance.as_micros()).unwrap_or(u64::MAX),
        max_examples: args.max_examples,
        ..CheckConfig::default()
    };
    let (stats, report) = check_files(cfg, &files, &[])?;
    let lines = stats.applied + stats.starts + stats.gaps + stats.replicas + stats.snapshots;
    if lines == 0 {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        return Err(VerifyError::Empty {
            files: names.join(", "),
        });
    }
    Ok((files, stats, report))
}

/// The files to read, in order: directories replaced by their audit logs, each rotated log
/// oldest first.
fn expand(args: &[PathBuf]) -> Result<Vec<PathBuf>, VerifyError> {
    let mut files = Vec::new();
    for path in args {
        if path.is_dir() {
            let found = audit_files_in(path).map_err(|source| VerifyError::Dir {
                path: path.clone(),
                source,
            })?;
            if found.is_empty() {
                return Err(VerifyError::EmptyDir { path: path.clone() });
            }
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(rotation_order(&files))
}

/// One violation: what, where, when, why, and the lines it rests on.
fn counterexample(v: &Violation) -> String {
    let at = match &v.at {
        Some(at) => at.to_string(),
        None => "client records".to_owned(),
    };
    let mut out = format!(
        "VIOLATION [{}] at {at} ({}):\n  {}\n",
        v.property,
        wall_clock(v.ts_us),
        v.detail
    );
    if !v.cites.is_empty() {
        let lines: Vec<String> = v
            .cites
            .iter()
            .chain(v.at.iter())
            .map(ToString::to_string)
            .collect();
        out.push_str(&format!("  lines involved: {}\n", dedup(lines).join(", ")));
    }
    out
}

/// `lines` without repeats, first occurrence kept.
fn dedup(lines: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    for l in lines {
        if !out.contains(&l) {
            out.push(l);
        }
    }
    out
}

/// The last line: the verdict and what was checked.
/// The files read, by name: every one when there are a few, else the first and the last
/// (rotated logs come in order, oldest first).
fn file_list(files: &[PathBuf]) -> String {
    let name = |f: &PathBuf| f.display().to_string();
    match files {
        [first, .., last] if files.len() > 4 => format!("{} .. {}", name(first), name(last)),
        _ => files.iter().map(name).collect::<Vec<_>>().join(", "),
    }
}

fn summary(files: &[PathBuf], stats: &AuditStats, report: &CheckReport) -> String {
    let checked = format!(
        "{} inputs in {} file(s) ({}), {} server lifetime(s), {} resource(s): {} grants, {} completions, {} lease expiries{}",
        report.inputs,
        files.len(),
        file_list(files),
        report.lifetimes,
        report.resources,
        report.grants,
        report.completions,
        report.expiries,
        match stats.torn {
            0 => String::new(),
            n => format!(", {n} line(s) torn by a crash skipped"),
        }
    );
    if report.is_ok() {
        return format!("history safe: {checked}");
    }
    let per: Vec<String> = report
        .violations
        .iter()
        .map(|(p, n)| format!("{p}: {n}"))
        .collect();
    let shown = report.examples.len() as u64;
    let total = report.violation_count();
    format!(
        "history NOT safe: {total} violation(s) [{}]{} in {checked}",
        per.join("; "),
        if shown < total {
            format!(" (first {shown} shown; see --max-examples)")
        } else {
            String::new()
        }
    )
}

/// What the server's log alone cannot decide.
fn skipped() -> String {
    let skipped: Vec<String> = [
        Property::Compatibility,
        Property::Fencing,
        Property::Completion,
        Property::Fifo,
        Property::LostBeforeGrant,
        Property::DeadRelease,
    ]
    .into_iter()
    .filter(|p| !p.decided_by_server_log())
    .map(|p| format!("property {p}"))
    .collect();
    format!(
        "not checked (needs client records): {}; and the client side of the others (tokens clients saw, hung operations, dropped sessions)",
        skipped.join(", ")
    )
}

/// Microseconds since the epoch as an RFC 3339 UTC time.
fn wall_clock(ts_us: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(ts_us)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_files_are_named_by_the_first_and_the_last() {
        let files = |n: usize| -> Vec<PathBuf> {
            (0..n)
                .rev()
                .map(|i| PathBuf::from(format!("a.jsonl.{i}")))
                .collect()
        };
        assert_eq!(file_list(&files(2)), "a.jsonl.1, a.jsonl.0");
        assert_eq!(file_list(&files(1000)), "a.jsonl.999 .. a.jsonl.0");
    }

    #[test]
    fn a_directory_stands_for_its_audit_logs_and_an_empty_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            expand(&[dir.path().to_owned()]),
            Err(VerifyError::EmptyDir { .. })
        ));
        for name in ["audit.jsonl", "audit.jsonl.1", "server.log"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let files = expand(&[dir.path().to_owned(), "later.jsonl".into()]).unwrap();
        assert_eq!(
            files,
            [
                dir.path().join("audit.jsonl.1"),
                dir.path().join("audit.jsonl"),
                "later.jsonl".into()
            ]
        );
    }

    #[test]
    fn a_counterexample_lists_the_lines_involved_once() {
        let loc = |line| dlock_history::Location {
            file: Some("audit.jsonl".into()),
            line,
        };
        let v = Violation {
            property: Property::Compatibility,
            at: Some(loc(9)),
            ts_us: 0,
            detail: "two grants".into(),
            cites: vec![loc(4), loc(9)],
        };
        let text = counterexample(&v);
        assert!(
            text.starts_with("VIOLATION [1 compatibility (R7)] at audit.jsonl:9 (1970-01-01T00:00:00.000000Z):\n  two grants\n"),
            "{text}"
        );
        assert!(
            text.ends_with("lines involved: audit.jsonl:4, audit.jsonl:9\n"),
            "{text}"
        );
    }
}
