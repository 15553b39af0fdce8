//! The restart grace is bounded by the operator: a client that asks for a lease longer than
//! `--max-lease-ttl` is refused with `TtlOutOfRange` naming the configured maximum, so no
//! client can make a restarted server wait longer than that maximum (plus the grace margin)
//! before it grants again.
//!
//! The grace is measured from just before the restart to the first grant of a lock asked for
//! at once on the restarted server: at least the previous run's longest lease (the grace is
//! there) and at most the configured maximum plus [`SLACK`] (it is bounded).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use dlock_client::Client;
use dlock_proto::{Invalid, Mode, Refusal, Reject, ServerMessage};
use dlock_server::GRACE_MARGIN;
use dlock_tests::hostile::Bystander;
use dlock_tests::{WAIT, connect_framed, recv_raw};
use futures_util::SinkExt;

use crate::{child, hello, took};

/// The operator's maximum lease, as a flag and in milliseconds.
const MAX_LEASE: &str = "2s";
const MAX_LEASE_MS: u64 = 2_000;

/// The server's minimum lease (its default).
const MIN_LEASE_MS: u64 = 100;

/// On top of the maximum lease and the grace margin: the restart itself (a new process) and
/// the first request.
const SLACK: Duration = Duration::from_secs(3);

/// Asks for a session with a lease of `ttl_ms`; returns the answer.
async fn ask(addr: std::net::SocketAddr, ttl_ms: u64) -> Result<Option<ServerMessage>> {
    let mut c = connect_framed(addr).await?;
    c.send(hello("h6-greedy", ttl_ms)).await?;
    recv_raw(&mut c).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_can_stretch_the_restart_grace_beyond_the_maximum_lease() -> Result<()> {
    let start = Instant::now();
    let dir = tempfile::tempdir()?;
    let mut server = child(
        dir.path(),
        &["--max-lease-ttl", MAX_LEASE, "--lease-ttl", MAX_LEASE],
    )
    .await?;
    let addr = server.addr();
    // The bystander takes the longest lease allowed (the server's default here).
    let bystander = Bystander::start(addr, "h6").await?;

    let ((), cycles) = bystander
        .alongside(async {
            for ttl_ms in [MAX_LEASE_MS + 1, 60 * 60 * 1000, u64::MAX] {
                let answer = ask(addr, ttl_ms).await?;
                let want = Refusal::Rejected(Reject::Invalid(Invalid::TtlOutOfRange {
                    ttl_ms,
                    min_ms: MIN_LEASE_MS,
                    max_ms: MAX_LEASE_MS,
                }));
                ensure!(
                    answer == Some(ServerMessage::Refused(want)),
                    "a lease of {ttl_ms} ms got {answer:?}"
                );
            }
            Ok(())
        })
        .await?;
    bystander.check_held().await?;

    // kill -9 and start again on the same data directory. The sessions of the first run are
    // gone with it (the bystander's included: its client learns that when it resumes).
    // The first client of the new run asks for a lock at once; it renews its lease while
    // the request is held (the grace outlasts any lease).
    let restarted = Instant::now();
    server.restart().await?;
    let first = Client::builder(addr.to_string())
        .name("h6-first")
        .lease_ttl(Duration::from_millis(MAX_LEASE_MS))
        .connect()
        .await?;
    let guard = tokio::time::timeout(WAIT, first.lock("h6/first", Mode::EX))
        .await
        .context("the first lock after the restart was never granted")??;
    let grace = restarted.elapsed();
    guard.unlock().await?;
    let max_lease = Duration::from_millis(MAX_LEASE_MS);
    eprintln!(
        "h6 restart grace: leases over {MAX_LEASE_MS} ms refused (TtlOutOfRange, max {MAX_LEASE_MS} ms); first grant {:.2} s after the restart (bounds: at least {max_lease:?}, at most {:?}); bystander cycles: {cycles}",
        grace.as_secs_f64(),
        max_lease + GRACE_MARGIN + SLACK
    );
    // The previous run granted leases of the maximum: the grace covers them.
    ensure!(grace >= max_lease, "granted {grace:?} after the restart");
    ensure!(
        grace <= max_lease + GRACE_MARGIN + SLACK,
        "the first grant came {grace:?} after the restart (maximum lease {max_lease:?})"
    );

    // A well-behaved client of the new run is served as usual.
    let after = Bystander::start(addr, "h6-after").await?;
    after.cycles(3).await?;
    after.check_held().await?;
    took("h6", start);
    Ok(())
}
