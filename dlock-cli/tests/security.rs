//! The security flags of `dlock` end to end: `--token-file` / `DLOCK_TOKEN_FILE`, the
//! `--tls-*` options, and exit code 77 for a refused credential or a denied request.

mod common;

use anyhow::Result;
use common::*;
use dlock_server::{Config, TlsConfig};
use dlock_tests::security::{Pki, write_auth_file};

async fn secured_server(dir: &std::path::Path, tls: Option<&Pki>) -> Result<TestServer> {
    let auth = write_auth_file(dir, &[("alice", "alice-token"), ("bob", "bob-token")])?;
    let rules = dir.join("rules.toml");
    std::fs::write(
        &rules,
        "[identities.alice]\n\"app/\" = \"write\"\n[identities.bob]\n\"app/\" = \"read\"\n",
    )?;
    let tls = match tls {
        Some(pki) => {
            let cert = pki.server_cert("server")?;
            Some(TlsConfig {
                cert: cert.cert,
                key: cert.key,
                client_ca: None,
            })
        }
        None => None,
    };
    TestServer::start_with(Config {
        auth_file: Some(auth),
        auth_rules: Some(rules),
        tls,
        ..TestServer::no_grace_config()
    })
    .await
}

fn token_file(dir: &std::path::Path, name: &str, token: &str) -> Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, format!("{token}\n"))?;
    Ok(path.to_string_lossy().into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_token_exits_77_and_the_right_one_works() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = secured_server(dir.path(), None).await?;

    let out = output(dlock(&server, &["ping"])).await?;
    assert_eq!(code(&out), 77, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not authenticated"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--token-file"), "{}", stderr(&out));

    let wrong = token_file(dir.path(), "wrong", "alice-tokeN")?;
    let out = output(dlock(&server, &["--token-file", &wrong, "ping"])).await?;
    assert_eq!(code(&out), 77, "{}", stderr(&out));

    let missing = dir.path().join("missing").to_string_lossy().into_owned();
    let out = output(dlock(&server, &["--token-file", &missing, "ping"])).await?;
    assert_eq!(code(&out), 70, "{}", stderr(&out));
    // A local error, said as one (not as a failed connection).
    assert!(
        stderr(&out).starts_with(&format!("dlock: token file {missing}: ")),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("connect"), "{}", stderr(&out));

    let alice = token_file(dir.path(), "alice", "alice-token")?;
    let out = output(dlock(&server, &["--token-file", &alice, "ping"])).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // The environment variable does the same.
    let mut cmd = dlock(&server, &["acquire", "app/x", "--", "true"]);
    cmd.env("DLOCK_TOKEN_FILE", &alice);
    let out = output(cmd).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_lock_exits_77_and_status_shows_identities() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = secured_server(dir.path(), None).await?;
    let bob = token_file(dir.path(), "bob", "bob-token")?;
    let out = output(dlock(
        &server,
        &[
            "--token-file",
            &bob,
            "acquire",
            "--no-wait",
            "app/x",
            "--",
            "true",
        ],
    ))
    .await?;
    assert_eq!(code(&out), 77, "{}", stderr(&out));
    // It says what was refused.
    assert!(
        stderr(&out).contains("dlock: \"app/x\" in EX: permission denied"),
        "{}",
        stderr(&out)
    );

    // A reader holds PR; the status shows who holds it.
    let mut holder = dlock(
        &server,
        &[
            "--token-file",
            &bob,
            "--name",
            "reader",
            "acquire",
            "-m",
            "PR",
            "app/x",
        ],
    )
    .stdin(std::process::Stdio::piped())
    .spawn()?;
    let mut line = String::new();
    let stdout = holder.stdout.take().expect("stdout");
    tokio::time::timeout(
        DEADLINE,
        tokio::io::AsyncBufReadExt::read_line(&mut tokio::io::BufReader::new(stdout), &mut line),
    )
    .await??;
    let out = output(dlock(&server, &["--token-file", &bob, "status"])).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[bob] reader"), "{text}");
    drop(holder.stdin.take());
    finish(holder).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_flags_verify_the_server() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::new("cli")?;
    let other = Pki::new("cli-other")?;
    let server = secured_server(dir.path(), Some(&pki)).await?;
    let alice = token_file(dir.path(), "alice", "alice-token")?;
    let ca = pki.ca.to_string_lossy().into_owned();
    let out = output(dlock(
        &server,
        &[
            "--tls-ca",
            &ca,
            "--tls-server-name",
            "localhost",
            "--token-file",
            &alice,
            "ping",
        ],
    ))
    .await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // The same through the environment.
    let mut cmd = dlock(&server, &["ping"]);
    cmd.env("DLOCK_TLS_CA", &ca)
        .env("DLOCK_TLS_SERVER_NAME", "localhost")
        .env("DLOCK_TOKEN_FILE", &alice);
    let out = output(cmd).await?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let wrong_ca = other.ca.to_string_lossy().into_owned();
    let out = output(dlock(
        &server,
        &["--tls-ca", &wrong_ca, "--token-file", &alice, "ping"],
    ))
    .await?;
    assert_eq!(code(&out), 69, "{}", stderr(&out));
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));
    // Plain TCP to a TLS server fails too.
    let out = output(dlock(&server, &["--token-file", &alice, "ping"])).await?;
    assert_ne!(code(&out), 0, "{}", stderr(&out));
    Ok(())
}

#[tokio::test]
async fn tls_to_a_plain_server_says_the_server_does_not_speak_tls() -> Result<()> {
    let pki = Pki::new("cli-plain")?;
    let server = TestServer::start().await?;
    let ca = pki.ca.to_string_lossy().into_owned();
    let out = output(dlock(&server, &["--tls-ca", &ca, "ping"])).await?;
    assert_eq!(code(&out), 69, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the server did not answer TLS (is it running without --tls-cert?)"),
        "{}",
        stderr(&out)
    );
    Ok(())
}
