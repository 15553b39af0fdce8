//! Fencing tokens and ids stay monotonic across a crash: the server is aborted (no graceful
//! shutdown, like `kill -9`) and started again on the same data directory. The restart grace
//! is off here (see `t36_restart_grace.rs` for it).

use anyhow::Result;
use dlock_proto::{ClientMessage, Hello, Mode, PROTOCOL_VERSION, Refusal, Resume, ServerMessage};
use dlock_tests::{RawClient, TestServer, connect_framed, recv_raw};
use futures_util::SinkExt;

#[tokio::test]
async fn tokens_and_ids_keep_growing_after_an_abort_and_restart() -> Result<()> {
    let mut server = TestServer::start_with(TestServer::no_grace_config()).await?;
    let mut highest = dlock_proto::FencingToken(0);
    let mut old_session;
    let mut old_secret;
    let mut old_locks = Vec::new();
    for round in 0..3 {
        let mut a = RawClient::connect(server.addr(), "a").await?;
        assert!(
            old_locks.is_empty()
                || a.session.0
                    > old_locks
                        .iter()
                        .map(|l: &dlock_proto::LockId| l.0)
                        .max()
                        .unwrap_or(0),
            "new session ids are above every old id"
        );
        // Several grants on the same resource, then one more that stays held.
        for _ in 0..5 {
            let (lock, token) = a.acquire("fenced", Mode::EX).await?;
            assert!(
                token > highest,
                "round {round}: token {token} not above {highest}"
            );
            highest = token;
            old_locks.push(lock);
            a.release(lock).await?;
        }
        let (lock, token) = a.acquire("fenced", Mode::EX).await?;
        assert!(token > highest);
        highest = token;
        old_locks.push(lock);
        old_session = a.session;
        old_secret = a.secret;

        server.restart().await?;

        // The old session is gone with the old process; resuming it is refused.
        let mut framed = connect_framed(server.addr()).await?;
        framed
            .send(ClientMessage::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                client_name: String::new(),
                lease_ttl_ms: 0,
                resume: Some(Resume {
                    session: old_session,
                    secret: old_secret,
                    last_seq: 0,
                }),
                token: None,
            }))
            .await?;
        assert_eq!(
            recv_raw(&mut framed).await?,
            Some(ServerMessage::Refused(Refusal::UnknownSession))
        );
    }
    // The floor file is there and above everything handed out.
    let floor: u64 = std::fs::read_to_string(server.data_dir().join("fencing-floor"))?
        .trim()
        .parse()?;
    assert!(floor > highest.0);
    Ok(())
}

#[tokio::test]
async fn graceful_restart_also_keeps_tokens_monotonic() -> Result<()> {
    let mut server = TestServer::start_with(TestServer::no_grace_config()).await?;
    let mut a = RawClient::connect(server.addr(), "a").await?;
    let (_, t1) = a.acquire("r", Mode::EX).await?;
    server.shutdown().await?;
    server.start_again().await?;
    let mut b = RawClient::connect(server.addr(), "b").await?;
    let (_, t2) = b.acquire("r", Mode::EX).await?;
    assert!(t2 > t1);
    Ok(())
}
