//! Leases and resume: a silent client's lease runs out and its locks go to a waiter; a
//! dropped connection keeps the session, which resumes with its locks and the missed events.

use anyhow::Result;
use dlock_proto::LockRequest;
use dlock_proto::{
    ClientMessage, EventKind, Hello, LockFlags, Mode, PROTOCOL_VERSION, ProtocolError, Refusal,
    Reply, Request, RequestError, RequestId, Resume, ServerMessage,
};
use dlock_tests::{RawClient, TestServer, connect_framed, recv_raw};
use futures_util::SinkExt;

#[tokio::test]
async fn silent_clients_lease_expires_and_its_lock_goes_to_the_waiter() -> Result<()> {
    let server = TestServer::start().await?;
    // A short lease (the engine's minimum is 100 ms); the client then sends nothing.
    let mut silent = RawClient::connect_with_ttl(server.addr(), "silent", 300).await?;
    let mut waiter = RawClient::connect(server.addr(), "waiter").await?;
    let (_, t1) = silent.acquire("lease", Mode::EX).await?;

    let r = waiter.lock("lease", Mode::EX, LockFlags::empty()).await?;
    assert_eq!(waiter.event_for(r).await?.kind, EventKind::Queued);

    // Bounded wait for the push (RawClient waits at most 10 s); no sleeping.
    let ev = waiter.event_for(r).await?;
    match ev.kind {
        EventKind::Granted { token, .. } => assert!(token > t1),
        other => panic!("expected the waiter to be granted, got {other:?}"),
    }
    // The silent client is told and its connection closed.
    let ev = silent
        .event_where("session expiry", |e| e.kind == EventKind::SessionExpired)
        .await?;
    assert_eq!(ev.session, silent.session);
    // Then the connection is closed (each recv is bounded).
    while silent.recv().await?.is_some() {}

    // The expired session cannot be resumed.
    let mut framed = connect_framed(server.addr()).await?;
    framed
        .send(ClientMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: String::new(),
            lease_ttl_ms: 0,
            resume: Some(Resume {
                session: silent.session,
                secret: silent.secret,
                last_seq: silent.last_seq,
            }),
            token: None,
        }))
        .await?;
    assert_eq!(
        recv_raw(&mut framed).await?,
        Some(ServerMessage::Refused(Refusal::UnknownSession))
    );
    Ok(())
}

#[tokio::test]
async fn renewing_client_keeps_its_lease() -> Result<()> {
    let server = TestServer::start().await?;
    let mut a = RawClient::connect_with_ttl(server.addr(), "a", 300).await?;
    let mut b = RawClient::connect(server.addr(), "b").await?;
    let (_, _) = a.acquire("renew", Mode::EX).await?;
    let r = b.lock("renew", Mode::EX, LockFlags::empty()).await?;
    assert_eq!(b.event_for(r).await?.kind, EventKind::Queued);
    // Renew (each round trip confirms the renewal) until well past several TTLs.
    let start = tokio::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_millis(1000) {
        let id = a.send(Request::Renew).await?;
        assert!(matches!(
            a.event_for(id).await?.kind,
            EventKind::Renewed { ttl_ms: 300 }
        ));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Still a's: b is still queued.
    let info = b.query_resource("renew").await?.expect("exists");
    assert_eq!(info.granted[0].session, a.session);
    assert_eq!(info.waiting[0].session, b.session);
    Ok(())
}

#[tokio::test]
async fn resume_after_a_dropped_connection_keeps_locks_and_replays_missed_events() -> Result<()> {
    let server = TestServer::start().await?;
    let mut a = RawClient::connect(server.addr(), "a").await?;
    let mut b = RawClient::connect(server.addr(), "b").await?;
    let (la, _) = a.acquire("resume", Mode::EX).await?;
    let seen = a.last_seq;

    // Drop a's connection (it has read everything, so this is a clean close).
    let (stream_a, ..) = {
        let parts = std::mem::replace(&mut a.framed, connect_framed(server.addr()).await?);
        (parts.into_inner(),)
    };
    drop(stream_a);

    // While a is away: b queues behind a's lock (R51: the lock keeps blocking), which
    // generates a blocking notification for a that a cannot receive now.
    let rb = b.lock("resume", Mode::EX, LockFlags::empty()).await?;
    assert_eq!(b.event_for(rb).await?.kind, EventKind::Queued);
    let info = b.query_resource("resume").await?.expect("exists");
    assert_eq!(
        info.granted[0].lock, la,
        "the disconnected session keeps its lock"
    );

    // a resumes and gets the missed event replayed.
    let welcome = a.resume().await?;
    assert!(welcome.resumed);
    assert_eq!(welcome.session, a.session);
    let ev = a
        .event_where("the replayed blocking notification", |e| {
            matches!(e.kind, EventKind::Blocking { .. })
        })
        .await?;
    assert_eq!(ev.lock, Some(la));
    assert!(a.last_seq > seen);

    // The lock is still a's: unlocking it works and passes it to b.
    a.release(la).await?;
    assert!(matches!(
        b.event_for(rb).await?.kind,
        EventKind::Granted { .. }
    ));
    Ok(())
}

#[tokio::test]
async fn retransmitted_request_is_applied_once() -> Result<()> {
    let server = TestServer::start().await?;
    let mut a = RawClient::connect(server.addr(), "a").await?;
    let seen = a.last_seq;
    let r = a.lock("once", Mode::PR, LockFlags::empty()).await?;
    // Wait until it is applied, then act as if the reply was lost: resume from before it
    // and send the same request id again.
    let first = a.event_for(r).await?;
    assert!(matches!(first.kind, EventKind::Granted { .. }));
    a.last_seq = seen;
    a.resume().await?;
    a.send_with_id(
        r,
        Request::Lock(LockRequest {
            resource: b"once".to_vec(),
            mode: Mode::PR,
            flags: LockFlags::empty(),
            value: None,
            timeout_ms: None,
        }),
    )
    .await?;
    // The replay carries the original grant ...
    let replayed = a.event_for(r).await?;
    assert_eq!(replayed, first);
    // ... and nothing else comes for that id: a ping round trip flushes what is queued.
    a.ping().await?;
    let again = a
        .set_aside()
        .iter()
        .any(|m| matches!(m, ServerMessage::Event { event, .. } if event.request == Some(r)));
    assert!(!again, "retransmission applied twice: {:?}", a.set_aside());
    let info = a.query_resource("once").await?.expect("exists");
    assert_eq!(info.granted.len(), 1, "one lock, not two");
    Ok(())
}

fn lock_ex(resource: &str) -> Request {
    Request::Lock(LockRequest::new(resource, Mode::EX))
}

#[tokio::test]
async fn a_request_id_reused_on_one_connection_is_refused_not_dropped() -> Result<()> {
    let server = TestServer::start().await?;
    let mut a = RawClient::connect(server.addr(), "a").await?;
    let five = RequestId(5);
    a.send_with_id(five, lock_ex("reuse/a")).await?;
    assert!(matches!(
        a.event_for(five).await?.kind,
        EventKind::Granted { .. }
    ));
    // The same id again, and an id going backwards, on the same connection: each answered
    // with a typed error, and neither applied.
    a.send_with_id(five, lock_ex("reuse/b")).await?;
    assert_eq!(
        a.reply_for(five).await?,
        Reply::Error(RequestError::DuplicateRequestId(five))
    );
    let three = RequestId(3);
    a.send_with_id(three, lock_ex("reuse/c")).await?;
    assert_eq!(
        a.reply_for(three).await?,
        Reply::Error(RequestError::DuplicateRequestId(three))
    );
    assert!(a.query_resource("reuse/b").await?.is_none());
    assert!(a.query_resource("reuse/c").await?.is_none());

    // A retransmission after a resume is still one: answered from the replay, not applied
    // again, and no error.
    let seen = a.last_seq;
    a.last_seq = 0;
    a.resume().await?;
    a.send_with_id(five, lock_ex("reuse/a")).await?;
    assert!(matches!(
        a.event_for(five).await?.kind,
        EventKind::Granted { .. }
    ));
    a.ping().await?;
    let refused = a
        .set_aside()
        .iter()
        .any(|m| matches!(m, ServerMessage::Reply { id, body: Reply::Error(_) } if *id == five));
    assert!(!refused, "a retransmission refused: {:?}", a.set_aside());
    let info = a.query_resource("reuse/a").await?.expect("exists");
    assert_eq!(info.granted.len(), 1, "one lock, not two");
    // Sent a second time on the new connection, the same id is a reuse again.
    a.last_seq = a.last_seq.max(seen);
    a.send_with_id(five, lock_ex("reuse/a")).await?;
    assert_eq!(
        a.reply_for(five).await?,
        Reply::Error(RequestError::DuplicateRequestId(five))
    );
    let info = a.query_resource("reuse/a").await?.expect("exists");
    assert_eq!(info.granted.len(), 1, "one lock, not two");
    Ok(())
}

#[tokio::test]
async fn a_second_connection_supersedes_the_first() -> Result<()> {
    let server = TestServer::start().await?;
    let mut a = RawClient::connect(server.addr(), "a").await?;
    let (la, _) = a.acquire("super", Mode::EX).await?;
    // Resume on a new connection while the old one is still open.
    let mut old = std::mem::replace(&mut a.framed, connect_framed(server.addr()).await?);
    a.resume().await?;
    assert_eq!(
        recv_raw(&mut old).await?,
        Some(ServerMessage::ProtocolError(ProtocolError::Superseded))
    );
    assert_eq!(recv_raw(&mut old).await?, None);
    // The new connection owns the session and its lock.
    a.release(la).await?;
    Ok(())
}

#[tokio::test]
async fn resume_with_a_wrong_secret_is_refused() -> Result<()> {
    let server = TestServer::start().await?;
    let a = RawClient::connect(server.addr(), "a").await?;
    let mut framed = connect_framed(server.addr()).await?;
    framed
        .send(ClientMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: String::new(),
            lease_ttl_ms: 0,
            resume: Some(Resume {
                session: a.session,
                secret: a.secret ^ 1,
                last_seq: 0,
            }),
            token: None,
        }))
        .await?;
    assert_eq!(
        recv_raw(&mut framed).await?,
        Some(ServerMessage::Refused(Refusal::UnknownSession))
    );
    assert_eq!(recv_raw(&mut framed).await?, None);
    Ok(())
}

/// The same expiry under `tokio::time::pause()`: the server reads its clock from
/// `tokio::time::Instant`, so virtual time drives leases and the test takes no real time.
#[tokio::test(start_paused = true)]
async fn lease_expiry_follows_paused_time() -> Result<()> {
    let server = TestServer::start().await?;
    // 2 s lease; the helpers' waits are 10 s of (virtual) time, so expiry comes first.
    let mut silent = RawClient::connect_with_ttl(server.addr(), "silent", 2_000).await?;
    let mut waiter = RawClient::connect_with_ttl(server.addr(), "waiter", 60_000).await?;
    let (_, t1) = silent.acquire("paused", Mode::EX).await?;
    let r = waiter.lock("paused", Mode::EX, LockFlags::empty()).await?;
    assert_eq!(waiter.event_for(r).await?.kind, EventKind::Queued);
    let before = tokio::time::Instant::now();
    match waiter.event_for(r).await?.kind {
        EventKind::Granted { token, .. } => assert!(token > t1),
        other => panic!("expected the waiter to be granted, got {other:?}"),
    }
    // Granted once the 2 s lease ran out in virtual time, not before.
    assert!(before.elapsed() >= std::time::Duration::from_millis(1_900));
    Ok(())
}
