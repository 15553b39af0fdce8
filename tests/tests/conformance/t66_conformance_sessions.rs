//! Conformance: the end of a session (R50, R51), by a clean close and by lease expiry of a
//! client cut off behind a black-holing proxy, end to end through `dlock-client`.

use std::time::Duration;

use anyhow::{Result, ensure};
use dlock_client::{Client, Error, LockOptions, LostReason, Mode};
use dlock_tests::proxy::Proxy;
use dlock_tests::sdk::*;

/// R50: closing a session removes its WAITING requests, its CONVERTING locks (pending
/// conversion and granted mode), and its GRANTED locks, and runs a grant pass on every
/// resource affected. The dead session's pending requests get no completion from the server
/// (the client fails them locally).
#[tokio::test]
async fn r50_close_removes_every_lock_and_runs_grant_passes() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 3).await?;
        let (a, x, d) = (&c[0], &c[1], &c[2]);
        // s1: d holds EX, a waits for EX.
        let g1 = d.lock("s1", Mode::EX).await?;
        let mut pa1 = start_lock(a, "s1", Mode::EX);
        send_then_query(&mut pa1, a, "s1").await?;
        // s2: x holds CR, d holds PR converting to EX, a waits for PW (blocked by d's PR).
        let _x2 = x.lock("s2", Mode::CR).await?;
        let mut g2 = d.lock("s2", Mode::PR).await?;
        // s3: x holds EX, d waits for EX, a waits for PR behind it.
        let x3 = x.lock("s3", Mode::EX).await?;
        let lost1 = g1.lost();
        let lost2 = g2.lost();
        {
            let mut pd2 = start_convert(&mut g2, Mode::EX);
            send_then_query(&mut pd2, d, "s2").await?;
            let mut pa2 = start_lock(a, "s2", Mode::PW);
            let info = send_then_query(&mut pa2, a, "s2").await?;
            ensure!(
                info.converting.len() == 1 && info.waiting.len() == 1,
                "{info:?}"
            );
            let mut pd3 = start_lock(d, "s3", Mode::EX);
            send_then_query(&mut pd3, d, "s3").await?;
            let mut pa3 = start_lock(a, "s3", Mode::PR);
            let info = send_then_query(&mut pa3, a, "s3").await?;
            ensure!(info.waiting.len() == 2, "{info:?}");

            let dead = d.session_id();
            within("close", d.close()).await??;
            let r = outcome("d's conversion", pd2).await?;
            ensure!(matches!(r, Err(Error::Closed)), "{r:?}");
            let r = outcome("d's request", pd3).await?;
            ensure!(matches!(r, Err(Error::Closed)), "{r:?}");
            ensure!(
                within("session query", a.query_session(dead))
                    .await??
                    .is_none(),
                "the closed session is still there"
            );

            // s1: granted to a by the grant pass.
            let ga1 = outcome("a's request on s1", pa1).await??;
            ensure!(ga1.mode() == Mode::EX);
            // s2: the converting lock is gone entirely; a's PW is compatible with x's CR.
            let ga2 = outcome("a's request on s2", pa2).await??;
            let info = res(a, "s2").await?;
            ensure!(
                granted(&info) == holders(&[(x, Mode::CR), (a, Mode::PW)])
                    && info.converting.is_empty(),
                "{info:?}"
            );
            // s3: d's request is gone, a still waits for x.
            let info = res(a, "s3").await?;
            ensure!(
                waiting(&info) == vec![(a.session_id(), Mode::PR)],
                "{info:?}"
            );
            still_pending(&mut pa3, a).await?;
            unlock(x3).await?;
            let ga3 = outcome("a's request on s3", pa3).await??;
            drop((ga1, ga2, ga3));
        }
        ensure!(lost1.await == LostReason::Closed);
        ensure!(lost2.await == LostReason::Closed);
        Ok(())
    })
    .await
}

/// R50, R51, R29b: a client cut off from the server (a black hole) keeps blocking others
/// until its lease runs out; then the server removes its locks and requests, runs the grant
/// passes, and marks the value block of its EX lock not valid.
#[tokio::test]
async fn r51_lease_expiry_of_cut_off_client() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let proxy = Proxy::start(server.addr()).await?;
        let a = client(&server, "a").await?;
        let x = client(&server, "x").await?;
        let d = Client::builder(proxy.addr().to_string())
            .name("cut-off")
            .lease_ttl(Duration::from_millis(2000))
            .backoff(Duration::from_millis(20), Duration::from_millis(200))
            .connect()
            .await?;
        let dead = d.session_id();
        let held = d.lock("lease", Mode::EX).await?;
        let _x2 = x.lock("lease2", Mode::EX).await?;
        let mut pd = start_lock(&d, "lease2", Mode::PR);
        send_then_query(&mut pd, &d, "lease2").await?;
        let mut pa: Pending<'_, _> =
            Box::pin(a.lock_with("lease", Mode::PR, LockOptions::new().read_value()));
        send_then_query(&mut pa, &a, "lease").await?;

        proxy.blackhole(true);
        // Still blocking while the lease runs.
        let err = a.try_lock("lease", Mode::CR).await.unwrap_err();
        ensure!(matches!(err, Error::NotQueued), "{err:?}");
        let info = res(&a, "lease").await?;
        ensure!(granted(&info) == vec![(dead, Mode::EX)], "{info:?}");

        // The server expires the session and grants a's request.
        let ga = outcome("a's grant after the lease expiry", pa).await??;
        ensure!(ga.mode() == Mode::PR);
        ensure!(
            !ga.value_valid(),
            "R29b: the dead EX holder invalidates the value block"
        );
        ensure!(
            within("session query", a.query_session(dead))
                .await??
                .is_none()
        );
        let info = res(&a, "lease2").await?;
        ensure!(
            info.waiting.is_empty(),
            "the dead session's request survived: {info:?}"
        );
        // The cut-off client gave its lock up on its own side (local lease).
        ensure!(
            within("lost", held.lost()).await? == LostReason::LocalLeaseLapsed,
            "cut-off guard"
        );
        let r = outcome("d's request", pd).await?;
        ensure!(r.is_err(), "{r:?}");
        drop(proxy);
        Ok(())
    })
    .await
}

/// R51: while a client reconnects after a broken connection, its locks keep blocking others;
/// it resumes the same session with its locks.
#[tokio::test]
async fn r51_locks_keep_blocking_across_a_reconnect() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let proxy = Proxy::start(server.addr()).await?;
        let a = client(&server, "a").await?;
        let d = Client::builder(proxy.addr().to_string())
            .name("flaky")
            .backoff(Duration::from_millis(10), Duration::from_millis(50))
            .connect()
            .await?;
        let session = d.session_id();
        let held = d.lock("rc", Mode::EX).await?;
        proxy.cut();
        let err = a.try_lock("rc", Mode::CR).await.unwrap_err();
        ensure!(matches!(err, Error::NotQueued), "{err:?}");
        within("ping after reconnect", d.ping()).await??;
        ensure!(d.session_id() == session && !held.is_lost());
        let info = res(&a, "rc").await?;
        ensure!(granted(&info) == vec![(session, Mode::EX)], "{info:?}");
        unlock(held).await?;
        Ok(())
    })
    .await
}
