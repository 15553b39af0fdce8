//! Conformance: deadlock detection across sessions and resources (R39..R42), end to end
//! through `dlock-client`.

use anyhow::{Context, Result, ensure};
use dlock_client::{Client, Error, Mode};
use dlock_tests::sdk::*;

/// How many locks `c`'s session owns, as the server sees it.
async fn lock_count(via: &Client, c: &Client) -> Result<usize> {
    let info = within("session query", via.query_session(c.session_id()))
        .await??
        .context("session")?;
    Ok(info.locks.len())
}

/// R39, R41: two sessions, two resources. The request that closes the cycle (the youngest)
/// gets DEADLOCK and leaves no lock behind; the other request is untouched.
#[tokio::test]
async fn r41_two_sessions_two_resources_youngest_is_victim() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        let a1 = a.lock("r1", Mode::EX).await?;
        let b2 = b.lock("r2", Mode::EX).await?;
        let mut pa = start_lock(a, "r2", Mode::PR);
        send_then_query(&mut pa, a, "r2").await?;
        let err = within("b's request", b.lock("r1", Mode::PR))
            .await?
            .unwrap_err();
        ensure!(matches!(err, Error::Deadlock), "{err:?}");
        let info = res(b, "r1").await?;
        ensure!(info.waiting.is_empty(), "the victim left a lock: {info:?}");
        ensure!(lock_count(a, b).await? == 1, "b owns only r2");
        let info = res(b, "r2").await?;
        ensure!(
            waiting(&info) == vec![(a.session_id(), Mode::PR)],
            "{info:?}"
        );
        still_pending(&mut pa, a).await?;
        ensure!(!a1.is_lost() && !b2.is_lost());
        unlock(b2).await?;
        let g = outcome("a's request", pa).await??;
        ensure!(g.mode() == Mode::PR);
        Ok(())
    })
    .await
}

/// R39, R41: three sessions, three resources in a ring: only the last request is refused.
#[tokio::test]
async fn r41_three_sessions_three_resources() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 3).await?;
        let (a, b, d) = (&c[0], &c[1], &c[2]);
        let _a1 = a.lock("t1", Mode::EX).await?;
        let b2 = b.lock("t2", Mode::EX).await?;
        let d3 = d.lock("t3", Mode::EX).await?;
        let mut pa = start_lock(a, "t2", Mode::EX);
        send_then_query(&mut pa, a, "t2").await?;
        let mut pb = start_lock(b, "t3", Mode::EX);
        send_then_query(&mut pb, b, "t3").await?;
        let err = within("d's request", d.lock("t1", Mode::EX))
            .await?
            .unwrap_err();
        ensure!(matches!(err, Error::Deadlock), "{err:?}");
        ensure!(res(d, "t1").await?.waiting.is_empty());
        still_pending(&mut pa, a).await?;
        still_pending(&mut pb, b).await?;
        // The chain unwinds from d.
        unlock(d3).await?;
        let gb = outcome("b's request", pb).await??;
        drop(gb);
        unlock(b2).await?;
        outcome("a's request", pa).await??;
        Ok(())
    })
    .await
}

/// R41: a conversion refused as a deadlock victim keeps its lock GRANTED at the old mode.
#[tokio::test]
async fn r41_conversion_victim_keeps_old_mode() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        let a1 = a.lock("v1", Mode::EX).await?;
        let _b2 = b.lock("v2", Mode::PR).await?;
        let mut b1 = b.lock("v1", Mode::NL).await?;
        let mut pa = start_lock(a, "v2", Mode::EX);
        send_then_query(&mut pa, a, "v2").await?;
        let token = b1.token();
        let err = within("b's conversion", b1.convert(Mode::EX))
            .await?
            .unwrap_err();
        ensure!(matches!(err, Error::Deadlock), "{err:?}");
        ensure!(b1.mode() == Mode::NL && b1.token() == token);
        let info = res(b, "v1").await?;
        ensure!(
            granted(&info) == holders(&[(a, Mode::EX), (b, Mode::NL)])
                && info.converting.is_empty(),
            "{info:?}"
        );
        still_pending(&mut pa, a).await?;
        drop(a1);
        Ok(())
    })
    .await
}

/// R39: a cycle of length one: a session waiting for its own lock on the same resource.
#[tokio::test]
async fn r39_session_waiting_for_itself_is_a_deadlock() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let a = client(&server, "a").await?;
        let g = a.lock("self", Mode::PR).await?;
        let err = within("second lock", a.lock("self", Mode::EX))
            .await?
            .unwrap_err();
        ensure!(matches!(err, Error::Deadlock), "{err:?}");
        let info = res(&a, "self").await?;
        ensure!(
            granted(&info) == holders(&[(&a, Mode::PR)]) && info.waiting.is_empty(),
            "{info:?}"
        );
        // Compatible: a second PR lock of the same session is simply granted (R2).
        let g2 = within("compatible second lock", a.lock("self", Mode::PR)).await??;
        drop((g, g2));
        Ok(())
    })
    .await
}

/// R39 (b): a request queued behind a compatible but blocked predecessor waits for what the
/// predecessor waits for; the cycle through it is found, and the predecessor (not on the
/// cycle) is untouched.
#[tokio::test]
async fn r39b_cycle_through_compatible_predecessor() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 3).await?;
        let (a, b, x) = (&c[0], &c[1], &c[2]);
        let b2 = b.lock("h2", Mode::EX).await?;
        let a1 = a.lock("h1", Mode::EX).await?;
        // x's PR waits for a's EX.
        let mut px = start_lock(x, "h1", Mode::PR);
        send_then_query(&mut px, x, "h1").await?;
        // b's PR is compatible with x's PR but queued behind it: b waits for a too.
        let mut pb = start_lock(b, "h1", Mode::PR);
        let info = send_then_query(&mut pb, b, "h1").await?;
        ensure!(
            waiting(&info) == vec![(x.session_id(), Mode::PR), (b.session_id(), Mode::PR)],
            "{info:?}"
        );
        // a waits for b on h2: a -> b -> a.
        let err = within("a's request", a.lock("h2", Mode::EX))
            .await?
            .unwrap_err();
        ensure!(matches!(err, Error::Deadlock), "{err:?}");
        still_pending(&mut px, x).await?;
        still_pending(&mut pb, b).await?;
        unlock(a1).await?;
        outcome("x's request", px).await??;
        outcome("b's request", pb).await??;
        drop(b2);
        Ok(())
    })
    .await
}

/// R40, R41: an in-place conversion that gives a queued request a new edge closes a cycle;
/// the youngest request on it is refused, the conversion stands, and a grant pass runs on
/// the victim's resource.
#[tokio::test]
async fn r40_in_place_conversion_closing_a_cycle() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 4).await?;
        let (a, b, x, d) = (&c[0], &c[1], &c[2], &c[3]);
        let mut a1 = a.lock("w1", Mode::NL).await?;
        let _x1 = x.lock("w1", Mode::PR).await?;
        let _b2 = b.lock("w2", Mode::EX).await?;
        // b's PW on w1 waits for x's PR only (a's NL is compatible).
        let mut pb = start_lock(b, "w1", Mode::PW);
        send_then_query(&mut pb, b, "w1").await?;
        // a's EX on w2 waits for b. No cycle yet.
        let mut pa = start_lock(a, "w2", Mode::EX);
        send_then_query(&mut pa, a, "w2").await?;
        // d's NL on w2 queues behind a's request (FIFO).
        let mut pd = start_lock(d, "w2", Mode::NL);
        send_then_query(&mut pd, d, "w2").await?;
        // a: NL->PR, compatible with x's PR: granted in place; now b's PW waits for a too.
        within("a's conversion", a1.convert(Mode::PR)).await??;
        ensure!(a1.mode() == Mode::PR);
        // The youngest request on the cycle a -> b -> a is a's EX on w2.
        let r = outcome("a's request on w2", pa).await?;
        ensure!(matches!(r, Err(Error::Deadlock)), "{r:?}");
        still_pending(&mut pb, b).await?;
        // The grant pass on w2 grants d's NL, no longer queued behind a's request.
        let gd = outcome("d's request", pd).await??;
        ensure!(gd.mode() == Mode::NL);
        let info = res(a, "w1").await?;
        ensure!(
            waiting(&info) == vec![(b.session_id(), Mode::PW)],
            "{info:?}"
        );
        Ok(())
    })
    .await
}

/// R42: compatible co-holders create no edge, and a chain of waiters that ends at an owner
/// who is not waiting is no deadlock.
#[tokio::test]
async fn r42_no_false_positives() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 3).await?;
        let (a, b, d) = (&c[0], &c[1], &c[2]);
        // Crossed shared locks.
        let _a1 = a.lock("s1", Mode::PR).await?;
        let _b2 = b.lock("s2", Mode::PR).await?;
        within("a's PR on s2", a.lock("s2", Mode::PR)).await??;
        within("b's PR on s1", b.lock("s1", Mode::CR)).await??;

        // A chain a -> b -> d, d not waiting.
        let a3 = a.lock("c1", Mode::EX).await?;
        let b4 = b.lock("c2", Mode::EX).await?;
        let d5 = d.lock("c3", Mode::EX).await?;
        let mut pa = start_lock(a, "c2", Mode::EX);
        send_then_query(&mut pa, a, "c2").await?;
        let mut pb = start_lock(b, "c3", Mode::EX);
        send_then_query(&mut pb, b, "c3").await?;
        // Another waiter for a, holding nothing (not on any cycle).
        let e = client(&server, "e").await?;
        let mut pe = start_lock(&e, "c1", Mode::PR);
        send_then_query(&mut pe, &e, "c1").await?;
        still_pending(&mut pa, a).await?;
        still_pending(&mut pb, b).await?;
        drop(d5);
        let gb = outcome("b's request", pb).await??;
        drop(gb);
        unlock(b4).await?;
        let ga = outcome("a's request", pa).await??;
        drop(ga);
        still_pending(&mut pe, &e).await?;
        drop(a3);
        outcome("e's request", pe).await??;
        Ok(())
    })
    .await
}

/// R42: a cycle broken (by a cancel, an unlock or a session's end) before the request that
/// would close it arrives is no deadlock.
#[tokio::test]
async fn r42_broken_cycle_is_not_reported() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);

        // Broken by a cancel (dropping the pending request).
        let a1 = a.lock("k1", Mode::EX).await?;
        let b2 = b.lock("k2", Mode::EX).await?;
        let mut pa = start_lock(a, "k2", Mode::EX);
        send_then_query(&mut pa, a, "k2").await?;
        drop(pa);
        ensure!(res(a, "k2").await?.waiting.is_empty());
        let mut pb = start_lock(b, "k1", Mode::EX);
        send_then_query(&mut pb, b, "k1").await?;
        unlock(a1).await?;
        let g = outcome("b's request", pb).await??;
        drop((g, b2));

        // Broken by an unlock.
        let a1 = a.lock("u1", Mode::EX).await?;
        let b2 = b.lock("u2", Mode::EX).await?;
        let mut pa = start_lock(a, "u2", Mode::EX);
        send_then_query(&mut pa, a, "u2").await?;
        unlock(b2).await?;
        let ga = outcome("a's request", pa).await??;
        let mut pb = start_lock(b, "u1", Mode::EX);
        send_then_query(&mut pb, b, "u1").await?;
        drop((a1, ga));
        outcome("b's request", pb).await??;

        // Broken by a session's end.
        let e = client(&server, "e").await?;
        let _e1 = e.lock("e1", Mode::EX).await?;
        let b2 = b.lock("e2", Mode::EX).await?;
        let mut pe = start_lock(&e, "e2", Mode::EX);
        send_then_query(&mut pe, &e, "e2").await?;
        within("close", e.close()).await??;
        let r = outcome("e's request", pe).await?;
        ensure!(r.is_err(), "{r:?}");
        within("b's request", b.lock("e1", Mode::EX)).await??;
        drop(b2);
        Ok(())
    })
    .await
}

/// R40, R41: when an in-place conversion closes a cycle, the youngest queued request on the
/// cycle is refused even if it belongs to another session than the converter.
#[tokio::test]
async fn r41_in_place_conversion_refuses_youngest_not_converter() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 3).await?;
        let (a, b, x) = (&c[0], &c[1], &c[2]);
        let mut a1 = a.lock("y1", Mode::NL).await?;
        let _x1 = x.lock("y1", Mode::PR).await?;
        let _b2 = b.lock("y2", Mode::EX).await?;
        // Older: a's EX on y2 waits for b.
        let mut pa = start_lock(a, "y2", Mode::EX);
        send_then_query(&mut pa, a, "y2").await?;
        // Younger: b's PW on y1 waits for x only.
        let mut pb = start_lock(b, "y1", Mode::PW);
        send_then_query(&mut pb, b, "y1").await?;
        // a's NL->PR in place: b's PW now waits for a too, closing a -> b -> a.
        within("a's conversion", a1.convert(Mode::PR)).await??;
        let r = outcome("b's request", pb).await?;
        ensure!(matches!(r, Err(Error::Deadlock)), "{r:?}");
        still_pending(&mut pa, a).await?;
        ensure!(a1.mode() == Mode::PR);
        let info = res(a, "y1").await?;
        ensure!(info.waiting.is_empty(), "{info:?}");
        Ok(())
    })
    .await
}

/// R39, R40: a conversion joins the convert queue *ahead of every waiting request* (R39 "every
/// conversion is ahead of every waiting new request"), so queuing it also gives the waiting
/// requests new edges towards the converter. Here d's NL->EX waits for c's CR lock, and c's
/// queued CR request, behind d's conversion, then waits for d: a cycle closed by the arriving
/// conversion, which must be refused.
#[tokio::test]
async fn r40_queued_conversion_closes_cycle_through_waiter_behind_it() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 4).await?;
        let (a, b, cc, d) = (&c[0], &c[1], &c[2], &c[3]);
        let _ga = a.lock("cq", Mode::PR).await?;
        let _gc = cc.lock("cq", Mode::CR).await?;
        let mut gb = b.lock("cq", Mode::NL).await?;
        let mut gd = d.lock("cq", Mode::NL).await?;
        // b: NL->PW, blocked by a's PR: keeps the convert queue non-empty.
        let mut pb = start_convert(&mut gb, Mode::PW);
        send_then_query(&mut pb, b, "cq").await?;
        // c: a second CR lock, compatible with every holder, waits behind the conversion.
        let mut pc = start_lock(cc, "cq", Mode::CR);
        let info = send_then_query(&mut pc, cc, "cq").await?;
        ensure!(
            waiting(&info) == vec![(cc.session_id(), Mode::CR)],
            "{info:?}"
        );
        // d: NL->EX waits for a's PR and c's CR; once queued, c's CR request waits for d.
        let r = within("d's conversion", gd.convert(Mode::EX)).await;
        let info = res(d, "cq").await?;
        ensure!(
            matches!(r, Ok(Err(Error::Deadlock))),
            "expected DEADLOCK for d's conversion, got {r:?}; queues: {info:?}"
        );
        ensure!(gd.mode() == Mode::NL);
        ensure!(
            converting(&info) == vec![(b.session_id(), Mode::NL, Mode::PW)],
            "{info:?}"
        );
        still_pending(&mut pc, cc).await?;
        Ok(())
    })
    .await
}

/// R39, R40: a cycle of length one closed by a queued conversion: the session's own waiting
/// request, queued behind the convert queue, is incompatible with the session's arriving
/// conversion, which goes ahead of it; the conversion is refused.
#[tokio::test]
async fn r40_queued_conversion_ahead_of_own_waiting_request() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 3).await?;
        let (a, b, s) = (&c[0], &c[1], &c[2]);
        let _ga = a.lock("own", Mode::PR).await?;
        let mut gb = b.lock("own", Mode::NL).await?;
        let mut gs = s.lock("own", Mode::NL).await?;
        // b: NL->PW, blocked by a's PR: keeps the convert queue non-empty.
        let mut pb = start_convert(&mut gb, Mode::PW);
        send_then_query(&mut pb, b, "own").await?;
        // s: a CR request, compatible with every holder, waits behind the conversion.
        let mut pw = start_lock(s, "own", Mode::CR);
        send_then_query(&mut pw, s, "own").await?;
        // s: NL->EX would go ahead of s's own CR request, which EX blocks: s waits for s.
        let r = within("s's conversion", gs.convert(Mode::EX)).await;
        let info = res(a, "own").await?;
        ensure!(
            matches!(r, Ok(Err(Error::Deadlock))),
            "expected DEADLOCK for s's conversion, got {r:?}; queues: {info:?}"
        );
        ensure!(gs.mode() == Mode::NL);
        ensure!(
            waiting(&info) == vec![(s.session_id(), Mode::CR)],
            "{info:?}"
        );
        Ok(())
    })
    .await
}
