//! The HTTP listener on a server that authenticates: the probes stay open, everything else
//! asks for a token (Bearer, or Basic with the token as the password, which a browser
//! prompts for), and with rules only admins may read the pages that show every session.

use anyhow::{Context, Result};
use base64::Engine as _;
use dlock_server::{Config, Server};
use dlock_tests::http::{get_with, request};
use dlock_tests::security::write_auth_file;

const RULES: &str = r#"
admins = ["ops"]
[identities.alice]
"orders/" = "write"
"#;

#[tokio::test]
async fn the_pages_ask_for_an_admin_token_and_the_probes_do_not() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let auth = write_auth_file(dir.path(), &[("alice", "ta"), ("ops", "to")])?;
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES)?;
    let server = Server::with_config(Config {
        listen: ([127, 0, 0, 1], 0).into(),
        restart_grace: dlock_server::RestartGrace::DISABLED,
        auth_file: Some(auth),
        auth_rules: Some(rules),
        ..Config::default()
    })
    .http(([127, 0, 0, 1], 0).into())
    .spawn()
    .await?;
    let http = server.http_addr().context("no HTTP address")?;
    let basic = |user: &str, token: &str| {
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
        format!("Basic {pair}")
    };
    for path in ["/healthz", "/readyz"] {
        let a = get_with(http, path, &[]).await?;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
    }
    for path in [
        "/",
        "/metrics",
        "/api/status",
        "/api/sessions",
        "/api/resources",
    ] {
        let none = get_with(http, path, &[]).await?;
        assert_eq!(none.status, 401, "{path} without a token");
        assert!(
            none.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Basic")),
            "{path}: {:?}",
            none.headers
        );
        let wrong = get_with(http, path, &[("Authorization", "Bearer nope")]).await?;
        assert_eq!(wrong.status, 401, "{path} with a wrong token");
        let alice = get_with(http, path, &[("Authorization", "Bearer ta")]).await?;
        assert_eq!(alice.status, 403, "{path} as a non-admin");
        assert_eq!(
            alice.body, "only the admins of --auth-rules may read this\n",
            "{path}"
        );
        let ops = get_with(http, path, &[("Authorization", "Bearer to")]).await?;
        assert_eq!(ops.status, 200, "{path} as an admin: {}", ops.body);
        let browser = get_with(http, path, &[("Authorization", &basic("any", "to"))]).await?;
        assert_eq!(browser.status, 200, "{path} with Basic: {}", browser.body);
    }
    // A membership change is refused as one, before its handler (which would say that
    // this server runs alone).
    for (method, path) in [("DELETE", "/api/cluster?id=9"), ("POST", "/api/cluster")] {
        let alice = request(http, method, path, &[("Authorization", "Bearer ta")]).await?;
        assert_eq!(alice.status, 403, "{method} {path} as a non-admin");
        assert_eq!(
            alice.body, "only the admins of --auth-rules may change the cluster's membership\n",
            "{method} {path}"
        );
    }
    server.shutdown().await?;
    Ok(())
}
