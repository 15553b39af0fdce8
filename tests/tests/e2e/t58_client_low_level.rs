//! The SDK's low-level surface reaches every rule the raw-protocol conformance tests needed:
//! raw flags (R54, R56), explicit cancels with their outcome (R46, R48), BUSY (R15, R45),
//! unknown and foreign ids (R6, R52), and a CONVERTING lock observed while it converts
//! (R33). Everything goes through `dlock-client` against a real server; waits are bounded and
//! synchronised on one connection's ordering (see `dlock_tests::sdk`).

use anyhow::{Context, Result, ensure};
use dlock_client::{
    CancelOutcome, ConvertOptions, Error, Invalid, LockFlags, LockId, LockOptions, LostReason,
    Mode, UnlockOptions,
};
use dlock_tests::sdk::*;
use futures_util::FutureExt;

/// The optional flags of the rule book that dlock does not implement (R56).
const OPTIONAL: [LockFlags; 10] = [
    LockFlags::NOQUEUEBAST,
    LockFlags::CONVDEADLK,
    LockFlags::EXPEDITE,
    LockFlags::HEADQUE,
    LockFlags::NOORDER,
    LockFlags::ALTPR,
    LockFlags::ALTCW,
    LockFlags::PERSISTENT,
    LockFlags::NODLCKWT,
    LockFlags::FORCEUNLOCK,
];

fn is_invalid(r: &dlock_client::Result<impl std::fmt::Debug>, want: &Invalid) -> bool {
    matches!(r, Err(Error::Invalid(i)) if i == want)
}

/// R54, R56 through `flags(..)`: QUECVT on a new lock, every optional flag and unknown bits
/// are INVALID on lock, lock_request, convert and unlock, and change nothing.
#[tokio::test]
async fn r54_r56_raw_flags_are_refused_as_invalid() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let a = client(&server, "a").await?;
        let unknown = LockFlags::from_bits_retain(1 << 30);

        let r = within(
            "lock",
            a.lock_with("fl", Mode::EX, LockOptions::new().flags(LockFlags::QUECVT)),
        )
        .await?;
        ensure!(is_invalid(&r, &Invalid::QuecvtOnNewLock), "{r:?}");
        let r = within(
            "lock",
            a.lock_with("fl", Mode::EX, LockOptions::new().flags(unknown)),
        )
        .await?;
        ensure!(is_invalid(&r, &Invalid::UnknownFlags(1 << 30)), "{r:?}");
        for flag in OPTIONAL {
            let want = Invalid::UnsupportedFlags(flag.bits());
            let r = within(
                "lock",
                a.lock_with("fl", Mode::EX, LockOptions::new().flags(flag)),
            )
            .await?;
            ensure!(is_invalid(&r, &want), "lock with {flag:?}: {r:?}");
            let r = within(
                "lock_request",
                a.lock_request("fl", Mode::EX, LockOptions::new().flags(flag)),
            )
            .await?;
            ensure!(is_invalid(&r, &want), "lock_request with {flag:?}: {r:?}");
        }
        // Nothing was created by any of them.
        ensure!(!exists(&a, "fl").await?);

        let mut g = within("lock", a.lock("fl", Mode::PR)).await??;
        let token = g.token();
        for flag in OPTIONAL.into_iter().chain([unknown]) {
            let want = if flag == unknown {
                Invalid::UnknownFlags(flag.bits())
            } else {
                Invalid::UnsupportedFlags(flag.bits())
            };
            let r = within(
                "convert",
                g.convert_with(Mode::EX, ConvertOptions::new().flags(flag)),
            )
            .await?;
            ensure!(is_invalid(&r, &want), "convert with {flag:?}: {r:?}");
            let r = within(
                "convert_by_id",
                a.convert_by_id(g.lock_id(), Mode::EX, ConvertOptions::new().flags(flag)),
            )
            .await?;
            ensure!(is_invalid(&r, &want), "convert_by_id with {flag:?}: {r:?}");
            let r = within(
                "unlock_by_id",
                a.unlock_by_id(g.lock_id(), UnlockOptions::new().flags(flag)),
            )
            .await?;
            ensure!(is_invalid(&r, &want), "unlock_by_id with {flag:?}: {r:?}");
        }
        // The lock is untouched, held by its guard at its old mode.
        ensure!(g.mode() == Mode::PR && g.token() == token && !g.is_lost());
        let info = res(&a, "fl").await?;
        ensure!(granted(&info) == holders(&[(&a, Mode::PR)]), "{info:?}");
        unlock(g).await?;
        ensure!(!exists(&a, "fl").await?);
        Ok(())
    })
    .await
}

/// R45, R15: unlocking or converting a WAITING lock (a `PendingLock`) or a CONVERTING lock (a
/// started conversion) gives BUSY and changes nothing; the pending requests then complete
/// normally.
#[tokio::test]
async fn r15_r45_pending_locks_are_busy() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);

        // WAITING.
        let ga = within("lock", a.lock("busy", Mode::EX)).await??;
        let pb = within(
            "lock_request",
            b.lock_request("busy", Mode::PR, LockOptions::new()),
        )
        .await??;
        ensure!(!pb.is_granted());
        let id = pb.lock_id();
        let r = within("unlock", b.unlock_by_id(id, UnlockOptions::new())).await?;
        ensure!(
            matches!(r, Err(Error::Busy)),
            "unlock of a waiting lock: {r:?}"
        );
        let r = within(
            "convert",
            b.convert_by_id(id, Mode::NL, ConvertOptions::new()),
        )
        .await?;
        ensure!(
            matches!(r, Err(Error::Busy)),
            "convert of a waiting lock: {r:?}"
        );
        let info = res(b, "busy").await?;
        ensure!(waiting(&info) == holders(&[(b, Mode::PR)]), "{info:?}");
        unlock(ga).await?;
        let gb = within("grant", pb.granted()).await??;
        ensure!(gb.mode() == Mode::PR && gb.lock_id() == id);

        // CONVERTING.
        let ga = within("lock", a.lock("busy", Mode::PR)).await??;
        let pc = within(
            "start_convert",
            gb.start_convert(Mode::EX, ConvertOptions::new()),
        )
        .await??;
        ensure!(!pc.is_granted());
        let r = within("unlock", b.unlock_by_id(id, UnlockOptions::new())).await?;
        ensure!(
            matches!(r, Err(Error::Busy)),
            "unlock of a converting lock: {r:?}"
        );
        let r = within(
            "convert",
            b.convert_by_id(id, Mode::CR, ConvertOptions::new()),
        )
        .await?;
        ensure!(
            matches!(r, Err(Error::Busy)),
            "convert of a converting lock: {r:?}"
        );
        let info = res(b, "busy").await?;
        ensure!(
            converting(&info) == vec![(b.session_id(), Mode::PR, Mode::EX)],
            "{info:?}"
        );
        // The refused unlock released nothing in its place: the guard still holds PR.
        ensure!(gb.mode() == Mode::PR && !gb.is_lost());
        unlock(ga).await?;
        let done = within("conversion", pc.wait()).await??;
        ensure!(done.mode == Mode::EX, "{done:?}");
        ensure!(gb.mode() == Mode::EX && gb.token() == done.token);
        unlock(gb).await?;
        Ok(())
    })
    .await
}

/// R46, R52: an explicit cancel of a waiting new request reports `Cancelled`, the request
/// completes with CANCELLED, and its id is then unknown for unlock, convert and cancel.
#[tokio::test]
async fn r46_explicit_cancel_of_a_waiting_request() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        let ga = within("lock", a.lock("cx", Mode::EX)).await??;
        let pb = within(
            "lock_request",
            b.lock_request("cx", Mode::EX, LockOptions::new()),
        )
        .await??;
        ensure!(!pb.is_granted());
        let id = pb.lock_id();
        let out = within("cancel", pb.cancel()).await??;
        ensure!(out == CancelOutcome::Cancelled, "{out:?}");
        ensure!(!pb.is_granted());
        let r = within("completion", pb.granted()).await?;
        ensure!(matches!(r, Err(Error::Cancelled)), "{r:?}");
        let info = res(b, "cx").await?;
        ensure!(info.waiting.is_empty(), "{info:?}");
        let r = within("unlock", b.unlock_by_id(id, UnlockOptions::new())).await?;
        ensure!(matches!(r, Err(Error::NotFound)), "unlock: {r:?}");
        let r = within(
            "convert",
            b.convert_by_id(id, Mode::PR, ConvertOptions::new()),
        )
        .await?;
        ensure!(matches!(r, Err(Error::NotFound)), "convert: {r:?}");
        let r = within("cancel", b.cancel_by_id(id)).await?;
        ensure!(matches!(r, Err(Error::NotFound)), "cancel: {r:?}");

        // The same through cancel_by_id, on the id of a pending request.
        let pb = within(
            "lock_request",
            b.lock_request("cx", Mode::PR, LockOptions::new()),
        )
        .await??;
        let out = within("cancel", b.cancel_by_id(pb.lock_id())).await??;
        ensure!(out == CancelOutcome::Cancelled, "{out:?}");
        let r = within("completion", pb.granted()).await?;
        ensure!(matches!(r, Err(Error::Cancelled)), "{r:?}");
        unlock(ga).await?;
        ensure!(!exists(a, "cx").await?);
        Ok(())
    })
    .await
}

/// R48: cancelling a granted lock is NOT_PENDING and changes nothing: granted at once, and
/// granted before the cancel arrived (the grant stands and is delivered).
#[tokio::test]
async fn r48_cancel_of_a_granted_lock_is_not_pending() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);

        let pa = within(
            "lock_request",
            a.lock_request("np", Mode::EX, LockOptions::new()),
        )
        .await??;
        ensure!(pa.is_granted());
        let out = within("cancel", pa.cancel()).await??;
        ensure!(out == CancelOutcome::NotPending, "{out:?}");
        let ga = within("guard", pa.granted()).await??;
        let out = within("cancel", a.cancel_by_id(ga.lock_id())).await??;
        ensure!(out == CancelOutcome::NotPending, "{out:?}");
        ensure!(ga.mode() == Mode::EX && !ga.is_lost());

        // Granted while queued, before the cancel: A's unlock (and its grant pass) is
        // applied before B sends the cancel.
        let pb = within(
            "lock_request",
            b.lock_request("np", Mode::EX, LockOptions::new()),
        )
        .await??;
        ensure!(!pb.is_granted());
        unlock(ga).await?;
        let out = within("cancel", pb.cancel()).await??;
        ensure!(out == CancelOutcome::NotPending, "{out:?}");
        // The grant was sent before the answer to the cancel, so it has arrived.
        ensure!(pb.is_granted());
        let gb = within("grant", pb.granted()).await??;
        ensure!(gb.mode() == Mode::EX);
        let info = res(b, "np").await?;
        ensure!(granted(&info) == holders(&[(b, Mode::EX)]), "{info:?}");
        unlock(gb).await?;
        Ok(())
    })
    .await
}

/// R6, R52: an id that never existed, another session's lock and an unlocked lock are
/// NOT_FOUND for convert, unlock and cancel by id; the other session's lock is untouched.
#[tokio::test]
async fn r6_r52_unknown_and_foreign_ids_are_not_found() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        let ga = within("lock", a.lock("nf", Mode::EX)).await??;
        let gone = {
            let g = within("lock", b.lock("nf-gone", Mode::EX)).await??;
            let id = g.lock_id();
            unlock(g).await?;
            id
        };
        for (what, id) in [
            ("never existed", LockId(u64::MAX - 7)),
            ("another session's", ga.lock_id()),
            ("unlocked", gone),
        ] {
            let r = within(
                "convert",
                b.convert_by_id(id, Mode::NL, ConvertOptions::new()),
            )
            .await?;
            ensure!(matches!(r, Err(Error::NotFound)), "convert {what}: {r:?}");
            let r = within("unlock", b.unlock_by_id(id, UnlockOptions::new())).await?;
            ensure!(matches!(r, Err(Error::NotFound)), "unlock {what}: {r:?}");
            let r = within("cancel", b.cancel_by_id(id)).await?;
            ensure!(matches!(r, Err(Error::NotFound)), "cancel {what}: {r:?}");
        }
        let info = res(a, "nf").await?;
        ensure!(granted(&info) == holders(&[(a, Mode::EX)]), "{info:?}");
        ensure!(info.granted[0].lock == ga.lock_id());
        ensure!(!ga.is_lost());
        unlock(ga).await?;
        Ok(())
    })
    .await
}

/// R33: a CONVERTING lock gets no blocking notification although its granted mode blocks a
/// new request, while a plain holder does; observed through `start_convert`, which leaves the
/// guard usable.
#[tokio::test]
async fn r33_converting_lock_gets_no_blocking_notification() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 3).await?;
        let (a, b, x) = (&c[0], &c[1], &c[2]);
        let mut ga = within("lock", a.lock("bn", Mode::PR)).await??;
        let mut gb = within("lock", b.lock("bn", Mode::PR)).await??;
        // A converts to EX: queued behind B's PR, so A is CONVERTING at PR.
        let pc = within(
            "start_convert",
            ga.start_convert(Mode::EX, ConvertOptions::new()),
        )
        .await??;
        ensure!(!pc.is_granted());
        // X wants EX: both PR locks block it, and B's also blocks A's conversion.
        let px = within(
            "lock_request",
            x.lock_request("bn", Mode::EX, LockOptions::new()),
        )
        .await??;
        ensure!(!px.is_granted());
        expect_blocked(&mut gb, Mode::EX).await?;
        expect_no_blocking(&mut ga, a).await?;
        let info = res(a, "bn").await?;
        ensure!(
            converting(&info) == vec![(a.session_id(), Mode::PR, Mode::EX)],
            "{info:?}"
        );
        // B steps aside: A's conversion goes first (R13), then X after A.
        unlock(gb).await?;
        let done = within("conversion", pc.wait()).await??;
        ensure!(done.mode == Mode::EX && ga.mode() == Mode::EX);
        unlock(ga).await?;
        let gx = within("grant", px.granted()).await??;
        ensure!(gx.mode() == Mode::EX);
        unlock(gx).await?;
        Ok(())
    })
    .await
}

/// Dropping a queued `PendingLock` cancels the request (like dropping a `lock` future); the
/// cancel travels before anything the client sends afterwards.
#[tokio::test]
async fn dropping_a_pending_lock_cancels_it() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        let ga = within("lock", a.lock("dr", Mode::EX)).await??;
        let pb = within(
            "lock_request",
            b.lock_request("dr", Mode::EX, LockOptions::new()),
        )
        .await??;
        let id = pb.lock_id();
        drop(pb);
        let info = res(b, "dr").await?;
        ensure!(info.waiting.is_empty(), "{info:?}");
        let r = within("cancel", b.cancel_by_id(id)).await?;
        ensure!(matches!(r, Err(Error::NotFound)), "{r:?}");
        unlock(ga).await?;
        ensure!(!exists(a, "dr").await?);
        Ok(())
    })
    .await
}

/// The by-id calls keep a guard of the same client consistent: a conversion by id updates
/// its mode and token, an unlock by id ends it (Released), after which it sends nothing.
#[tokio::test]
async fn by_id_calls_keep_guards_consistent() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let a = client(&server, "a").await?;
        let g = within("lock", a.lock("gc", Mode::PR)).await??;
        let pc = within(
            "convert_by_id",
            a.convert_by_id(g.lock_id(), Mode::EX, ConvertOptions::new()),
        )
        .await??;
        ensure!(pc.is_granted());
        let done = within("conversion", pc.wait()).await??;
        ensure!(g.mode() == Mode::EX && g.token() == done.token, "{done:?}");

        within(
            "unlock_by_id",
            a.unlock_by_id(g.lock_id(), UnlockOptions::new()),
        )
        .await??;
        ensure!(g.is_lost());
        ensure!(g.lost().now_or_never() == Some(LostReason::Released));
        let r = within("unlock", g.unlock()).await?;
        ensure!(matches!(r, Err(Error::NotFound)), "{r:?}");
        ensure!(!exists(&a, "gc").await?, "the unlock by id released it");
        // A later lock on the same client works normally.
        let g2 = within("lock", a.lock("gc", Mode::EX)).await??;
        let info = res(&a, "gc").await?;
        ensure!(
            info.granted.first().context("granted")?.lock == g2.lock_id(),
            "{info:?}"
        );
        unlock(g2).await?;
        Ok(())
    })
    .await
}
