//! Acquire, convert and unlock across several clients; NOQUEUE; queries.

use anyhow::Result;
use dlock_proto::{EventKind, LockFlags, LockState, Mode, Reject, Request};
use dlock_tests::{RawClient, TestServer};

#[tokio::test]
async fn shared_locks_coexist_and_exclusive_waits_for_them() -> Result<()> {
    let server = TestServer::start().await?;
    let mut a = RawClient::connect(server.addr(), "a").await?;
    let mut b = RawClient::connect(server.addr(), "b").await?;
    let mut c = RawClient::connect(server.addr(), "c").await?;
    assert_ne!(a.session, b.session);

    let (la, ta) = a.acquire("res", Mode::PR).await?;
    let (lb, tb) = b.acquire("res", Mode::PR).await?;
    assert!(tb > ta, "tokens grow: {ta} then {tb}");

    // EX is incompatible with the two PR holders: queued.
    let rc = c.lock("res", Mode::EX, LockFlags::empty()).await?;
    assert_eq!(c.event_for(rc).await?.kind, EventKind::Queued);

    let info = c.query_resource("res").await?.expect("resource exists");
    let granted: Vec<_> = info.granted.iter().map(|l| l.lock).collect();
    assert_eq!(granted, vec![la, lb]);
    assert_eq!(info.waiting.len(), 1);
    assert_eq!(info.waiting[0].session, c.session);

    a.release(la).await?;
    // Still blocked by b.
    b.release(lb).await?;
    let ev = c.event_for(rc).await?;
    match ev.kind {
        EventKind::Granted { mode, token, .. } => {
            assert_eq!(mode, Mode::EX);
            assert!(token > tb);
        }
        other => panic!("expected the queued EX to be granted, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn convert_up_and_down() -> Result<()> {
    let server = TestServer::start().await?;
    let mut a = RawClient::connect(server.addr(), "a").await?;
    let mut b = RawClient::connect(server.addr(), "b").await?;

    let (la, t1) = a.acquire("conv", Mode::NL).await?;
    // NL -> EX with nobody else: granted in place, new token.
    let r = a.convert(la, Mode::EX, LockFlags::empty()).await?;
    let t2 = match a.event_for(r).await?.kind {
        EventKind::Granted {
            mode: Mode::EX,
            token,
            ..
        } => token,
        other => panic!("expected EX grant, got {other:?}"),
    };
    assert!(t2 > t1);

    // b cannot get PR while a holds EX (NOQUEUE: fails at once).
    let r = b.lock("conv", Mode::PR, LockFlags::NOQUEUE).await?;
    assert_eq!(b.event_for(r).await?.kind, EventKind::NotQueued);

    // Down-convert EX -> PR: granted at once, and now b's PR fits.
    let r = a.convert(la, Mode::PR, LockFlags::empty()).await?;
    assert!(matches!(
        a.event_for(r).await?.kind,
        EventKind::Granted { mode: Mode::PR, .. }
    ));
    let (lb, _) = b.acquire("conv", Mode::PR).await?;

    let info = a.query_resource("conv").await?.expect("resource exists");
    let modes: Vec<_> = info.granted.iter().map(|l| (l.lock, l.state)).collect();
    assert_eq!(
        modes,
        vec![
            (la, LockState::Granted { mode: Mode::PR }),
            (lb, LockState::Granted { mode: Mode::PR })
        ]
    );
    a.release(la).await?;
    b.release(lb).await?;
    assert!(
        a.query_resource("conv").await?.is_none(),
        "resource gone with its last lock"
    );
    Ok(())
}

#[tokio::test]
async fn noqueue_fails_without_changing_anything() -> Result<()> {
    let server = TestServer::start().await?;
    let mut a = RawClient::connect(server.addr(), "a").await?;
    let mut b = RawClient::connect(server.addr(), "b").await?;
    let (la, _) = a.acquire("nq", Mode::EX).await?;

    let r = b.lock("nq", Mode::EX, LockFlags::NOQUEUE).await?;
    let ev = b.event_for(r).await?;
    assert_eq!(ev.kind, EventKind::NotQueued);

    let info = b.query_resource("nq").await?.expect("resource exists");
    assert_eq!(info.granted.len(), 1);
    assert_eq!(info.granted[0].lock, la);
    assert!(info.waiting.is_empty() && info.converting.is_empty());
    // The failed request left no lock behind: its id is unknown.
    if let Some(lock) = ev.lock {
        let r = b.unlock(lock).await?;
        assert_eq!(
            b.event_for(r).await?.kind,
            EventKind::Rejected {
                reason: Reject::NotFound
            }
        );
    }
    Ok(())
}

#[tokio::test]
async fn unlock_of_another_sessions_lock_is_not_found() -> Result<()> {
    let server = TestServer::start().await?;
    let mut a = RawClient::connect(server.addr(), "a").await?;
    let mut b = RawClient::connect(server.addr(), "b").await?;
    let (la, _) = a.acquire("own", Mode::EX).await?;
    let r = b.unlock(la).await?;
    assert_eq!(
        b.event_for(r).await?.kind,
        EventKind::Rejected {
            reason: Reject::NotFound
        }
    );
    // a still holds it.
    let r = b.lock("own", Mode::EX, LockFlags::NOQUEUE).await?;
    assert_eq!(b.event_for(r).await?.kind, EventKind::NotQueued);
    Ok(())
}

#[tokio::test]
async fn goodbye_releases_every_lock_at_once() -> Result<()> {
    let server = TestServer::start().await?;
    let mut a = RawClient::connect(server.addr(), "a").await?;
    let mut b = RawClient::connect(server.addr(), "b").await?;
    a.acquire("g1", Mode::EX).await?;
    a.acquire("g2", Mode::EX).await?;
    let r1 = b.lock("g1", Mode::EX, LockFlags::empty()).await?;
    assert_eq!(b.event_for(r1).await?.kind, EventKind::Queued);

    a.goodbye().await?;
    // The server closes the connection after SessionClosed.
    // The server closes the connection after SessionClosed (each recv is bounded).
    while a.recv().await?.is_some() {}

    assert!(matches!(
        b.event_for(r1).await?.kind,
        EventKind::Granted { .. }
    ));
    let r2 = b.lock("g2", Mode::EX, LockFlags::NOQUEUE).await?;
    assert!(matches!(
        b.event_for(r2).await?.kind,
        EventKind::Granted { .. }
    ));
    Ok(())
}

#[tokio::test]
async fn ping_and_session_query_are_answered() -> Result<()> {
    let server = TestServer::start().await?;
    let mut a = RawClient::connect(server.addr(), "alice").await?;
    assert!(!a.welcome.resumed);
    assert_eq!(a.welcome.lease_ttl_ms, 10_000, "the server's default lease");
    a.ping().await?;
    let (la, _) = a.acquire("q", Mode::CW).await?;
    let id = a
        .send(Request::Query(dlock_proto::Query::Session {
            session: a.session,
            after: None,
        }))
        .await?;
    match a.reply_for(id).await? {
        dlock_proto::Reply::Session {
            session: Some(info),
            ..
        } => {
            assert_eq!(info.name, "alice");
            assert_eq!(info.locks.len(), 1);
            assert_eq!(info.locks[0].lock, la);
        }
        other => panic!("expected the session, got {other:?}"),
    }
    Ok(())
}
