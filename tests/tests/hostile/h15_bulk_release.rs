//! The end of a session with many locks is spread over steps: the engine removes
//! [`STEP_WORK`] of them per input and asks for the next tick at once, so no single
//! step holds it for long, and the last of them is released promptly (not at some later
//! timer). A client waiting on the resource of the ended session's last lock is granted
//! well within its lease, and afterwards nothing of the session is left.

use std::time::Instant;

use anyhow::{Result, bail, ensure};
use dlock_core::STEP_WORK;
use dlock_proto::{EventKind, LockFlags, Mode, Query, Reply, Request};
use dlock_tests::{RawClient, TestServer};

use crate::{one_at_a_time, take_all, took};

/// Steps the session's end takes.
const STEPS: usize = 5;

/// The waiter's lease: far longer than the wait for its grant ([`dlock_tests::raw::WAIT`]),
/// so that its own expiry (the next timer the engine has) cannot be what grants it.
const WAITER_TTL_MS: u64 = 120_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_lock_of_a_large_session_is_released_promptly_after_its_goodbye() -> Result<()> {
    let _turn = one_at_a_time().await;
    let start = Instant::now();
    let server = TestServer::start().await?;
    let addr = server.addr();
    let n = STEPS * STEP_WORK;
    let names: Vec<String> = (0..n).map(|i| format!("h15/{i:06}")).collect();
    let mut big = RawClient::connect(addr, "h15-big").await?;
    take_all(&mut big, &names).await?;

    let mut waiter = RawClient::connect_with_ttl(addr, "h15-waiter", WAITER_TTL_MS).await?;
    let last = names.last().expect("names");
    let id = waiter.lock(last, Mode::EX, LockFlags::empty()).await?;
    let event = waiter.event_for(id).await?;
    ensure!(
        event.kind == EventKind::Queued,
        "expected Queued, got {event:?}"
    );

    let released = Instant::now();
    big.goodbye().await?;
    let event = waiter.event_for(id).await?;
    let EventKind::Granted { mode: Mode::EX, .. } = event.kind else {
        bail!("expected the grant, got {event:?}");
    };
    eprintln!(
        "h15: a session of {n} locks said goodbye; the waiter on its last lock was granted after {:.1} ms",
        released.elapsed().as_secs_f64() * 1e3
    );
    // Only the waiter's lock is left under the prefix.
    let q = waiter
        .send(Request::Query(Query::Prefix {
            prefix: b"h15/".to_vec(),
            limit: 10,
            after: None,
        }))
        .await?;
    match waiter.reply_for(q).await? {
        Reply::Resources { resources, .. } => {
            let names: Vec<&[u8]> = resources.iter().map(|r| r.name.as_slice()).collect();
            ensure!(names == [last.as_bytes()], "resources left: {names:?}");
        }
        other => bail!("expected Resources, got {other:?}"),
    }
    took("h15", start);
    Ok(())
}
