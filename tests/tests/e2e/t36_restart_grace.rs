//! The recovery grace after a restart (`dlock_server::grace`), on a paused clock: the
//! restarted server opens sessions and answers pings and queries at once, but holds every
//! lock-changing request until the previous run's longest lease (plus a margin) has passed,
//! then applies the held requests in arrival order. A first start and `restart_grace = 0`
//! have no grace.
//!
//! Order is asserted on one connection's stream (events and replies share it): a reply that
//! arrives before a request's event proves the request was not applied when the reply was
//! made.

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use dlock_proto::{
    ClientMessage, EventKind, Hello, LockFlags, Mode, PROTOCOL_VERSION, Refusal, Reply, Request,
    RequestError, RequestId, Resume, ServerMessage,
};
use dlock_server::{Config, RestartGrace};
use dlock_tests::{RawClient, TestServer, connect_framed, recv_raw};
use futures_util::SinkExt;
use tokio::time::Instant;

/// The lease of the previous run's holder: the grace waits it out.
const OLD_TTL_MS: u64 = 3_000;
/// Sessions opened after the restart: long enough not to need renewals in these tests.
const NEW_TTL_MS: u64 = 60_000;

/// Whether an event answering `id` was set aside (received before what was awaited).
fn has_event_for(c: &RawClient, id: RequestId) -> bool {
    c.set_aside()
        .iter()
        .any(|m| matches!(m, ServerMessage::Event { event, .. } if event.request == Some(id)))
}

/// Starts a server with `config`, lets a session with a 3 s lease take EX on `r`, and
/// restarts the server (like `kill -9`). Returns the server, the old client, and when the
/// restart happened.
async fn holder_then_restart(config: Config) -> Result<(TestServer, RawClient, Instant)> {
    let mut server = TestServer::start_with(config).await?;
    let mut a = RawClient::connect_with_ttl(server.addr(), "a", OLD_TTL_MS).await?;
    a.acquire("r", Mode::EX).await?;
    server.restart().await?;
    Ok((server, a, Instant::now()))
}

async fn ensure_resume_refused(server: &TestServer, old: &RawClient) -> Result<()> {
    let mut framed = connect_framed(server.addr()).await?;
    framed
        .send(ClientMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: String::new(),
            lease_ttl_ms: 0,
            resume: Some(Resume {
                session: old.session,
                secret: old.secret,
                last_seq: old.last_seq,
            }),
            token: None,
        }))
        .await?;
    ensure!(recv_raw(&mut framed).await? == Some(ServerMessage::Refused(Refusal::UnknownSession)));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn nothing_is_granted_during_the_grace_and_held_requests_follow_in_order() -> Result<()> {
    let (server, a, restarted) = holder_then_restart(TestServer::config()).await?;
    // The old session is gone at once, so its client learns that its locks are lost.
    ensure_resume_refused(&server, &a).await?;

    // New sessions open during the grace.
    let mut b = RawClient::connect_with_ttl(server.addr(), "b", NEW_TTL_MS).await?;
    let mut c = RawClient::connect_with_ttl(server.addr(), "c", NEW_TTL_MS).await?;
    // A ping answered after a request proves the request reached the core task (one
    // connection's messages are handled in order), which fixes the arrival order across
    // connections: b's lock, c's lock, b's goodbye. Pings and queries are answered during the
    // grace, before the held requests are applied: the resource does not exist yet, and no
    // event for a held request came before the answers.
    let rb = b.lock("r", Mode::EX, LockFlags::empty()).await?;
    b.ping().await?;
    let rc = c.lock("r", Mode::EX, LockFlags::empty()).await?;
    c.ping().await?;
    ensure!(c.query_resource("r").await?.is_none());
    let bye = b.send(Request::Goodbye).await?;
    b.ping().await?;
    ensure!(!has_event_for(&b, rb), "b's lock applied during the grace");
    ensure!(!has_event_for(&c, rc), "c's lock applied during the grace");

    // Arrival order: b's lock, c's lock, b's goodbye.
    let granted = b.event_for(rb).await?;
    let granted_after = restarted.elapsed();
    ensure!(
        matches!(granted.kind, EventKind::Granted { .. }),
        "{granted:?}"
    );
    ensure!(
        granted_after >= Duration::from_millis(OLD_TTL_MS),
        "granted {granted_after:?} after the restart, within the old 3 s lease"
    );
    ensure!(b.event_for(bye).await?.kind == EventKind::SessionClosed);
    let queued = c.event_for(rc).await?;
    ensure!(queued.kind == EventKind::Queued, "{queued:?}");
    match c.event_for(rc).await?.kind {
        EventKind::Granted { .. } => {}
        other => bail!("expected c's lock to be granted after b's goodbye, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn renewals_during_the_grace_keep_short_leases_alive() -> Result<()> {
    let (server, _a, restarted) = holder_then_restart(TestServer::config()).await?;
    // A 1 s lease, shorter than the 3.1 s grace: it lives on the renewals (about every TTL/3),
    // which are applied at once.
    let mut b = RawClient::connect_with_ttl(server.addr(), "b", 1_000).await?;
    let rb = b.lock("r", Mode::EX, LockFlags::empty()).await?;
    while restarted.elapsed() < Duration::from_millis(OLD_TTL_MS + 500) {
        let renew = b.send(Request::Renew).await?;
        ensure!(matches!(
            b.event_for(renew).await?.kind,
            EventKind::Renewed { ttl_ms: 1_000 }
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    match b.event_for(rb).await?.kind {
        EventKind::Granted { .. } => {}
        other => bail!("expected the held lock to be granted after the grace, got {other:?}"),
    }
    let info = b.query_resource("r").await?;
    ensure!(info.is_some_and(|i| i.granted.len() == 1 && i.granted[0].session == b.session));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn held_requests_over_the_bound_are_refused_as_overloaded() -> Result<()> {
    let config = Config {
        grace_queue_capacity: 2,
        ..TestServer::config()
    };
    let (server, _a, _) = holder_then_restart(config).await?;
    let mut b = RawClient::connect_with_ttl(server.addr(), "b", NEW_TTL_MS).await?;
    let r1 = b.lock("x", Mode::EX, LockFlags::empty()).await?;
    let r2 = b.lock("y", Mode::EX, LockFlags::empty()).await?;
    let r3 = b.lock("z", Mode::EX, LockFlags::empty()).await?;
    ensure!(b.reply_for(r3).await? == Reply::Error(RequestError::Overloaded));
    for r in [r1, r2] {
        ensure!(matches!(
            b.event_for(r).await?.kind,
            EventKind::Granted { .. }
        ));
    }
    ensure!(b.query_resource("z").await?.is_none());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_first_start_has_no_grace() -> Result<()> {
    let server = TestServer::start().await?;
    let mut b = RawClient::connect_with_ttl(server.addr(), "b", NEW_TTL_MS).await?;
    let mut c = RawClient::connect_with_ttl(server.addr(), "c", NEW_TTL_MS).await?;
    b.acquire("r", Mode::EX).await?;
    let rc = c.lock("r", Mode::EX, LockFlags::empty()).await?;
    c.ping().await?;
    ensure!(
        has_event_for(&c, rc),
        "c's lock was not applied before the ping was answered"
    );
    // The lease just granted is on record for the next start, written a quarter ahead.
    let recorded = std::fs::read_to_string(server.data_dir().join("max-lease-ttl"))?;
    ensure!(
        recorded.trim() == (NEW_TTL_MS + NEW_TTL_MS / 4).to_string(),
        "{recorded:?}"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn restart_grace_zero_grants_at_once() -> Result<()> {
    let config = Config {
        restart_grace: RestartGrace::DISABLED,
        ..TestServer::config()
    };
    let (server, _a, _) = holder_then_restart(config).await?;
    let mut b = RawClient::connect_with_ttl(server.addr(), "b", NEW_TTL_MS).await?;
    let rb = b.lock("r", Mode::EX, LockFlags::empty()).await?;
    b.ping().await?;
    ensure!(
        has_event_for(&b, rb),
        "b's lock was not applied before the ping was answered"
    );
    match b.event_for(rb).await?.kind {
        EventKind::Granted { .. } => {}
        other => bail!("expected a grant at once, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_crash_during_the_grace_waits_out_the_old_leases_again() -> Result<()> {
    let (mut server, _a, _) = holder_then_restart(TestServer::config()).await?;
    // A session with a shorter lease during the grace must not shorten the next grace: the
    // 3 s lease of the first run may still be running.
    let mut b = RawClient::connect_with_ttl(server.addr(), "b", 1_000).await?;
    b.ping().await?;
    server.restart().await?;
    let restarted = Instant::now();
    let mut c = RawClient::connect_with_ttl(server.addr(), "c", 5_000).await?;
    let rc = c.lock("r", Mode::EX, LockFlags::empty()).await?;
    match c.event_for(rc).await?.kind {
        EventKind::Granted { .. } => {}
        other => bail!("expected a grant after the grace, got {other:?}"),
    }
    let granted_after = restarted.elapsed();
    ensure!(
        granted_after >= Duration::from_millis(OLD_TTL_MS),
        "granted {granted_after:?} after the second restart, within the first run's 3 s lease"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn no_wait_and_timeouts_are_answered_during_the_grace() -> Result<()> {
    let (server, _a, restarted) = holder_then_restart(TestServer::config()).await?;
    let mut b = RawClient::connect_with_ttl(server.addr(), "b", NEW_TTL_MS).await?;
    // NOQUEUE: answered NOT_QUEUED at once, although nothing holds the resource yet.
    let try_lock = b.lock("r", Mode::EX, LockFlags::NOQUEUE).await?;
    let answer = b.event_for(try_lock).await?;
    ensure!(
        answer.kind == EventKind::NotQueued && answer.lock.is_none(),
        "{answer:?}"
    );
    ensure!(
        restarted.elapsed() < Duration::from_millis(OLD_TTL_MS),
        "answered only after the grace"
    );
    // A timeout shorter than the grace: TIMEDOUT once it has passed since the request
    // arrived, still during the grace.
    let sent = Instant::now();
    let short = b
        .send(Request::Lock(dlock_proto::LockRequest {
            timeout_ms: Some(500),
            ..dlock_proto::LockRequest::new("r", Mode::EX)
        }))
        .await?;
    // A timeout longer than the grace: applied with what is left, granted (r is free).
    let long = b
        .send(Request::Lock(dlock_proto::LockRequest {
            timeout_ms: Some(60_000),
            ..dlock_proto::LockRequest::new("s", Mode::EX)
        }))
        .await?;
    let timed_out = b.event_for(short).await?;
    ensure!(timed_out.kind == EventKind::TimedOut, "{timed_out:?}");
    let waited = sent.elapsed();
    ensure!(
        waited >= Duration::from_millis(500)
            && restarted.elapsed() < Duration::from_millis(OLD_TTL_MS),
        "timed out after {waited:?}, {:?} after the restart",
        restarted.elapsed()
    );
    match b.event_for(long).await?.kind {
        EventKind::Granted { .. } => {}
        other => bail!("expected the long request granted after the grace, got {other:?}"),
    }
    ensure!(restarted.elapsed() >= Duration::from_millis(OLD_TTL_MS));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn invalid_requests_are_refused_at_once_during_the_grace() -> Result<()> {
    // R55: INVALID comes first, before the grace's own answers (NOT_QUEUED for a try-lock,
    // TIMEDOUT, or holding the request), and the request changes nothing.
    let (server, _a, restarted) = holder_then_restart(TestServer::config()).await?;
    let mut b = RawClient::connect_with_ttl(server.addr(), "b", NEW_TTL_MS).await?;
    let invalid = |e: &dlock_proto::Event, why: dlock_core::Invalid| {
        e.kind
            == EventKind::Rejected {
                reason: dlock_core::Reject::Invalid(why),
            }
    };
    // A try-lock with an empty name: INVALID, not NOT_QUEUED.
    let empty = b.lock("", Mode::EX, LockFlags::NOQUEUE).await?;
    let answer = b.event_for(empty).await?;
    ensure!(
        invalid(&answer, dlock_core::Invalid::EmptyName),
        "{answer:?}"
    );
    // A flag of an optional feature with a timeout: INVALID at once, not held and timed out.
    let unsupported = b
        .send(Request::Lock(dlock_proto::LockRequest {
            timeout_ms: Some(60_000),
            flags: LockFlags::EXPEDITE,
            ..dlock_proto::LockRequest::new("r", Mode::EX)
        }))
        .await?;
    let answer = b.event_for(unsupported).await?;
    ensure!(
        matches!(
            answer.kind,
            EventKind::Rejected {
                reason: dlock_core::Reject::Invalid(dlock_core::Invalid::UnsupportedFlags(_))
            }
        ),
        "{answer:?}"
    );
    ensure!(
        restarted.elapsed() < Duration::from_millis(OLD_TTL_MS),
        "answered only after the grace"
    );
    // A valid request is still held for the grace.
    let held = b.lock("r", Mode::EX, LockFlags::empty()).await?;
    match b.event_for(held).await?.kind {
        EventKind::Granted { .. } => {}
        other => bail!("expected the held request granted after the grace, got {other:?}"),
    }
    ensure!(restarted.elapsed() >= Duration::from_millis(OLD_TTL_MS));
    Ok(())
}

/// Sends a `Hello` opening a new session with a lease of `ttl_ms` and returns the answer.
async fn hello(server: &TestServer, ttl_ms: u64) -> Result<Option<ServerMessage>> {
    let mut framed = connect_framed(server.addr()).await?;
    framed
        .send(ClientMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: "late".into(),
            lease_ttl_ms: ttl_ms,
            resume: None,
            token: None,
        }))
        .await?;
    recv_raw(&mut framed).await
}

#[tokio::test(start_paused = true)]
async fn a_lease_record_that_cannot_be_raised_refuses_the_session_and_nothing_else() -> Result<()> {
    let server = TestServer::start().await?;
    let mut a = RawClient::connect_with_ttl(server.addr(), "a", NEW_TTL_MS).await?;
    let (_, first) = a.acquire("r", Mode::EX).await?;
    // The record's temporary file cannot be created (a directory is in its place, which
    // stops root as well as anyone): the next raise of the record fails, as on a full disk.
    let blocker = server.data_dir().join("max-lease-ttl.tmp");
    std::fs::create_dir(&blocker)?;
    let recorded = std::fs::read_to_string(server.data_dir().join("max-lease-ttl"))?;

    // A longer lease than recorded would need the record raised: refused, typed.
    let answer = hello(&server, NEW_TTL_MS * 2).await?;
    ensure!(
        answer == Some(ServerMessage::Refused(Refusal::StorageUnavailable)),
        "{answer:?}"
    );
    ensure!(
        std::fs::read_to_string(server.data_dir().join("max-lease-ttl"))? == recorded,
        "the record changed"
    );
    // The server goes on: the session it had keeps its lock and takes more, and a lease
    // within the record still opens a session.
    ensure!(server.is_running());
    let (_, next) = a.acquire("s", Mode::EX).await?;
    ensure!(next > first);
    let held = a.query_resource("r").await?.expect("r is held");
    ensure!(held.granted.len() == 1, "{held:?}");
    let mut b = RawClient::connect_with_ttl(server.addr(), "b", NEW_TTL_MS).await?;
    b.ping().await?;

    // Once the disk has room again, the longer lease opens.
    std::fs::remove_dir(&blocker)?;
    match hello(&server, NEW_TTL_MS * 2).await? {
        Some(ServerMessage::Welcome(w)) => ensure!(w.lease_ttl_ms == NEW_TTL_MS * 2),
        other => bail!("expected a Welcome, got {other:?}"),
    }
    Ok(())
}
