//! Conformance: blocking notifications (R32..R37), end to end through `dlock-client`. Only
//! "at least one notification with mode M" or "none" is asserted, never counts (R37). R33
//! (a converting lock is never notified) cannot be observed through the SDK, whose
//! `blocked` and `convert` both borrow the guard mutably and whose conversion grant discards
//! older advice; it is checked over the raw protocol.

use anyhow::{Context, Result, ensure};
use dlock_client::{Error, Mode};
use dlock_proto::{EventKind, LockFlags, ServerMessage};
use dlock_tests::RawClient;
use dlock_tests::sdk::*;

/// R32: when a request is queued, every granted lock incompatible with its mode is notified
/// with that mode.
#[tokio::test]
async fn r32_incompatible_holders_are_notified_of_queued_request() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 3).await?;
        let (a, x, b) = (&c[0], &c[1], &c[2]);
        let mut ga = a.lock("n", Mode::PR).await?;
        let mut gx = x.lock("n", Mode::CR).await?;
        let mut pb = start_lock(b, "n", Mode::EX);
        send_then_query(&mut pb, b, "n").await?;
        expect_blocked(&mut ga, Mode::EX).await?;
        expect_blocked(&mut gx, Mode::EX).await?;
        Ok(())
    })
    .await
}

/// R32: a queued conversion notifies the incompatible granted locks too.
#[tokio::test]
async fn r32_queued_conversion_notifies_holders() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        let mut ga = a.lock("nc", Mode::PR).await?;
        let mut gb = b.lock("nc", Mode::PR).await?;
        let mut pb = start_convert(&mut gb, Mode::PW);
        send_then_query(&mut pb, b, "nc").await?;
        expect_blocked(&mut ga, Mode::PW).await?;
        Ok(())
    })
    .await
}

/// R34: a holder whose mode is compatible with the queued mode gets nothing, while an
/// incompatible one is notified.
#[tokio::test]
async fn r34_compatible_holders_are_not_notified() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 4).await?;
        let (a, x, h, b) = (&c[0], &c[1], &c[2], &c[3]);
        let mut ga = a.lock("cn", Mode::NL).await?;
        let mut gx = x.lock("cn", Mode::CR).await?;
        let mut gh = h.lock("cn", Mode::PW).await?;
        // PR: blocked by PW only.
        let mut pb = start_lock(b, "cn", Mode::PR);
        send_then_query(&mut pb, b, "cn").await?;
        expect_blocked(&mut gh, Mode::PR).await?;
        expect_no_blocking(&mut ga, a).await?;
        expect_no_blocking(&mut gx, x).await?;
        Ok(())
    })
    .await
}

/// R34: nothing is sent for a request granted at once, nor for a NOQUEUE failure.
#[tokio::test]
async fn r34_no_notification_for_immediate_grant_or_noqueue_failure() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        let mut ga = a.lock("ig", Mode::PR).await?;
        let gb = b.lock("ig", Mode::PR).await?;
        expect_no_blocking(&mut ga, a).await?;
        unlock(gb).await?;
        let err = b.try_lock("ig", Mode::EX).await.unwrap_err();
        ensure!(matches!(err, Error::NotQueued), "{err:?}");
        let err = b.try_lock("ig", Mode::CW).await.unwrap_err();
        ensure!(matches!(err, Error::NotQueued), "{err:?}");
        expect_no_blocking(&mut ga, a).await?;
        Ok(())
    })
    .await
}

/// R34, R41: a request refused with DEADLOCK sends no notification.
#[tokio::test]
async fn r34_no_notification_for_deadlock_victim() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        let mut a1 = a.lock("d1", Mode::EX).await?;
        let mut b2 = b.lock("d2", Mode::EX).await?;
        let mut pa = start_lock(a, "d2", Mode::EX);
        send_then_query(&mut pa, a, "d2").await?;
        expect_blocked(&mut b2, Mode::EX).await?;
        let err = within("b's request", b.lock("d1", Mode::EX))
            .await?
            .unwrap_err();
        ensure!(matches!(err, Error::Deadlock), "{err:?}");
        expect_no_blocking(&mut a1, a).await?;
        still_pending(&mut pa, a).await?;
        Ok(())
    })
    .await
}

/// R34: a request queued only because of FIFO order is not notified to holders it is
/// compatible with.
#[tokio::test]
async fn r34_no_notification_for_fifo_only_wait() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 4).await?;
        let (h, a, b, d) = (&c[0], &c[1], &c[2], &c[3]);
        let mut gh = h.lock("ff", Mode::PW).await?;
        let mut ga = a.lock("ff", Mode::CR).await?;
        // CW: blocked by PW, compatible with CR.
        let mut pb = start_lock(b, "ff", Mode::CW);
        send_then_query(&mut pb, b, "ff").await?;
        expect_blocked(&mut gh, Mode::CW).await?;
        // CR: compatible with PW and CR, queued only behind CW.
        let mut pd = start_lock(d, "ff", Mode::CR);
        let info = send_then_query(&mut pd, d, "ff").await?;
        ensure!(info.waiting.len() == 2, "{info:?}");
        expect_no_blocking(&mut ga, a).await?;
        let got = drain_blocked(&mut gh, h).await?;
        ensure!(
            !got.contains(&Mode::CR),
            "PW holder notified of CR: {got:?}"
        );
        Ok(())
    })
    .await
}

/// R33: a converting lock gets no notification although its granted mode blocks a queued
/// request; a granted holder with the same mode does.
#[tokio::test]
async fn r33_converting_lock_is_not_notified_raw() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let mut a = RawClient::connect(server.addr(), "a").await?;
        let mut b = RawClient::connect(server.addr(), "b").await?;
        let mut x = RawClient::connect(server.addr(), "x").await?;
        let (la, _) = a.acquire("cv", Mode::PR).await?;
        let (lb, _) = b.acquire("cv", Mode::PR).await?;
        let id = a.convert(la, Mode::EX, LockFlags::empty()).await?;
        ensure!(a.event_for(id).await?.kind == EventKind::Queued);
        // b (granted PR) is told about EX.
        b.event_where("b notified of EX", |e| {
            e.lock == Some(lb) && e.kind == EventKind::Blocking { mode: Mode::EX }
        })
        .await?;
        // PW: blocked by a's held PR (and b's); only b may be notified (R37 lets the server
        // drop it for b, already told of the stronger EX).
        let id = x.lock("cv", Mode::PW, LockFlags::empty()).await?;
        ensure!(x.event_for(id).await?.kind == EventKind::Queued);
        // a (converting, holding PR) is told nothing: everything sent to it before the pong.
        a.ping().await?;
        let notified: Vec<_> = a
            .set_aside()
            .iter()
            .filter(|m| {
                matches!(m, ServerMessage::Event { event, .. }
                    if matches!(event.kind, EventKind::Blocking { .. }))
            })
            .collect();
        ensure!(
            notified.is_empty(),
            "converting lock notified: {notified:?}"
        );
        Ok(())
    })
    .await
}

/// R35: after a grant pass that leaves requests queued, a lock granted in that very pass is
/// notified of the remaining queued mode, after its grant (R37).
#[tokio::test]
async fn r35_lock_granted_in_pass_is_notified() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 3).await?;
        let (h, b, d) = (&c[0], &c[1], &c[2]);
        let gh = h.lock("gp", Mode::EX).await?;
        let mut pb = start_lock(b, "gp", Mode::PR);
        send_then_query(&mut pb, b, "gp").await?;
        let mut pd = start_lock(d, "gp", Mode::EX);
        send_then_query(&mut pd, d, "gp").await?;
        unlock(gh).await?;
        let mut gb = outcome("b's grant", pb).await??;
        expect_blocked(&mut gb, Mode::EX).await?;
        still_pending(&mut pd, d).await?;
        Ok(())
    })
    .await
}

/// R35: a holder whose conversion was just granted in place is notified again when
/// requests it blocks remain queued.
#[tokio::test]
async fn r35_holder_notified_again_after_in_place_conversion() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, d) = (&c[0], &c[1]);
        let mut ga = a.lock("ag", Mode::PR).await?;
        let mut pd = start_lock(d, "ag", Mode::EX);
        send_then_query(&mut pd, d, "ag").await?;
        expect_blocked(&mut ga, Mode::EX).await?;
        // PR->CR: a down-conversion, granted in place; EX is still blocked by CR.
        within("PR->CR", ga.convert(Mode::CR)).await??;
        expect_blocked(&mut ga, Mode::EX).await?;
        // And again after an up-conversion in place (CR->PR).
        within("CR->PR", ga.convert(Mode::PR)).await??;
        expect_blocked(&mut ga, Mode::EX).await?;
        still_pending(&mut pd, d).await?;
        Ok(())
    })
    .await
}

/// R36: a notification is advice only: the holder keeps its lock until it acts.
#[tokio::test]
async fn r36_notification_revokes_nothing() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        let mut ga = a.lock("adv", Mode::EX).await?;
        let mut pb = start_lock(b, "adv", Mode::EX);
        send_then_query(&mut pb, b, "adv").await?;
        expect_blocked(&mut ga, Mode::EX).await?;
        let info = res(a, "adv").await?;
        ensure!(granted(&info) == holders(&[(a, Mode::EX)]), "{info:?}");
        ensure!(
            waiting(&info) == vec![(b.session_id(), Mode::EX)],
            "{info:?}"
        );
        still_pending(&mut pb, b).await?;
        ensure!(ga.mode() == Mode::EX && !ga.is_lost());
        // The holder decides: it steps down to NL, and the waiter is granted.
        within("EX->NL", ga.convert(Mode::NL)).await??;
        let gb = outcome("b's grant", pb).await??;
        ensure!(gb.mode() == Mode::EX);
        let info = res(a, "adv").await?;
        ensure!(
            granted(&info) == holders(&[(a, Mode::NL), (b, Mode::EX)]),
            "{info:?}"
        );
        let _ = info.granted.first().context("holders")?;
        Ok(())
    })
    .await
}
