//! Conformance: combinations of rules that are easy to get wrong (grant passes after a
//! cancel, a timeout or a session end on the convert queue; a session queued behind its own
//! request; value block reads by queued conversions), end to end through `dlock-client`.

use std::time::Duration;

use anyhow::{Result, ensure};
use dlock_client::{Client, ConvertOptions, Error, LockGuard, LockOptions, Mode, UnlockOptions};
use dlock_tests::sdk::*;

/// A PR holder `c[0]` and two NL holders `c[1]`, `c[2]` on resource `name`; the tests queue
/// `c[1]`'s NL->EX (blocked by the PR) and then `c[2]`'s NL->CR with QUECVT (compatible with
/// every holder, queued behind it).
async fn two_converters(
    server: &dlock_tests::TestServer,
    name: &str,
) -> Result<(Vec<Client>, LockGuard, LockGuard, LockGuard)> {
    let c = clients(server, 3).await?;
    let ga = c[0].lock(name, Mode::PR).await?;
    let gb = c[1].lock(name, Mode::NL).await?;
    let gd = c[2].lock(name, Mode::NL).await?;
    Ok((c, ga, gb, gd))
}

/// R47, R12: cancelling the head of the convert queue runs a grant pass that grants the
/// conversion behind it.
#[tokio::test]
async fn r47_cancel_of_convert_queue_head_grants_next_conversion() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let (c, _ga, mut gb, mut gd) = two_converters(&server, "h").await?;
        let (b, d) = (&c[1], &c[2]);
        let canceller = gb.canceller();
        let mut pb = start_convert(&mut gb, Mode::EX);
        send_then_query(&mut pb, b, "h").await?;
        let mut pd = start_convert_with(&mut gd, Mode::CR, ConvertOptions::new().quecvt());
        let info = send_then_query(&mut pd, d, "h").await?;
        ensure!(converting(&info).len() == 2, "{info:?}");
        within("cancel", canceller.cancel()).await??;
        let r = outcome("b's conversion", pb).await?;
        ensure!(matches!(r, Err(Error::Cancelled)), "{r:?}");
        outcome("d's conversion", pd).await??;
        ensure!(gd.mode() == Mode::CR && gb.mode() == Mode::NL);
        Ok(())
    })
    .await
}

/// R65, R12: a timed-out head of the convert queue lets the conversion behind it through.
#[tokio::test]
async fn r65_timeout_of_convert_queue_head_grants_next_conversion() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let (c, _ga, mut gb, mut gd) = two_converters(&server, "t").await?;
        let (b, d) = (&c[1], &c[2]);
        let mut pb = start_convert_with(
            &mut gb,
            Mode::EX,
            ConvertOptions::new().timeout(Duration::from_millis(1000)),
        );
        send_then_query(&mut pb, b, "t").await?;
        let mut pd = start_convert_with(&mut gd, Mode::CR, ConvertOptions::new().quecvt());
        send_then_query(&mut pd, d, "t").await?;
        let r = outcome("b's conversion", pb).await?;
        ensure!(matches!(r, Err(Error::TimedOut)), "{r:?}");
        outcome("d's conversion", pd).await??;
        ensure!(gd.mode() == Mode::CR && gb.mode() == Mode::NL);
        Ok(())
    })
    .await
}

/// R50, R12: the end of the session whose conversion heads the convert queue lets the
/// conversion behind it through.
#[tokio::test]
async fn r50_session_end_of_convert_queue_head_grants_next_conversion() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let (c, _ga, mut gb, mut gd) = two_converters(&server, "s").await?;
        let (b, d) = (&c[1], &c[2]);
        {
            let mut pb = start_convert(&mut gb, Mode::EX);
            send_then_query(&mut pb, b, "s").await?;
            let mut pd = start_convert_with(&mut gd, Mode::CR, ConvertOptions::new().quecvt());
            send_then_query(&mut pd, d, "s").await?;
            let closer = b.clone();
            let (r, closed) = tokio::join!(pb, within("close", closer.close()));
            closed??;
            ensure!(r.is_err(), "{r:?}");
            outcome("d's conversion", pd).await??;
        }
        ensure!(gd.mode() == Mode::CR);
        let info = res(d, "s").await?;
        ensure!(
            granted(&info) == holders(&[(&c[0], Mode::PR), (d, Mode::CR)]),
            "{info:?}"
        );
        Ok(())
    })
    .await
}

/// R39 (b), R10: a session's second request queued behind its own queued request waits for
/// that request's owner if the modes conflict: a cycle of length one (DEADLOCK); if they are
/// compatible it waits for what the first waits for: no deadlock.
#[tokio::test]
async fn r39_request_behind_own_queued_request() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        let gb = b.lock("own", Mode::EX).await?;
        let mut p1 = start_lock(a, "own", Mode::PR);
        send_then_query(&mut p1, a, "own").await?;
        // PR behind a's own PR: compatible, waits for b. No deadlock.
        let mut p2 = start_lock(a, "own", Mode::PR);
        let info = send_then_query(&mut p2, a, "own").await?;
        ensure!(info.waiting.len() == 2, "{info:?}");
        // EX behind a's own PR: a waits for itself.
        let r = within("a's EX", a.lock("own", Mode::EX)).await?;
        ensure!(matches!(r, Err(Error::Deadlock)), "{r:?}");
        unlock(gb).await?;
        outcome("first PR", p1).await??;
        outcome("second PR", p2).await??;
        Ok(())
    })
    .await
}

/// R27 for conversions, R30: a queued conversion with VALBLK reads the value block when it
/// is granted (the value written by the unlock that unblocked it), and a later grant-pass
/// read of an invalidated block carries VALNOTVALID.
#[tokio::test]
async fn r27_queued_conversion_reads_value_at_grant() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, w) = (&c[0], &c[1]);
        let len = a.value_block_len();
        let mut ga = a.lock("cr", Mode::NL).await?;
        let gw = w.lock("cr", Mode::EX).await?;
        {
            let mut pa = start_convert_with(&mut ga, Mode::PR, ConvertOptions::new().read_value());
            send_then_query(&mut pa, a, "cr").await?;
            within(
                "unlock with a value",
                gw.unlock_with(UnlockOptions::new().value(b"fresh".to_vec())),
            )
            .await??;
            outcome("a's conversion", pa).await??;
        }
        let mut want = b"fresh".to_vec();
        want.resize(len, 0);
        ensure!(
            ga.value() == Some(&want[..]) && ga.value_valid(),
            "{:?}",
            ga.value()
        );

        // An EX holder invalidates; a queued read then sees VALNOTVALID with the contents.
        within("PR->NL", ga.convert(Mode::NL)).await??;
        let gw = w.lock("cr", Mode::EX).await?;
        let mut pr: Pending<'_, _> =
            Box::pin(a.lock_with("cr", Mode::PR, LockOptions::new().read_value()));
        send_then_query(&mut pr, a, "cr").await?;
        within(
            "unlock with IVVALBLK",
            gw.unlock_with(UnlockOptions::new().invalidate_value()),
        )
        .await??;
        let g = outcome("a's PR", pr).await??;
        ensure!(
            g.value() == Some(&want[..]) && !g.value_valid(),
            "{:?}",
            g.value()
        );
        Ok(())
    })
    .await
}

/// R29b: a session that ends while holding no PW/EX mode (only a waiting EX request) leaves
/// the value block valid.
#[tokio::test]
async fn r29b_waiting_ex_request_of_dead_session_does_not_invalidate() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, d) = (&c[0], &c[1]);
        let _ga = a.lock("wv", Mode::PR).await?;
        let mut pd = start_lock(d, "wv", Mode::EX);
        send_then_query(&mut pd, d, "wv").await?;
        let closer = d.clone();
        let (r, closed) = tokio::join!(pd, within("close", closer.close()));
        closed??;
        ensure!(r.is_err(), "{r:?}");
        let info = res(a, "wv").await?;
        ensure!(info.value_valid && info.waiting.is_empty(), "{info:?}");
        Ok(())
    })
    .await
}

/// R35 after a cancel: the grant pass that follows a cancel notifies a lock granted in that
/// pass of what remains queued.
#[tokio::test]
async fn r35_notification_after_cancel_grant_pass() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 4).await?;
        let (h, b, d, e) = (&c[0], &c[1], &c[2], &c[3]);
        let _gh = h.lock("nc", Mode::CR).await?;
        let mut pb = start_lock(b, "nc", Mode::EX);
        send_then_query(&mut pb, b, "nc").await?;
        // PR and CW are both compatible with CR, queued only behind EX.
        let mut pd = start_lock(d, "nc", Mode::PR);
        send_then_query(&mut pd, d, "nc").await?;
        let mut pe = start_lock(e, "nc", Mode::CW);
        send_then_query(&mut pe, e, "nc").await?;
        drop(pb);
        // The grant pass after the cancel grants PR; CW is blocked by it and stays queued, so
        // the PR lock granted in that pass is notified of CW.
        let mut gd = outcome("d's PR", pd).await??;
        expect_blocked(&mut gd, Mode::CW).await?;
        still_pending(&mut pe, e).await?;
        let info = res(h, "nc").await?;
        ensure!(
            granted(&info) == holders(&[(h, Mode::CR), (d, Mode::PR)])
                && waiting(&info) == vec![(e.session_id(), Mode::CW)],
            "{info:?}"
        );
        Ok(())
    })
    .await
}
