//! Regression test for a client that is paused (a stalled process, a long GC pause, a frozen
//! VM) past its lease while holding a lock: the server expires its session and grants the lock
//! to someone else, so when the client runs again, the first check of `LockGuard::is_lost()`
//! must already say the lock is gone. The whole client runtime is frozen here by blocking its
//! only thread, so its background task cannot run either; `is_lost()` has to compare the
//! local lease deadline with the clock itself rather than wait for a timer to fire.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use dlock_client::{Client, Mode};
use dlock_tests::TestServer;

#[test]
fn is_lost_is_true_right_after_a_pause_past_the_lease() -> Result<()> {
    let server_rt = tokio::runtime::Runtime::new()?;
    let server = server_rt.block_on(TestServer::start())?;
    let addr = server.addr().to_string();
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let ttl = Duration::from_millis(500);
    let (guard, _client) = client_rt.block_on(async {
        let client = Client::builder(addr.clone())
            .name("paused")
            .lease_ttl(ttl)
            .connect()
            .await?;
        let guard = client.lock("r", Mode::EX).await?;
        anyhow::Ok((guard, client))
    })?;
    // Another session waits for the lock on the server's runtime.
    let other = server_rt.spawn(async move {
        let c = Client::builder(addr).name("other").connect().await?;
        let g = c.lock("r", Mode::EX).await?;
        anyhow::Ok((Instant::now(), g, c))
    });
    // The paused client's whole process stalls for three leases: nothing of it runs.
    std::thread::sleep(ttl * 3);
    let still_held = !guard.is_lost();
    let checked_at = Instant::now();
    let (granted_at, _g, _c) = server_rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), other).await })
        .context("the other session was never granted")???;
    ensure!(
        granted_at < checked_at,
        "the other session was granted only after the check"
    );
    ensure!(
        !still_held,
        "another session was granted EX on r {:?} before, yet is_lost() still says the lock is held",
        checked_at - granted_at
    );
    drop(client_rt);
    Ok(())
}
