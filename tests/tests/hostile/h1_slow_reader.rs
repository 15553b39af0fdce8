//! A slow reader with queries: a connection sends thousands of prefix queries against a
//! table of many resources and reads nothing. Each answer is a page of up to one frame. The
//! connection's outbox is bounded in bytes (`Config::outbox_max_bytes`): its reader stops
//! taking requests at a quarter of the bound, and a writer that cannot hand anything to the
//! socket for `--slow-reader-timeout` (1 s here) closes the connection.
//!
//! Bounds asserted: the connection is cut (closed by the server, found by a write that
//! fails, with fewer answers left to read than queries sent), a well-behaved client keeps
//! cycling and keeps its lock, and (second test) the server child's resident set grows by at
//! most [`RSS_BUDGET_MIB`] over its size before the attack. (With an outbox bounded in
//! messages only, 4,096 unread pages grew the server by 855-883 MiB.)

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use dlock_proto::{ClientMessage, ProtocolError, Query, Request, RequestId, ServerMessage};
use dlock_tests::hostile::{Bystander, CycleTimes, mib, peak_rss_kib, rss_kib};
use dlock_tests::{RawClient, WAIT, connect_framed, recv_raw};
use futures_util::SinkExt;

use crate::{child, hello, one_at_a_time, sized, take_all, took};

/// Resources in the table: enough that every prefix query is answered with a full page.
const RESOURCES: usize = 2_000;

/// Queries each attacking connection sends without reading: more than its outbox holds plus
/// what the kernel's socket buffers (some MiB, a few hundred pages) take. At full size,
/// 20,000.
fn queries() -> usize {
    sized(8_000, 20_000)
}

/// Attacking connections at once: one, or three at full size.
fn attackers() -> usize {
    sized(1, 3)
}

/// How much the server's resident set may grow over its size before the attack for each
/// connection that does not read its answers.
const RSS_BUDGET_MIB: u64 = 64;

/// Pause between the writes that probe whether the server has closed the connection.
const PROBE_PAUSE: Duration = Duration::from_millis(50);

/// What one run of the attack measured.
struct Measured {
    /// Queries sent before the server closed the connection.
    sent: usize,
    /// Answers the attacker could still read after the close.
    answered: usize,
    /// Whether the last message read on every attacking connection was
    /// `ProtocolError::SlowReader`.
    told_slow: bool,
    base_kib: u64,
    peak_kib: u64,
    after_kib: u64,
    cycles: u64,
    times: CycleTimes,
}

/// Sends [`queries`] prefix queries without reading, then probes with acknowledgements
/// (which have no answer) until a write fails: the server has closed the connection. Then
/// reads what is left. Returns the number of queries sent, of answers read and whether the
/// server said `SlowReader` last.
async fn flood(addr: std::net::SocketAddr) -> Result<(usize, usize, bool)> {
    let mut framed = connect_framed(addr).await?;
    let sent = flood_unread(&mut framed).await?;
    let mut answered = 0;
    let mut told_slow = false;
    while let Some(msg) = recv_raw(&mut framed).await? {
        match msg {
            ServerMessage::Reply { .. } => answered += 1,
            ServerMessage::ProtocolError(ProtocolError::SlowReader) => told_slow = true,
            other => bail!("unexpected message to the slow reader: {other:?}"),
        }
    }
    Ok((sent, answered, told_slow))
}

/// The attack proper: returns the number of queries sent before the connection was closed.
async fn flood_unread(framed: &mut dlock_tests::RawFramed) -> Result<usize> {
    framed.send(hello("h1-slow-reader", 0)).await?;
    match recv_raw(framed).await? {
        Some(ServerMessage::Welcome(_)) => {}
        other => bail!("expected Welcome, got {other:?}"),
    }
    let query = |id| ClientMessage::Request {
        id: RequestId(id),
        body: Request::Query(Query::Prefix {
            prefix: b"h1/".to_vec(),
            limit: u32::MAX,
            after: None,
        }),
    };
    let deadline = tokio::time::Instant::now() + 2 * WAIT;
    let mut sent = 0;
    while sent < queries() {
        match tokio::time::timeout_at(deadline, framed.send(query(sent as u64 + 1))).await {
            Err(_) => bail!("sending the queries hung after {sent}"),
            Ok(Err(_)) => return Ok(sent),
            Ok(Ok(())) => sent += 1,
        }
    }
    // The server answers at its own pace; once the outbox overflows it cuts the connection,
    // and a write after that fails.
    loop {
        match tokio::time::timeout_at(deadline, framed.send(ClientMessage::Ack { seq: 0 })).await {
            Err(_) => bail!(
                "the connection is still open {:?} after {sent} unread queries",
                2 * WAIT
            ),
            Ok(Err(_)) => return Ok(sent),
            Ok(Ok(())) => tokio::time::sleep(PROBE_PAUSE).await,
        }
    }
}

async fn run() -> Result<Measured> {
    let dir = tempfile::tempdir()?;
    let mut server = child(dir.path(), &["--slow-reader-timeout", "1s"]).await?;
    let addr = server.addr();
    let mut filler = RawClient::connect(addr, "h1-filler").await?;
    let names: Vec<String> = (0..RESOURCES).map(|i| format!("h1/{i:06}")).collect();
    take_all(&mut filler, &names).await?;
    // Every answer is a full page (more resources follow).
    let id = filler
        .send(Request::Query(Query::Prefix {
            prefix: b"h1/".to_vec(),
            limit: u32::MAX,
            after: None,
        }))
        .await?;
    match filler.reply_for(id).await? {
        dlock_proto::Reply::Resources { more: true, .. } => {}
        other => bail!("expected a first page with more to follow, got {other:?}"),
    }
    let bystander = Bystander::start(addr, "h1").await?;
    let base_kib = rss_kib(&server)?;

    let (floods, cycles) = bystander
        .alongside(async {
            let floods = futures_util::future::join_all((0..attackers()).map(|_| flood(addr)));
            floods.await.into_iter().collect::<Result<Vec<_>>>()
        })
        .await?;
    let sent = floods.iter().map(|f| f.0).sum();
    let answered = floods.iter().map(|f| f.1).sum();
    let told_slow = floods.iter().all(|f| f.2);
    let times = bystander.times();

    ensure!(
        server.exited().is_none(),
        "the server child exited during the attack"
    );
    let peak_kib = peak_rss_kib(&server)?;
    bystander.cycles(3).await?;
    bystander.check_held().await?;
    filler.ping().await.context("the filler's connection")?;
    let after_kib = rss_kib(&server)?;
    Ok(Measured {
        sent,
        answered,
        told_slow,
        base_kib,
        peak_kib,
        after_kib,
        cycles,
        times,
    })
}

fn report(m: &Measured) {
    eprintln!(
        "h1 slow reader: {} connection(s) cut after {} unread queries in all ({} answers readable after the close, SlowReader said: {}); server RSS before {}, peak {} (+{}, budget +{RSS_BUDGET_MIB} MiB per connection), after the cut {}; bystander cycles during the attack: {} ({})",
        attackers(),
        m.sent,
        m.answered,
        m.told_slow,
        mib(m.base_kib),
        mib(m.peak_kib),
        mib(m.peak_kib.saturating_sub(m.base_kib)),
        mib(m.after_kib),
        m.cycles,
        m.times
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_of_queries_is_cut_and_others_keep_working() -> Result<()> {
    let _turn = one_at_a_time().await;
    let start = Instant::now();
    let m = run().await?;
    report(&m);
    // Cut: the server closed the connection (`flood` fails otherwise) without answering every
    // query the attacker sent.
    ensure!(
        m.answered < m.sent,
        "all {} queries were answered: no cut",
        m.sent
    );
    took("h1 cut", start);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_of_queries_costs_the_server_at_most_its_budget() -> Result<()> {
    let _turn = one_at_a_time().await;
    let start = Instant::now();
    let m = run().await?;
    report(&m);
    let grown_kib = m.peak_kib.saturating_sub(m.base_kib);
    ensure!(
        grown_kib <= RSS_BUDGET_MIB * 1024 * attackers() as u64,
        "the server's RSS grew by {} (budget {RSS_BUDGET_MIB} MiB per connection) while {} connection(s) did not read",
        mib(grown_kib),
        attackers()
    );
    took("h1 rss", start);
    Ok(())
}
