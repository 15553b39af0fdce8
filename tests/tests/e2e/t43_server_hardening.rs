//! Server hardening: client request ids never collide with the server's own requests, a
//! connection over the limit gets a typed refusal and a closed socket, a resumed session's
//! `Welcome` carries what the engine says about the session, and a connection that pipelines
//! a thousand requests gives way to another before it has had them all handled.

use anyhow::{Result, bail};
use dlock_proto::{
    ClientMessage, EventKind, Hello, Limit, LockFlags, Mode, PROTOCOL_VERSION, Refusal, Reject,
    Reply, Request, RequestId, ServerMessage,
};
use dlock_tests::{RawClient, TestServer, connect_framed, connect_framed_from, recv_raw};
use futures_util::SinkExt;

fn hello(name: &str) -> ClientMessage {
    ClientMessage::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        client_name: name.into(),
        lease_ttl_ms: 0,
        resume: None,
        token: None,
    })
}

#[tokio::test]
async fn request_ids_at_both_ends_of_the_range_get_their_answers() -> Result<()> {
    let server = TestServer::start().await?;
    let mut a = RawClient::connect(server.addr(), "a").await?;
    // The smallest id.
    a.send_with_id(RequestId(0), Request::Renew).await?;
    let renewed = a.event_for(RequestId(0)).await?;
    assert!(
        matches!(renewed.kind, EventKind::Renewed { .. }),
        "{renewed:?}"
    );
    // The renewals the server makes for an Ack and a Ping reach nobody: the next message
    // after the ping is its pong.
    a.ack().await?;
    a.send_with_id(RequestId(1), Request::Ping).await?;
    match a.recv().await? {
        Some(ServerMessage::Reply {
            id,
            body: Reply::Pong { .. },
        }) => assert_eq!(id, RequestId(1)),
        other => bail!("expected the pong, got {other:?}"),
    }
    // The largest ids.
    let lock = Request::Lock(dlock_proto::LockRequest {
        resource: b"edge".to_vec(),
        mode: Mode::EX,
        flags: LockFlags::empty(),
        value: None,
        timeout_ms: None,
    });
    a.send_with_id(RequestId(u64::MAX - 1), lock).await?;
    let granted = a.event_for(RequestId(u64::MAX - 1)).await?;
    assert!(
        matches!(granted.kind, EventKind::Granted { .. }),
        "{granted:?}"
    );
    a.send_with_id(RequestId(u64::MAX), Request::Renew).await?;
    let renewed = a.event_for(RequestId(u64::MAX)).await?;
    assert!(
        matches!(renewed.kind, EventKind::Renewed { .. }),
        "{renewed:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_connection_over_the_limit_is_refused_and_closed() -> Result<()> {
    let mut config = TestServer::config();
    config.max_connections = 1;
    let server = TestServer::start_with(config).await?;
    let mut a = RawClient::connect(server.addr(), "a").await?;
    let mut b = connect_framed(server.addr()).await?;
    b.send(hello("b")).await?;
    match recv_raw(&mut b).await? {
        Some(ServerMessage::Refused(Refusal::TooManyConnections)) => {}
        other => bail!("expected Refused(TooManyConnections), got {other:?}"),
    }
    assert!(
        recv_raw(&mut b).await?.is_none(),
        "the refused connection stays open"
    );
    // The connection within the limit is served as before.
    a.ping().await?;
    a.goodbye().await?;
    assert!(a.recv().await?.is_none(), "connection open after Goodbye");
    drop(a);
    // Its place frees up once the server has finished with it; until then a new connection
    // is still refused, with the same typed refusal.
    for _ in 0..200 {
        let mut c = connect_framed(server.addr()).await?;
        c.send(hello("c")).await?;
        match recv_raw(&mut c).await? {
            Some(ServerMessage::Welcome(w)) => {
                assert!(!w.resumed);
                return Ok(());
            }
            Some(ServerMessage::Refused(Refusal::TooManyConnections)) => continue,
            other => bail!("expected Welcome or TooManyConnections, got {other:?}"),
        }
    }
    bail!("the closed connection's place was never freed")
}

#[tokio::test]
async fn a_resumed_session_gets_its_lease_and_secret_back() -> Result<()> {
    let server = TestServer::start().await?;
    // Not the server's default lease, so that the Welcome must say the session's own.
    let mut a = RawClient::connect_with_ttl(server.addr(), "a", 4_000).await?;
    assert_eq!(a.welcome.lease_ttl_ms, 4_000);
    a.acquire("kept", Mode::PR).await?;
    let welcome = a.resume().await?;
    assert!(welcome.resumed);
    assert_eq!(welcome.session, a.session);
    assert_eq!(welcome.secret, a.secret);
    assert_eq!(welcome.lease_ttl_ms, 4_000);
    a.ping().await?;
    Ok(())
}

#[tokio::test]
async fn a_frame_started_and_never_finished_closes_the_connection_not_the_session() -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut config = TestServer::config();
    config.frame_timeout = std::time::Duration::from_millis(200);
    let server = TestServer::start_with(config).await?;
    let mut a = RawClient::connect(server.addr(), "a").await?;
    a.acquire("kept", Mode::EX).await?;
    // Another connection says hello, then sends three bytes of a length prefix and stops.
    let mut slow = connect_framed(server.addr()).await?;
    slow.send(hello("slow")).await?;
    assert!(matches!(
        recv_raw(&mut slow).await?,
        Some(ServerMessage::Welcome(_))
    ));
    slow.get_mut().write_all(&[0, 0, 0]).await?;
    assert_eq!(
        recv_raw(&mut slow).await?,
        Some(ServerMessage::ProtocolError(
            dlock_proto::ProtocolError::FrameTimeout
        ))
    );
    assert_eq!(recv_raw(&mut slow).await?, None, "closed after the error");
    // A frame that arrives in pieces within the timeout is fine, and so is the rest of the
    // server: the first session still holds its lock and its connection works.
    let ping = dlock_proto::codec::encode_body(&ClientMessage::Request {
        id: RequestId(100),
        body: Request::Ping,
    })?;
    let mut frame = u32::try_from(ping.len())?.to_be_bytes().to_vec();
    frame.extend_from_slice(&ping);
    let (head, tail) = frame.split_at(2);
    let mut pieces = connect_framed(server.addr()).await?;
    pieces.send(hello("pieces")).await?;
    assert!(matches!(
        recv_raw(&mut pieces).await?,
        Some(ServerMessage::Welcome(_))
    ));
    pieces.get_mut().write_all(head).await?;
    pieces.get_mut().flush().await?;
    pieces.get_mut().write_all(tail).await?;
    assert!(matches!(
        recv_raw(&mut pieces).await?,
        Some(ServerMessage::Reply {
            id: RequestId(100),
            body: Reply::Pong { .. }
        })
    ));
    a.ping().await?;
    let held = a.query_resource("kept").await?.expect("still held");
    assert_eq!(held.granted.len(), 1);
    Ok(())
}

#[tokio::test]
async fn pings_acks_and_queries_by_the_thousand_do_not_each_renew() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("audit.jsonl");
    let mut config = TestServer::config();
    config.audit_log = Some(dlock_server::audit::AuditConfig::new(&path));
    let server = TestServer::start_with(config).await?;
    let mut a = RawClient::connect(server.addr(), "a").await?;
    for _ in 0..1000 {
        a.ping().await?;
        a.ack().await?;
    }
    a.query_resource("nothing").await?;
    // An explicit renewal is always applied.
    let id = a.send(Request::Renew).await?;
    assert!(matches!(
        a.event_for(id).await?.kind,
        EventKind::Renewed { .. }
    ));
    let renewals = std::fs::read_to_string(&path)?
        .lines()
        .filter(|l| l.contains("\"Renew\""))
        .count();
    // The explicit one, and at most one implicit renewal per eighth of the 10 s lease the
    // test can have lasted.
    assert!((1..=10).contains(&renewals), "{renewals} renewals written");
    Ok(())
}

#[tokio::test]
async fn one_address_cannot_take_every_session() -> Result<()> {
    let mut config = TestServer::config();
    config.max_sessions_per_peer = 3;
    let server = TestServer::start_with(config).await?;
    let here: std::net::IpAddr = [127, 0, 0, 1].into();
    let elsewhere: std::net::IpAddr = [127, 0, 0, 2].into();
    // Three sessions from one address; two of them drop their connection (their sessions
    // live on until their leases run out, and still count).
    let mut kept = RawClient::connect(server.addr(), "kept").await?;
    for name in ["dropped-1", "dropped-2"] {
        drop(RawClient::connect(server.addr(), name).await?);
    }
    let mut fourth = connect_framed_from(here, server.addr()).await?;
    fourth.send(hello("fourth")).await?;
    assert_eq!(
        recv_raw(&mut fourth).await?,
        Some(ServerMessage::Refused(Refusal::TooManySessionsFromPeer {
            limit: 3
        }))
    );
    // Another address is served.
    let mut other = connect_framed_from(elsewhere, server.addr()).await?;
    other.send(hello("other")).await?;
    assert!(matches!(
        recv_raw(&mut other).await?,
        Some(ServerMessage::Welcome(_))
    ));
    // A session that ends gives its place back.
    kept.goodbye().await?;
    let mut fifth = connect_framed_from(here, server.addr()).await?;
    fifth.send(hello("fifth")).await?;
    assert!(matches!(
        recv_raw(&mut fifth).await?,
        Some(ServerMessage::Welcome(_))
    ));
    Ok(())
}

#[tokio::test]
async fn one_address_cannot_take_every_lock() -> Result<()> {
    let mut config = TestServer::config();
    config.max_locks_per_peer = Some(3);
    let server = TestServer::start_with(config).await?;
    let elsewhere: std::net::IpAddr = [127, 0, 0, 2].into();
    let per_peer = Reject::LimitExceeded(Limit::LocksPerPeer);
    // Two sessions of one address: a granted lock and a queued request count alike.
    let mut a = RawClient::connect(server.addr(), "a").await?;
    let mut b = RawClient::connect(server.addr(), "b").await?;
    let (held, _) = a.acquire("t43/x", Mode::EX).await?;
    let (_, _) = a.acquire("t43/y", Mode::PR).await?;
    let queued = b.lock("t43/x", Mode::EX, LockFlags::empty()).await?;
    assert_eq!(b.event_for(queued).await?.kind, EventKind::Queued);
    // The fourth lock of the address is refused, whichever session asks.
    for c in [&mut a, &mut b] {
        let id = c.lock("t43/z", Mode::NL, LockFlags::empty()).await?;
        let event = c.event_for(id).await?;
        assert_eq!(
            event.kind,
            EventKind::Rejected {
                reason: per_peer.clone()
            }
        );
        assert_eq!(event.lock, None);
    }
    // R55: an invalid request is refused as INVALID, not as over the limit.
    let id = a.lock("", Mode::NL, LockFlags::empty()).await?;
    assert_eq!(
        a.event_for(id).await?.kind,
        EventKind::Rejected {
            reason: Reject::Invalid(dlock_core::Invalid::EmptyName)
        }
    );
    // Another address is not affected.
    let mut other = RawClient::connect_from(elsewhere, server.addr(), "other").await?;
    other.acquire("t43/z", Mode::NL).await?;
    // A released lock gives its place back (b's queued request, granted by the unlock, still
    // counts once).
    a.release(held).await?;
    let granted = b.event_for(queued).await?;
    assert!(
        matches!(granted.kind, EventKind::Granted { .. }),
        "{granted:?}"
    );
    b.acquire("t43/z", Mode::NL).await?;
    let id = b.lock("t43/w", Mode::NL, LockFlags::empty()).await?;
    assert_eq!(
        b.event_for(id).await?.kind,
        EventKind::Rejected {
            reason: per_peer.clone()
        }
    );
    // So does a session that ends, with all its locks.
    a.goodbye().await?;
    b.acquire("t43/w", Mode::NL).await?;
    Ok(())
}

/// A connection that pipelines many requests does not keep its worker until it has handled
/// them all: a request handled in the connection's own task costs a unit of tokio's budget,
/// so after about a hundred the task gives way. On one thread (this test's runtime runs the
/// server too), a query sent just after a thousand pipelined locks is answered before the
/// last of them is taken.
#[tokio::test(flavor = "current_thread")]
async fn a_pipelining_connection_gives_way_to_another() -> Result<()> {
    let server = TestServer::start().await?;
    let mut flood = RawClient::connect(server.addr(), "flood").await?;
    let mut other = RawClient::connect(server.addr(), "other").await?;
    for i in 0..1000 {
        flood.feed_lock_ex(format!("flood/{i:04}")).await?;
    }
    flood.framed.flush().await?;
    let last = other.query_resource("flood/0999").await?;
    assert!(
        last.is_none(),
        "the query waited for the whole flood: {last:?}"
    );
    // Every lock of the flood is taken in the end.
    let mut granted = 0;
    while granted < 1000 {
        match flood.recv().await? {
            Some(ServerMessage::Event { event, .. })
                if matches!(event.kind, EventKind::Granted { .. }) =>
            {
                granted += 1;
            }
            Some(_) => {}
            None => bail!("the flood's connection closed after {granted} grants"),
        }
    }
    assert!(other.query_resource("flood/0999").await?.is_some());
    Ok(())
}
