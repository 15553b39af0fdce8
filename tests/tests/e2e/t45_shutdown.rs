//! Graceful shutdown: clients are told, the server stops accepting and `run` returns.

use anyhow::Result;
use dlock_proto::{EventKind, LockFlags, Mode, Refusal, ServerMessage};
use dlock_tests::{RawClient, TestServer, recv_raw};
use tokio::net::TcpStream;

#[tokio::test]
async fn shutdown_tells_every_client_and_stops_accepting() -> Result<()> {
    let mut server = TestServer::start().await?;
    let addr = server.addr();
    let mut a = RawClient::connect(addr, "a").await?;
    let mut b = RawClient::connect(addr, "b").await?;
    a.acquire("s", Mode::EX).await?;
    let r = b.lock("s", Mode::EX, LockFlags::empty()).await?;
    assert_eq!(b.event_for(r).await?.kind, EventKind::Queued);
    // A connection the server has not accepted yet is refused rather than reset.
    let mut pending = dlock_tests::connect_framed(addr).await?;

    // Bounded inside `shutdown` (30 s).
    server.shutdown().await?;

    for c in [&mut a, &mut b] {
        let mut got = Vec::new();
        while let Some(m) = c.recv().await? {
            got.push(m);
        }
        assert_eq!(got.last(), Some(&ServerMessage::ShuttingDown), "{got:?}");
    }
    assert_eq!(
        recv_raw(&mut pending).await?,
        Some(ServerMessage::Refused(Refusal::ShuttingDown))
    );
    assert_eq!(recv_raw(&mut pending).await?, None);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
    Ok(())
}

#[tokio::test]
async fn shutdown_with_no_clients_returns_promptly() -> Result<()> {
    let mut server = TestServer::start().await?;
    server.shutdown().await?;
    assert!(!server.is_running());
    Ok(())
}

#[tokio::test]
async fn shutdown_tells_a_connection_in_its_handshake() -> Result<()> {
    let mut server = TestServer::start().await?;
    let addr = server.addr();
    // Connected, no Hello yet; a served client afterwards proves the first was accepted
    // (connections are accepted in order).
    let mut pending = dlock_tests::connect_framed(addr).await?;
    let mut a = RawClient::connect(addr, "a").await?;
    a.ping().await?;
    server.shutdown().await?;
    let first = recv_raw(&mut pending).await?;
    assert_eq!(first, Some(ServerMessage::ShuttingDown));
    assert_eq!(recv_raw(&mut pending).await?, None);
    Ok(())
}

#[tokio::test]
async fn an_in_process_server_for_users_tests_starts_in_one_line_and_cleans_up()
-> anyhow::Result<()> {
    let server = dlock_server::Server::bind("127.0.0.1:0".parse()?)
        .spawn()
        .await?;
    assert_ne!(server.addr().port(), 0);
    let client = dlock_client::Client::connect(server.addr().to_string()).await?;
    let guard = client.lock("orders/42", dlock_client::Mode::EX).await?;
    let token = guard.token();
    guard.unlock().await?;
    let again = client.lock("orders/42", dlock_client::Mode::EX).await?;
    assert!(again.token() > token);
    drop(again);
    let addr = server.addr();
    server.shutdown().await?;
    // Stopped: nothing listens there any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    Ok(())
}
