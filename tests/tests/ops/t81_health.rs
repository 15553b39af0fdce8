//! `/healthz` answers while the process serves; `/readyz` is 503 during the restart grace
//! and 200 once locks are granted again.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use dlock_proto::Mode;
use dlock_tests::http::get;
use dlock_tests::{RawClient, TestServer};
use tokio::time::Instant;

/// The previous run's lease: the grace waits it out (plus a 100 ms margin).
const OLD_TTL_MS: u64 = 1_000;

#[tokio::test]
async fn t81_readyz_is_503_during_the_restart_grace_then_200() -> Result<()> {
    let mut server = TestServer::start_with_http(TestServer::config()).await?;
    let http = server.http_addr().context("no http")?;
    ensure!(
        get(http, "/readyz").await?.status == 200,
        "a first start has no grace"
    );
    let mut a = RawClient::connect_with_ttl(server.addr(), "a", OLD_TTL_MS).await?;
    a.acquire("r", Mode::EX).await?;
    server.restart().await?;
    let restarted = Instant::now();
    let health = get(http, "/healthz").await?;
    ensure!(health.status == 200 && health.body == "ok\n");
    let first = get(http, "/readyz").await?;
    let asked_within = restarted.elapsed();
    ensure!(
        asked_within < Duration::from_millis(OLD_TTL_MS),
        "too slow to ask within the grace ({asked_within:?})"
    );
    ensure!(
        first.status == 503,
        "readyz during the grace: {} {}",
        first.status,
        first.body
    );
    let status: dlock_proto::status::ServerStatus =
        dlock_tests::http::get_json(http, "/api/status").await?;
    ensure!(!status.ready && status.grace_remaining_ms.is_some());
    let deadline = restarted + Duration::from_secs(10);
    loop {
        let r = get(http, "/readyz").await?;
        if r.status == 200 {
            break;
        }
        ensure!(r.status == 503, "unexpected status {}", r.status);
        if Instant::now() > deadline {
            bail!("still not ready 10 s after the restart");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let flipped = restarted.elapsed();
    ensure!(
        flipped >= Duration::from_millis(OLD_TTL_MS),
        "ready after {flipped:?}, before the old lease could have run out"
    );
    let m = crate::prom::parse(&get(http, "/metrics").await?.body)?;
    ensure!(m.get("dlock_ready", &[]) == 1.0);
    Ok(())
}

#[tokio::test]
async fn t81_http_port_in_use_is_a_clear_error_at_start() -> Result<()> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let at = taken.local_addr()?;
    let err = dlock_server::Server::bind("127.0.0.1:0".parse()?)
        .http(at)
        .spawn()
        .await
        .err()
        .context("a second listener on a port in use")?;
    let text = err.to_string();
    ensure!(
        text.contains(&at.to_string()) && text.contains("HTTP") && text.contains("in use"),
        "error: {text}"
    );
    // The in-process server serves HTTP when asked, and none by default.
    let s = dlock_server::Server::bind("127.0.0.1:0".parse()?)
        .http("127.0.0.1:0".parse()?)
        .spawn()
        .await?;
    let h = s.http_addr().context("no http address")?;
    ensure!(get(h, "/healthz").await?.status == 200);
    s.shutdown().await?;
    let plain = dlock_server::Server::bind("127.0.0.1:0".parse()?)
        .spawn()
        .await?;
    ensure!(plain.http_addr().is_none());
    plain.shutdown().await?;
    Ok(())
}
