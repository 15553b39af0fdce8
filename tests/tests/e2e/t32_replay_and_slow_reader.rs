//! Bounded per-session buffers: acknowledged events are forgotten, a session that never
//! acknowledges is closed as expired when its replay buffer overflows, and a client that does
//! not read is disconnected as a slow reader while its session lives on.

use anyhow::Result;
use dlock_proto::{EventKind, LockFlags, Mode, Query, Request, ServerMessage};
use dlock_tests::{RawClient, TestServer};

#[tokio::test]
async fn acknowledging_client_can_do_more_than_the_replay_capacity() -> Result<()> {
    let mut config = TestServer::config();
    config.replay_capacity = 8;
    let server = TestServer::start_with(config).await?;
    let mut a = RawClient::connect(server.addr(), "a").await?;
    for _ in 0..40 {
        let (lock, _) = a.acquire("acked", Mode::EX).await?;
        a.release(lock).await?;
        a.ack().await?;
    }
    a.ping().await?;
    Ok(())
}

#[tokio::test]
async fn replay_overflow_closes_the_session_as_expired() -> Result<()> {
    let mut config = TestServer::config();
    config.replay_capacity = 8;
    let server = TestServer::start_with(config).await?;
    let mut a = RawClient::connect(server.addr(), "a").await?;
    let mut b = RawClient::connect(server.addr(), "b").await?;
    let (_, _) = a.acquire("kept", Mode::EX).await?;
    let rb = b.lock("kept", Mode::EX, LockFlags::empty()).await?;
    assert_eq!(b.event_for(rb).await?.kind, EventKind::Queued);
    b.ack().await?;

    // a never acknowledges: each lock and unlock adds an event to its replay buffer.
    let mut expired = false;
    'outer: for i in 0..20 {
        let id = a
            .lock(&format!("r{i}"), Mode::EX, LockFlags::empty())
            .await?;
        loop {
            match a.recv().await? {
                None => break 'outer,
                Some(ServerMessage::Event { event, .. })
                    if event.kind == EventKind::SessionExpired =>
                {
                    expired = true;
                    break 'outer;
                }
                Some(ServerMessage::Event { event, .. }) if event.request == Some(id) => break,
                Some(_) => {}
            }
        }
    }
    assert!(expired, "the client is told its session is gone");
    while a.recv().await?.is_some() {}
    // Its locks are released (R50): b's queued request is granted.
    assert!(matches!(
        b.event_for(rb).await?.kind,
        EventKind::Granted { .. }
    ));
    Ok(())
}

/// On a paused clock: the client stops reading for longer than the slow-reader timeout
/// without the test taking that long.
#[tokio::test(start_paused = true)]
async fn slow_reader_is_disconnected_and_its_session_survives() -> Result<()> {
    let mut config = TestServer::config();
    config.outbox_max_bytes = 64 * 1024;
    config.slow_reader_timeout = std::time::Duration::from_millis(500);
    let slow_reader_timeout = config.slow_reader_timeout;
    let server = TestServer::start_with(config).await?;
    let mut slow = RawClient::connect(server.addr(), "slow").await?;
    let mut witness = RawClient::connect(server.addr(), "witness").await?;
    // Enough locks that each query reply is tens of KiB.
    for i in 0..150 {
        slow.acquire(&format!("big/{i:04}"), Mode::NL).await?;
    }
    let (held, _) = slow.acquire("slow-held", Mode::EX).await?;

    // Ask for large replies without reading them: the socket buffers fill, then the
    // outbox, and the server cuts the connection.
    let query = Request::Query(Query::Prefix {
        prefix: b"big/".to_vec(),
        limit: 1000,
        after: None,
    });
    for _ in 0..2000 {
        match tokio::time::timeout(dlock_tests::WAIT, slow.send(query.clone())).await {
            Ok(Ok(_)) => {}
            // The server stopped reading or reset the connection.
            Ok(Err(_)) | Err(_) => break,
        }
    }
    // Nothing read for longer than the slow-reader timeout. (The server answers a
    // connection's requests one at a time once its outbox is a quarter full, so the answers
    // alone do not overflow it: what cuts the client off is that it does not read.)
    tokio::time::sleep(slow_reader_timeout * 2).await;
    // Reading what is left ends in a close (a timeout here would fail the test).
    // The last frame is `ProtocolError::SlowReader` if it still fit in the socket buffer.
    let mut replies = 0;
    while let Some(m) = slow.recv().await? {
        if matches!(m, ServerMessage::Reply { .. }) {
            replies += 1;
        }
    }
    assert!(replies < 2000, "the connection was cut before all replies");

    // The server still serves others, and the slow client's session lives on (R51): it
    // resumes with its lock.
    witness.ping().await?;
    let info = witness
        .query_resource("slow-held")
        .await?
        .expect("still held");
    assert_eq!(info.granted[0].lock, held);
    slow.resume().await?;
    slow.release(held).await?;
    Ok(())
}
