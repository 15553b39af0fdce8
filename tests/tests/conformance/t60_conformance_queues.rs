//! Conformance: compatibility (R7), no queue jumping (R10), conversions on arrival (R11), the
//! grant pass (R12) and conversions before new requests (R13), end to end through
//! `dlock-client`.

use anyhow::{Result, ensure};
use dlock_client::{ConvertOptions, Error, Mode};
use dlock_tests::sdk::*;

/// R7: for every pair (A, B), with a lock held in A, a NOQUEUE request in B succeeds iff the
/// modes are compatible.
#[tokio::test]
async fn r07_compatibility_matrix_all_36_pairs() -> Result<()> {
    // Row A, column B, '1' compatible: the table of R7.
    const MATRIX: [&str; 6] = ["111111", "111110", "111000", "110100", "110000", "100000"];
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        for (a, row) in Mode::ALL.into_iter().zip(MATRIX) {
            for (b, bit) in Mode::ALL.into_iter().zip(row.chars()) {
                let name = format!("r07/{a:?}/{b:?}");
                let held = c[0].lock(&name, a).await?;
                let got = c[1].try_lock(&name, b).await;
                match (bit, got) {
                    ('1', Ok(g)) => {
                        let info = res(&c[0], &name).await?;
                        ensure!(
                            granted(&info) == holders(&[(&c[0], a), (&c[1], b)]),
                            "{a:?}+{b:?}: {info:?}"
                        );
                        unlock(g).await?;
                    }
                    ('0', Err(Error::NotQueued)) => {
                        let info = res(&c[0], &name).await?;
                        ensure!(
                            granted(&info) == holders(&[(&c[0], a)]) && info.waiting.is_empty(),
                            "{a:?} then {b:?}: NOT_QUEUED left state behind: {info:?}"
                        );
                    }
                    (bit, got) => {
                        anyhow::bail!(
                            "held {a:?}, try {b:?}: expected compatible={bit}, got {got:?}"
                        )
                    }
                }
                unlock(held).await?;
                ensure!(
                    !exists(&c[0], &name).await?,
                    "R1: resource {name} outlived its locks"
                );
            }
        }
        Ok(())
    })
    .await
}

/// R10: a request compatible with every holder still waits behind a queued request.
#[tokio::test]
async fn r10_compatible_request_waits_behind_queued_request() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 3).await?;
        let (a, b, d) = (&c[0], &c[1], &c[2]);
        let ga = a.lock("q", Mode::PR).await?;
        let mut pb = start_lock(b, "q", Mode::EX);
        let info = send_then_query(&mut pb, b, "q").await?;
        ensure!(
            waiting(&info) == vec![(b.session_id(), Mode::EX)],
            "{info:?}"
        );
        // PR is compatible with the PR holder, but EX is queued ahead of it.
        let mut pd = start_lock(d, "q", Mode::PR);
        let info = send_then_query(&mut pd, d, "q").await?;
        ensure!(granted(&info) == holders(&[(a, Mode::PR)]), "{info:?}");
        ensure!(
            waiting(&info) == vec![(b.session_id(), Mode::EX), (d.session_id(), Mode::PR)],
            "{info:?}"
        );
        // R22: the same request with NOQUEUE fails for the same reason.
        let err = d.try_lock("q", Mode::PR).await.unwrap_err();
        ensure!(matches!(err, Error::NotQueued), "{err:?}");

        unlock(ga).await?;
        let gb = outcome("b's grant", pb).await??;
        ensure!(gb.mode() == Mode::EX);
        still_pending(&mut pd, d).await?;
        unlock(gb).await?;
        let gd = outcome("d's grant", pd).await??;
        ensure!(gd.mode() == Mode::PR);
        Ok(())
    })
    .await
}

/// R10: even an NL request (compatible with everything) waits behind a queued request.
#[tokio::test]
async fn r10_nl_request_waits_behind_queued_request() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 3).await?;
        let (a, b, d) = (&c[0], &c[1], &c[2]);
        let ga = a.lock("nl", Mode::EX).await?;
        let mut pb = start_lock(b, "nl", Mode::PR);
        send_then_query(&mut pb, b, "nl").await?;
        let mut pd = start_lock(d, "nl", Mode::NL);
        let info = send_then_query(&mut pd, d, "nl").await?;
        ensure!(
            waiting(&info) == vec![(b.session_id(), Mode::PR), (d.session_id(), Mode::NL)],
            "{info:?}"
        );
        unlock(ga).await?;
        // One grant pass grants both, in order.
        let gb = outcome("b's grant", pb).await??;
        let gd = outcome("d's grant", pd).await??;
        ensure!(gb.mode() == Mode::PR && gd.mode() == Mode::NL);
        Ok(())
    })
    .await
}

/// R10, R13: a new request waits while the convert queue is not empty, even if compatible.
#[tokio::test]
async fn r10_r13_new_request_waits_behind_queued_conversion() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 4).await?;
        let (a, b, x, d) = (&c[0], &c[1], &c[2], &c[3]);
        let ga = a.lock("cq", Mode::PR).await?;
        let gx = x.lock("cq", Mode::PR).await?;
        let mut gb = b.lock("cq", Mode::PR).await?;
        let mut pb = start_convert(&mut gb, Mode::EX);
        let info = send_then_query(&mut pb, b, "cq").await?;
        ensure!(
            converting(&info) == vec![(b.session_id(), Mode::PR, Mode::EX)],
            "{info:?}"
        );
        // CR is compatible with every holder (PR, PR, PR) but a conversion is queued.
        let mut pd = start_lock(d, "cq", Mode::CR);
        let info = send_then_query(&mut pd, d, "cq").await?;
        ensure!(
            waiting(&info) == vec![(d.session_id(), Mode::CR)],
            "{info:?}"
        );

        // R13: a's unlock runs a grant pass; b's conversion is still blocked by x's PR, so
        // the CR request stays queued.
        unlock(ga).await?;
        let info = res(d, "cq").await?;
        ensure!(
            converting(&info) == vec![(b.session_id(), Mode::PR, Mode::EX)]
                && waiting(&info) == vec![(d.session_id(), Mode::CR)],
            "{info:?}"
        );
        still_pending(&mut pd, d).await?;

        // x's unlock grants b's conversion; CR is incompatible with EX and keeps waiting.
        unlock(gx).await?;
        outcome("b's conversion", pb).await??;
        ensure!(gb.mode() == Mode::EX);
        still_pending(&mut pd, d).await?;
        // b steps down to NL: R17 grant pass grants the CR request.
        within("down-convert", gb.convert(Mode::NL)).await??;
        let gd = outcome("d's grant", pd).await??;
        ensure!(gd.mode() == Mode::CR);
        let info = res(d, "cq").await?;
        ensure!(
            granted(&info) == holders(&[(b, Mode::NL), (d, Mode::CR)]),
            "{info:?}"
        );
        Ok(())
    })
    .await
}

/// R11: an up-conversion compatible with every other holder is granted at once, in place,
/// whatever waits on the wait queue.
#[tokio::test]
async fn r11_conversion_granted_in_place_despite_waiters() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        let mut ga = a.lock("ip", Mode::CR).await?;
        let mut pb = start_lock(b, "ip", Mode::EX);
        send_then_query(&mut pb, b, "ip").await?;
        let before = ga.token();
        within("conversion", ga.convert(Mode::PR)).await??;
        ensure!(ga.mode() == Mode::PR && ga.token() > before);
        let info = res(a, "ip").await?;
        ensure!(granted(&info) == holders(&[(a, Mode::PR)]), "{info:?}");
        ensure!(
            waiting(&info) == vec![(b.session_id(), Mode::EX)],
            "{info:?}"
        );
        unlock(ga).await?;
        outcome("b's grant", pb).await??;
        Ok(())
    })
    .await
}

/// R11: without QUECVT, a conversion compatible with every holder is granted in place even
/// though another conversion is queued.
#[tokio::test]
async fn r11_conversion_granted_in_place_despite_queued_conversion() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 3).await?;
        let (a, b, d) = (&c[0], &c[1], &c[2]);
        let ga = a.lock("ipc", Mode::PR).await?;
        let mut gb = b.lock("ipc", Mode::PR).await?;
        let mut gd = d.lock("ipc", Mode::NL).await?;
        let mut pb = start_convert(&mut gb, Mode::EX);
        send_then_query(&mut pb, b, "ipc").await?;
        // NL -> CR is compatible with a's PR and b's granted PR.
        within("conversion", gd.convert(Mode::CR)).await??;
        ensure!(gd.mode() == Mode::CR);
        let info = res(d, "ipc").await?;
        ensure!(
            converting(&info) == vec![(b.session_id(), Mode::PR, Mode::EX)],
            "{info:?}"
        );
        ensure!(
            granted(&info) == holders(&[(a, Mode::PR), (d, Mode::CR)]),
            "{info:?}"
        );
        still_pending(&mut pb, b).await?;
        // b's conversion now waits for a's PR and d's CR.
        unlock(ga).await?;
        still_pending(&mut pb, b).await?;
        drop(gd);
        outcome("b's conversion", pb).await??;
        ensure!(gb.mode() == Mode::EX);
        Ok(())
    })
    .await
}

/// R12: the wait queue is granted head first, in FIFO order, stopping at the first request
/// that cannot be granted; later compatible requests stay queued. Grants made earlier in the
/// pass count against later heads.
#[tokio::test]
async fn r12_wait_queue_fifo_stops_at_first_blocked() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 5).await?;
        let ga = c[0].lock("fifo", Mode::EX).await?;
        let mut p1 = start_lock(&c[1], "fifo", Mode::PR);
        send_then_query(&mut p1, &c[1], "fifo").await?;
        let mut p2 = start_lock(&c[2], "fifo", Mode::PR);
        send_then_query(&mut p2, &c[2], "fifo").await?;
        let mut p3 = start_lock(&c[3], "fifo", Mode::PW);
        send_then_query(&mut p3, &c[3], "fifo").await?;
        let mut p4 = start_lock(&c[4], "fifo", Mode::CR);
        let info = send_then_query(&mut p4, &c[4], "fifo").await?;
        ensure!(
            waiting(&info)
                == vec![
                    (c[1].session_id(), Mode::PR),
                    (c[2].session_id(), Mode::PR),
                    (c[3].session_id(), Mode::PW),
                    (c[4].session_id(), Mode::CR),
                ],
            "{info:?}"
        );
        unlock(ga).await?;
        let g1 = outcome("first PR", p1).await??;
        let g2 = outcome("second PR", p2).await??;
        // PW is blocked by the PR locks granted in the same pass; CR behind it stays queued
        // although it is compatible with both PR holders.
        let info = res(&c[0], "fifo").await?;
        ensure!(
            granted(&info) == holders(&[(&c[1], Mode::PR), (&c[2], Mode::PR)]),
            "{info:?}"
        );
        ensure!(
            waiting(&info) == vec![(c[3].session_id(), Mode::PW), (c[4].session_id(), Mode::CR)],
            "{info:?}"
        );
        still_pending(&mut p3, &c[3]).await?;
        still_pending(&mut p4, &c[4]).await?;
        unlock(g1).await?;
        still_pending(&mut p3, &c[3]).await?;
        unlock(g2).await?;
        // PW then CR (compatible with PW) in one pass.
        let g3 = outcome("PW", p3).await??;
        let g4 = outcome("CR", p4).await??;
        ensure!(g3.mode() == Mode::PW && g4.mode() == Mode::CR);
        Ok(())
    })
    .await
}

/// R12: the convert queue is granted head first, and a queued conversion is never granted
/// while one ahead of it is still queued, even if it is compatible with every holder.
#[tokio::test]
async fn r12_convert_queue_head_first() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 4).await?;
        let (a, b, d, e) = (&c[0], &c[1], &c[2], &c[3]);
        let ga = a.lock("cvq", Mode::PR).await?;
        let mut gb = b.lock("cvq", Mode::NL).await?;
        let mut gd = d.lock("cvq", Mode::NL).await?;
        let ge = e.lock("cvq", Mode::NL).await?;
        let mut pb = start_convert(&mut gb, Mode::EX);
        send_then_query(&mut pb, b, "cvq").await?;
        // QUECVT queues d's NL->CR behind b's conversion although it is compatible (R21).
        let mut pd = start_convert_with(&mut gd, Mode::CR, ConvertOptions::new().quecvt());
        let info = send_then_query(&mut pd, d, "cvq").await?;
        ensure!(
            converting(&info)
                == vec![
                    (b.session_id(), Mode::NL, Mode::EX),
                    (d.session_id(), Mode::NL, Mode::CR)
                ],
            "{info:?}"
        );
        // A grant pass (e's unlock): the head is still blocked by a's PR, so d's compatible
        // conversion behind it stays queued.
        unlock(ge).await?;
        let info = res(d, "cvq").await?;
        ensure!(converting(&info).len() == 2, "{info:?}");
        still_pending(&mut pd, d).await?;
        // a's unlock grants the head (EX, compatible with d's NL); d's CR is then blocked by
        // the EX granted in the same pass.
        unlock(ga).await?;
        outcome("b's conversion", pb).await??;
        ensure!(gb.mode() == Mode::EX);
        still_pending(&mut pd, d).await?;
        let info = res(d, "cvq").await?;
        ensure!(
            converting(&info) == vec![(d.session_id(), Mode::NL, Mode::CR)],
            "{info:?}"
        );
        within("down-convert", gb.convert(Mode::NL)).await??;
        outcome("d's conversion", pd).await??;
        ensure!(gd.mode() == Mode::CR);
        Ok(())
    })
    .await
}
