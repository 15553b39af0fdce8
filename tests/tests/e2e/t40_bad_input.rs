//! Bad input harms nobody else: garbage, an oversized length prefix, a truncated frame, a
//! malformed body, a wrong protocol version, a missing Hello. Each offender gets a typed
//! error and is closed; a second client keeps its lock and keeps being served.

use std::time::Duration;

use anyhow::Result;
use bytes::BufMut;
use dlock_proto::{
    ClientMessage, FencingToken, Hello, LockFlags, LockId, Mode, PROTOCOL_VERSION, ProtocolError,
    Refusal, Request, RequestId, ServerMessage,
};
use dlock_tests::{RawClient, TestServer, recv_raw};
use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const MAX_FRAME: usize = 4096;

async fn server() -> Result<TestServer> {
    let mut config = TestServer::config();
    config.handshake_timeout = Duration::from_millis(300);
    config.max_frame_len = MAX_FRAME;
    TestServer::start_with(config).await
}

/// A well-behaved client holding a lock.
async fn witness(server: &TestServer) -> Result<(RawClient, LockId, FencingToken)> {
    let mut w = RawClient::connect(server.addr(), "witness").await?;
    let (lock, token) = w.acquire("held", Mode::EX).await?;
    Ok((w, lock, token))
}

/// The witness is still served and still holds its lock; a newcomer is served too.
async fn still_serving(server: &TestServer, w: &mut RawClient, lock: LockId) -> Result<()> {
    w.ping().await?;
    let info = w
        .query_resource("held")
        .await?
        .expect("resource still exists");
    assert_eq!(info.granted.len(), 1);
    assert_eq!(info.granted[0].lock, lock);
    let mut n = RawClient::connect(server.addr(), "newcomer").await?;
    let r = n.lock("held", Mode::EX, LockFlags::NOQUEUE).await?;
    assert_eq!(
        n.event_for(r).await?.kind,
        dlock_proto::EventKind::NotQueued
    );
    n.acquire("other", Mode::EX).await?;
    Ok(())
}

/// Reads raw frames from a plain socket until the server closes it; returns the messages.
async fn read_until_closed(stream: TcpStream) -> Result<Vec<ServerMessage>> {
    let mut framed = tokio_util::codec::Framed::new(
        stream,
        dlock_proto::FrameCodec::<ServerMessage, ClientMessage>::default(),
    );
    let mut out = Vec::new();
    while let Some(m) = recv_raw(&mut framed).await? {
        out.push(m);
    }
    Ok(out)
}

#[tokio::test]
async fn garbage_bytes() -> Result<()> {
    let server = server().await?;
    let (mut w, lock, _) = witness(&server).await?;
    let mut s = TcpStream::connect(server.addr()).await?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    // "GET " read as a length is far over the limit.
    let msgs = read_until_closed(s).await?;
    assert!(
        matches!(
            msgs.as_slice(),
            [ServerMessage::ProtocolError(
                ProtocolError::FrameTooLarge { .. }
            )]
        ),
        "{msgs:?}"
    );
    still_serving(&server, &mut w, lock).await
}

#[tokio::test]
async fn oversized_length_prefix() -> Result<()> {
    let server = server().await?;
    let (mut w, lock, _) = witness(&server).await?;
    let mut s = TcpStream::connect(server.addr()).await?;
    s.write_all(&((MAX_FRAME as u32 + 1).to_be_bytes())).await?;
    let msgs = read_until_closed(s).await?;
    assert_eq!(
        msgs,
        vec![ServerMessage::ProtocolError(ProtocolError::FrameTooLarge {
            len: MAX_FRAME as u64 + 1,
            max: MAX_FRAME as u64,
        })]
    );
    still_serving(&server, &mut w, lock).await
}

#[tokio::test]
async fn oversized_frame_from_an_established_session() -> Result<()> {
    let server = server().await?;
    let (mut w, lock, _) = witness(&server).await?;
    let mut bad = RawClient::connect(server.addr(), "bad").await?;
    let (bad_lock, _) = bad.acquire("bad-held", Mode::EX).await?;
    let mut raw = bytes::BytesMut::new();
    raw.put_u32(10 * MAX_FRAME as u32);
    raw.put_slice(&[0u8; 64]);
    bad.framed.get_mut().write_all(&raw).await?;
    let mut got = Vec::new();
    while let Some(m) = bad.recv().await? {
        got.push(m);
    }
    assert!(
        got.iter().any(|m| matches!(
            m,
            ServerMessage::ProtocolError(ProtocolError::FrameTooLarge { .. })
        )),
        "{got:?}"
    );
    // The offender's session lives on until its lease runs out (R51): its lock still holds.
    let info = w.query_resource("bad-held").await?.expect("still held");
    assert_eq!(info.granted[0].lock, bad_lock);
    still_serving(&server, &mut w, lock).await
}

#[tokio::test]
async fn truncated_frame_then_close() -> Result<()> {
    let server = server().await?;
    let (mut w, lock, _) = witness(&server).await?;
    let mut s = TcpStream::connect(server.addr()).await?;
    s.write_all(&100u32.to_be_bytes()).await?;
    s.write_all(&[1, 2, 3, 4, 5]).await?;
    s.shutdown().await?;
    let msgs = read_until_closed(s).await?;
    assert!(msgs.is_empty(), "{msgs:?}");
    still_serving(&server, &mut w, lock).await
}

#[tokio::test]
async fn truncated_frame_left_hanging_times_out() -> Result<()> {
    let server = server().await?;
    let (mut w, lock, _) = witness(&server).await?;
    let mut s = TcpStream::connect(server.addr()).await?;
    s.write_all(&100u32.to_be_bytes()).await?;
    s.write_all(&[1, 2, 3]).await?;
    let msgs = read_until_closed(s).await?;
    assert_eq!(
        msgs,
        vec![ServerMessage::ProtocolError(
            ProtocolError::HandshakeTimeout
        )]
    );
    still_serving(&server, &mut w, lock).await
}

#[tokio::test]
async fn unknown_message_is_malformed() -> Result<()> {
    let server = server().await?;
    let (mut w, lock, _) = witness(&server).await?;
    let mut s = TcpStream::connect(server.addr()).await?;
    // Length 3, variant index 77 (no such ClientMessage).
    s.write_all(&[0, 0, 0, 3, 77, 1, 2]).await?;
    let msgs = read_until_closed(s).await?;
    assert!(
        matches!(
            msgs.as_slice(),
            [ServerMessage::ProtocolError(ProtocolError::Malformed(_))]
        ),
        "{msgs:?}"
    );
    still_serving(&server, &mut w, lock).await
}

#[tokio::test]
async fn malformed_body_after_the_handshake() -> Result<()> {
    let server = server().await?;
    let (mut w, lock, _) = witness(&server).await?;
    let mut bad = RawClient::connect(server.addr(), "bad").await?;
    // A Request frame (variant 2) whose body stops half-way.
    bad.framed.get_mut().write_all(&[0, 0, 0, 2, 2, 1]).await?;
    let mut got = Vec::new();
    while let Some(m) = bad.recv().await? {
        got.push(m);
    }
    assert!(
        matches!(
            got.as_slice(),
            [ServerMessage::ProtocolError(ProtocolError::Malformed(_))]
        ),
        "{got:?}"
    );
    still_serving(&server, &mut w, lock).await
}

#[tokio::test]
async fn wrong_protocol_version_is_refused() -> Result<()> {
    let server = server().await?;
    let (mut w, lock, _) = witness(&server).await?;
    let mut framed = dlock_tests::connect_framed(server.addr()).await?;
    framed
        .send(ClientMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION + 41,
            client_name: "future".into(),
            lease_ttl_ms: 0,
            resume: None,
            token: None,
        }))
        .await?;
    assert_eq!(
        recv_raw(&mut framed).await?,
        Some(ServerMessage::Refused(Refusal::VersionMismatch {
            server: PROTOCOL_VERSION,
            client: PROTOCOL_VERSION + 41,
        }))
    );
    assert_eq!(
        recv_raw(&mut framed).await?,
        None,
        "closed after the refusal"
    );
    still_serving(&server, &mut w, lock).await
}

#[tokio::test]
async fn no_hello_times_out() -> Result<()> {
    let server = server().await?;
    let (mut w, lock, _) = witness(&server).await?;
    let s = TcpStream::connect(server.addr()).await?;
    // Bounded by the 300 ms handshake timeout (and the helper's 10 s limit).
    let msgs = read_until_closed(s).await?;
    assert_eq!(
        msgs,
        vec![ServerMessage::ProtocolError(
            ProtocolError::HandshakeTimeout
        )]
    );
    still_serving(&server, &mut w, lock).await
}

#[tokio::test]
async fn request_before_hello_is_refused() -> Result<()> {
    let server = server().await?;
    let (mut w, lock, _) = witness(&server).await?;
    let mut framed = dlock_tests::connect_framed(server.addr()).await?;
    framed
        .send(ClientMessage::Request {
            id: RequestId(1),
            body: Request::Ping,
        })
        .await?;
    assert_eq!(
        recv_raw(&mut framed).await?,
        Some(ServerMessage::Refused(Refusal::ExpectedHello))
    );
    assert_eq!(recv_raw(&mut framed).await?, None);
    still_serving(&server, &mut w, lock).await
}

#[tokio::test]
async fn invalid_requests_are_rejected_not_fatal() -> Result<()> {
    let server = server().await?;
    let (mut w, lock, _) = witness(&server).await?;
    let mut c = RawClient::connect(server.addr(), "c").await?;
    // Empty name, unknown flag bits, unsupported flag: typed rejections, connection stays.
    let r1 = c.lock("", Mode::EX, LockFlags::empty()).await?;
    let r2 = c
        .lock("x", Mode::EX, LockFlags::from_bits_retain(1 << 30))
        .await?;
    let r3 = c.lock("x", Mode::EX, LockFlags::EXPEDITE).await?;
    for r in [r1, r2, r3] {
        assert!(matches!(
            c.event_for(r).await?.kind,
            dlock_proto::EventKind::Rejected {
                reason: dlock_proto::Reject::Invalid(_)
            }
        ));
    }
    c.ping().await?;
    still_serving(&server, &mut w, lock).await
}
