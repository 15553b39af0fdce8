//! Conformance: conversions (R15..R21), end to end through `dlock-client`. R15 (BUSY) cannot
//! be reached through the SDK, whose `convert` borrows the guard mutably and which has no
//! guard for a waiting request; it is checked over the raw protocol.

use anyhow::{Context, Result, bail, ensure};
use dlock_client::{ConvertOptions, Error, Invalid, Mode};
use dlock_proto::{EventKind, LockFlags, Reject};
use dlock_tests::RawClient;
use dlock_tests::sdk::*;

/// R15: converting a WAITING or a CONVERTING lock gives BUSY and changes nothing.
#[tokio::test]
async fn r15_convert_while_pending_is_busy_raw() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let mut a = RawClient::connect(server.addr(), "a").await?;
        let mut b = RawClient::connect(server.addr(), "b").await?;
        a.acquire("busy", Mode::EX).await?;

        // WAITING.
        let id = b.lock("busy", Mode::EX, LockFlags::empty()).await?;
        let queued = b.event_for(id).await?;
        ensure!(queued.kind == EventKind::Queued, "{queued:?}");
        let waiting_lock = queued.lock.context("queued without a lock id")?;
        let id = b
            .convert(waiting_lock, Mode::PR, LockFlags::empty())
            .await?;
        let ev = b.event_for(id).await?;
        ensure!(
            ev.kind
                == EventKind::Rejected {
                    reason: Reject::Busy
                },
            "convert of a waiting lock: {ev:?}"
        );
        let info = b.query_resource("busy").await?.context("resource")?;
        ensure!(info.waiting.len() == 1 && info.waiting[0].lock == waiting_lock);
        ensure!(info.waiting[0].state == dlock_client::LockState::Waiting { mode: Mode::EX });

        // CONVERTING.
        let (nl, _) = b.acquire("busy2", Mode::NL).await?;
        a.acquire("busy2", Mode::PR).await?;
        let id = b.convert(nl, Mode::EX, LockFlags::empty()).await?;
        ensure!(b.event_for(id).await?.kind == EventKind::Queued);
        let id = b.convert(nl, Mode::CR, LockFlags::empty()).await?;
        let ev = b.event_for(id).await?;
        ensure!(
            ev.kind
                == EventKind::Rejected {
                    reason: Reject::Busy
                },
            "convert of a converting lock: {ev:?}"
        );
        let info = b.query_resource("busy2").await?.context("resource")?;
        ensure!(
            info.converting.len() == 1
                && info.converting[0].state
                    == dlock_client::LockState::Converting {
                        from: Mode::NL,
                        to: Mode::EX
                    },
            "{info:?}"
        );
        Ok(())
    })
    .await
}

/// R16: a conversion to the same mode is granted at once, even with requests queued, and a
/// PW->PW or EX->EX conversion with a value publishes it (R26).
#[tokio::test]
async fn r16_same_mode_conversion_granted_at_once_and_publishes_value() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        for mode in Mode::ALL {
            let name = format!("same/{mode:?}");
            let mut ga = a.lock(&name, mode).await?;
            let mut pb = start_lock(b, &name, Mode::EX);
            let queued = if mode == Mode::NL {
                // EX is compatible with NL: granted, nothing queued.
                drop(pb);
                None
            } else {
                send_then_query(&mut pb, b, &name).await?;
                Some(pb)
            };
            let before = ga.token();
            let opts = if mode >= Mode::PW {
                ConvertOptions::new().value(format!("pub-{mode:?}").into_bytes())
            } else {
                ConvertOptions::new()
            };
            within("same-mode conversion", ga.convert_with(mode, opts)).await??;
            ensure!(ga.mode() == mode && ga.token() > before, "{mode:?}");
            let info = res(a, &name).await?;
            if mode >= Mode::PW {
                ensure!(
                    info.value.starts_with(format!("pub-{mode:?}").as_bytes()) && info.value_valid,
                    "{mode:?}->{mode:?} with a value did not write it: {info:?}"
                );
            }
            if let Some(mut pb) = queued {
                ensure!(
                    waiting(&info) == vec![(b.session_id(), Mode::EX)],
                    "{info:?}"
                );
                still_pending(&mut pb, b).await?;
                unlock(ga).await?;
                unlock(outcome("b's grant", pb).await??).await?;
            } else {
                unlock(ga).await?;
            }
        }
        Ok(())
    })
    .await
}

/// R17: every down-conversion is granted at once, and runs a grant pass.
#[tokio::test]
async fn r17_down_conversions_granted_at_once_with_grant_pass() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        let mut n = 0;
        for from in Mode::ALL {
            for to in Mode::ALL {
                // Down: numerically lower, except the middle conversion PR->CW (R8).
                if to >= from || (from == Mode::PR && to == Mode::CW) {
                    continue;
                }
                n += 1;
                let name = format!("down/{from:?}/{to:?}");
                let mut ga = a.lock(&name, from).await?;
                // An EX waiter, blocked by every mode but NL.
                let mut pb = start_lock(b, &name, Mode::EX);
                send_then_query(&mut pb, b, &name).await?;
                within("down-conversion", ga.convert(to)).await??;
                ensure!(ga.mode() == to);
                if to == Mode::NL {
                    // The grant pass after the down-conversion grants the EX waiter.
                    unlock(outcome("b's grant", pb).await??).await?;
                    unlock(ga).await?;
                } else {
                    still_pending(&mut pb, b).await?;
                    unlock(ga).await?;
                    unlock(outcome("b's grant", pb).await??).await?;
                }
            }
        }
        ensure!(n == 14, "{n} down-conversions");

        // A waiter that only the new mode admits is granted by the conversion's grant pass.
        let mut ga = a.lock("down/pass", Mode::EX).await?;
        let mut pb = start_lock(b, "down/pass", Mode::PR);
        send_then_query(&mut pb, b, "down/pass").await?;
        within("EX->CR", ga.convert(Mode::CR)).await??;
        let gb = outcome("b's PR", pb).await??;
        let info = res(a, "down/pass").await?;
        ensure!(
            granted(&info) == holders(&[(a, Mode::CR), (b, Mode::PR)]),
            "{info:?}"
        );
        drop(gb);
        Ok(())
    })
    .await
}

/// R8: the middle conversions PR->CW and CW->PR are legal and granted when compatible.
#[tokio::test]
async fn r08_middle_conversions() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let a = client(&server, "a").await?;
        let mut g = a.lock("mid", Mode::PR).await?;
        within("PR->CW", g.convert(Mode::CW)).await??;
        ensure!(g.mode() == Mode::CW);
        within("CW->PR", g.convert(Mode::PR)).await??;
        ensure!(g.mode() == Mode::PR);
        Ok(())
    })
    .await
}

/// R18 (and R9): a queued conversion keeps blocking with its old granted mode.
#[tokio::test]
async fn r18_queued_conversion_keeps_blocking_with_old_mode() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 3).await?;
        let (a, b, x) = (&c[0], &c[1], &c[2]);
        let mut ga = a.lock("old", Mode::NL).await?;
        let mut gb = b.lock("old", Mode::PR).await?;
        let gx = x.lock("old", Mode::CR).await?;
        // b: PR->EX, blocked by x's CR.
        let mut pb = start_convert(&mut gb, Mode::EX);
        send_then_query(&mut pb, b, "old").await?;
        // a: NL->PW is compatible with x's CR but not with b's still-held PR: queued.
        let mut pa = start_convert(&mut ga, Mode::PW);
        let info = send_then_query(&mut pa, a, "old").await?;
        ensure!(
            converting(&info)
                == vec![
                    (b.session_id(), Mode::PR, Mode::EX),
                    (a.session_id(), Mode::NL, Mode::PW)
                ],
            "{info:?}"
        );
        // New requests are checked against the old mode too (and NOQUEUE fails anyway with
        // conversions queued, R22).
        let err = x.try_lock("old", Mode::CW).await.unwrap_err();
        ensure!(matches!(err, Error::NotQueued), "{err:?}");

        unlock(gx).await?;
        outcome("b's conversion", pb).await??;
        ensure!(gb.mode() == Mode::EX);
        still_pending(&mut pa, a).await?;
        unlock(gb).await?;
        outcome("a's conversion", pa).await??;
        ensure!(ga.mode() == Mode::PW);
        Ok(())
    })
    .await
}

/// R19: a NOQUEUE conversion that cannot be granted fails with NOT_QUEUED, keeps the old
/// mode, changes nothing else, sends no blocking notification and is never checked for
/// deadlock.
#[tokio::test]
async fn r19_noqueue_conversion() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        let mut ga = a.lock("nq", Mode::PR).await?;
        let mut gb = b.lock("nq", Mode::PR).await?;
        let token = gb.token();
        let err = gb
            .convert_with(Mode::EX, ConvertOptions::new().no_queue())
            .await
            .unwrap_err();
        ensure!(matches!(err, Error::NotQueued), "{err:?}");
        ensure!(gb.mode() == Mode::PR && gb.token() == token);
        let info = res(b, "nq").await?;
        ensure!(
            granted(&info) == holders(&[(a, Mode::PR), (b, Mode::PR)])
                && info.converting.is_empty(),
            "{info:?}"
        );
        // The failed conversion sent no blocking notification to a.
        expect_no_blocking(&mut ga, a).await?;

        // With a's PR->EX queued, b's NOQUEUE PR->EX would be a conversion deadlock (R20),
        // but NOQUEUE is never checked for deadlock: NOT_QUEUED.
        let mut pa = start_convert(&mut ga, Mode::EX);
        send_then_query(&mut pa, a, "nq").await?;
        let err = gb
            .convert_with(Mode::EX, ConvertOptions::new().no_queue())
            .await
            .unwrap_err();
        ensure!(matches!(err, Error::NotQueued), "{err:?}");
        ensure!(gb.mode() == Mode::PR);
        still_pending(&mut pa, a).await?;
        unlock(gb).await?;
        outcome("a's conversion", pa).await??;
        ensure!(ga.mode() == Mode::EX);
        Ok(())
    })
    .await
}

/// R20: two PR holders both convert to EX: the second gets DEADLOCK and keeps PR; the first
/// stays queued and is granted once the second lets go.
#[tokio::test]
async fn r20_two_pr_holders_convert_to_ex() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        let mut ga = a.lock("cd", Mode::PR).await?;
        let mut gb = b.lock("cd", Mode::PR).await?;
        let mut pa = start_convert(&mut ga, Mode::EX);
        send_then_query(&mut pa, a, "cd").await?;
        let token = gb.token();
        let err = within("b's conversion", gb.convert(Mode::EX))
            .await?
            .unwrap_err();
        ensure!(matches!(err, Error::Deadlock), "{err:?}");
        ensure!(gb.mode() == Mode::PR && gb.token() == token);
        let info = res(b, "cd").await?;
        ensure!(
            converting(&info) == vec![(a.session_id(), Mode::PR, Mode::EX)],
            "the first converter is untouched: {info:?}"
        );
        ensure!(granted(&info) == holders(&[(b, Mode::PR)]), "{info:?}");
        still_pending(&mut pa, a).await?;
        unlock(gb).await?;
        outcome("a's conversion", pa).await??;
        ensure!(ga.mode() == Mode::EX);
        Ok(())
    })
    .await
}

/// R20, second example: A holds NL and is queued for EX behind B's PR. B's PR->EX with QUECVT
/// is refused with DEADLOCK; without QUECVT it is granted in place (R11).
#[tokio::test]
async fn r20_quecvt_conversion_deadlock() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        let mut ga = a.lock("qd", Mode::NL).await?;
        let mut gb = b.lock("qd", Mode::PR).await?;
        let mut pa = start_convert(&mut ga, Mode::EX);
        send_then_query(&mut pa, a, "qd").await?;
        let err = within(
            "QUECVT conversion",
            gb.convert_with(Mode::EX, ConvertOptions::new().quecvt()),
        )
        .await?
        .unwrap_err();
        ensure!(matches!(err, Error::Deadlock), "{err:?}");
        ensure!(gb.mode() == Mode::PR);
        still_pending(&mut pa, a).await?;
        // Without QUECVT: compatible with a's NL, granted in place.
        within("plain conversion", gb.convert(Mode::EX)).await??;
        ensure!(gb.mode() == Mode::EX);
        still_pending(&mut pa, a).await?;
        unlock(gb).await?;
        outcome("a's conversion", pa).await??;
        Ok(())
    })
    .await
}

/// R21: QUECVT is allowed exactly on NL->{CR..EX}, CR->{CW..EX}, CW->{PR,PW,EX},
/// PR->{CW,PW,EX} and PW->EX; anything else is INVALID with no change. Alone on a resource,
/// an allowed QUECVT conversion is granted at once (empty convert queue).
#[tokio::test]
async fn r21_quecvt_allowed_conversions() -> Result<()> {
    const ALLOWED: [&str; 6] = ["011111", "001111", "000111", "001011", "000001", "000000"];
    bounded(async {
        let server = server().await?;
        let a = client(&server, "a").await?;
        for (from, row) in Mode::ALL.into_iter().zip(ALLOWED) {
            for (to, bit) in Mode::ALL.into_iter().zip(row.chars()) {
                let name = format!("quecvt/{from:?}/{to:?}");
                let mut g = a.lock(&name, from).await?;
                let token = g.token();
                let r = within(
                    "QUECVT conversion",
                    g.convert_with(to, ConvertOptions::new().quecvt()),
                )
                .await?;
                match (bit, r) {
                    ('1', Ok(())) => ensure!(g.mode() == to),
                    ('0', Err(Error::Invalid(Invalid::QuecvtNotAllowed { .. }))) => {
                        ensure!(g.mode() == from && g.token() == token);
                        let info = res(&a, &name).await?;
                        ensure!(
                            granted(&info) == holders(&[(&a, from)]),
                            "INVALID changed state: {info:?}"
                        );
                    }
                    (bit, r) => bail!("{from:?}->{to:?} with QUECVT: allowed={bit}, got {r:?}"),
                }
                unlock(g).await?;
            }
        }
        Ok(())
    })
    .await
}

/// R21: a QUECVT conversion compatible with every holder is queued behind an already queued
/// conversion, where the same conversion without QUECVT is granted in place (R11).
#[tokio::test]
async fn r21_quecvt_queues_behind_queued_conversion() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 3).await?;
        let (a, b, d) = (&c[0], &c[1], &c[2]);
        let ga = a.lock("qq", Mode::PR).await?;
        let mut gb = b.lock("qq", Mode::NL).await?;
        let mut gd = d.lock("qq", Mode::NL).await?;
        let mut pb = start_convert(&mut gb, Mode::EX);
        send_then_query(&mut pb, b, "qq").await?;
        let mut pd = start_convert_with(&mut gd, Mode::CR, ConvertOptions::new().quecvt());
        let info = send_then_query(&mut pd, d, "qq").await?;
        ensure!(
            converting(&info)
                == vec![
                    (b.session_id(), Mode::NL, Mode::EX),
                    (d.session_id(), Mode::NL, Mode::CR)
                ],
            "{info:?}"
        );
        // Cancelling d's QUECVT conversion, then converting without QUECVT: in place.
        drop(pd);
        let info = res(d, "qq").await?;
        ensure!(converting(&info).len() == 1, "{info:?}");
        within("plain conversion", gd.convert(Mode::CR)).await??;
        ensure!(gd.mode() == Mode::CR);
        unlock(ga).await?;
        // EX is blocked by d's CR now.
        still_pending(&mut pb, b).await?;
        unlock(gd).await?;
        outcome("b's conversion", pb).await??;
        Ok(())
    })
    .await
}

/// R20: the conversion deadlock check looks at every queued conversion, not only the head:
/// a converter whose granted mode blocks the second queued conversion is refused.
#[tokio::test]
async fn r20_conversion_deadlock_with_non_head_conversion() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 4).await?;
        let (a, b, x, d) = (&c[0], &c[1], &c[2], &c[3]);
        let _ga = a.lock("nh", Mode::PW).await?;
        let mut gd = d.lock("nh", Mode::CR).await?;
        let mut gb = b.lock("nh", Mode::NL).await?;
        let mut gx = x.lock("nh", Mode::NL).await?;
        // Head: b NL->PR (blocked by PW). Second: x NL->EX.
        let mut pb = start_convert(&mut gb, Mode::PR);
        send_then_query(&mut pb, b, "nh").await?;
        let mut px = start_convert(&mut gx, Mode::EX);
        let info = send_then_query(&mut px, x, "nh").await?;
        ensure!(converting(&info).len() == 2, "{info:?}");
        // d: CR->PW is blocked by a's PW; its CR is compatible with the head's PR but blocks
        // the second conversion's EX, which waits for it: DEADLOCK.
        let r = within("d's conversion", gd.convert(Mode::PW)).await?;
        ensure!(matches!(r, Err(Error::Deadlock)), "{r:?}");
        ensure!(gd.mode() == Mode::CR);
        still_pending(&mut pb, b).await?;
        still_pending(&mut px, x).await?;
        let info = res(d, "nh").await?;
        ensure!(converting(&info).len() == 2, "{info:?}");
        Ok(())
    })
    .await
}
