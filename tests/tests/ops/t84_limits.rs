//! The HTTP listener's connection cap: with `http_max_connections` 2 and two connections
//! held open, a third is not served until one of them closes.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use dlock_tests::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens a keep-alive connection and waits for its answer to `/healthz`: the server has
/// accepted it, and it stays open.
async fn held(addr: std::net::SocketAddr) -> Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.ends_with(b"ok\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .context("no answer on a held connection")??;
        ensure!(
            n > 0,
            "held connection closed: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    ensure!(
        seen.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );
    Ok(s)
}

#[tokio::test]
async fn t84_a_connection_over_the_http_cap_is_served_once_another_closes() -> Result<()> {
    let mut config = TestServer::config();
    config.http_max_connections = 2;
    let server = TestServer::start_with_http(config).await?;
    let http = server.http_addr().context("no http")?;
    let first = held(http).await?;
    let _second = held(http).await?;

    let mut third = TcpStream::connect(http).await?; // into the kernel's backlog
    third
        .write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut buf = [0u8; 1024];
    // Nothing may come while both are held (an answer here is the failure; the wait only
    // bounds how long we look for one).
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await;
    ensure!(
        early.is_err(),
        "a third connection was served over the cap of 2: {early:?}"
    );

    drop(first);
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), third.read_to_end(&mut answer))
        .await
        .context("the third connection got no answer after one closed")??;
    let answer = String::from_utf8_lossy(&answer);
    ensure!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"),
        "{answer}"
    );
    Ok(())
}
