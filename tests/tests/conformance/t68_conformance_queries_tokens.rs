//! Conformance: resource lifetime and independent locks (R1, R2), NOQUEUE (R22, R23), queries
//! (R66) and fencing tokens, end to end through `dlock-client`.

use anyhow::{Context, Result, ensure};
use dlock_client::{Error, FencingToken, LockState, Mode};
use dlock_tests::sdk::*;

/// R1, R2: each request is its own lock, also within one session; the resource lives while
/// any lock on it exists and is destroyed with the last one.
#[tokio::test]
async fn r01_r02_independent_locks_and_resource_lifetime() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let a = client(&server, "a").await?;
        ensure!(!exists(&a, "life").await?);
        let g1 = a.lock("life", Mode::PR).await?;
        let g2 = a.lock("life", Mode::CR).await?;
        ensure!(g1.lock_id() != g2.lock_id());
        let info = res(&a, "life").await?;
        ensure!(
            granted(&info) == holders(&[(&a, Mode::PR), (&a, Mode::CR)]),
            "{info:?}"
        );
        unlock(g1).await?;
        let info = res(&a, "life").await?;
        ensure!(
            info.granted.len() == 1 && info.granted[0].lock == g2.lock_id(),
            "{info:?}"
        );
        unlock(g2).await?;
        ensure!(
            !exists(&a, "life").await?,
            "R1: destroyed with its last lock"
        );
        Ok(())
    })
    .await
}

/// R22: a NOQUEUE request fails with NOT_QUEUED, creating nothing, when R10 would not grant
/// it, including when it is compatible with every holder but a conversion is queued.
#[tokio::test]
async fn r22_noqueue_new_request() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 3).await?;
        let (a, b, d) = (&c[0], &c[1], &c[2]);
        let _ga = a.lock("nq", Mode::PR).await?;
        let mut gb = b.lock("nq", Mode::PR).await?;
        let mut pb = start_convert(&mut gb, Mode::EX);
        send_then_query(&mut pb, b, "nq").await?;
        // CR is compatible with both PR holders, but the convert queue is not empty.
        let r = d.try_lock("nq", Mode::CR).await;
        ensure!(matches!(r, Err(Error::NotQueued)), "{r:?}");
        let s = within("session", d.query_session(d.session_id()))
            .await??
            .context("session")?;
        ensure!(s.locks.is_empty(), "NOT_QUEUED left a lock: {:?}", s.locks);
        let info = res(d, "nq").await?;
        ensure!(
            info.waiting.is_empty() && info.granted.len() == 1 && info.converting.len() == 1,
            "{info:?}"
        );
        // Granted when R10 allows it (no queue, compatible).
        let r = d.try_lock("other", Mode::EX).await;
        ensure!(r.is_ok(), "{r:?}");
        Ok(())
    })
    .await
}

/// R23: a NOQUEUE verdict is decided at the request's place in the serial order: right after
/// an unlock it succeeds, right before it fails, and it never waits.
#[tokio::test]
async fn r23_noqueue_decided_at_its_place_in_order() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let a = client(&server, "a").await?;
        let b = client(&server, "b").await?;
        // Both requests go out over a's connection, in this order.
        let g = a.lock("ord", Mode::EX).await?;
        let (try_first, unlocked) = tokio::join!(a.try_lock("ord", Mode::EX), g.unlock());
        ensure!(matches!(try_first, Err(Error::NotQueued)), "{try_first:?}");
        unlocked?;
        let g = a.lock("ord", Mode::EX).await?;
        let (unlocked, try_after) = tokio::join!(g.unlock(), a.try_lock("ord", Mode::EX));
        unlocked?;
        let g2 = try_after?;
        ensure!(g2.mode() == Mode::EX);
        // Another session's NOQUEUE never waits, even while the holder is about to release.
        let r = within("b's try_lock", b.try_lock("ord", Mode::EX)).await?;
        ensure!(matches!(r, Err(Error::NotQueued)), "{r:?}");
        Ok(())
    })
    .await
}

/// R66: a resource query lists the grant, convert and wait queues with states, owners, owner
/// names and tokens; a session query lists a session's locks; a prefix query lists
/// resources in name order, at most `limit`.
#[tokio::test]
async fn r66_queries() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 3).await?;
        let (a, b, d) = (&c[0], &c[1], &c[2]);
        ensure!(within("query", a.query_resource("q/x")).await??.is_none());
        let ga = a.lock("q/x", Mode::PR).await?;
        let mut gb = b.lock("q/x", Mode::PR).await?;
        let mut pb = start_convert(&mut gb, Mode::EX);
        send_then_query(&mut pb, b, "q/x").await?;
        let mut pd = start_lock(d, "q/x", Mode::CW);
        let info = send_then_query(&mut pd, d, "q/x").await?;
        ensure!(info.name == b"q/x");
        ensure!(info.granted.len() == 1, "{info:?}");
        let g = &info.granted[0];
        ensure!(g.lock == ga.lock_id() && g.session == a.session_id() && g.session_name == "c0");
        ensure!(g.state == LockState::Granted { mode: Mode::PR } && g.token == Some(ga.token()));
        ensure!(info.converting.len() == 1, "{info:?}");
        let cv = &info.converting[0];
        ensure!(cv.session == b.session_id() && cv.session_name == "c1");
        ensure!(
            cv.state
                == LockState::Converting {
                    from: Mode::PR,
                    to: Mode::EX
                }
        );
        ensure!(
            cv.token.is_some(),
            "a converting lock holds a mode and its token"
        );
        ensure!(info.waiting.len() == 1, "{info:?}");
        let w = &info.waiting[0];
        ensure!(w.session == d.session_id() && w.state == LockState::Waiting { mode: Mode::CW });
        ensure!(w.token.is_none(), "a waiting lock holds nothing");

        let s = within("session", a.query_session(b.session_id()))
            .await??
            .context("b's session")?;
        ensure!(s.name == "c1" && s.locks.len() == 1, "{s:?}");
        ensure!(s.locks[0].resource == b"q/x");
        ensure!(
            s.locks[0].state
                == LockState::Converting {
                    from: Mode::PR,
                    to: Mode::EX
                }
        );

        let _others = (
            a.lock("q/a", Mode::NL).await?,
            a.lock("q/m", Mode::NL).await?,
            a.lock("r/z", Mode::NL).await?,
        );
        let listed = within("prefix", a.query_prefix("q/", 10)).await??;
        let names: Vec<_> = listed.iter().map(|r| r.name.clone()).collect();
        ensure!(
            names == vec![b"q/a".to_vec(), b"q/m".to_vec(), b"q/x".to_vec()],
            "{names:?}"
        );
        let listed = within("prefix", a.query_prefix("q/", 2)).await??;
        ensure!(listed.len() == 2 && listed[0].name == b"q/a");
        drop(pb);
        drop(pd);
        Ok(())
    })
    .await
}

/// Fencing tokens grow strictly on every grant of a resource: new locks, grants by a grant
/// pass, and every granted conversion (up, down, same mode); the query shows the same token.
#[tokio::test]
async fn fencing_tokens_strictly_increase_per_resource() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 3).await?;
        let (a, b, d) = (&c[0], &c[1], &c[2]);
        let mut last = FencingToken(0);
        let mut seen = |t: FencingToken, what: &str| -> Result<()> {
            ensure!(t > last, "{what}: token {t:?} not above {last:?}");
            last = t;
            Ok(())
        };
        let mut ga = a.lock("tok", Mode::EX).await?;
        seen(ga.token(), "first grant")?;
        for to in [
            Mode::EX,
            Mode::PW,
            Mode::PR,
            Mode::CW,
            Mode::PR,
            Mode::NL,
            Mode::EX,
        ] {
            within("conversion", ga.convert(to)).await??;
            seen(ga.token(), &format!("conversion to {to:?}"))?;
            let info = res(a, "tok").await?;
            ensure!(info.granted[0].token == Some(ga.token()), "{info:?}");
        }
        // Two requests granted by one grant pass.
        let mut pb = start_lock(b, "tok", Mode::PR);
        send_then_query(&mut pb, b, "tok").await?;
        let mut pd = start_lock(d, "tok", Mode::PR);
        send_then_query(&mut pd, d, "tok").await?;
        unlock(ga).await?;
        let gb = outcome("b", pb).await??;
        let gd = outcome("d", pd).await??;
        ensure!(gb.token() != gd.token());
        let (lo, hi) = (gb.token().min(gd.token()), gb.token().max(gd.token()));
        seen(lo, "first grant of the pass")?;
        seen(hi, "second grant of the pass")?;
        // A conversion granted by a grant pass.
        let mut gb = gb;
        let mut pb = start_convert(&mut gb, Mode::EX);
        send_then_query(&mut pb, b, "tok").await?;
        unlock(gd).await?;
        outcome("b's conversion", pb).await??;
        seen(gb.token(), "conversion granted by a pass")?;
        Ok(())
    })
    .await
}

/// Fencing tokens never regress across a server restart.
#[tokio::test]
async fn fencing_tokens_grow_across_restart() -> Result<()> {
    bounded(async {
        // Without the restart grace, which would hold the lock after the restart for the
        // previous run's longest lease (t75 is about that).
        let mut server =
            dlock_tests::TestServer::start_with(dlock_tests::TestServer::no_grace_config()).await?;
        let a = client(&server, "a").await?;
        let mut last = FencingToken(0);
        for _ in 0..5 {
            let g = a.lock("rs", Mode::EX).await?;
            last = last.max(g.token());
            unlock(g).await?;
        }
        server.restart().await?;
        let b = client(&server, "b").await?;
        let g = within("lock after restart", b.lock("rs", Mode::EX)).await??;
        ensure!(g.token() > last, "{:?} after {last:?}", g.token());
        Ok(())
    })
    .await
}
