//! Configured limits give typed errors, never a hang or a crash. (The connection limit is in
//! `t43_server_hardening.rs`.)

use anyhow::Result;
use dlock_proto::{
    ClientMessage, EventKind, Hello, Invalid, Limit, LockFlags, Mode, PROTOCOL_VERSION, Refusal,
    Reject, ServerMessage,
};
use dlock_tests::{RawClient, TestServer, connect_framed, recv_raw};
use futures_util::SinkExt;

fn hello(name: &str, ttl_ms: u64) -> ClientMessage {
    ClientMessage::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        client_name: name.into(),
        lease_ttl_ms: ttl_ms,
        resume: None,
    })
}

#[tokio::test]
async fn session_limit_refuses_the_next_hello() -> Result<()> {
    let mut config = TestServer::config();
    config.engine.max_sessions = 2;
    let server = TestServer::start_with(config).await?;
    let _a = RawClient::connect(server.addr(), "a").await?;
    let mut b = RawClient::connect(server.addr(), "b").await?;
    let mut framed = connect_framed(server.addr()).await?;
    framed.send(hello("c", 0)).await?;
    assert_eq!(
        recv_raw(&mut framed).await?,
        Some(ServerMessage::Refused(Refusal::Rejected(
            Reject::LimitExceeded(Limit::Sessions)
        )))
    );
    assert_eq!(recv_raw(&mut framed).await?, None);
    // A session that ends frees its slot.
    b.goodbye().await?;
    RawClient::connect(server.addr(), "d").await?;
    Ok(())
}

#[tokio::test]
async fn lease_outside_the_bounds_is_refused() -> Result<()> {
    let mut config = TestServer::config();
    config.engine.min_ttl_ms = 1000;
    config.engine.max_ttl_ms = 60_000;
    let server = TestServer::start_with(config).await?;
    for ttl in [10, 3_600_000] {
        let mut framed = connect_framed(server.addr()).await?;
        framed.send(hello("x", ttl)).await?;
        assert_eq!(
            recv_raw(&mut framed).await?,
            Some(ServerMessage::Refused(Refusal::Rejected(Reject::Invalid(
                Invalid::TtlOutOfRange {
                    ttl_ms: ttl,
                    min_ms: 1000,
                    max_ms: 60_000
                }
            ))))
        );
    }
    let a = RawClient::connect_with_ttl(server.addr(), "ok", 5000).await?;
    assert_eq!(a.welcome.lease_ttl_ms, 5000);
    Ok(())
}

#[tokio::test]
async fn locks_per_session_and_name_length_limits() -> Result<()> {
    let mut config = TestServer::config();
    config.engine.max_locks_per_session = 3;
    config.engine.max_name_len = 8;
    let server = TestServer::start_with(config).await?;
    let mut a = RawClient::connect(server.addr(), "a").await?;
    for i in 0..3 {
        a.acquire(&format!("n{i}"), Mode::NL).await?;
    }
    let r = a.lock("n3", Mode::NL, LockFlags::empty()).await?;
    assert_eq!(
        a.event_for(r).await?.kind,
        EventKind::Rejected {
            reason: Reject::LimitExceeded(Limit::LocksPerSession)
        }
    );
    let r = a.lock("123456789", Mode::NL, LockFlags::empty()).await?;
    assert_eq!(
        a.event_for(r).await?.kind,
        EventKind::Rejected {
            reason: Reject::Invalid(Invalid::NameTooLong { len: 9, max: 8 })
        }
    );
    a.ping().await?;
    Ok(())
}

#[tokio::test]
async fn replies_larger_than_a_frame_are_shrunk_or_refused() -> Result<()> {
    let mut config = TestServer::config();
    config.max_frame_len = 4096;
    let server = TestServer::start_with(config).await?;
    let mut a = RawClient::connect(server.addr(), "a").await?;
    // About 30 bytes per lock in a session reply: 300 locks do not fit in 4 KiB.
    for i in 0..300 {
        a.acquire(&format!("big/{i:03}"), Mode::NL).await?;
    }
    // A prefix query returns as many resources as fit in one frame, in name order.
    let id = a
        .send(dlock_proto::Request::Query(dlock_proto::Query::Prefix {
            prefix: b"big/".to_vec(),
            limit: 1000,
        }))
        .await?;
    match a.reply_for(id).await? {
        dlock_proto::Reply::Resources {
            resources: list, ..
        } => {
            assert!(
                !list.is_empty() && list.len() < 100,
                "{} resources",
                list.len()
            );
            assert_eq!(list[0].name, b"big/000");
        }
        other => panic!("expected resources, got {other:?}"),
    }
    // A session with more locks than fit is refused with a typed error.
    let id = a
        .send(dlock_proto::Request::Query(dlock_proto::Query::Session(
            a.session,
        )))
        .await?;
    let reply = a.reply_for(id).await?;
    assert!(
        matches!(
            reply,
            dlock_proto::Reply::Error(dlock_proto::RequestError::ReplyTooLarge)
        ),
        "expected ReplyTooLarge, got a reply of another kind"
    );
    a.ping().await?;
    Ok(())
}
