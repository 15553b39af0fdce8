//! Rules: a read-only identity cannot take EX; an identity sees only the prefixes it may
//! list, value blocks only where it may read, other sessions only as an admin; nobody
//! resumes another identity's session, even with its secret.

use anyhow::{Result, bail};
use dlock_client::{Error, LockOptions, Mode, UnlockOptions};
use dlock_proto::{
    ClientMessage, Hello, PROTOCOL_VERSION, Refusal, Resume, ServerMessage, Welcome,
};
use dlock_server::Config;
use dlock_tests::security::{spawn_server, write_auth_file};
use dlock_tests::{RawFramed, connect_framed, recv_raw};
use futures_util::SinkExt;

use crate::builder;

const RULES: &str = r#"
admins = ["ops"]
[identities.alice]
"orders/" = "write"
"billing/" = "write"
[identities.bob]
"orders/" = "read"
[identities.lister]
"orders/" = "list"
[identities.ops]
"" = "list"
"#;

async fn server(dir: &std::path::Path) -> Result<dlock_server::ServerHandle> {
    let auth = write_auth_file(
        dir,
        &[
            ("alice", "ta"),
            ("bob", "tb"),
            ("lister", "tl"),
            ("ops", "to"),
        ],
    )?;
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, RULES)?;
    spawn_server(Config {
        auth_file: Some(auth),
        auth_rules: Some(rules),
        ..Config::default()
    })
    .await
}

#[tokio::test]
async fn a_reader_cannot_take_ex_and_nobody_locks_outside_their_prefixes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = server(dir.path()).await?;
    let bob = builder(&server).token("tb").connect().await?;
    let err = bob.lock("orders/1", Mode::EX).await.expect_err("denied");
    assert!(matches!(err, Error::PermissionDenied), "{err}");
    let err = bob.lock("orders/1", Mode::PW).await.expect_err("denied");
    assert!(matches!(err, Error::PermissionDenied), "{err}");
    let err = bob.lock("billing/1", Mode::NL).await.expect_err("denied");
    assert!(matches!(err, Error::PermissionDenied), "{err}");
    // R55: an invalid request is INVALID before it is denied (and is no denial).
    let expedite = LockOptions::new().flags(dlock_client::LockFlags::EXPEDITE);
    let err = bob
        .lock_with("orders/1", Mode::EX, expedite)
        .await
        .expect_err("invalid");
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    // Read modes are his.
    let mut guard = bob.lock("orders/1", Mode::PR).await?;
    // ... but not a conversion up to a write mode.
    let err = guard.convert(Mode::EX).await.expect_err("denied");
    assert!(matches!(err, Error::PermissionDenied), "{err}");
    assert_eq!(guard.mode(), Mode::PR);
    guard.unlock().await?;
    assert_eq!(server.permission_denials(), 4);
    let lister = builder(&server).token("tl").connect().await?;
    let err = lister.lock("orders/1", Mode::NL).await.expect_err("denied");
    assert!(matches!(err, Error::PermissionDenied), "{err}");
    bob.close().await?;
    lister.close().await?;
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn queries_show_only_what_the_identity_may_see() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = server(dir.path()).await?;
    let alice = builder(&server).token("ta").connect().await?;
    let _o = alice.lock("orders/1", Mode::EX).await?;
    let _b = alice.lock("billing/1", Mode::EX).await?;
    let _b2 = alice.lock("billing/2", Mode::EX).await?;

    let bob = builder(&server).token("tb").connect().await?;
    let names = |rs: Vec<dlock_client::ResourceInfo>| {
        rs.into_iter()
            .map(|r| String::from_utf8_lossy(&r.name).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(bob.query_prefix("", 1000).await?), ["orders/1"]);
    assert!(bob.query_prefix("billing/", 1000).await?.is_empty());
    let err = bob.query_resource("billing/1").await.expect_err("denied");
    assert!(matches!(err, Error::PermissionDenied), "{err}");
    // Another session: only for admins.
    let err = bob
        .query_session(alice.session_id())
        .await
        .expect_err("denied");
    assert!(matches!(err, Error::PermissionDenied), "{err}");

    let ops = builder(&server).token("to").connect().await?;
    assert_eq!(
        names(ops.query_prefix("", 1000).await?),
        ["billing/1", "billing/2", "orders/1"]
    );
    let session = ops
        .query_session(alice.session_id())
        .await?
        .expect("session");
    assert_eq!(session.locks.len(), 3);
    for c in [&alice, &bob, &ops] {
        c.close().await?;
    }
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn value_blocks_only_reach_readers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = server(dir.path()).await?;
    let alice = builder(&server).token("ta").connect().await?;
    // Keep the resource (and its value block) alive with an NL lock.
    let _keep = alice.lock("orders/v", Mode::NL).await?;
    let writer = alice.lock("orders/v", Mode::EX).await?;
    writer
        .unlock_with(UnlockOptions::new().value(b"db-password=x".to_vec()))
        .await?;

    let bob = builder(&server).token("tb").connect().await?;
    let seen = bob.query_resource("orders/v").await?.expect("resource");
    assert!(seen.value.starts_with(b"db-password=x") && seen.value_valid);
    let reader = bob
        .lock_with("orders/v", Mode::PR, LockOptions::new().read_value())
        .await?;
    assert!(reader.value().expect("value").starts_with(b"db-password=x"));
    reader.unlock().await?;

    let lister = builder(&server).token("tl").connect().await?;
    let listed = lister.query_resource("orders/v").await?.expect("resource");
    assert!(listed.value.iter().all(|b| *b == 0), "{:?}", listed.value);
    assert!(!listed.value_valid);
    let page = lister.query_prefix("orders/", 1000).await?;
    assert_eq!(page.len(), 1);
    assert!(page[0].value.iter().all(|b| *b == 0) && !page[0].value_valid);
    for c in [&alice, &bob, &lister] {
        c.close().await?;
    }
    server.shutdown().await?;
    Ok(())
}

async fn hello(
    addr: std::net::SocketAddr,
    token: &str,
    resume: Option<Resume>,
) -> Result<(RawFramed, ServerMessage)> {
    let mut framed = connect_framed(addr).await?;
    framed
        .send(ClientMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: "raw".into(),
            lease_ttl_ms: 0,
            resume,
            token: Some(token.to_owned()),
        }))
        .await?;
    let Some(answer) = recv_raw(&mut framed).await? else {
        bail!("closed without an answer");
    };
    Ok((framed, answer))
}

#[tokio::test]
async fn a_session_is_resumed_only_by_its_own_identity() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = server(dir.path()).await?;
    let (first, answer) = hello(server.addr(), "ta", None).await?;
    let ServerMessage::Welcome(Welcome {
        session, secret, ..
    }) = answer
    else {
        bail!("expected Welcome, got {answer:?}");
    };
    drop(first);
    let stolen = Resume {
        session,
        secret,
        last_seq: 0,
    };
    // Bob has alice's secret, and still gets nothing.
    let (_, answer) = hello(server.addr(), "tb", Some(stolen)).await?;
    assert_eq!(answer, ServerMessage::Refused(Refusal::UnknownSession));
    // Alice herself resumes.
    let (_, answer) = hello(server.addr(), "ta", Some(stolen)).await?;
    assert!(
        matches!(
            answer,
            ServerMessage::Welcome(Welcome { resumed: true, .. })
        ),
        "{answer:?}"
    );
    server.shutdown().await?;
    Ok(())
}
