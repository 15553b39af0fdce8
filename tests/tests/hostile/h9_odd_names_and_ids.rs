//! Odd but valid input: session and resource names with terminal escape sequences and
//! newlines are accepted and come back byte for byte in queries (escaping is the business
//! of whoever prints them), and the largest request id is answered like any other.

use std::time::Instant;

use anyhow::{Result, bail, ensure};
use dlock_proto::{
    EventKind, LockFlags, LockRequest, LockState, Mode, Query, Reply, Request, RequestError,
    RequestId, ServerMessage,
};
use dlock_tests::hostile::Bystander;
use dlock_tests::{RawClient, TestServer};

use crate::took;

/// A session name that would clear a terminal and forge a row of a listing if printed raw.
const FORGED_SESSION: &str = "\x1b[2J\nforged row";

/// A resource name of the same kind.
const FORGED_RESOURCE: &str = "h9/\x1b[31mred\r\nforged\x07";

fn lock(resource: &str) -> Request {
    Request::Lock(LockRequest {
        resource: resource.as_bytes().to_vec(),
        mode: Mode::EX,
        flags: LockFlags::empty(),
        value: None,
        timeout_ms: None,
    })
}

#[tokio::test]
async fn escape_sequences_in_names_come_back_intact() -> Result<()> {
    let start = Instant::now();
    let server = TestServer::start().await?;
    let bystander = Bystander::start(server.addr(), "h9").await?;
    let ((), cycles) = bystander
        .alongside(async {
            let mut c = RawClient::connect(server.addr(), FORGED_SESSION).await?;
            let (lock, _) = c.acquire(FORGED_RESOURCE, Mode::EX).await?;
            let id = c
                .send(Request::Query(Query::Session {
                    session: c.session,
                    after: None,
                }))
                .await?;
            let info = match c.reply_for(id).await? {
                Reply::Session {
                    session: Some(info),
                    ..
                } => info,
                other => bail!("expected the session, got {other:?}"),
            };
            ensure!(info.name == FORGED_SESSION, "session name {:?}", info.name);
            ensure!(
                info.locks.len() == 1 && info.locks[0].resource == FORGED_RESOURCE.as_bytes(),
                "locks {:?}",
                info.locks
            );
            let res = c
                .query_resource(FORGED_RESOURCE)
                .await?
                .ok_or_else(|| anyhow::anyhow!("the resource is gone"))?;
            ensure!(
                res.name == FORGED_RESOURCE.as_bytes(),
                "name {:?}",
                res.name
            );
            ensure!(
                res.granted.len() == 1
                    && res.granted[0].lock == lock
                    && res.granted[0].session_name == FORGED_SESSION,
                "granted {:?}",
                res.granted
            );
            Ok(())
        })
        .await?;
    bystander.check_held().await?;
    eprintln!(
        "h9 names: {FORGED_SESSION:?} and {FORGED_RESOURCE:?} came back intact; bystander cycles: {cycles}"
    );
    took("h9 names", start);
    Ok(())
}

#[tokio::test]
async fn the_largest_request_id_is_answered_and_ends_the_id_space() -> Result<()> {
    let start = Instant::now();
    let server = TestServer::start().await?;
    let bystander = Bystander::start(server.addr(), "h9-ids").await?;
    let ((), cycles) = bystander
        .alongside(async {
            let mut c = RawClient::connect(server.addr(), "h9-ids").await?;
            let max = RequestId(u64::MAX);
            c.send_with_id(max, lock("h9/max")).await?;
            let granted = c.event_for(max).await?;
            ensure!(
                matches!(granted.kind, EventKind::Granted { .. }),
                "{granted:?}"
            );
            // Pings and queries are always answered, whatever their id.
            c.send_with_id(max, Request::Ping).await?;
            match c.reply_for(max).await? {
                Reply::Pong { .. } => {}
                other => bail!("expected Pong, got {other:?}"),
            }
            // Ids must increase: the same id again on the same connection is refused with
            // a typed error and not applied; a ping sent after it is answered after the
            // error, and the resource stays unknown.
            c.send_with_id(max, lock("h9/after-max")).await?;
            c.send_with_id(RequestId(7), Request::Ping).await?;
            match c.recv().await? {
                Some(ServerMessage::Reply {
                    id,
                    body: Reply::Error(RequestError::DuplicateRequestId(dup)),
                }) if id == max && dup == max => {}
                other => bail!("expected DuplicateRequestId, got {other:?}"),
            }
            match c.recv().await? {
                Some(ServerMessage::Reply {
                    id: RequestId(7),
                    body: Reply::Pong { .. },
                }) => {}
                other => bail!("expected the pong, got {other:?}"),
            }
            ensure!(
                c.query_resource("h9/after-max").await?.is_none(),
                "a retransmitted id was applied again"
            );
            let held = c.query_resource("h9/max").await?;
            ensure!(
                held.is_some_and(|r| r.granted.len() == 1
                    && r.granted[0].state == LockState::Granted { mode: Mode::EX }),
                "the lock taken with the largest id is not held"
            );
            Ok(())
        })
        .await?;
    bystander.check_held().await?;
    eprintln!(
        "h9 ids: request id u64::MAX granted and answered; a repeat of it refused and not applied; bystander cycles: {cycles}"
    );
    took("h9 ids", start);
    Ok(())
}

/// The server's log (its human format) shows a session name escaped: a name cannot end the
/// line it is logged on and forge the next, or send the terminal of whoever reads the log
/// an escape sequence.
#[tokio::test]
async fn a_session_name_forges_no_line_of_the_servers_log() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = crate::child(dir.path(), &["--log-level", "info"]).await?;
    let forged = "x\n2026-01-01T00:00:00.000000Z ERROR dlock_server: forged\u{1b}[2J\u{202e}";
    let _c = RawClient::connect(server.addr(), forged).await?;
    let path = dir.path().join("server.log");
    // The line is written when the session opens, before the client hears its welcome; the
    // log file may trail the write by a flush, so it is read until the line is there.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(&path)?;
        if log.contains("session opened") {
            break log;
        }
        ensure!(Instant::now() < deadline, "no 'session opened' in {log}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let line = log
        .lines()
        .find(|l| l.contains("session opened"))
        .unwrap_or_default();
    ensure!(
        line.contains(
            r"x\n2026-01-01T00:00:00.000000Z ERROR dlock_server: forged\u{1b}[2J\u{202e}"
        ),
        "the name is not escaped on its line: {line:?}"
    );
    ensure!(
        !log.lines().any(|l| l.starts_with("2026-01-01")),
        "a forged line: {log}"
    );
    ensure!(
        !log.contains(['\u{1b}', '\u{202e}']),
        "raw escapes in the log: {log:?}"
    );
    Ok(())
}
