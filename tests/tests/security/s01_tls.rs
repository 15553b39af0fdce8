//! TLS: a client that trusts the server's CA and checks its name works; a wrong CA, a wrong
//! name or plain TCP fail; with mutual TLS the client certificate's name is the identity.

use anyhow::Result;
use dlock_client::{Mode, TlsOptions};
use dlock_server::{Config, TlsConfig};
use dlock_tests::security::{Pki, spawn_server};

use crate::{builder, connect_err, tls_builder};

async fn tls_server(pki: &Pki, client_ca: bool) -> Result<dlock_server::ServerHandle> {
    let cert = pki.server_cert("server")?;
    spawn_server(Config {
        tls: Some(TlsConfig {
            cert: cert.cert,
            key: cert.key,
            client_ca: client_ca.then(|| pki.ca.clone()),
        }),
        ..Config::default()
    })
    .await
}

#[tokio::test]
async fn a_client_that_trusts_the_ca_locks_over_tls() -> Result<()> {
    let pki = Pki::new("s01a")?;
    let server = tls_server(&pki, false).await?;
    let client = tls_builder(&server, &pki).connect().await?;
    let guard = client.lock("tls/a", Mode::EX).await?;
    assert!(guard.token().0 > 0);
    let info = client.query_resource("tls/a").await?.expect("resource");
    assert_eq!(info.granted.len(), 1);
    guard.unlock().await?;
    // The address's host is checked when no name is given: 127.0.0.1 is in the certificate.
    let by_ip = crate::builder(&server)
        .tls(TlsOptions::new().ca_file(&pki.ca))
        .connect()
        .await?;
    by_ip.ping().await?;
    client.close().await?;
    by_ip.close().await?;
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_wrong_ca_a_wrong_name_or_plain_tcp_fail() -> Result<()> {
    let pki = Pki::new("s01b")?;
    let other = Pki::new("s01b-other")?;
    let server = tls_server(&pki, false).await?;

    let err = connect_err(tls_builder(&server, &other)).await?;
    assert!(err.to_string().contains("certificate"), "wrong CA: {err}");
    let err = connect_err(
        builder(&server).tls(
            TlsOptions::new()
                .ca_file(&pki.ca)
                .server_name("dlock.example"),
        ),
    )
    .await?;
    assert!(err.to_string().contains("certificate"), "wrong name: {err}");
    // A plain client gets no session from a TLS server.
    connect_err(builder(&server)).await?;
    // The server is unharmed: a right client still works.
    let client = tls_builder(&server, &pki).connect().await?;
    client.ping().await?;
    client.close().await?;
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn mutual_tls_names_the_session_after_the_client_certificate() -> Result<()> {
    let pki = Pki::new("s01c")?;
    let server = tls_server(&pki, true).await?;
    let alice = pki.client_cert("alice")?;
    let client = tls_builder(&server, &pki)
        .tls(
            TlsOptions::new()
                .ca_file(&pki.ca)
                .server_name("localhost")
                .client_cert(&alice.cert, &alice.key),
        )
        .name("worker-1")
        .connect()
        .await?;
    let guard = client.lock("mtls/a", Mode::PR).await?;
    let info = client.query_resource("mtls/a").await?.expect("resource");
    assert_eq!(info.granted[0].session_name, "[alice] worker-1");
    guard.unlock().await?;
    // Without a client certificate: no session, and the error says the server refused the
    // certificate (an authentication failure, not a broken protocol).
    let err = connect_err(tls_builder(&server, &pki)).await?;
    assert!(
        matches!(&err, dlock_client::Error::CertificateRefused(a) if a == "CertificateRequired"),
        "{err:?}"
    );
    // A certificate from another CA: no session either.
    let other = Pki::new("s01c-other")?;
    let mallory = other.client_cert("alice")?;
    let err = connect_err(
        builder(&server).tls(
            TlsOptions::new()
                .ca_file(&pki.ca)
                .server_name("localhost")
                .client_cert(&mallory.cert, &mallory.key),
        ),
    )
    .await?;
    assert!(
        matches!(&err, dlock_client::Error::CertificateRefused(a) if a == "UnknownCA"),
        "{err:?}"
    );
    // A certificate of the right CA whose common name is no identity a token could name (a
    // session name `[dep loyer] [ops] job` would not give it back): not authenticated.
    for cn in ["dep loyer] [ops", "*", "#ops"] {
        let odd = pki.client_cert(cn)?;
        let err = connect_err(
            builder(&server).tls(
                TlsOptions::new()
                    .ca_file(&pki.ca)
                    .server_name("localhost")
                    .client_cert(&odd.cert, &odd.key),
            ),
        )
        .await?;
        assert!(
            matches!(
                &err,
                dlock_client::Error::Refused(dlock_client::Refusal::Unauthenticated)
            ),
            "{cn}: {err:?}"
        );
    }
    client.close().await?;
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_cut_and_gives_its_place_back() -> Result<()> {
    let pki = Pki::new("s01d")?;
    let cert = pki.server_cert("server")?;
    let server = spawn_server(Config {
        tls: Some(TlsConfig {
            cert: cert.cert,
            key: cert.key,
            client_ca: None,
        }),
        max_connections: 1,
        handshake_timeout: std::time::Duration::from_millis(300),
        ..Config::default()
    })
    .await?;
    // A connection that never says anything holds the only place, then loses it.
    let stalled = tokio::net::TcpStream::connect(server.addr()).await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match tls_builder(&server, &pki).connect().await {
            Ok(client) => {
                client.close().await?;
                break;
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "still refused");
                tokio::task::yield_now().await;
            }
            Err(e) => anyhow::bail!("the stalled handshake kept its place: {e}"),
        }
    }
    drop(stalled);
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tls_clients_connect_at_once() -> Result<()> {
    let pki = Pki::new("s01e")?;
    let server = tls_server(&pki, false).await?;
    let connects = (0..64).map(|_| tls_builder(&server, &pki).connect());
    let clients = futures_util::future::try_join_all(connects).await?;
    let locks = clients
        .iter()
        .enumerate()
        .map(|(i, c)| c.lock(format!("many/{i}"), Mode::EX));
    for guard in futures_util::future::try_join_all(locks).await? {
        guard.unlock().await?;
    }
    for c in &clients {
        c.close().await?;
    }
    server.shutdown().await?;
    Ok(())
}

/// Failed TLS handshakes are counted (`dlock_frame_errors_total{kind="tls_handshake"}`): a
/// client that does not trust the server's certificate, and one that speaks plain dlock to
/// the TLS port.
#[tokio::test]
async fn failed_tls_handshakes_are_counted() -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let pki = Pki::new("s01f")?;
    let cert = pki.server_cert("server")?;
    let server = dlock_server::Server::with_config(Config {
        listen: ([127, 0, 0, 1], 0).into(),
        restart_grace: dlock_server::RestartGrace::DISABLED,
        tls: Some(TlsConfig {
            cert: cert.cert,
            key: cert.key,
            client_ca: None,
        }),
        ..Config::default()
    })
    .http(([127, 0, 0, 1], 0).into())
    .spawn()
    .await?;
    let http = server.http_addr().expect("an HTTP listener");
    let other = Pki::new("s01f-other")?;
    connect_err(tls_builder(&server, &other)).await?;
    let mut plain = tokio::net::TcpStream::connect(server.addr()).await?;
    plain.write_all(&[0, 0, 0, 3, 1, 2, 3]).await?;
    let want = "dlock_frame_errors_total{kind=\"tls_handshake\"} 2";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let answer = dlock_tests::http::get(http, "/metrics").await?;
        anyhow::ensure!(
            answer.status == 200,
            "/metrics: {} {}",
            answer.status,
            answer.body
        );
        let page = answer.body;
        if page.lines().any(|l| l == want) {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no {want:?} in {}",
            page.lines()
                .filter(|l| l.contains("frame_errors"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.shutdown().await?;
    Ok(())
}
