//! Output that cannot be written, end to end: a stdout that fails (`/dev/full`) is an error
//! reported on stderr with exit code 70, and a pipe whose reader has gone (`dlock ... | head
//! -0`) ends dlock quietly with 141, as a process killed by SIGPIPE; neither panics.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::{Output, Stdio};

use anyhow::Result;
use common::*;
use dlock_history::AuditLine;
use tokio::process::Command;

/// The exit code of a write to stdout that failed.
const SOFTWARE: i32 = 70;
/// The exit code when stdout's reader has gone: 128 + SIGPIPE.
const BROKEN_PIPE: i32 = 141;

/// `/dev/full`: it accepts the open and fails every write with ENOSPC.
fn full() -> Result<Stdio> {
    Ok(Stdio::from(File::options().write(true).open("/dev/full")?))
}

/// A pipe whose read end is already closed: every write to it fails with EPIPE.
fn closed_pipe() -> Result<Stdio> {
    let (read, write) = nix::unistd::pipe()?;
    drop(read);
    Ok(Stdio::from(write))
}

/// Runs `cmd` with `out` as its stdout and returns its output (stderr only).
async fn run_into(mut cmd: Command, out: Stdio) -> Result<Output> {
    cmd.stdout(out);
    output(cmd).await
}

/// Checks that `cmd`, built by `make`, exits 70 with a reason when writing to `/dev/full`,
/// and exits 141 without a word when its stdout is a closed pipe.
async fn fails_cleanly(what: &str, make: impl Fn() -> Command) -> Result<()> {
    let out = run_into(make(), full()?).await?;
    let err = stderr(&out);
    assert_eq!(code(&out), SOFTWARE, "{what} > /dev/full: {err}");
    assert!(!err.contains("panicked"), "{what} > /dev/full: {err}");
    assert!(err.contains("cannot write to stdout"), "{what}: {err}");

    let out = run_into(make(), closed_pipe()?).await?;
    let err = stderr(&out);
    assert_eq!(code(&out), BROKEN_PIPE, "{what} | head -0: {err}");
    assert_eq!(err, "", "{what} | head -0");
    Ok(())
}

/// A one-line audit log: a server that started and did nothing.
fn audit_log(dir: &Path) -> Result<std::path::PathBuf> {
    let path = dir.join("audit.jsonl");
    let start = serde_json::to_string(&AuditLine::Start { ts_us: 1, pid: 1 })?;
    std::fs::write(&path, format!("{start}\n"))?;
    Ok(path)
}

#[tokio::test]
async fn help_completions_and_verify_report_a_stdout_they_cannot_write() -> Result<()> {
    let addr = "127.0.0.1:9"; // never contacted
    fails_cleanly("completions bash", || {
        dlock_at(addr, &["completions", "bash"])
    })
    .await?;

    let dir = tempfile::tempdir()?;
    let log = audit_log(dir.path())?;
    let log = log.display().to_string();
    // The log is safe: a verdict nobody could read is not "safe" (exit 0) either.
    let out = output(dlock_at(addr, &["verify", &log])).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    fails_cleanly("verify", || dlock_at(addr, &["verify", &log])).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_status_and_acquire_report_a_stdout_they_cannot_write() -> Result<()> {
    let server = TestServer::start().await?;
    fails_cleanly("ping", || dlock(&server, &["ping"])).await?;
    fails_cleanly("status --json", || dlock(&server, &["status", "--json"])).await?;

    // Without a command, acquire prints the token: if it cannot, the lock is released, not
    // held for nobody.
    fails_cleanly("acquire", || dlock(&server, &["acquire", "out.x"])).await?;
    let obs = observer(&server).await?;
    queues(&obs, "out.x", 0, 0).await?;
    Ok(())
}
