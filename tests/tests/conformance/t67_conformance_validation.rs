//! Conformance: argument validation (R54..R56) and the order of checks, end to end through
//! `dlock-client`. Flags the SDK does not expose (the optional features, unknown bits, QUECVT
//! on a new request) are sent over the raw protocol.

use anyhow::{Context, Result, bail, ensure};
use dlock_client::{ConvertOptions, Error, Invalid, Mode, UnlockOptions};
use dlock_proto::{ConvertRequest, LockRequest, UnlockRequest};
use dlock_proto::{Event, EventKind, LockFlags, LockId, Reject, Request, ServerMessage};
use dlock_tests::RawClient;
use dlock_tests::sdk::*;

/// The rejection reason of an event, or a failure.
fn rejected(ev: &Event) -> Result<&Reject> {
    match &ev.kind {
        EventKind::Rejected { reason } => Ok(reason),
        other => bail!("expected a rejection, got {other:?}"),
    }
}

/// R54: an empty name is INVALID, with no state change.
#[tokio::test]
async fn r54_empty_name_is_invalid() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let a = client(&server, "a").await?;
        let r = within("lock", a.lock("", Mode::EX)).await?;
        ensure!(
            matches!(r, Err(Error::Invalid(Invalid::EmptyName))),
            "{r:?}"
        );
        let r = within("try_lock", a.try_lock(b"", Mode::NL)).await?;
        ensure!(
            matches!(r, Err(Error::Invalid(Invalid::EmptyName))),
            "{r:?}"
        );
        let s = within("session", a.query_session(a.session_id()))
            .await??
            .context("session")?;
        ensure!(s.locks.is_empty(), "{:?}", s.locks);
        Ok(())
    })
    .await
}

/// R1, R54: names are opaque bytes of at least 64 bytes allowed; one byte over the configured
/// maximum is INVALID.
#[tokio::test]
async fn r54_name_length_limits() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let max = server.server_config().engine.max_name_len;
        ensure!(max >= 64, "maximum name length {max} < 64");
        let a = client(&server, "a").await?;
        let binary: Vec<u8> = (0..=255u8).cycle().take(64).collect();
        let g = within("64-byte binary name", a.lock(&binary, Mode::EX)).await??;
        ensure!(g.resource() == binary.as_slice());
        unlock(g).await?;
        let longest = vec![b'n'; max];
        let g = within("longest name", a.lock(&longest, Mode::EX)).await??;
        unlock(g).await?;
        let too_long = vec![b'n'; max + 1];
        let r = within("too long", a.lock(&too_long, Mode::EX)).await?;
        ensure!(
            matches!(r, Err(Error::Invalid(Invalid::NameTooLong { .. }))),
            "{r:?}"
        );
        ensure!(!exists(&a, "n").await?);
        Ok(())
    })
    .await
}

/// R54: VALBLK on a write path (a down-conversion from PW/EX) without a value is INVALID and
/// changes nothing; a value longer than the value block is INVALID too.
#[tokio::test]
async fn r54_value_block_arguments() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let a = client(&server, "a").await?;
        let len = a.value_block_len();
        let mut g = a.lock("vb", Mode::EX).await?;
        let token = g.token();
        let r = within(
            "EX->NL with VALBLK and no value",
            g.convert_with(Mode::NL, ConvertOptions::new().read_value()),
        )
        .await?;
        ensure!(
            matches!(r, Err(Error::Invalid(Invalid::MissingValue))),
            "{r:?}"
        );
        ensure!(g.mode() == Mode::EX && g.token() == token);
        let r = within(
            "a value too long",
            g.convert_with(Mode::NL, ConvertOptions::new().value(vec![1u8; len + 1])),
        )
        .await?;
        ensure!(
            matches!(r, Err(Error::Invalid(Invalid::ValueTooLong { .. }))),
            "{r:?}"
        );
        ensure!(g.mode() == Mode::EX);
        let info = res(&a, "vb").await?;
        ensure!(info.value == vec![0u8; len] && info.value_valid, "{info:?}");
        unlock(g).await?;
        Ok(())
    })
    .await
}

/// R54 and the SDK: an unlock refused as INVALID (value too long) changes nothing on the
/// server, so the lock is still held; the SDK must not leave it held with no way to release
/// it (the guard was consumed by `unlock_with`).
#[tokio::test]
async fn r54_rejected_unlock_does_not_leak_the_lock() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        let len = a.value_block_len();
        let g = a.lock("leak", Mode::EX).await?;
        let r = within(
            "unlock with a value too long",
            g.unlock_with(UnlockOptions::new().value(vec![1u8; len + 1])),
        )
        .await?;
        ensure!(
            matches!(r, Err(Error::Invalid(Invalid::ValueTooLong { .. }))),
            "{r:?}"
        );
        // The guard is gone: the lock must be released (as a dropped guard is) so that
        // others can have it.
        within("b's lock", b.lock("leak", Mode::EX)).await??;
        Ok(())
    })
    .await
}

/// R21, R54: QUECVT on a new request is INVALID and creates nothing.
#[tokio::test]
async fn r54_quecvt_on_new_request_is_invalid_raw() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let mut a = RawClient::connect(server.addr(), "a").await?;
        let id = a.lock("qn", Mode::EX, LockFlags::QUECVT).await?;
        let ev = a.event_for(id).await?;
        ensure!(
            *rejected(&ev)? == Reject::Invalid(Invalid::QuecvtOnNewLock),
            "{ev:?}"
        );
        ensure!(a.query_resource("qn").await?.is_none());
        Ok(())
    })
    .await
}

/// R56, R54: every optional flag dlock does not implement, and unknown bits, are INVALID on a
/// lock, a conversion and an unlock, never silently ignored; nothing changes and no
/// completion follows (R5).
#[tokio::test]
async fn r56_unsupported_and_unknown_flags_are_invalid_raw() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let mut a = RawClient::connect(server.addr(), "a").await?;
        let (held, token) = a.acquire("fl", Mode::PR).await?;
        let optional = [
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
        let unknown = LockFlags::from_bits_retain(1 << 30);
        let mut sent = Vec::new();
        for flag in optional.into_iter().chain([unknown]) {
            let want = if flag == unknown {
                Reject::Invalid(Invalid::UnknownFlags(flag.bits()))
            } else {
                Reject::Invalid(Invalid::UnsupportedFlags(flag.bits()))
            };
            for body in [
                Request::Lock(LockRequest {
                    resource: b"fl-new".to_vec(),
                    mode: Mode::NL,
                    flags: flag,
                    value: None,
                    timeout_ms: None,
                }),
                Request::Convert(ConvertRequest {
                    lock: held,
                    mode: Mode::EX,
                    flags: flag,
                    value: None,
                    timeout_ms: None,
                }),
                Request::Unlock(UnlockRequest {
                    lock: held,
                    flags: flag,
                    value: None,
                }),
            ] {
                let id = a.send(body.clone()).await?;
                let ev = a.event_for(id).await?;
                ensure!(*rejected(&ev)? == want, "{body:?}: {ev:?}");
                sent.push(id);
            }
        }
        ensure!(a.query_resource("fl-new").await?.is_none());
        let info = a.query_resource("fl").await?.context("resource")?;
        ensure!(info.granted.len() == 1 && info.granted[0].token == Some(token));
        // R5: no later completion for any refused request.
        a.ping().await?;
        let late: Vec<_> = a
            .set_aside()
            .iter()
            .filter(|m| {
                matches!(m, ServerMessage::Event { event, .. }
                if event.request.is_some_and(|r| sent.contains(&r)))
            })
            .collect();
        ensure!(late.is_empty(), "{late:?}");
        Ok(())
    })
    .await
}

/// R55: argument checks come before the id lookup, and the id lookup before state checks:
/// a bad flag on an unknown id is INVALID, a bad QUECVT on a converting lock is INVALID (not
/// BUSY), and a valid convert of a converting lock is BUSY.
#[tokio::test]
async fn r55_order_of_checks_raw() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let mut a = RawClient::connect(server.addr(), "a").await?;
        let mut b = RawClient::connect(server.addr(), "b").await?;
        let id = b
            .convert(LockId(u64::MAX - 3), Mode::EX, LockFlags::HEADQUE)
            .await?;
        let ev = b.event_for(id).await?;
        ensure!(matches!(rejected(&ev)?, Reject::Invalid(_)), "{ev:?}");
        let id = b
            .convert(LockId(u64::MAX - 3), Mode::EX, LockFlags::empty())
            .await?;
        let ev = b.event_for(id).await?;
        ensure!(*rejected(&ev)? == Reject::NotFound, "{ev:?}");

        let (nl, _) = b.acquire("ord", Mode::NL).await?;
        a.acquire("ord", Mode::EX).await?;
        let id = b.convert(nl, Mode::PR, LockFlags::empty()).await?;
        ensure!(b.event_for(id).await?.kind == EventKind::Queued);
        // NL->NL with QUECVT is not allowed (R21): INVALID before BUSY.
        let id = b.convert(nl, Mode::NL, LockFlags::QUECVT).await?;
        let ev = b.event_for(id).await?;
        ensure!(
            matches!(
                rejected(&ev)?,
                Reject::Invalid(Invalid::QuecvtNotAllowed { .. })
            ),
            "{ev:?}"
        );
        let id = b.convert(nl, Mode::CR, LockFlags::empty()).await?;
        let ev = b.event_for(id).await?;
        ensure!(*rejected(&ev)? == Reject::Busy, "{ev:?}");
        Ok(())
    })
    .await
}
