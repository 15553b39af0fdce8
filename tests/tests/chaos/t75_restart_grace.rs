//! Regression test for the property-5 counterexample the chaos runs find around server
//! restarts: a restarted server grants a lock at once, while the client that held it before the
//! crash still believes it holds it (its local lease has not lapsed, and it cannot have seen
//! `lost()` yet). A lock service must wait out the previous lifetime's leases before granting
//! (fencing tokens still protect a resource that checks them, since the new token is higher).
//!
//! The server waits out the previous lifetime's leases (its recovery grace, see
//! `dlock_server::grace`), so the newcomer is granted only after the old holder saw `lost()`.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use dlock_client::{Client, Mode};
use dlock_tests::TestServer;
use dlock_tests::proxy::Proxy;
use tokio::time::Instant;

#[tokio::test]
async fn restarted_server_does_not_grant_before_old_holders_see_lost() -> Result<()> {
    let _one = crate::one_at_a_time().await;
    tokio::time::timeout(Duration::from_secs(30), async {
        // The grace is on by default (`TestServer::no_grace_config` turns it off); it is
        // spelled out because this test is about it.
        let config = dlock_server::Config {
            restart_grace: dlock_server::RestartGrace::Auto,
            ..TestServer::config()
        };
        let mut server = TestServer::start_with(config).await?;
        let proxy = Proxy::start(server.addr()).await?;
        let ttl = Duration::from_secs(2);
        let a = Client::builder(proxy.addr().to_string())
            .name("holder")
            .lease_ttl(ttl)
            .connect()
            .await?;
        let held = a.lock("r", Mode::EX).await?;
        let lost = held.lost();
        // The holder is cut off (slow to reconnect) while the server crashes and restarts.
        proxy.blackhole(true);
        server.restart().await?;
        let b = Client::builder(server.addr().to_string())
            .name("newcomer")
            .lease_ttl(ttl)
            .connect()
            .await?;
        let grant = tokio::spawn(async move {
            let g = b.lock("r", Mode::EX).await;
            (Instant::now(), g.map(|g| g.token()))
        });
        let reason = lost.await;
        let lost_at = Instant::now();
        let (granted_at, token) = grant.await.context("newcomer task")?;
        token?;
        ensure!(
            granted_at >= lost_at,
            "the restarted server granted EX on r to another session {:?} before the old holder \
             saw lost() ({reason})",
            lost_at - granted_at
        );
        Ok(())
    })
    .await
    .context("test did not finish in time")?
}

#[tokio::test]
async fn a_goodbye_during_the_grace_ends_the_session_at_once() -> Result<()> {
    let _one = crate::one_at_a_time().await;
    tokio::time::timeout(Duration::from_secs(30), async {
        let config = dlock_server::Config {
            restart_grace: dlock_server::RestartGrace::Fixed(Duration::from_secs(600)),
            ..TestServer::config()
        };
        let mut server = TestServer::start_with(config).await?;
        // A lock of the previous lifetime, so that the restarted server has a grace to keep.
        let old = Client::connect(server.addr().to_string()).await?;
        let _held = old.lock("x", Mode::EX).await?;
        server.restart().await?;
        let observer = Client::connect(server.addr().to_string()).await?;
        let a = Client::connect(server.addr().to_string()).await?;
        let session = a.session_id();
        ensure!(observer.query_session(session).await?.is_some());
        // A client that asked for nothing (a `dlock ping`) leaves without waiting for the
        // grace: its session is gone as soon as `close` returns.
        a.close().await?;
        ensure!(
            observer.query_session(session).await?.is_none(),
            "the goodbye was held until the grace ends"
        );
        // The grace still holds every lock.
        let err = observer.try_lock("x", Mode::EX).await.unwrap_err();
        ensure!(matches!(err, dlock_client::Error::NotQueued), "{err:?}");
        Ok(())
    })
    .await
    .context("test did not finish in time")?
}
