//! Tokens: without one, or with a wrong one, a client is refused `Unauthenticated`; with the
//! right one its session carries the token's identity.

use anyhow::Result;
use dlock_client::{Error, Mode, Refusal};
use dlock_server::Config;
use dlock_tests::security::{spawn_server, write_auth_file};

use crate::{builder, connect_err};

#[tokio::test]
async fn no_or_a_wrong_token_is_refused_and_the_right_one_works() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let auth = write_auth_file(
        dir.path(),
        &[("alice", "alice-token"), ("bob", "bob-token")],
    )?;
    let server = spawn_server(Config {
        auth_file: Some(auth),
        ..Config::default()
    })
    .await?;

    let err = connect_err(builder(&server)).await?;
    assert!(
        matches!(err, Error::Refused(Refusal::Unauthenticated)),
        "no token: {err}"
    );
    let err = connect_err(builder(&server).token("alice-tokeN")).await?;
    assert!(
        matches!(err, Error::Refused(Refusal::Unauthenticated)),
        "wrong token: {err}"
    );

    let alice = builder(&server)
        .token("alice-token")
        .name("job")
        .connect()
        .await?;
    let guard = alice.lock("t/a", Mode::EX).await?;
    let info = alice.query_resource("t/a").await?.expect("resource");
    assert_eq!(info.granted[0].session_name, "[alice] job");
    let session = alice
        .query_session(alice.session_id())
        .await?
        .expect("own session");
    assert_eq!(session.name, "[alice] job");
    guard.unlock().await?;

    // The token file is read by the CLI too.
    let token_file = dir.path().join("bob.token");
    std::fs::write(&token_file, "bob-token\n")?;
    let bob = builder(&server).token_file(&token_file)?.connect().await?;
    bob.ping().await?;
    bob.close().await?;
    alice.close().await?;
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn the_audit_log_names_the_identity_and_never_the_token() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let auth = write_auth_file(dir.path(), &[("carol", "carol-secret-token")])?;
    let log = dir.path().join("audit.jsonl");
    let server = spawn_server(Config {
        auth_file: Some(auth),
        audit_log: Some(dlock_server::audit::AuditConfig::new(&log)),
        ..Config::default()
    })
    .await?;
    let carol = builder(&server)
        .token("carol-secret-token")
        .name("cron")
        .connect()
        .await?;
    carol.lock("audit/a", Mode::EX).await?.unlock().await?;
    carol.close().await?;
    server.shutdown().await?;
    let text = std::fs::read_to_string(&log)?;
    assert!(text.contains("[carol] cron"), "{text}");
    assert!(!text.contains("carol-secret-token"), "{text}");
    Ok(())
}

/// A server whose auth file knows alice by the token `alice-token`, and its directory.
async fn alice_server() -> Result<(tempfile::TempDir, dlock_server::ServerHandle)> {
    let dir = tempfile::tempdir()?;
    let auth = write_auth_file(dir.path(), &[("alice", "alice-token")])?;
    let server = spawn_server(Config {
        auth_file: Some(auth),
        ..Config::default()
    })
    .await?;
    Ok((dir, server))
}

#[tokio::test]
async fn a_probe_needs_the_token_as_a_session_does() -> Result<()> {
    let (_dir, server) = alice_server().await?;
    let probed = builder(&server).probe().await?;
    assert_eq!(probed.len(), 1);
    assert!(
        matches!(
            probed[0].answer,
            Err(Error::Refused(Refusal::Unauthenticated))
        ),
        "no token: {:?}",
        probed[0].answer
    );
    // With the token: a server alone answers that it is no cluster.
    let probed = builder(&server).token("alice-token").probe().await?;
    assert!(
        matches!(probed[0].answer, Ok(None)),
        "{:?}",
        probed[0].answer
    );
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn the_name_limit_counts_what_the_client_wrote_against_what_is_left_to_it() -> Result<()> {
    let (_dir, server) = alice_server().await?;
    // "[alice] " takes 8 of the 256 bytes a session name may have.
    let fits = builder(&server)
        .token("alice-token")
        .name("n".repeat(248))
        .connect()
        .await?;
    let info = fits.query_session(fits.session_id()).await?.expect("own");
    assert_eq!(info.name.len(), 256);
    let err = connect_err(builder(&server).token("alice-token").name("n".repeat(249))).await?;
    assert!(
        err.to_string()
            .contains("session name of 249 bytes exceeds the maximum of 248"),
        "{err}"
    );
    fits.close().await?;
    server.shutdown().await?;
    Ok(())
}
