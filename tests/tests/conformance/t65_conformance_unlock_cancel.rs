//! Conformance of the SDK's cancel paths (R46, R48, R52) against a real server: dropping a
//! pending `lock` future cancels the request, also before its "queued" answer came back or
//! while its grant races the cancel, and a released lock is unknown to its canceller. The
//! rules themselves (R44..R49, R52, R65) are specified by dlock-core's scenario tests.

use anyhow::{Context, Result, ensure};
use dlock_client::{Error, Mode};
use dlock_tests::sdk::*;

/// R46: dropping a pending `lock` future cancels the WAITING request: it leaves the wait
/// queue, and the grant pass grants requests that were queued behind it.
#[tokio::test]
async fn r46_cancel_waiting_request_by_dropping_future() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 3).await?;
        let (a, b, d) = (&c[0], &c[1], &c[2]);
        let _ga = a.lock("cw", Mode::PR).await?;
        let mut pb = start_lock(b, "cw", Mode::EX);
        send_then_query(&mut pb, b, "cw").await?;
        let mut pd = start_lock(d, "cw", Mode::PR);
        let info = send_then_query(&mut pd, d, "cw").await?;
        ensure!(info.waiting.len() == 2, "{info:?}");
        drop(pb);
        // The cancel travels before this query on b's connection.
        let info = res(b, "cw").await?;
        ensure!(
            !info.waiting.iter().any(|l| l.session == b.session_id()),
            "{info:?}"
        );
        let gd = outcome("d's grant", pd).await??;
        ensure!(gd.mode() == Mode::PR);
        let s = within("session query", b.query_session(b.session_id()))
            .await??
            .context("b's session")?;
        ensure!(s.locks.is_empty(), "{:?}", s.locks);
        Ok(())
    })
    .await
}

/// R52 through the SDK: once a guard's lock is released, its canceller reports the lock as
/// unknown.
#[tokio::test]
async fn r52_released_lock_is_unknown_to_its_canceller() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let a = client(&server, "a").await?;
        let g = a.lock("gone", Mode::EX).await?;
        let canceller = g.canceller();
        unlock(g).await?;
        let r = within("cancel", canceller.cancel()).await?;
        ensure!(matches!(r, Err(Error::NotFound)), "{r:?}");
        Ok(())
    })
    .await
}

/// R46 through the SDK: a `lock` future dropped right after it was first polled (before the
/// server's "queued" answer came back) still cancels the request.
#[tokio::test]
async fn r46_lock_future_dropped_before_queued_answer() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        let ga = a.lock("early", Mode::EX).await?;
        let mut pb = start_lock(b, "early", Mode::EX);
        // One poll sends the request; drop at once.
        ensure!(futures_util::poll!(&mut pb).is_pending());
        drop(pb);
        wait_for_state(a, "early", "b's request to be cancelled", |i| {
            i.is_some_and(|i| i.waiting.is_empty())
        })
        .await?;
        let s = within("session", b.query_session(b.session_id()))
            .await??
            .context("b's session")?;
        ensure!(s.locks.is_empty(), "{:?}", s.locks);
        drop(ga);
        Ok(())
    })
    .await
}

/// R48 through the SDK: a `lock` future dropped while its grant races the cancel leaves no
/// lock behind either way (a grant that won is released).
#[tokio::test]
async fn r48_lock_future_dropped_while_grant_races() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        for i in 0..20 {
            let name = format!("race/{i}");
            let ga = a.lock(&name, Mode::EX).await?;
            let mut pb = start_lock(b, &name, Mode::EX);
            send_then_query(&mut pb, b, &name).await?;
            // The unlock and the cancel travel on different connections.
            let unlocked = ga.unlock();
            drop(pb);
            within("unlock", unlocked).await??;
            wait_for_state(a, &name, "no lock left", |i| i.is_none()).await?;
        }
        let s = within("session", b.query_session(b.session_id()))
            .await??
            .context("b's session")?;
        ensure!(s.locks.is_empty(), "{:?}", s.locks);
        Ok(())
    })
    .await
}
