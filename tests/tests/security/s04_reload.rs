//! Reloads: new rules take effect for a live session without a restart; new certificates
//! are used for new connections while sessions on old ones carry on; a broken file changes
//! nothing.

use anyhow::Result;
use dlock_client::{ConvertOptions, Error, Mode, TlsOptions, UnlockOptions};
use dlock_server::{Config, TlsConfig};
use dlock_tests::security::{Pki, spawn_server, write_auth_file};

use crate::{builder, connect_err, tls_builder};

/// A server with tokens and rules that give bob `access` on `jobs/` (the rules file, to
/// change and reload), and bob's client.
async fn bob_with(
    access: &str,
) -> Result<(
    tempfile::TempDir,
    std::path::PathBuf,
    dlock_server::ServerHandle,
    dlock_client::Client,
)> {
    let dir = tempfile::tempdir()?;
    let auth = write_auth_file(dir.path(), &[("bob", "tb")])?;
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        format!("[identities.bob]\n\"jobs/\" = \"{access}\"\n"),
    )?;
    let server = spawn_server(Config {
        auth_file: Some(auth),
        auth_rules: Some(rules.clone()),
        ..Config::default()
    })
    .await?;
    let bob = builder(&server).token("tb").connect().await?;
    Ok((dir, rules, server, bob))
}

#[tokio::test]
async fn a_rule_reload_takes_effect_without_a_restart() -> Result<()> {
    let (_dir, rules, server, bob) = bob_with("read").await?;
    let err = bob.lock("jobs/1", Mode::EX).await.expect_err("denied");
    assert!(matches!(err, Error::PermissionDenied), "{err}");

    std::fs::write(&rules, "[identities.bob]\n\"jobs/\" = \"write\"\n")?;
    server.reload()?;
    let guard = bob.lock("jobs/1", Mode::EX).await?;
    guard.unlock().await?;

    // A broken file is refused and the rules in force stay.
    std::fs::write(&rules, "[identities.bob]\n\"jobs/\" = \"everything\"\n")?;
    assert!(server.reload().is_err());
    bob.lock("jobs/1", Mode::EX).await?.unlock().await?;

    // Taking the right away works the same way, for the same session.
    std::fs::write(&rules, "[identities.bob]\n\"jobs/\" = \"list\"\n")?;
    server.reload()?;
    let err = bob.lock("jobs/1", Mode::PR).await.expect_err("denied");
    assert!(matches!(err, Error::PermissionDenied), "{err}");
    bob.close().await?;
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_demoted_identity_writes_no_value_block_on_a_conversion() -> Result<()> {
    let (_dir, rules, server, bob) = bob_with("write").await?;
    let mut held = bob.lock("jobs/1", Mode::EX).await?;
    let other = bob.lock("jobs/2", Mode::EX).await?;
    let valid = |r: &str| {
        let bob = &bob;
        let r = r.to_owned();
        async move {
            let info = bob
                .query_resource(&r)
                .await?
                .unwrap_or_else(|| panic!("{r} not held"));
            anyhow::Ok(info.value_valid)
        }
    };
    let (valid1, valid2) = (valid("jobs/1").await?, valid("jobs/2").await?);
    std::fs::write(&rules, "[identities.bob]\n\"jobs/\" = \"read\"\n")?;
    server.reload()?;

    // Down to a mode bob may still take, but writing the block on the way: refused, and
    // the lock keeps its mode.
    for to in [Mode::NL, Mode::PR] {
        let err = held
            .convert_with(to, ConvertOptions::new().value(b"AB".to_vec()))
            .await
            .expect_err("a value written by a reader");
        assert!(matches!(err, Error::PermissionDenied), "{to:?}: {err}");
        assert_eq!(held.mode(), Mode::EX);
    }
    // Invalidating the block is writing it too: refused on a conversion and on an unlock
    // (the lock is still held after the refused unlock, and the block still valid).
    let err = held
        .convert_with(Mode::NL, ConvertOptions::new().invalidate_value())
        .await
        .expect_err("an invalidation by a reader");
    assert!(matches!(err, Error::PermissionDenied), "{err}");
    let lock = held.lock_id();
    let err = other
        .unlock_with(UnlockOptions::new().invalidate_value())
        .await
        .expect_err("an invalidation by a reader");
    assert!(matches!(err, Error::PermissionDenied), "{err}");
    assert_eq!(
        valid("jobs/2").await?,
        valid2,
        "the unlock changed the block"
    );
    // The same conversion without a value is allowed, and the block was never written.
    held.convert(Mode::NL).await?;
    let info = bob.query_resource("jobs/1").await?.expect("resource");
    assert!(
        info.value.iter().all(|&b| b == 0),
        "value block {:?}",
        info.value
    );
    assert_eq!(info.value_valid, valid1, "the conversion changed the block");
    assert_eq!(held.lock_id(), lock);
    held.unlock().await?;
    bob.close().await?;
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_certificate_reload_keeps_sessions() -> Result<()> {
    let old = Pki::new("s04-old")?;
    let new = Pki::new("s04-new")?;
    let cert = old.server_cert("server")?;
    let server = spawn_server(Config {
        tls: Some(TlsConfig {
            cert: cert.cert.clone(),
            key: cert.key.clone(),
            client_ca: None,
        }),
        ..Config::default()
    })
    .await?;
    let before = tls_builder(&server, &old).connect().await?;
    let held = before.lock("cert/a", Mode::EX).await?;
    let session = before.session_id();

    // The new CA's certificate takes the old one's place on disk, then the reload.
    let renewed = new.server_cert("server")?;
    std::fs::copy(&renewed.cert, &cert.cert)?;
    std::fs::copy(&renewed.key, &cert.key)?;
    server.reload()?;

    // The session opened before carries on, lock and all.
    assert_eq!(before.session_id(), session);
    let info = before.query_resource("cert/a").await?.expect("resource");
    assert_eq!(info.granted[0].session, session);
    before.lock("cert/b", Mode::EX).await?.unlock().await?;
    // New connections get the new certificate.
    connect_err(tls_builder(&server, &old)).await?;
    let after = builder(&server)
        .tls(TlsOptions::new().ca_file(&new.ca).server_name("localhost"))
        .connect()
        .await?;
    let err = after.try_lock("cert/a", Mode::EX).await.expect_err("held");
    assert!(matches!(err, Error::NotQueued), "{err}");
    held.unlock().await?;
    after.lock("cert/a", Mode::EX).await?.unlock().await?;
    before.close().await?;
    after.close().await?;
    server.shutdown().await?;
    Ok(())
}
