//! dlock-client with several endpoints against real servers: an endpoint that refuses
//! connections is skipped at once, and the session opens on the next one.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use dlock_client::{Client, Error, Mode};
use dlock_tests::TestServer;
use dlock_tests::sdk::{bounded, granted, res, within};

#[tokio::test]
async fn a_closed_first_endpoint_is_skipped_for_the_second() -> Result<()> {
    bounded(async {
        let mut closed = TestServer::start().await?;
        let closed_addr = closed.addr();
        closed.shutdown().await?;
        let server = TestServer::start().await?;

        // A backoff far longer than the test: only moving on within the round can connect.
        let endpoints = format!("{closed_addr}, {}", server.addr());
        let client = within(
            "connect",
            Client::builder(endpoints)
                .name("multi")
                .backoff(Duration::from_secs(60), Duration::from_secs(60))
                .connect(),
        )
        .await??;
        let guard = client.lock("shared/x", Mode::EX).await?;

        // The second server holds the session and its lock.
        let observer = Client::connect(server.addr().to_string()).await?;
        let info = res(&observer, "shared/x").await?;
        ensure!(
            granted(&info) == [(client.session_id(), Mode::EX)],
            "{info:?}"
        );
        guard.unlock().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_round_with_every_endpoint_closed_fails_the_connect() -> Result<()> {
    bounded(async {
        let mut a = TestServer::start().await?;
        let mut b = TestServer::start().await?;
        let endpoints = format!("{},{}", a.addr(), b.addr());
        a.shutdown().await?;
        b.shutdown().await?;
        let err = within("connect", Client::connect(endpoints))
            .await?
            .err()
            .context("connected to a closed port")?;
        ensure!(matches!(err, Error::Connect(_)), "{err}");
        Ok(())
    })
    .await
}
