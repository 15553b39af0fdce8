//! Server pushes: a queued request granted when the holder unlocks, blocking notifications to
//! holders, and a deadlock victim across two resources.

use anyhow::Result;
use dlock_proto::{EventKind, LockFlags, Mode};
use dlock_tests::{RawClient, TestServer};

#[tokio::test]
async fn queued_request_is_granted_by_a_push_when_the_holder_unlocks() -> Result<()> {
    let server = TestServer::start().await?;
    let mut holder = RawClient::connect(server.addr(), "holder").await?;
    let mut waiter = RawClient::connect(server.addr(), "waiter").await?;
    let (lock, t1) = holder.acquire("push", Mode::EX).await?;

    let r = waiter.lock("push", Mode::PW, LockFlags::empty()).await?;
    assert_eq!(waiter.event_for(r).await?.kind, EventKind::Queued);

    holder.release(lock).await?;
    // No request from the waiter in between: the grant arrives as a push.
    let ev = waiter.event_for(r).await?;
    match ev.kind {
        EventKind::Granted { mode, token, .. } => {
            assert_eq!(mode, Mode::PW);
            assert!(token > t1);
        }
        other => panic!("expected a pushed grant, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn holder_gets_a_blocking_notification() -> Result<()> {
    let server = TestServer::start().await?;
    let mut holder = RawClient::connect(server.addr(), "holder").await?;
    let mut waiter = RawClient::connect(server.addr(), "waiter").await?;
    let (lock, _) = holder.acquire("bast", Mode::PR).await?;

    let r = waiter.lock("bast", Mode::EX, LockFlags::empty()).await?;
    assert_eq!(waiter.event_for(r).await?.kind, EventKind::Queued);

    let ev = holder
        .event_where("a blocking notification", |e| {
            matches!(e.kind, EventKind::Blocking { .. })
        })
        .await?;
    assert_eq!(ev.lock, Some(lock));
    assert_eq!(ev.kind, EventKind::Blocking { mode: Mode::EX });

    // The holder reacts by releasing; the waiter gets its grant.
    holder.release(lock).await?;
    assert!(matches!(
        waiter.event_for(r).await?.kind,
        EventKind::Granted { mode: Mode::EX, .. }
    ));
    Ok(())
}

#[tokio::test]
async fn compatible_holder_gets_no_blocking_notification() -> Result<()> {
    let server = TestServer::start().await?;
    let mut holder = RawClient::connect(server.addr(), "holder").await?;
    let mut other = RawClient::connect(server.addr(), "other").await?;
    let (_, _) = holder.acquire("nobast", Mode::CR).await?;
    let (_, _) = other.acquire("nobast", Mode::PR).await?;
    // A ping round trip after the grant: any notification would have been queued before it.
    holder.ping().await?;
    assert!(
        holder.set_aside().iter().all(|m| !matches!(
            m,
            dlock_proto::ServerMessage::Event { event, .. }
                if matches!(event.kind, EventKind::Blocking { .. })
        )),
        "unexpected blocking notification: {:?}",
        holder.set_aside()
    );
    Ok(())
}

#[tokio::test]
async fn deadlock_across_two_resources_refuses_the_youngest_request() -> Result<()> {
    let server = TestServer::start().await?;
    let mut a = RawClient::connect(server.addr(), "a").await?;
    let mut b = RawClient::connect(server.addr(), "b").await?;
    let (la, _) = a.acquire("r1", Mode::EX).await?;
    let (_lb, _) = b.acquire("r2", Mode::EX).await?;

    // a waits for b on r2.
    let ra = a.lock("r2", Mode::EX, LockFlags::empty()).await?;
    assert_eq!(a.event_for(ra).await?.kind, EventKind::Queued);
    // b waiting for a on r1 closes the cycle: b's request is the youngest, so it is the victim.
    let rb = b.lock("r1", Mode::EX, LockFlags::empty()).await?;
    assert_eq!(b.event_for(rb).await?.kind, EventKind::Deadlock);

    // a's request is untouched and still queued behind b's r2 lock.
    let info = a.query_resource("r2").await?.expect("r2 exists");
    assert_eq!(info.waiting.len(), 1);
    assert_eq!(info.waiting[0].session, a.session);
    // r1 has only a's lock: the victim left nothing behind.
    let info = a.query_resource("r1").await?.expect("r1 exists");
    assert_eq!(info.granted.len(), 1);
    assert_eq!(info.granted[0].lock, la);
    assert!(info.waiting.is_empty());
    Ok(())
}

/// A request's timeout moves the server's next wake-up earlier: on a single server the
/// request is handled in its connection's task (the core task is asleep, its timer set for
/// later), which must wake the core task to re-arm its timer. On a paused clock the test
/// takes no real time, and the timeout comes when due, not at the next wake-up the core
/// task had planned (the holders' leases, a minute away).
#[tokio::test(start_paused = true)]
async fn a_timeout_set_while_the_core_task_sleeps_fires_when_due() -> Result<()> {
    let server = TestServer::start().await?;
    let mut holder = RawClient::connect_with_ttl(server.addr(), "holder", 60_000).await?;
    let mut waiter = RawClient::connect_with_ttl(server.addr(), "waiter", 60_000).await?;
    holder.acquire("due", Mode::EX).await?;
    let sent = tokio::time::Instant::now();
    let r = waiter
        .send(dlock_proto::Request::Lock(dlock_proto::LockRequest {
            timeout_ms: Some(300),
            ..dlock_proto::LockRequest::new("due", Mode::EX)
        }))
        .await?;
    assert_eq!(waiter.event_for(r).await?.kind, EventKind::Queued);
    assert_eq!(waiter.event_for(r).await?.kind, EventKind::TimedOut);
    let waited = sent.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(300)
            && waited < std::time::Duration::from_secs(5),
        "timed out after {waited:?}"
    );
    Ok(())
}
