//! Configured limits give typed errors, never a hang or a crash. (The connection limit is in
//! `t43_server_hardening.rs`.)

use anyhow::Result;
use dlock_proto::{
    ClientMessage, EventKind, Hello, Invalid, Limit, LockFlags, Mode, PROTOCOL_VERSION, Refusal,
    Reject, ServerMessage,
};
use dlock_tests::{RawClient, TestServer, connect_framed, recv_raw};
use futures_util::SinkExt;

/// Every page of a prefix query asked with `limit`: each page's names, in order, and
/// whether it said there was more. Stops after `max_pages` (a pager that never ends).
async fn prefix_pages(
    a: &mut RawClient,
    prefix: &[u8],
    limit: u32,
    max_pages: usize,
) -> Result<Vec<(Vec<Vec<u8>>, bool)>> {
    let mut pages = Vec::new();
    let mut after = None;
    while pages.len() < max_pages {
        let query = dlock_proto::Query::Prefix {
            prefix: prefix.to_vec(),
            limit,
            after: after.clone(),
        };
        let id = a.send(dlock_proto::Request::Query(query)).await?;
        let dlock_proto::Reply::Resources {
            resources, more, ..
        } = a.reply_for(id).await?
        else {
            panic!("expected resources");
        };
        after = resources.last().map(|r| r.name.clone());
        pages.push((resources.into_iter().map(|r| r.name).collect(), more));
        if !more {
            break;
        }
    }
    Ok(pages)
}

fn hello(name: &str, ttl_ms: u64) -> ClientMessage {
    ClientMessage::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        client_name: name.into(),
        lease_ttl_ms: ttl_ms,
        resume: None,
        token: None,
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
    config.engine.max_name_len = 64;
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
    let r = a
        .lock(&"n".repeat(65), Mode::NL, LockFlags::empty())
        .await?;
    assert_eq!(
        a.event_for(r).await?.kind,
        EventKind::Rejected {
            reason: Reject::Invalid(Invalid::NameTooLong { len: 65, max: 64 })
        }
    );
    a.ping().await?;
    Ok(())
}

#[tokio::test]
async fn a_prefix_query_with_limit_zero_gets_pages_of_the_servers_cap() -> Result<()> {
    let mut config = TestServer::config();
    config.max_query_resources = 5;
    let server = TestServer::start_with(config).await?;
    let mut a = RawClient::connect(server.addr(), "a").await?;
    for i in 0..8 {
        a.acquire(&format!("zero/{i}"), Mode::NL).await?;
    }
    let pages = prefix_pages(&mut a, b"zero/", 0, 3).await?;
    let shape: Vec<(usize, bool)> = pages.iter().map(|(n, more)| (n.len(), *more)).collect();
    assert_eq!(shape, [(5, true), (3, false)]);
    Ok(())
}

#[tokio::test]
async fn answers_larger_than_a_frame_come_in_pages() -> Result<()> {
    let mut config = TestServer::config();
    config.max_frame_len = 4096;
    let server = TestServer::start_with(config).await?;
    let mut a = RawClient::connect(server.addr(), "a").await?;
    // About 30 bytes per lock in a session reply: 300 locks do not fit in 4 KiB.
    for i in 0..300 {
        a.acquire(&format!("big/{i:03}"), Mode::NL).await?;
    }
    let want: Vec<Vec<u8>> = (0..300)
        .map(|i| format!("big/{i:03}").into_bytes())
        .collect();
    // Prefix pages: each fits a frame, in name order, and together they are the whole answer.
    let pages = prefix_pages(&mut a, b"big/", 1000, 300).await?;
    for (page, _) in &pages {
        assert!(!page.is_empty() && page.len() < 300);
    }
    let names: Vec<Vec<u8>> = pages.iter().flat_map(|(n, _)| n.clone()).collect();
    assert!(pages.len() > 1, "300 resources do not fit one 4 KiB frame");
    assert_eq!(names, want);
    // Session pages likewise, in lock id order.
    let (mut locks, mut after, mut pages) = (Vec::new(), None, 0);
    loop {
        let query = dlock_proto::Query::Session {
            session: a.session,
            after,
        };
        let id = a.send(dlock_proto::Request::Query(query)).await?;
        let dlock_proto::Reply::Session {
            session: Some(info),
            more,
            ..
        } = a.reply_for(id).await?
        else {
            panic!("expected the session");
        };
        pages += 1;
        after = info.locks.last().map(|l| l.lock);
        locks.extend(info.locks);
        if !more {
            break;
        }
    }
    assert!(pages > 1);
    assert_eq!(
        locks.iter().map(|l| l.resource.clone()).collect::<Vec<_>>(),
        want
    );
    assert!(locks.windows(2).all(|w| w[0].lock < w[1].lock));
    // The SDK asks for every page itself.
    let client = dlock_client::Client::connect(server.addr().to_string()).await?;
    let all = client.query_prefix("big/", 1000).await?;
    assert_eq!(all.into_iter().map(|r| r.name).collect::<Vec<_>>(), want);
    assert_eq!(client.query_prefix("big/", 7).await?.len(), 7);
    let info = client.query_session(a.session).await?.expect("a is alive");
    assert_eq!(info.locks.len(), 300);
    a.ping().await?;
    Ok(())
}
