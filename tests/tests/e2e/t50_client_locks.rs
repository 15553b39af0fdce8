//! dlock-client end to end: lock, try-lock, release on drop, cancel on drop, pipelining,
//! conversions, blocking notifications and the value block, against a real server over TCP.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use dlock_client::{Client, ConvertOptions, Error, LockOptions, LostReason, Mode, UnlockOptions};
use dlock_tests::TestServer;

/// Upper bound on every test; nothing here should come close.
const LIMIT: Duration = Duration::from_secs(30);

async fn bounded<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(LIMIT, f)
        .await
        .context("test did not finish in time")?
}

async fn client(server: &TestServer, name: &str) -> Result<Client> {
    Ok(Client::builder(server.addr().to_string())
        .name(name)
        .connect()
        .await?)
}

#[tokio::test]
async fn lock_try_lock_unlock_query_ping() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let a = client(&server, "a").await?;
        let b = client(&server, "b").await?;
        ensure!(a.session_id() != b.session_id());
        ensure!(a.session_name() == "a");

        let ga = a.lock("res", Mode::EX).await?;
        ensure!(ga.mode() == Mode::EX);
        ensure!(ga.resource() == b"res");
        let first_token = ga.token();

        // R22: NOQUEUE fails at once while EX is held.
        let err = b.try_lock("res", Mode::EX).await.unwrap_err();
        ensure!(matches!(err, Error::NotQueued), "{err:?}");
        let err = b.try_lock("res", Mode::CR).await.unwrap_err();
        ensure!(matches!(err, Error::NotQueued), "{err:?}");

        let info = b.query_resource("res").await?.context("resource exists")?;
        ensure!(info.granted.len() == 1);
        ensure!(info.granted[0].session == a.session_id());
        ensure!(info.granted[0].lock == ga.lock_id());
        ensure!(info.granted[0].session_name == "a");

        let session = a
            .query_session(a.session_id())
            .await?
            .context("session exists")?;
        ensure!(session.locks.len() == 1);

        ga.unlock().await?;
        ensure!(b.query_resource("res").await?.is_none());

        let gb = b.try_lock("res", Mode::EX).await?;
        ensure!(gb.token() > first_token, "tokens only grow");
        let listed = a.query_prefix("re", 10).await?;
        ensure!(listed.len() == 1 && listed[0].name == b"res");

        let pong = a.ping().await?;
        ensure!(!pong.server_version.is_empty());
        ensure!(a.server_version() == pong.server_version);
        drop(gb);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn dropping_a_guard_releases_the_lock() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let a = client(&server, "a").await?;
        let b = client(&server, "b").await?;
        let mut ga = a.lock("r", Mode::EX).await?;
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.lock("r", Mode::EX).await }
        });
        // R32: the holder is told once the waiter is queued.
        ensure!(ga.blocked().await? == Mode::EX);
        drop(ga);
        let gb = waiter.await??;
        ensure!(gb.mode() == Mode::EX);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn dropping_a_pending_lock_future_cancels_the_request() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let a = client(&server, "a").await?;
        let b = client(&server, "b").await?;
        let c = client(&server, "c").await?;
        let mut ga = a.lock("r", Mode::EX).await?;

        let mut pending = Box::pin(b.lock("r", Mode::EX));
        tokio::select! {
            biased;
            r = &mut pending => anyhow::bail!("granted while EX is held: {r:?}"),
            m = ga.blocked() => ensure!(m? == Mode::EX),
        }
        // The pong comes after b's Queued on b's connection: once it is back, b knows the
        // lock id of its queued request, so the drop sends the cancel at once.
        tokio::select! {
            biased;
            r = &mut pending => anyhow::bail!("granted while EX is held: {r:?}"),
            p = b.ping() => { p?; }
        }
        drop(pending);

        // b's next request reaches the server after the cancel.
        let info = b
            .query_session(b.session_id())
            .await?
            .context("b's session")?;
        ensure!(
            info.locks.is_empty(),
            "request still there: {:?}",
            info.locks
        );
        let res = a.query_resource("r").await?.context("resource")?;
        ensure!(res.waiting.is_empty() && res.granted.len() == 1);

        // A later waiter gets the lock when a releases it. (No second blocking notification
        // to wait for: a was already told EX is wanted, and R37 lets the server drop repeats.)
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.lock("r", Mode::EX).await }
        });
        ga.unlock().await?;
        let gc = waiter.await??;
        let res = a.query_resource("r").await?.context("resource")?;
        ensure!(res.granted.len() == 1 && res.granted[0].session == c.session_id());
        ensure!(res.waiting.is_empty());
        drop(gc);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn two_hundred_requests_pipelined_over_one_client() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let c = client(&server, "pipeline").await?;

        // 200 distinct resources at once.
        let guards = futures_util::future::try_join_all(
            (0..200).map(|i| c.lock(format!("p/{i:03}"), Mode::EX)),
        )
        .await?;
        let tokens: HashSet<_> = guards.iter().map(|g| g.token()).collect();
        ensure!(tokens.len() == 200, "every grant has its own token");
        let listed = c.query_prefix("p/", 1000).await?;
        ensure!(listed.len() == 200);
        futures_util::future::try_join_all(guards.into_iter().map(|g| g.unlock())).await?;
        ensure!(c.query_prefix("p/", 1000).await?.is_empty());

        // 200 requests queued at once behind another session's EX (a session's own
        // requests on one resource would deadlock with each other, R39), then granted
        // together by one grant pass when it unlocks.
        let h = client(&server, "holder").await?;
        let hg = h.lock("hot", Mode::EX).await?;
        let all = futures_util::future::try_join_all((0..200).map(|_| c.lock("hot", Mode::PR)));
        tokio::pin!(all);
        tokio::select! {
            biased;
            r = &mut all => anyhow::bail!("granted while EX is held: {:?}", r.map(|v| v.len())),
            // Submitted after the 200 requests, so answered after they are queued.
            q = c.query_resource("hot") => {
                let q = q?.context("resource")?;
                ensure!(q.waiting.len() == 200, "{} waiting", q.waiting.len());
            }
        }
        hg.unlock().await?;
        let guards = all.await?;
        ensure!(guards.iter().all(|g| g.mode() == Mode::PR));
        let info = h.query_resource("hot").await?.context("resource")?;
        ensure!(info.granted.len() == 200 && info.waiting.is_empty());
        drop(guards);
        ensure!(c.query_resource("hot").await?.is_none());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn convert_blocked_and_value_block_round_trips() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let a = client(&server, "a").await?;
        let b = client(&server, "b").await?;
        let lvb_len = a.value_block_len();
        ensure!(lvb_len >= 32);
        // An NL lock keeps the resource, and so its value block, alive between holders (R1).
        let keeper = client(&server, "keeper").await?;
        let keep_v = keeper.lock("v", Mode::NL).await?;

        // R24: a fresh resource has an all-zero, valid value block.
        let ga = a
            .lock_with("v", Mode::EX, LockOptions::new().read_value())
            .await?;
        ensure!(ga.value() == Some(&vec![0u8; lvb_len][..]));
        ensure!(ga.value_valid());
        // R28: written on unlock from EX.
        ga.unlock_with(UnlockOptions::new().value(b"hello".to_vec()))
            .await?;
        let mut gb = b
            .lock_with("v", Mode::PR, LockOptions::new().read_value())
            .await?;
        let v = gb.value().context("value read")?;
        ensure!(v.len() == lvb_len && v.starts_with(b"hello"));
        ensure!(v[5..].iter().all(|&x| x == 0), "zero-padded");
        let pr_token = gb.token();

        // An up-conversion queued behind another PR holder; the holder is told EX is wanted.
        let mut ga2 = a.lock("v", Mode::PR).await?;
        {
            let convert = gb.convert(Mode::EX);
            tokio::pin!(convert);
            tokio::select! {
                biased;
                r = &mut convert => anyhow::bail!("converted while PR is held: {r:?}"),
                m = ga2.blocked() => ensure!(m? == Mode::EX),
            }
            ga2.unlock().await?;
            convert.await?;
        }
        ensure!(gb.mode() == Mode::EX);
        ensure!(
            gb.token() > pr_token,
            "a granted conversion gets a new token"
        );

        // R26: a down-conversion from EX with a value writes it.
        gb.convert_with(Mode::NL, ConvertOptions::new().value(b"world".to_vec()))
            .await?;
        ensure!(gb.mode() == Mode::NL);
        let gc = a
            .lock_with("v", Mode::PR, LockOptions::new().read_value())
            .await?;
        ensure!(gc.value().context("value")?.starts_with(b"world"));

        // R19: NOQUEUE conversion fails and keeps the old mode.
        let err = gb
            .convert_with(Mode::EX, ConvertOptions::new().no_queue())
            .await
            .unwrap_err();
        ensure!(matches!(err, Error::NotQueued), "{err:?}");
        ensure!(gb.mode() == Mode::NL);

        // R47: a cancelled conversion keeps the old mode.
        let canceller = gb.canceller();
        {
            let convert = gb.convert(Mode::EX);
            tokio::pin!(convert);
            let mut cancelled = false;
            let res = loop {
                tokio::select! {
                    // The conversion is polled (sent) first; the cancel follows it on the same
                    // connection, so it finds the conversion queued.
                    biased;
                    r = &mut convert => break r,
                    r = canceller.cancel(), if !cancelled => {
                        r?;
                        cancelled = true;
                    }
                }
            };
            ensure!(matches!(res, Err(Error::Cancelled)), "{res:?}");
        }
        ensure!(gb.mode() == Mode::NL);
        let err = canceller.cancel().await.unwrap_err();
        ensure!(matches!(err, Error::NotPending), "{err:?}");

        // Dropping a pending conversion cancels it: afterwards nothing is converting.
        {
            let convert = gb.convert(Mode::EX);
            tokio::pin!(convert);
            tokio::select! {
                biased;
                r = &mut convert => anyhow::bail!("converted while PR is held: {r:?}"),
                p = b.ping() => { p?; }
            }
        }
        // Sent by b after the cancel its dropped conversion queued.
        let info = b.query_resource("v").await?.context("resource")?;
        ensure!(info.converting.is_empty(), "{:?}", info.converting);
        ensure!(gb.mode() == Mode::NL);
        drop(gc);

        gb.unlock().await?;
        drop(keep_v);

        // R29a: IVVALBLK on unlock from EX marks the value block not valid (R30); an NL lock
        // keeps the resource, and so its value block, alive (R1).
        let keep = a.lock("w", Mode::NL).await?;
        let gw = b.lock("w", Mode::EX).await?;
        gw.unlock_with(UnlockOptions::new().invalidate_value())
            .await?;
        let gr = b
            .lock_with("w", Mode::PR, LockOptions::new().read_value())
            .await?;
        ensure!(!gr.value_valid(), "VALNOTVALID after IVVALBLK");
        drop(keep);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn lock_timeout_and_close() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let a = client(&server, "a").await?;
        let b = client(&server, "b").await?;
        let ga = a.lock("t", Mode::EX).await?;
        // R65: the server times the request out.
        let err = b
            .lock_with(
                "t",
                Mode::EX,
                LockOptions::new().timeout(Duration::from_millis(50)),
            )
            .await
            .unwrap_err();
        ensure!(matches!(err, Error::TimedOut), "{err:?}");

        // close() ends the session: a's locks go at once and its guards say so.
        let lost = ga.lost();
        a.close().await?;
        ensure!(lost.await == LostReason::Closed);
        ensure!(ga.is_lost());
        let err = ga.unlock().await.unwrap_err();
        ensure!(matches!(err, Error::Closed), "{err:?}");
        let err = a.lock("t", Mode::EX).await.unwrap_err();
        ensure!(matches!(err, Error::Closed), "{err:?}");
        a.close().await?; // idempotent
        let gb = b.try_lock("t", Mode::EX).await?;
        drop(gb);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_youngest_request_on_a_deadlock_cycle_is_refused() -> Result<()> {
    bounded(async {
        let server = TestServer::start().await?;
        let a = client(&server, "a").await?;
        let b = client(&server, "b").await?;
        let ax = a.lock("x", Mode::EX).await?;
        let mut by = b.lock("y", Mode::EX).await?;

        let a_wants_y = tokio::spawn({
            let a = a.clone();
            async move { a.lock("y", Mode::EX).await }
        });
        ensure!(by.blocked().await? == Mode::EX, "a is queued for y");
        // b waiting for x would close the cycle a -> b -> a: b's request is the victim (R41).
        let err = b.lock("x", Mode::EX).await.unwrap_err();
        ensure!(matches!(err, Error::Deadlock), "{err:?}");
        ensure!(err.is_not_granted());

        by.unlock().await?;
        let ay = a_wants_y.await??;
        ensure!(ay.mode() == Mode::EX);
        drop(ax);
        Ok(())
    })
    .await
}
