//! Conformance: the lock value block (R24..R30), end to end through `dlock-client`.

use anyhow::{Context, Result, bail, ensure};
use dlock_client::{Client, ConvertOptions, LockOptions, Mode, UnlockOptions};
use dlock_tests::sdk::*;

/// Writes `value` to `name`'s value block: EX, then unlock with VALBLK (R28).
async fn publish(c: &Client, name: &str, value: &[u8]) -> Result<()> {
    let g = within("EX for a write", c.lock(name, Mode::EX)).await??;
    within(
        "unlock with a value",
        g.unlock_with(UnlockOptions::new().value(value.to_vec())),
    )
    .await??;
    Ok(())
}

/// Reads `name`'s value block with a new PR lock (R26, first row), released at once.
async fn read(c: &Client, name: &str) -> Result<(Vec<u8>, bool)> {
    let g = within(
        "PR with VALBLK",
        c.lock_with(name, Mode::PR, LockOptions::new().read_value()),
    )
    .await??;
    let v = g.value().context("no value read")?.to_vec();
    let valid = g.value_valid();
    unlock(g).await?;
    Ok((v, valid))
}

/// `value` zero-padded to `len`.
fn padded(value: &[u8], len: usize) -> Vec<u8> {
    let mut v = value.to_vec();
    v.resize(len, 0);
    v
}

/// R24: a new resource has an all-zero, valid value block of at least 32 bytes, and every new
/// lock with VALBLK reads it, NL included (R26).
#[tokio::test]
async fn r24_new_resource_value_block_is_zero_and_valid() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let a = client(&server, "a").await?;
        let len = a.value_block_len();
        ensure!(len >= 32, "value block of {len} bytes");
        for mode in Mode::ALL {
            let name = format!("fresh/{mode:?}");
            let g = a
                .lock_with(&name, mode, LockOptions::new().read_value())
                .await?;
            ensure!(
                g.value() == Some(&vec![0u8; len][..]),
                "{mode:?}: {:?}",
                g.value()
            );
            ensure!(g.value_valid());
            let info = res(&a, &name).await?;
            ensure!(info.value == vec![0u8; len] && info.value_valid, "{info:?}");
            unlock(g).await?;
        }
        Ok(())
    })
    .await
}

/// R25: without VALBLK a grant reads nothing and sees no VALNOTVALID, and an unlock or
/// down-conversion from EX writes nothing.
#[tokio::test]
async fn r25_value_block_is_opt_in() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, k) = (&c[0], &c[1]);
        let len = a.value_block_len();
        let _keep = k.lock("opt", Mode::NL).await?;
        publish(a, "opt", b"kept").await?;
        // Make it not valid: IVVALBLK on an EX unlock.
        let g = a.lock("opt", Mode::EX).await?;
        g.unlock_with(UnlockOptions::new().invalidate_value())
            .await?;
        // No VALBLK: no value, no VALNOTVALID.
        let mut g = a.lock("opt", Mode::EX).await?;
        ensure!(g.value().is_none() && g.value_valid());
        // Down-conversion and unlock from EX without VALBLK: nothing written, still invalid.
        within("EX->PR", g.convert(Mode::PR)).await??;
        ensure!(g.value().is_none() && g.value_valid());
        unlock(g).await?;
        let g = a.lock("opt", Mode::EX).await?;
        unlock(g).await?;
        let info = res(a, "opt").await?;
        ensure!(
            info.value == padded(b"kept", len) && !info.value_valid,
            "{info:?}"
        );
        Ok(())
    })
    .await
}

/// R26: the whole table. For every granted mode (none, NL..EX) and requested mode, an
/// operation with VALBLK and a value reads, writes or does nothing, as the table says.
#[tokio::test]
async fn r26_value_block_table_all_cells() -> Result<()> {
    // Row: granted mode NL..EX; column: requested mode NL..EX. 'r' read, 'w' write, '-'.
    const TABLE: [&str; 6] = ["rrrrrr", "-rrrrr", "--rrrr", "---rrr", "wwwwwr", "wwwwww"];
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 3).await?;
        let (a, k, w) = (&c[0], &c[1], &c[2]);
        let len = a.value_block_len();
        // Row "none": a new lock reads.
        for rq in Mode::ALL {
            let name = format!("tab/none/{rq:?}");
            let keep = k.lock(&name, Mode::NL).await?;
            publish(w, &name, b"seed").await?;
            let g = a
                .lock_with(&name, rq, LockOptions::new().read_value())
                .await?;
            ensure!(g.value() == Some(&padded(b"seed", len)[..]), "none->{rq:?}");
            unlock(g).await?;
            unlock(keep).await?;
        }
        for (gr, row) in Mode::ALL.into_iter().zip(TABLE) {
            for (rq, cell) in Mode::ALL.into_iter().zip(row.chars()) {
                let name = format!("tab/{gr:?}/{rq:?}");
                // The NL keeper is compatible with every mode: every conversion is granted.
                let keep = k.lock(&name, Mode::NL).await?;
                publish(w, &name, b"seed").await?;
                let mut g = a.lock(&name, gr).await?;
                let r = within(
                    "conversion with VALBLK",
                    g.convert_with(rq, ConvertOptions::new().value(b"new".to_vec())),
                )
                .await?;
                if let Err(e) = r {
                    bail!("{gr:?}->{rq:?} with VALBLK and a value: {e:?}");
                }
                let info = res(a, &name).await?;
                let (want_read, want_lvb) = match cell {
                    'r' => (Some(padded(b"seed", len)), padded(b"seed", len)),
                    'w' => (None, padded(b"new", len)),
                    _ => (None, padded(b"seed", len)),
                };
                ensure!(
                    g.value().map(<[u8]>::to_vec) == want_read,
                    "{gr:?}->{rq:?} ({cell}): read {:?}",
                    g.value()
                );
                ensure!(
                    info.value == want_lvb && info.value_valid,
                    "{gr:?}->{rq:?} ({cell}): value block {:?}",
                    info.value
                );
                unlock(g).await?;
                unlock(keep).await?;
            }
        }
        Ok(())
    })
    .await
}

/// R27: a queued request reads the value block when it is granted, so it sees the value
/// written by the unlock that unblocked it.
#[tokio::test]
async fn r27_queued_request_reads_at_grant() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        let len = a.value_block_len();
        let ga = a.lock("late", Mode::EX).await?;
        let mut pb: Pending<'_, _> =
            Box::pin(b.lock_with("late", Mode::PR, LockOptions::new().read_value()));
        send_then_query(&mut pb, b, "late").await?;
        ga.unlock_with(UnlockOptions::new().value(b"written-on-unlock".to_vec()))
            .await?;
        let gb = outcome("b's grant", pb).await??;
        ensure!(gb.value() == Some(&padded(b"written-on-unlock", len)[..]));
        ensure!(gb.value_valid());
        Ok(())
    })
    .await
}

/// R28: an unlock writes the value block only from PW or EX with VALBLK and a value; shorter
/// values are zero-padded (R24).
#[tokio::test]
async fn r28_unlock_writes_only_from_pw_or_ex() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, k) = (&c[0], &c[1]);
        let len = a.value_block_len();
        let _keep = k.lock("uw", Mode::NL).await?;
        for mode in Mode::ALL {
            publish(a, "uw", b"before").await?;
            let g = a.lock("uw", mode).await?;
            let r = g
                .unlock_with(UnlockOptions::new().value(format!("from-{mode:?}").into_bytes()))
                .await;
            ensure!(r.is_ok(), "unlock from {mode:?} with a value: {r:?}");
            let info = res(a, "uw").await?;
            let want = if mode >= Mode::PW {
                padded(format!("from-{mode:?}").as_bytes(), len)
            } else {
                padded(b"before", len)
            };
            ensure!(info.value == want, "unlock from {mode:?}: {:?}", info.value);
            ensure!(info.value_valid);
        }
        // From EX without VALBLK: unchanged.
        publish(a, "uw", b"same").await?;
        let g = a.lock("uw", Mode::EX).await?;
        unlock(g).await?;
        ensure!(res(a, "uw").await?.value == padded(b"same", len));
        Ok(())
    })
    .await
}

/// R29a: IVVALBLK on an unlock or down-conversion from PW/EX marks the value block not valid
/// and keeps its contents; below PW it has no effect. R30: readers then see VALNOTVALID with
/// the kept contents until a write makes it valid again.
#[tokio::test]
async fn r29a_r30_ivvalblk_and_valnotvalid_until_rewritten() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, k) = (&c[0], &c[1]);
        let len = a.value_block_len();
        let _keep = k.lock("iv", Mode::NL).await?;

        // Below PW: no effect.
        publish(a, "iv", b"v1").await?;
        for mode in [Mode::NL, Mode::CR, Mode::CW, Mode::PR] {
            let g = a.lock("iv", mode).await?;
            g.unlock_with(UnlockOptions::new().invalidate_value())
                .await?;
            ensure!(res(a, "iv").await?.value_valid, "IVVALBLK from {mode:?}");
        }

        // Unlock from EX with IVVALBLK.
        let g = a.lock("iv", Mode::EX).await?;
        g.unlock_with(UnlockOptions::new().invalidate_value())
            .await?;
        let (v, valid) = read(a, "iv").await?;
        ensure!(
            v == padded(b"v1", len) && !valid,
            "contents kept, VALNOTVALID"
        );
        // Still not valid on the next read: reads do not fix it.
        let (_, valid) = read(a, "iv").await?;
        ensure!(!valid);
        // A write makes it valid.
        publish(a, "iv", b"v2").await?;
        let (v, valid) = read(a, "iv").await?;
        ensure!(v == padded(b"v2", len) && valid);

        // Down-conversion PW->NL with IVVALBLK.
        let mut g = a.lock("iv", Mode::PW).await?;
        within(
            "PW->NL with IVVALBLK",
            g.convert_with(Mode::NL, ConvertOptions::new().invalidate_value()),
        )
        .await??;
        let (v, valid) = read(a, "iv").await?;
        ensure!(v == padded(b"v2", len) && !valid);
        // A conversion that writes (NL->EX, then EX->EX with a value) makes it valid again.
        within("NL->EX", g.convert(Mode::EX)).await??;
        within(
            "EX->EX with a value",
            g.convert_with(Mode::EX, ConvertOptions::new().value(b"v3".to_vec())),
        )
        .await??;
        unlock(g).await?;
        let (v, valid) = read(a, "iv").await?;
        ensure!(v == padded(b"v3", len) && valid);
        Ok(())
    })
    .await
}

/// R29b, R30: a PW or EX holder whose session ends invalidates the value block (contents
/// kept), also when the lock was converting; a PR holder's end does not.
#[tokio::test]
async fn r29b_value_block_invalid_when_pw_or_ex_holder_dies() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, k) = (&c[0], &c[1]);
        let len = a.value_block_len();
        let _keep = k.lock("die", Mode::NL).await?;
        publish(a, "die", b"alive").await?;

        // A PR holder's session ends: still valid.
        let pr = client(&server, "pr").await?;
        let _g = pr.lock("die", Mode::PR).await?;
        within("close", pr.close()).await??;
        ensure!(res(a, "die").await?.value_valid);

        for mode in [Mode::PW, Mode::EX] {
            publish(a, "die", b"alive").await?;
            let dying = client(&server, "dying").await?;
            let _g = dying.lock("die", mode).await?;
            within("close", dying.close()).await??;
            let info = res(a, "die").await?;
            ensure!(!info.value_valid, "after a {mode:?} holder died: {info:?}");
            let (v, valid) = read(a, "die").await?;
            ensure!(v == padded(b"alive", len) && !valid);
        }

        // A converting lock whose granted mode is PW (PW->EX, blocked by a CR holder).
        publish(a, "die", b"alive").await?;
        let cr = a.lock("die", Mode::CR).await?;
        let dying = client(&server, "dying").await?;
        let mut g = dying.lock("die", Mode::PW).await?;
        {
            let mut p = start_convert(&mut g, Mode::EX);
            let info = send_then_query(&mut p, &dying, "die").await?;
            ensure!(converting(&info).len() == 1, "{info:?}");
            // Close from another handle while the conversion is queued.
            let closer = dying.clone();
            let (r, closed) = tokio::join!(p, within("close", closer.close()));
            closed??;
            ensure!(r.is_err(), "the dead session's conversion completed: {r:?}");
        }
        let info = res(a, "die").await?;
        ensure!(
            !info.value_valid && info.converting.is_empty(),
            "after a converting PW holder died: {info:?}"
        );
        unlock(cr).await?;
        Ok(())
    })
    .await
}

/// R30, R1: an invalid value block ends with its resource; the next resource of that name
/// starts zeroed and valid.
#[tokio::test]
async fn r30_destroyed_resource_starts_fresh() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let a = client(&server, "a").await?;
        let len = a.value_block_len();
        let keep = a.lock("gone", Mode::NL).await?;
        publish(&a, "gone", b"old").await?;
        let g = a.lock("gone", Mode::EX).await?;
        g.unlock_with(UnlockOptions::new().invalidate_value())
            .await?;
        ensure!(!res(&a, "gone").await?.value_valid);
        unlock(keep).await?;
        ensure!(!exists(&a, "gone").await?);
        let (v, valid) = read(&a, "gone").await?;
        ensure!(v == vec![0u8; len] && valid, "{v:?} valid={valid}");
        Ok(())
    })
    .await
}
