//! `/metrics`: strict Prometheus text, and counters that move by exactly what a scripted
//! workload did (grants, conversions, unlocks, cancels, timeouts, deadlocks, NOQUEUE
//! refusals, lease expiries, requests by kind), gauges of the table as it stands, and the
//! queue wait and service time histograms.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use dlock_proto::{LockFlags, LockRequest, Mode, Request};
use dlock_tests::http::get;
use dlock_tests::{RawClient, TestServer};

use crate::prom::{Samples, parse};

async fn scrape(http: SocketAddr) -> Result<Samples> {
    let a = get(http, "/metrics").await?;
    ensure!(a.status == 200, "status {}", a.status);
    let ct = a.header("content-type").unwrap_or_default();
    ensure!(
        ct.starts_with("application/openmetrics-text"),
        "content type {ct}"
    );
    parse(&a.body)
}

/// What changed between two scrapes for `name` with `labels`.
fn delta(before: &Samples, after: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.get(name, labels) - before.get(name, labels)
}

async fn expect_kind(
    c: &mut RawClient,
    id: dlock_proto::RequestId,
    what: &str,
) -> Result<dlock_proto::Event> {
    let e = c.event_for(id).await?;
    let name = format!("{:?}", e.kind);
    ensure!(
        name.starts_with(what),
        "expected {what} for {id}, got {name}"
    );
    Ok(e)
}

#[tokio::test]
async fn t80_counters_move_by_exactly_the_workload() -> Result<()> {
    let server = TestServer::start_with_http(TestServer::config()).await?;
    let (addr, http) = (server.addr(), server.http_addr().context("no http")?);
    let before = scrape(http).await?;
    for name in [
        "dlock_grants_total",
        "dlock_queue_wait_seconds_count",
        "dlock_request_service_seconds_bucket",
        "dlock_core_wakeup_seconds_bucket",
        "dlock_core_busy_seconds_total",
        "dlock_floor_write_failures_total",
        "dlock_deadlock_search_steps_total",
        "dlock_received_bytes_total",
        "dlock_frame_errors_total",
        "dlock_rejected_requests_total",
    ] {
        ensure!(before.has(name), "{name} missing before any traffic");
    }
    // Every refusal reason has its series before it first happens (an alert on one needs
    // it), at 0.
    for reason in [
        "overloaded",
        "permission_denied",
        "grace_queue_full",
        "duplicate_request_id",
        "limit_locks",
        "limit_locks_per_peer",
        "unauthenticated",
    ] {
        let key = (
            "dlock_rejected_requests_total".to_owned(),
            vec![("reason".to_owned(), reason.to_owned())],
        );
        ensure!(
            before.0.get(&key) == Some(&0.0),
            "no dlock_rejected_requests_total{{reason=\"{reason}\"}} 0 before any traffic"
        );
    }

    let mut a = RawClient::connect(addr, "a").await?;
    let mut b = RawClient::connect(addr, "b").await?;
    let mut c = RawClient::connect(addr, "c").await?;
    // a holds m1; b queues behind it.
    let (la, _) = a.acquire("m1", Mode::EX).await?;
    let rb = b.lock("m1", Mode::EX, LockFlags::empty()).await?;
    expect_kind(&mut b, rb, "Queued").await?;
    let mid = scrape(http).await?;
    ensure!(mid.get("dlock_locks", &[("state", "waiting"), ("mode", "EX")]) == 1.0);
    ensure!(mid.get("dlock_locks", &[("state", "granted"), ("mode", "EX")]) == 1.0);
    ensure!(mid.get("dlock_waiters", &[]) == 1.0);
    ensure!(mid.get("dlock_connections", &[]) == 3.0);
    // c: NOQUEUE is refused, a 50 ms timeout times out.
    let r = c.lock("m1", Mode::EX, LockFlags::NOQUEUE).await?;
    expect_kind(&mut c, r, "NotQueued").await?;
    let r = c
        .send(Request::Lock(LockRequest {
            resource: b"m1".to_vec(),
            mode: Mode::EX,
            flags: LockFlags::empty(),
            value: None,
            timeout_ms: Some(50),
        }))
        .await?;
    expect_kind(&mut c, r, "Queued").await?;
    expect_kind(&mut c, r, "TimedOut").await?;
    // a releases: b is granted after waiting; b converts down in place.
    a.release(la).await?;
    let granted = expect_kind(&mut b, rb, "Granted").await?;
    let lb = granted.lock.context("grant without lock")?;
    let r = b.convert(lb, Mode::PR, LockFlags::empty()).await?;
    expect_kind(&mut b, r, "Granted").await?;
    // c queues for EX behind b's PR and cancels.
    let r = c.lock("m1", Mode::EX, LockFlags::empty()).await?;
    let queued = expect_kind(&mut c, r, "Queued").await?;
    let lc = queued.lock.context("queued without lock")?;
    let cancel = c.send(Request::Cancel { lock: lc }).await?;
    expect_kind(&mut c, r, "Cancelled").await?;
    let _ = cancel;
    // A two-session cycle: c's request closes it and is refused.
    a.acquire("d1", Mode::EX).await?;
    c.acquire("d2", Mode::EX).await?;
    let r = a.lock("d2", Mode::EX, LockFlags::empty()).await?;
    expect_kind(&mut a, r, "Queued").await?;
    let r = c.lock("d1", Mode::EX, LockFlags::empty()).await?;
    expect_kind(&mut c, r, "Deadlock").await?;
    // A session with a 200 ms lease whose client vanishes: its lease expires.
    let e = RawClient::connect_with_ttl(addr, "e", 200).await?;
    drop(e);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let after = loop {
        let s = scrape(http).await?;
        if delta(&before, &s, "dlock_lease_expiries_total", &[]) >= 1.0 {
            break s;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no lease expiry counted within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let d = |name: &str, labels: &[(&str, &str)]| delta(&before, &after, name, labels);
    let expected = [
        ("dlock_grants_total", 5.0), // a m1, b m1, b's conversion, a d1, c d2
        ("dlock_converts_total", 1.0),
        ("dlock_unlocks_total", 1.0),
        ("dlock_cancels_total", 1.0),
        ("dlock_timeouts_total", 1.0),
        ("dlock_deadlocks_total", 1.0),
        ("dlock_not_queued_total", 1.0),
        ("dlock_lease_expiries_total", 1.0),
        ("dlock_sessions_opened_total", 4.0),
        ("dlock_queue_wait_seconds_count", 1.0), // only b waited and was granted
        ("dlock_connections_accepted_total", 4.0),
    ];
    for (name, want) in expected {
        ensure!(
            d(name, &[]) == want,
            "{name} moved by {}, expected {want}",
            d(name, &[])
        );
    }
    // The deadlock found above was searched for: detection's work is counted.
    let steps = d("dlock_deadlock_search_steps_total", &[]);
    ensure!(steps >= 1.0, "deadlock search steps moved by {steps}");
    let requests = [
        ("lock", 9.0),
        ("convert", 1.0),
        ("unlock", 1.0),
        ("cancel", 1.0),
    ];
    let mut total = 0.0;
    for (kind, want) in requests {
        let got = d("dlock_requests_total", &[("kind", kind)]);
        ensure!(got == want, "requests {kind}: {got}, expected {want}");
        total += want;
    }
    for kind in ["renew", "goodbye", "query", "ping"] {
        total += d("dlock_requests_total", &[("kind", kind)]);
    }
    // Every request handled by the lock engine was timed once.
    ensure!(d("dlock_request_service_seconds_count", &[]) == total);
    let inf = [("le", "+Inf")];
    ensure!(
        after.get("dlock_request_service_seconds_bucket", &inf)
            == after.get("dlock_request_service_seconds_count", &[])
    );
    // The engine's task woke for that work, and every wake-up's time is within its busy time.
    let wakeups = d("dlock_core_wakeup_seconds_count", &[]);
    ensure!(wakeups >= 1.0, "wake-ups moved by {wakeups}");
    let (woke, busy) = (
        after.get("dlock_core_wakeup_seconds_sum", &[]),
        after.get("dlock_core_busy_seconds_total", &[]),
    );
    ensure!(woke <= busy, "wake-up time {woke} above busy time {busy}");
    // b waited at least until a's release after c's 50 ms timeout.
    ensure!(
        d("dlock_queue_wait_seconds_sum", &[]) >= 0.05,
        "queue wait sum {}",
        d("dlock_queue_wait_seconds_sum", &[])
    );
    ensure!(after.get("dlock_queue_wait_seconds_bucket", &[("le", "0.025")]) == 0.0);
    // Nothing was refused or malformed.
    let refused: f64 = after
        .0
        .iter()
        .filter(|((n, _), _)| {
            n == "dlock_rejected_requests_total" || n == "dlock_frame_errors_total"
        })
        .map(|(_, v)| v)
        .sum();
    ensure!(
        refused == 0.0,
        "refusals or frame errors counted: {refused}"
    );
    ensure!(d("dlock_received_bytes_total", &[]) > 0.0 && d("dlock_sent_bytes_total", &[]) > 0.0);
    ensure!(d("dlock_core_busy_seconds_total", &[]) > 0.0);
    // The table as it stands: b PR on m1, a EX on d1, c EX on d2, a waiting EX on d2.
    let g = |state: &str, mode: &str| after.get("dlock_locks", &[("state", state), ("mode", mode)]);
    ensure!((g("granted", "PR"), g("granted", "EX"), g("waiting", "EX")) == (1.0, 2.0, 1.0));
    ensure!(after.get("dlock_sessions", &[]) == 3.0);
    ensure!(after.get("dlock_resources", &[]) == 3.0);
    ensure!(after.get("dlock_waiters", &[]) == 1.0);
    ensure!(after.get("dlock_ready", &[]) == 1.0);
    Ok(())
}

#[tokio::test]
async fn t80_refusals_and_frame_errors_are_counted_by_reason() -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let config = dlock_server::Config {
        max_connections: 2,
        ..TestServer::config()
    };
    let server = TestServer::start_with_http(config).await?;
    let (addr, http) = (server.addr(), server.http_addr().context("no http")?);
    // A frame whose body does not decode.
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await?;
    // A valid session whose resource name is empty: rejected as invalid by the engine.
    let mut a = RawClient::connect(addr, "a").await?;
    let r = a.lock("", Mode::EX, LockFlags::empty()).await?;
    expect_kind(&mut a, r, "Rejected").await?;
    // A third connection while two are open (the malformed one was closed): over
    // max_connections.
    let _b = RawClient::connect(addr, "b").await?;
    let _third = tokio::net::TcpStream::connect(addr).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(http).await?;
        let malformed = m.get("dlock_frame_errors_total", &[("kind", "malformed")]);
        let invalid = m.get("dlock_rejected_requests_total", &[("reason", "invalid")]);
        let too_many = m.get(
            "dlock_rejected_requests_total",
            &[("reason", "too_many_connections")],
        );
        if (malformed, invalid, too_many) == (1.0, 1.0, 1.0) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "counted malformed {malformed}, invalid {invalid}, too many connections {too_many}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn t80_a_hello_without_a_valid_token_is_counted_unauthenticated() -> Result<()> {
    use dlock_proto::{ClientMessage, Hello, PROTOCOL_VERSION, Refusal, ServerMessage};
    use futures_util::SinkExt;
    let dir = tempfile::tempdir()?;
    let auth = dlock_tests::security::write_auth_file(dir.path(), &[("alice", "alice-token")])?;
    let config = dlock_server::Config {
        listen: ([127, 0, 0, 1], 0).into(),
        auth_file: Some(auth),
        ..dlock_server::Config::default()
    };
    let server = dlock_server::Server::with_config(config)
        .http("127.0.0.1:0".parse()?)
        .spawn()
        .await?;
    let http = server.http_addr().context("no http")?;
    for token in [None, Some("wrong".to_owned())] {
        let mut framed = dlock_tests::connect_framed(server.addr()).await?;
        framed
            .send(ClientMessage::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                client_name: "x".into(),
                lease_ttl_ms: 0,
                resume: None,
                token,
            }))
            .await?;
        let answer = dlock_tests::recv_raw(&mut framed).await?;
        ensure!(
            answer == Some(ServerMessage::Refused(Refusal::Unauthenticated)),
            "{answer:?}"
        );
    }
    // With --auth-file, /metrics asks for a token too.
    let a =
        dlock_tests::http::get_with(http, "/metrics", &[("authorization", "Bearer alice-token")])
            .await?;
    ensure!(a.status == 200, "status {}", a.status);
    let m = parse(&a.body)?;
    let n = m.get(
        "dlock_rejected_requests_total",
        &[("reason", "unauthenticated")],
    );
    ensure!(n == 2.0, "unauthenticated counted {n}");
    ensure!(m.get("dlock_sessions", &[]) == 0.0);
    server.shutdown().await?;
    Ok(())
}

/// The `dlock_cluster_*` gauges and `/api/status`'s `role` are a cluster member's: a server
/// that runs alone has none of them (the cluster tests check what a member shows).
#[tokio::test]
async fn t80_a_server_alone_shows_no_cluster_gauges_and_no_role() -> Result<()> {
    let server = TestServer::start_with_http(TestServer::config()).await?;
    let http = server.http_addr().context("no http")?;
    let a = get(http, "/metrics").await?;
    ensure!(a.status == 200, "status {}", a.status);
    let samples = parse(&a.body)?;
    ensure!(samples.has("dlock_ready"), "not the server's metrics");
    let cluster: Vec<&str> = a
        .body
        .lines()
        .filter(|l| l.contains("dlock_cluster"))
        .collect();
    ensure!(cluster.is_empty(), "cluster lines alone: {cluster:?}");

    let st = get(http, "/api/status").await?;
    ensure!(st.status == 200, "status {}", st.status);
    let v: serde_json::Value = serde_json::from_str(&st.body)?;
    ensure!(v.get("ready").is_some(), "not the status: {v}");
    ensure!(v.get("role").is_none(), "a role alone: {v}");
    Ok(())
}
