//! The audit log under traffic: with a small rotation size, enough traffic to rotate it
//! several times leaves exactly `PATH`, `PATH.1` .. `PATH.keep`, each at most the rotation
//! size (the rotated ones near it); no line holds a session's resume secret; the files are
//! private (0600) and so is the data directory the server created (0700).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use dlock_proto::Mode;
use dlock_tests::RawClient;
use dlock_tests::hostile::{AUDIT_LOG, Bystander, DATA_DIR};

use crate::{child, sized, took};

/// Rotation size, as a flag and in bytes.
const MAX_SIZE: &str = "64KiB";
const MAX_SIZE_BYTES: u64 = 64 * 1024;

/// Rotated files kept.
const KEEP: usize = 2;

/// Lock cycles of the traffic: about 1 KiB of log each, enough for several rotations.
const CYCLES: usize = 600;

/// A new session (whose secret is then looked for in the log) every this many cycles.
const SESSION_EVERY: usize = 25;

fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn mode(path: &Path) -> Result<u32> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("{}", path.display()))?
        .permissions()
        .mode()
        & 0o777)
}

/// Opens a session, notes its secret, says goodbye.
async fn session(addr: std::net::SocketAddr, secrets: &mut Vec<u128>) -> Result<()> {
    let mut c = RawClient::connect(addr, "h8-session").await?;
    secrets.push(c.welcome.secret);
    c.goodbye().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_rotates_within_its_size_keeps_no_secret_and_is_private() -> Result<()> {
    let start = Instant::now();
    let dir = tempfile::tempdir()?;
    let keep = KEEP.to_string();
    let server = child(
        dir.path(),
        &["--audit-log-max-size", MAX_SIZE, "--audit-log-keep", &keep],
    )
    .await?;
    let addr = server.addr();
    let bystander = Bystander::start(addr, "h8").await?;

    let mut secrets = Vec::new();
    let ((), cycles) = bystander
        .alongside(async {
            let mut traffic = RawClient::connect(addr, "h8-traffic").await?;
            secrets.push(traffic.secret);
            for i in 0..CYCLES {
                let (lock, _) = traffic.acquire(&format!("h8/{}", i % 7), Mode::EX).await?;
                traffic.release(lock).await?;
                traffic.ack().await?;
                if i % SESSION_EVERY == 0 {
                    session(addr, &mut secrets).await?;
                }
            }
            // The last input is a session's opening, so the newest file holds one.
            session(addr, &mut secrets).await
        })
        .await?;
    bystander.cycles(3).await?;
    bystander.check_held().await?;

    let path = dir.path().join(AUDIT_LOG);
    let mut files = vec![path.clone()];
    files.extend((1..=KEEP).map(|n| rotated(&path, n)));
    let mut sizes = Vec::new();
    let mut text = String::new();
    for f in &files {
        let size = std::fs::metadata(f)
            .with_context(|| format!("{} is missing", f.display()))?
            .len();
        ensure!(
            size <= MAX_SIZE_BYTES,
            "{} has {size} bytes (rotation at {MAX_SIZE_BYTES})",
            f.display()
        );
        ensure!(mode(f)? == 0o600, "{} has mode {:o}", f.display(), mode(f)?);
        sizes.push(size);
        text.push_str(&std::fs::read_to_string(f)?);
    }
    ensure!(
        !rotated(&path, KEEP + 1).exists(),
        "more than {KEEP} rotated files are kept"
    );
    // A file is rotated once the next line would not fit: rotated files are full but for
    // less than a line.
    for (f, size) in files.iter().zip(&sizes).skip(1) {
        ensure!(
            *size >= MAX_SIZE_BYTES / 2,
            "{} was rotated at {size} bytes",
            f.display()
        );
    }
    for secret in &secrets {
        ensure!(
            !text.contains(&secret.to_string()) && !text.contains(&format!("{secret:x}")),
            "a resume secret is in the audit log"
        );
    }
    let openings = text.matches("\"OpenSession\"").count();
    ensure!(
        openings > 0 && text.matches("\"secret\":0").count() == openings,
        "the log holds {openings} session openings, not all with a blanked secret"
    );
    let data = dir.path().join(DATA_DIR);
    ensure!(
        mode(&data)? == 0o700,
        "the data directory has mode {:o}",
        mode(&data)?
    );
    eprintln!(
        "h8 audit log: {CYCLES} lock cycles and {} sessions; files {:?} bytes (rotation at {MAX_SIZE_BYTES}, keep {KEEP}), modes 0600, data dir 0700; {openings} session openings in the kept files, no secret; bystander cycles: {cycles}",
        secrets.len(),
        sizes
    );
    took("h8", start);
    Ok(())
}

/// Sum of the sizes of the audit log and its rotated files in `dir`.
fn log_bytes(dir: &Path) -> u64 {
    let path = dir.join(AUDIT_LOG);
    std::iter::once(path.clone())
        .chain((1..=KEEP).map(|n| rotated(&path, n)))
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

/// Connections that ping, query and acknowledge as fast as they can.
const CHATTY: usize = 4;

/// Inputs that change nothing are not logged: connections that only ping, query and
/// acknowledge for a while (5 s at full size, as when they once wrote 487 MB) add at most a
/// few lease renewals to the log (such messages renew a lease at most once per eighth of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_queries_and_acks_write_nothing_to_the_audit_log() -> Result<()> {
    let start = Instant::now();
    let dir = tempfile::tempdir()?;
    // No rotation within the run: every byte written stays in the one file.
    let server = child(
        dir.path(),
        &["--audit-log-max-size", "1GiB", "--audit-log-keep", "0"],
    )
    .await?;
    let addr = server.addr();
    let mut clients = Vec::with_capacity(CHATTY);
    for i in 0..CHATTY {
        clients.push(RawClient::connect(addr, &format!("h8-chatty-{i}")).await?);
    }
    let before = log_bytes(dir.path());
    let run_for = std::time::Duration::from_millis(sized(1_000, 5_000) as u64);
    let counts = futures_util::future::try_join_all(clients.iter_mut().map(|c| async move {
        let mut n = 0u64;
        while start.elapsed() < run_for {
            c.ping().await?;
            c.query_resource("h8/quiet").await?;
            c.ack().await?;
            n += 3;
        }
        anyhow::Ok(n)
    }))
    .await?;
    let sent: u64 = counts.iter().sum();
    // Each connection's session may renew a few times within the run.
    let after = log_bytes(dir.path());
    let grown = after.saturating_sub(before);
    let allowance = (CHATTY as u64) * 8 * 1024;
    eprintln!(
        "h8 chatty: {CHATTY} connections sent {sent} pings, queries and acks in {:.1} s; the audit log grew by {grown} bytes (allowance {allowance})",
        run_for.as_secs_f64()
    );
    ensure!(
        grown <= allowance,
        "the audit log grew by {grown} bytes for {sent} pings, queries and acks"
    );
    took("h8 chatty", start);
    Ok(())
}
