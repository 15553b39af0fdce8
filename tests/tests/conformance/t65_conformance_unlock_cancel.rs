//! Conformance: unlock and cancel (R44..R49), unknown ids (R6, R52) and request timeouts
//! (R65), end to end through `dlock-client`. What the SDK cannot express (an unlock of a
//! pending lock, the CANCELLED completion of a new request, operations on arbitrary ids) is
//! checked over the raw protocol.

use dlock_proto::{ConvertRequest, UnlockRequest};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use dlock_client::{ConvertOptions, Error, LockOptions, LockState, Mode};
use dlock_proto::{EventKind, LockFlags, LockId, Reject, Request};
use dlock_tests::RawClient;
use dlock_tests::sdk::*;

/// R44: an unlock releases the lock (UNLOCKED), runs a grant pass, and the last unlock ends
/// the resource (R1).
#[tokio::test]
async fn r44_unlock_releases_and_runs_grant_pass() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        let ga = a.lock("ul", Mode::EX).await?;
        let mut pb = start_lock(b, "ul", Mode::EX);
        send_then_query(&mut pb, b, "ul").await?;
        within("unlock", ga.unlock()).await??;
        let gb = outcome("b's grant", pb).await??;
        let info = res(a, "ul").await?;
        ensure!(granted(&info) == holders(&[(b, Mode::EX)]), "{info:?}");
        unlock(gb).await?;
        ensure!(!exists(a, "ul").await?);
        Ok(())
    })
    .await
}

/// R45: a plain unlock of a WAITING or CONVERTING lock gives BUSY and changes nothing.
#[tokio::test]
async fn r45_unlock_of_pending_lock_is_busy_raw() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let mut a = RawClient::connect(server.addr(), "a").await?;
        let mut b = RawClient::connect(server.addr(), "b").await?;
        a.acquire("ub", Mode::EX).await?;
        let id = b.lock("ub", Mode::PR, LockFlags::empty()).await?;
        let ev = b.event_for(id).await?;
        ensure!(ev.kind == EventKind::Queued, "{ev:?}");
        let waiting_lock = ev.lock.context("lock id")?;
        let id = b.unlock(waiting_lock).await?;
        let ev = b.event_for(id).await?;
        ensure!(
            ev.kind
                == EventKind::Rejected {
                    reason: Reject::Busy
                },
            "{ev:?}"
        );
        let info = b.query_resource("ub").await?.context("resource")?;
        ensure!(info.waiting.len() == 1 && info.waiting[0].lock == waiting_lock);

        let (nl, _) = b.acquire("ub2", Mode::NL).await?;
        a.acquire("ub2", Mode::PR).await?;
        let id = b.convert(nl, Mode::EX, LockFlags::empty()).await?;
        ensure!(b.event_for(id).await?.kind == EventKind::Queued);
        let id = b.unlock(nl).await?;
        let ev = b.event_for(id).await?;
        ensure!(
            ev.kind
                == EventKind::Rejected {
                    reason: Reject::Busy
                },
            "{ev:?}"
        );
        let info = b.query_resource("ub2").await?.context("resource")?;
        ensure!(
            info.converting.len() == 1
                && info.converting[0].state
                    == LockState::Converting {
                        from: Mode::NL,
                        to: Mode::EX
                    },
            "{info:?}"
        );
        Ok(())
    })
    .await
}

/// R46: dropping a pending `lock` future cancels the WAITING request: it leaves the wait
/// queue, and the grant pass grants requests that were queued behind it.
#[tokio::test]
async fn r46_cancel_waiting_request_by_dropping_future() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 3).await?;
        let (a, b, d) = (&c[0], &c[1], &c[2]);
        let _ga = a.lock("cw", Mode::PR).await?;
        let mut pb = start_lock(b, "cw", Mode::EX);
        send_then_query(&mut pb, b, "cw").await?;
        let mut pd = start_lock(d, "cw", Mode::PR);
        let info = send_then_query(&mut pd, d, "cw").await?;
        ensure!(info.waiting.len() == 2, "{info:?}");
        drop(pb);
        // The cancel travels before this query on b's connection.
        let info = res(b, "cw").await?;
        ensure!(
            !info.waiting.iter().any(|l| l.session == b.session_id()),
            "{info:?}"
        );
        let gd = outcome("d's grant", pd).await??;
        ensure!(gd.mode() == Mode::PR);
        let s = within("session query", b.query_session(b.session_id()))
            .await??
            .context("b's session")?;
        ensure!(s.locks.is_empty(), "{:?}", s.locks);
        Ok(())
    })
    .await
}

/// R46, R52: cancelling a WAITING request completes it with CANCELLED; its id is then
/// unknown (NOT_FOUND) for unlock, convert and cancel.
#[tokio::test]
async fn r46_cancelled_request_completes_and_its_id_is_gone_raw() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let mut a = RawClient::connect(server.addr(), "a").await?;
        let mut b = RawClient::connect(server.addr(), "b").await?;
        a.acquire("cc", Mode::EX).await?;
        let req = b.lock("cc", Mode::EX, LockFlags::empty()).await?;
        let ev = b.event_for(req).await?;
        ensure!(ev.kind == EventKind::Queued);
        let lock = ev.lock.context("lock id")?;
        let cancel = b.send(Request::Cancel { lock }).await?;
        let ev = b.event_for(req).await?;
        ensure!(
            ev.kind == EventKind::Cancelled,
            "completion of the cancelled request: {ev:?}"
        );
        ensure!(
            b.query_resource("cc")
                .await?
                .context("resource")?
                .waiting
                .is_empty()
        );
        for body in [
            Request::Unlock(UnlockRequest {
                lock,
                flags: LockFlags::empty(),
                value: None,
            }),
            Request::Cancel { lock },
            Request::Convert(ConvertRequest {
                lock,
                mode: Mode::PR,
                flags: LockFlags::empty(),
                value: None,
                timeout_ms: None,
            }),
        ] {
            let id = b.send(body.clone()).await?;
            let ev = b.event_for(id).await?;
            ensure!(
                ev.kind
                    == EventKind::Rejected {
                        reason: Reject::NotFound
                    },
                "{body:?} on a cancelled id: {ev:?}"
            );
        }
        // The successful cancel itself produced no event of its own (only the completion).
        ensure!(
            !b.set_aside().iter().any(|m| matches!(m,
                dlock_proto::ServerMessage::Event { event, .. } if event.request == Some(cancel))),
            "{:?}",
            b.set_aside()
        );
        Ok(())
    })
    .await
}

/// R47: cancelling a CONVERTING lock completes the conversion with CANCELLED, puts the lock
/// back at its old mode, and runs a grant pass (which may grant new requests that waited for
/// the convert queue to empty, R13).
#[tokio::test]
async fn r47_cancel_conversion_keeps_old_mode_and_runs_grant_pass() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 3).await?;
        let (a, b, d) = (&c[0], &c[1], &c[2]);
        let _ga = a.lock("cc", Mode::PR).await?;
        let mut gb = b.lock("cc", Mode::PR).await?;
        let token = gb.token();
        let canceller = gb.canceller();
        let mut pb = start_convert(&mut gb, Mode::EX);
        send_then_query(&mut pb, b, "cc").await?;
        let mut pd = start_lock(d, "cc", Mode::CR);
        let info = send_then_query(&mut pd, d, "cc").await?;
        ensure!(
            waiting(&info) == vec![(d.session_id(), Mode::CR)],
            "{info:?}"
        );
        within("cancel", canceller.cancel()).await??;
        let r = outcome("b's conversion", pb).await?;
        ensure!(matches!(r, Err(Error::Cancelled)), "{r:?}");
        ensure!(gb.mode() == Mode::PR && gb.token() == token);
        let gd = outcome("d's grant", pd).await??;
        ensure!(gd.mode() == Mode::CR);
        let info = res(b, "cc").await?;
        ensure!(
            granted(&info) == holders(&[(a, Mode::PR), (b, Mode::PR), (d, Mode::CR)])
                && info.converting.is_empty(),
            "{info:?}"
        );

        // Dropping a pending conversion cancels it too.
        let mut pb = start_convert(&mut gb, Mode::EX);
        send_then_query(&mut pb, b, "cc").await?;
        drop(pb);
        let info = res(b, "cc").await?;
        ensure!(info.converting.is_empty(), "{info:?}");
        ensure!(gb.mode() == Mode::PR);
        Ok(())
    })
    .await
}

/// R48: cancel with nothing pending gives NOT_PENDING and changes nothing, also when the
/// conversion was granted before the cancel arrived (the grant stands).
#[tokio::test]
async fn r48_cancel_with_nothing_pending() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let a = client(&server, "a").await?;
        let mut g = a.lock("np", Mode::PR).await?;
        let canceller = g.canceller();
        let r = within("cancel", canceller.cancel()).await?;
        ensure!(matches!(r, Err(Error::NotPending)), "{r:?}");
        ensure!(g.mode() == Mode::PR);
        // A conversion granted on arrival, with a cancel sent right behind it.
        let mut conv = start_convert(&mut g, Mode::EX);
        let (r, c) = tokio::join!(&mut conv, canceller.cancel());
        ensure!(r.is_ok(), "conversion: {r:?}");
        ensure!(matches!(c, Err(Error::NotPending)), "cancel: {c:?}");
        drop(conv);
        ensure!(g.mode() == Mode::EX);
        let info = res(&a, "np").await?;
        ensure!(granted(&info) == holders(&[(&a, Mode::EX)]), "{info:?}");
        Ok(())
    })
    .await
}

/// R6, R52: unlock of an id that never existed, of another session's lock, or of an ended
/// lock gives NOT_FOUND, and the other session's lock is untouched.
#[tokio::test]
async fn r52_unknown_ids_are_not_found_raw() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let mut a = RawClient::connect(server.addr(), "a").await?;
        let mut b = RawClient::connect(server.addr(), "b").await?;
        let (la, _) = a.acquire("nf", Mode::EX).await?;
        for (what, lock) in [
            ("never existed", LockId(u64::MAX - 7)),
            ("another session's", la),
        ] {
            for body in [
                Request::Unlock(UnlockRequest {
                    lock,
                    flags: LockFlags::empty(),
                    value: None,
                }),
                Request::Cancel { lock },
                Request::Convert(ConvertRequest {
                    lock,
                    mode: Mode::NL,
                    flags: LockFlags::empty(),
                    value: None,
                    timeout_ms: None,
                }),
            ] {
                let id = b.send(body.clone()).await?;
                let ev = b.event_for(id).await?;
                ensure!(
                    ev.kind
                        == EventKind::Rejected {
                            reason: Reject::NotFound
                        },
                    "{what} {body:?}: {ev:?}"
                );
            }
        }
        let info = a.query_resource("nf").await?.context("resource")?;
        ensure!(info.granted.len() == 1 && info.granted[0].lock == la);
        ensure!(info.granted[0].state == LockState::Granted { mode: Mode::EX });
        // An unlocked lock's id.
        a.release(la).await?;
        let id = a.unlock(la).await?;
        let ev = a.event_for(id).await?;
        ensure!(
            ev.kind
                == EventKind::Rejected {
                    reason: Reject::NotFound
                },
            "{ev:?}"
        );
        // A NOT_QUEUED request's id (if its completion carries one).
        a.acquire("nf1", Mode::EX).await?;
        let id = b.lock("nf1", Mode::EX, LockFlags::NOQUEUE).await?;
        let ev = b.event_for(id).await?;
        ensure!(ev.kind == EventKind::NotQueued, "{ev:?}");
        if let Some(lock) = ev.lock {
            let id = b.unlock(lock).await?;
            let ev = b.event_for(id).await?;
            ensure!(
                ev.kind
                    == EventKind::Rejected {
                        reason: Reject::NotFound
                    },
                "{ev:?}"
            );
        }
        Ok(())
    })
    .await
}

/// R52 through the SDK: once a guard's lock is released, its canceller reports the lock as
/// unknown.
#[tokio::test]
async fn r52_released_lock_is_unknown_to_its_canceller() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let a = client(&server, "a").await?;
        let g = a.lock("gone", Mode::EX).await?;
        let canceller = g.canceller();
        unlock(g).await?;
        let r = within("cancel", canceller.cancel()).await?;
        ensure!(matches!(r, Err(Error::NotFound)), "{r:?}");
        Ok(())
    })
    .await
}

/// R65: a queued new request whose timeout expires completes with TIMEDOUT, leaves the
/// queue, and the grant pass grants what waited behind it.
#[tokio::test]
async fn r65_request_timeout() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 3).await?;
        let (a, b, d) = (&c[0], &c[1], &c[2]);
        let _ga = a.lock("to", Mode::PR).await?;
        let mut pb: Pending<'_, _> = Box::pin(b.lock_with(
            "to",
            Mode::EX,
            LockOptions::new().timeout(Duration::from_millis(1000)),
        ));
        send_then_query(&mut pb, b, "to").await?;
        let mut pd = start_lock(d, "to", Mode::PR);
        let info = send_then_query(&mut pd, d, "to").await?;
        ensure!(info.waiting.len() == 2, "{info:?}");
        let r = outcome("b's request", pb).await?;
        ensure!(matches!(r, Err(Error::TimedOut)), "{r:?}");
        let gd = outcome("d's grant", pd).await??;
        ensure!(gd.mode() == Mode::PR);
        let s = within("session", b.query_session(b.session_id()))
            .await??
            .context("b's session")?;
        ensure!(s.locks.is_empty(), "{:?}", s.locks);
        Ok(())
    })
    .await
}

/// R65: a queued conversion whose timeout expires completes with TIMEDOUT and keeps its old
/// mode; the grant pass then grants requests that waited for the convert queue to empty.
#[tokio::test]
async fn r65_conversion_timeout_keeps_old_mode() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 3).await?;
        let (a, b, d) = (&c[0], &c[1], &c[2]);
        let _ga = a.lock("cto", Mode::PR).await?;
        let mut gb = b.lock("cto", Mode::PR).await?;
        let token = gb.token();
        let mut pb = start_convert_with(
            &mut gb,
            Mode::EX,
            ConvertOptions::new().timeout(Duration::from_millis(1000)),
        );
        send_then_query(&mut pb, b, "cto").await?;
        let mut pd = start_lock(d, "cto", Mode::CR);
        send_then_query(&mut pd, d, "cto").await?;
        let r = outcome("b's conversion", pb).await?;
        ensure!(matches!(r, Err(Error::TimedOut)), "{r:?}");
        ensure!(gb.mode() == Mode::PR && gb.token() == token);
        let gd = outcome("d's grant", pd).await??;
        ensure!(gd.mode() == Mode::CR);
        let info = res(b, "cto").await?;
        ensure!(
            granted(&info) == holders(&[(a, Mode::PR), (b, Mode::PR), (d, Mode::CR)]),
            "{info:?}"
        );
        Ok(())
    })
    .await
}

/// R46 through the SDK: a `lock` future dropped right after it was first polled (before the
/// server's "queued" answer came back) still cancels the request.
#[tokio::test]
async fn r46_lock_future_dropped_before_queued_answer() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        let ga = a.lock("early", Mode::EX).await?;
        let mut pb = start_lock(b, "early", Mode::EX);
        // One poll sends the request; drop at once.
        ensure!(futures_util::poll!(&mut pb).is_pending());
        drop(pb);
        wait_for_state(a, "early", "b's request to be cancelled", |i| {
            i.is_some_and(|i| i.waiting.is_empty())
        })
        .await?;
        let s = within("session", b.query_session(b.session_id()))
            .await??
            .context("b's session")?;
        ensure!(s.locks.is_empty(), "{:?}", s.locks);
        drop(ga);
        Ok(())
    })
    .await
}

/// R48 through the SDK: a `lock` future dropped while its grant races the cancel leaves no
/// lock behind either way (a grant that won is released).
#[tokio::test]
async fn r48_lock_future_dropped_while_grant_races() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let c = clients(&server, 2).await?;
        let (a, b) = (&c[0], &c[1]);
        for i in 0..20 {
            let name = format!("race/{i}");
            let ga = a.lock(&name, Mode::EX).await?;
            let mut pb = start_lock(b, &name, Mode::EX);
            send_then_query(&mut pb, b, &name).await?;
            // The unlock and the cancel travel on different connections.
            let unlocked = ga.unlock();
            drop(pb);
            within("unlock", unlocked).await??;
            wait_for_state(a, &name, "no lock left", |i| i.is_none()).await?;
        }
        let s = within("session", b.query_session(b.session_id()))
            .await??
            .context("b's session")?;
        ensure!(s.locks.is_empty(), "{:?}", s.locks);
        Ok(())
    })
    .await
}
