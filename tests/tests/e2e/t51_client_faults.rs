//! dlock-client end to end under failure: cut connections (reconnect and resume), a black
//! hole (the local lease gives the lock up before the server hands it on), and server
//! restarts and shutdowns (the session is gone; a fresh one serves new work).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use dlock_client::{Client, Error, LostReason, Mode};
use dlock_tests::TestServer;
use dlock_tests::proxy::Proxy;

const LIMIT: Duration = Duration::from_secs(30);

async fn bounded<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(LIMIT, f)
        .await
        .context("test did not finish in time")?
}

/// A client that reconnects quickly.
async fn client(addr: impl ToString, name: &str, ttl: Duration) -> Result<Client> {
    Ok(Client::builder(addr.to_string())
        .name(name)
        .lease_ttl(ttl)
        .backoff(Duration::from_millis(10), Duration::from_millis(100))
        .connect()
        .await?)
}

#[tokio::test]
async fn reconnect_and_resume_keep_locks_and_complete_in_flight_requests() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let proxy = Proxy::start(server.addr()).await?;
        let ttl = Duration::from_secs(10);
        let holder = client(server.addr(), "holder", ttl).await?;
        let b = client(proxy.addr(), "b", ttl).await?;
        let session = b.session_id();

        let keep = b.lock("keep", Mode::EX).await?;
        let keep_token = keep.token();
        let mut held = holder.lock("q", Mode::EX).await?;

        let pending = b.lock("q", Mode::EX);
        tokio::pin!(pending);
        tokio::select! {
            biased;
            r = &mut pending => anyhow::bail!("granted while EX is held: {r:?}"),
            m = held.blocked() => ensure!(m? == Mode::EX),
        }
        // b's request is queued on the server. Break b's connection, then release: the
        // grant happens while b is away or resuming, and reaches it by replay.
        proxy.cut();
        held.unlock().await?;
        let granted = pending.await?;
        ensure!(granted.mode() == Mode::EX);

        ensure!(
            b.session_id() == session,
            "the session was resumed, not replaced"
        );
        ensure!(proxy.accepted() >= 2, "b reconnected");
        ensure!(!keep.is_lost());
        ensure!(keep.token() == keep_token);
        // Exactly one grant: the server shows one lock of b on "q" and nothing queued, and b's
        // session owns exactly its two locks.
        let q = holder.query_resource("q").await?.context("q")?;
        ensure!(q.granted.len() == 1 && q.granted[0].session == session);
        ensure!(q.granted[0].lock == granted.lock_id());
        ensure!(q.waiting.is_empty() && q.converting.is_empty());
        let info = holder
            .query_session(session)
            .await?
            .context("b's session")?;
        ensure!(info.locks.len() == 2, "{:?}", info.locks);

        // Another cut with requests in flight: a burst of locks and a ping all complete.
        let burst = futures_util::future::try_join_all(
            (0..20).map(|i| b.lock(format!("burst/{i}"), Mode::PR)),
        );
        tokio::pin!(burst);
        let cut_once = async {
            proxy.cut();
        };
        let (guards, ()) = tokio::join!(&mut burst, cut_once);
        let guards = guards?;
        ensure!(guards.len() == 20);
        b.ping().await?;
        let info = holder
            .query_session(session)
            .await?
            .context("b's session")?;
        ensure!(info.locks.len() == 22, "{} locks", info.locks.len());

        granted.unlock().await?;
        keep.unlock().await?;
        drop(guards);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn black_holed_client_gives_up_its_lock_before_another_client_gets_it() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let proxy = Proxy::start(server.addr()).await?;
        // A wide safety margin: the ordering below must not depend on how quickly a loaded
        // machine schedules the tasks that record it.
        let b = Client::builder(proxy.addr().to_string())
            .name("black-holed")
            .lease_ttl(Duration::from_millis(1000))
            .safety_margin(Duration::from_millis(300))
            .backoff(Duration::from_millis(10), Duration::from_millis(100))
            .connect()
            .await?;
        let other = client(server.addr(), "other", Duration::from_secs(10)).await?;

        let guard = b.lock("x", Mode::EX).await?;
        let order = Arc::new(AtomicU64::new(1));

        let lost = tokio::spawn({
            let lost = guard.lost();
            let order = order.clone();
            async move {
                let reason = lost.await;
                (reason, order.fetch_add(1, Ordering::SeqCst))
            }
        });
        proxy.blackhole(true);
        let granted = other.lock("x", Mode::EX).await?;
        let granted_at = order.fetch_add(1, Ordering::SeqCst);
        let (reason, lost_at) = lost.await?;
        ensure!(reason == LostReason::LocalLeaseLapsed, "{reason:?}");
        ensure!(
            lost_at < granted_at,
            "lost() fired at {lost_at}, after the other client's grant at {granted_at}"
        );
        ensure!(guard.is_lost());

        // The partition heals: the old lock stays lost, and b serves new work on a new
        // session.
        proxy.blackhole(false);
        let err = guard.unlock().await.unwrap_err();
        ensure!(matches!(err, Error::SessionLost), "{err:?}");
        let fresh = b.lock("y", Mode::EX).await?;
        ensure!(b.session_id() != dlock_client::SessionId(0));
        drop(fresh);
        drop(granted);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn unanswered_renewals_move_the_session_to_another_endpoint_before_the_lease_lapses()
-> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let proxy = Proxy::start(server.addr()).await?;
        // Two ways to the same server: through the proxy first, then directly. With a 6 s
        // lease, renewals go every 2 s and one unanswered for 1 s (max(TTL/6, 1 s)) ends
        // the connection; the local lease would lapse 5.4 s after the last answered one.
        let ttl = Duration::from_secs(6);
        let b = Client::builder(proxy.addr().to_string())
            .endpoints([proxy.addr().to_string(), server.addr().to_string()])
            .name("b")
            .lease_ttl(ttl)
            .backoff(Duration::from_millis(10), Duration::from_millis(100))
            .connect()
            .await?;
        let observer = client(server.addr(), "observer", Duration::from_secs(10)).await?;
        let guard = b.lock("x", Mode::EX).await?;
        let session = b.session_id();
        let expires = |info: Option<dlock_client::SessionInfo>| -> Result<u64> {
            Ok(info.context("b's session is gone")?.expires_at_ms)
        };

        // The path through the proxy goes silent without breaking: nothing says the
        // connection is dead but unanswered renewals.
        proxy.blackhole(true);
        let before = expires(observer.query_session(session).await?)?;
        // The server hears a renewal again, which can only come the other way; the lease
        // (and the lock) never lapsed on either side.
        loop {
            let info = observer.query_session(session).await?;
            if expires(info)? > before {
                break;
            }
            ensure!(
                !guard.is_lost(),
                "the lease lapsed before the client reconnected"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ensure!(
            b.session_id() == session,
            "the session was resumed, not replaced"
        );
        ensure!(!guard.is_lost());
        let err = observer.try_lock("x", Mode::EX).await.unwrap_err();
        ensure!(matches!(err, Error::NotQueued), "{err:?}");
        // The session works on its new connection.
        drop(b.lock("y", Mode::EX).await?);
        guard.unlock().await?;
        drop(observer.try_lock("x", Mode::EX).await?);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn server_restart_loses_the_session_and_a_fresh_one_serves_new_work() -> Result<()> {
    bounded(async {
        // Not about the restart grace (t36, t75): the restarted server grants at once.
        let mut server = TestServer::start_with(TestServer::no_grace_config()).await?;
        let ttl = Duration::from_secs(10);
        let holder = client(server.addr(), "holder", ttl).await?;
        let b = client(server.addr(), "b", ttl).await?;
        let old_session = b.session_id();

        let guard = b.lock("k", Mode::EX).await?;
        let mut held = holder.lock("w", Mode::EX).await?;
        let pending = b.lock("w", Mode::EX);
        tokio::pin!(pending);
        tokio::select! {
            biased;
            r = &mut pending => anyhow::bail!("granted while EX is held: {r:?}"),
            m = held.blocked() => ensure!(m? == Mode::EX),
        }

        // Like kill -9 and a restart: the sessions are gone, resumes are refused.
        server.restart().await?;
        let err = pending.await.unwrap_err();
        ensure!(matches!(err, Error::SessionLost), "{err:?}");
        ensure!(guard.lost().await == LostReason::SessionExpired);
        ensure!(held.lost().await == LostReason::SessionExpired);
        let err = guard.unlock().await.unwrap_err();
        ensure!(matches!(err, Error::SessionLost), "{err:?}");

        let again = b.lock("k", Mode::EX).await?;
        ensure!(b.session_id() != old_session);
        ensure!(b.session_id() != dlock_client::SessionId(0));
        let info = holder.query_resource("k").await?.context("k")?;
        ensure!(info.granted.len() == 1 && info.granted[0].session == b.session_id());
        again.unlock().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn graceful_server_shutdown_is_reported_and_the_client_comes_back() -> Result<()> {
    bounded(async {
        // Not about the restart grace (t36, t75): the restarted server grants at once.
        let mut server = TestServer::start_with(TestServer::no_grace_config()).await?;
        let b = client(server.addr(), "b", Duration::from_secs(10)).await?;
        let guard = b.lock("s", Mode::EX).await?;
        server.shutdown().await?;
        ensure!(guard.lost().await == LostReason::ServerShutdown);
        server.start_again().await?;
        let again = b.lock("s", Mode::EX).await?;
        ensure!(again.mode() == Mode::EX);
        Ok(())
    })
    .await
}
