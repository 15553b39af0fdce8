//! The status page in a real headless Chromium, driven through chromedriver (WebDriver):
//! with two PR holders and an EX waiter on `app/db` and a two-session wait cycle broken by a
//! deadlock refusal, the page lists the three locks with their modes and session names
//! (a hostile name shown as text), draws the cycle in the wait-for graph, and shows the
//! waiter granted after the holders leave, without a reload.
//!
//! Needs `chromium` and `chromedriver` (Debian: chromium, chromium-driver). Without them the
//! test prints a note and passes, unless `DLOCK_BROWSER_TESTS=required` (as in CI). With
//! `DLOCK_SCREENSHOT=PATH` it saves a screenshot of the page in that state.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use fantoccini::{ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::time::Instant;

use dlock_tests::TestServer;

use crate::scenario::{HOSTILE_NAME, build};

/// Finds `name` on the `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// What the test reads from the page, in one script.
const READ_PAGE: &str = r#"
const rows = [...document.querySelectorAll('#resources tbody tr')].map(tr => ({
  resource: tr.dataset.resource, state: tr.dataset.state, mode: tr.dataset.mode,
  name: (tr.querySelector('td.name') || {}).textContent }));
return {
  refreshes: Number(document.body.dataset.refreshes || 0),
  rows,
  cycle_edges: [...document.querySelectorAll('#graph line.edge.cycle')].map(l => [Number(l.dataset.from), Number(l.dataset.to)]),
  cycle_nodes: [...document.querySelectorAll('#graph g.node.cycle')].map(g => Number(g.dataset.session)),
  images: document.querySelectorAll('img').length,
  marker: window.__dlockMarker || null,
  html: document.querySelector('#resources tbody').innerHTML.slice(0, 1500),
};
"#;

/// Polls the page until `done` accepts what it reads, within 20 s.
async fn page_until(
    client: &fantoccini::Client,
    what: &str,
    mut done: impl FnMut(&Value) -> bool,
) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = client.execute(READ_PAGE, vec![]).await?;
        if done(&v) {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("page never showed {what}; last read: {v:#}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rows(v: &Value) -> Vec<(String, String, String, String)> {
    let s = |r: &Value, k: &str| r[k].as_str().unwrap_or_default().to_owned();
    v["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| (s(r, "resource"), s(r, "state"), s(r, "mode"), s(r, "name")))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn t83_status_page_in_headless_chromium() -> Result<()> {
    let required = std::env::var("DLOCK_BROWSER_TESTS").is_ok_and(|v| v == "required");
    let (Some(chromium), Some(driver)) = (which("chromium"), which("chromedriver")) else {
        if required {
            bail!("DLOCK_BROWSER_TESTS=required but chromium or chromedriver is not installed");
        }
        println!(
            "note: t83 skipped: chromium and chromedriver not found (apt-get install chromium chromium-driver)"
        );
        return Ok(());
    };
    let server = TestServer::start_with_http(TestServer::config()).await?;
    let http = server.http_addr().context("no http")?;

    // Below the ephemeral range, so no outgoing connection takes it before chromedriver binds.
    let port = dlock_tests::ports::reserve(1)?[0].port();
    let mut chromedriver = tokio::process::Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting chromedriver")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        ensure!(
            Instant::now() < deadline,
            "chromedriver did not listen within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let profile = tempfile::tempdir()?;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .context("WebDriver session")?;
    // Built once the browser is up, so its start-up does not eat into the scene's leases.
    let result = match build(&server).await {
        Ok(mut scene) => check_page(&client, http, &mut scene).await,
        Err(e) => Err(e),
    };
    let _ = client.close().await;
    let _ = chromedriver.kill().await;
    result
}

async fn check_page(
    client: &fantoccini::Client,
    http: std::net::SocketAddr,
    scene: &mut crate::scenario::Scene,
) -> Result<()> {
    client.goto(&format!("http://{http}/")).await?;
    let v = page_until(client, "the three locks on app/db and the cycle", |v| {
        rows(v).iter().filter(|r| r.0 == "app/db").count() == 3
            && v["cycle_edges"].as_array().is_some_and(|e| e.len() >= 2)
    })
    .await?;
    let app: Vec<_> = rows(&v).into_iter().filter(|r| r.0 == "app/db").collect();
    let want = |state: &str, mode: &str, name: &str| {
        (
            "app/db".to_owned(),
            state.to_owned(),
            mode.to_owned(),
            name.to_owned(),
        )
    };
    ensure!(
        app == [
            want("granted", "PR", "reader-1"),
            want("granted", "PR", HOSTILE_NAME),
            want("waiting", "EX", "writer"),
        ],
        "app/db rows: {app:?} in {}",
        v["html"]
    );
    ensure!(v["images"] == 0, "a session name was parsed as markup");
    // The cycle: right -> left (refused, dashed) and left -> right (still waiting).
    let (left, right) = (scene.left.session.0, scene.right.session.0);
    let mut edges: Vec<(u64, u64)> = v["cycle_edges"]
        .as_array()
        .context("edges")?
        .iter()
        .map(|e| (e[0].as_u64().unwrap_or(0), e[1].as_u64().unwrap_or(0)))
        .collect();
    edges.sort();
    let mut want_edges = vec![(left, right), (right, left)];
    want_edges.sort();
    ensure!(
        edges == want_edges,
        "cycle edges {edges:?}, expected {want_edges:?}"
    );
    let mut nodes: Vec<u64> = serde_json::from_value(v["cycle_nodes"].clone())?;
    nodes.sort();
    ensure!(
        nodes == [left.min(right), left.max(right)],
        "cycle nodes {nodes:?}"
    );
    let listed = client
        .find(Locator::Css("#cycles li.cycle"))
        .await?
        .text()
        .await?;
    ensure!(
        listed.contains("deadlock: right") && listed.contains("left") && listed.contains("cycle/x"),
        "cycle list: {listed}"
    );
    if let Some(path) = std::env::var_os("DLOCK_SCREENSHOT") {
        let png = client.screenshot().await?;
        std::fs::write(&path, png).context("writing the screenshot")?;
    }

    // Mark this page instance: a reload would lose the mark.
    client
        .execute("window.__dlockMarker = 'kept'; return null;", vec![])
        .await?;
    let before = v["refreshes"].as_u64().unwrap_or(0);
    scene.reader1.release(scene.reader_locks.0).await?;
    scene.reader2.release(scene.reader_locks.1).await?;
    let v = page_until(client, "the writer granted", |v| {
        let app: Vec<_> = rows(v).into_iter().filter(|r| r.0 == "app/db").collect();
        app == [want("granted", "EX", "writer")]
    })
    .await?;
    ensure!(v["marker"] == "kept", "the page was reloaded");
    ensure!(v["refreshes"].as_u64().unwrap_or(0) > before);
    Ok(())
}
