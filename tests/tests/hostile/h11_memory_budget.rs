//! The memory budget holds under the attacks that cost the most at once: with
//! `--memory-budget 48MiB`, one client fills the lock table with 1,000-byte names until the
//! server refuses (`Limit::Locks`, lowered to fit the budget), and then as many connections
//! as the budget lets in send prefix queries and read nothing (slow readers, whose outboxes
//! draw on the shared pool beyond their reserve). A well-behaved client keeps cycling and
//! keeps its lock, the connection limit is lowered to fit the budget too, and the server's
//! peak resident set grows by less than the budget over its size at start.

use std::time::Instant;

use anyhow::{Result, bail, ensure};
use dlock_proto::{
    ClientMessage, EventKind, Limit, Query, Refusal, Reject, Request, RequestId, ServerMessage,
};
use dlock_tests::hostile::{Bystander, mib, peak_rss_kib, rss_kib};
use dlock_tests::{RawClient, WAIT, connect_framed, recv_raw};
use futures_util::SinkExt;

use crate::{child, hello, one_at_a_time, sized, took};

/// The budget: 48 MiB, or 1 GiB at full size.
fn budget_mib() -> u64 {
    sized(48, 1024) as u64
}

/// Queries each slow reader sends without reading.
const QUERIES: u64 = 400;

/// Attacking connections tried; the budget admits fewer.
fn tried() -> usize {
    sized(100, 3_000)
}

fn name(i: usize) -> String {
    format!("h11/{i:06}/{}", "x".repeat(980))
}

/// Locks names until the server refuses with `Limit::Locks`; returns how many it granted.
async fn fill(client: &mut RawClient) -> Result<usize> {
    const CHUNK: usize = 200;
    let mut granted = 0;
    for round in 0.. {
        ensure!(round < 10_000, "the lock table never filled");
        let mut ids = Vec::with_capacity(CHUNK);
        for i in 0..CHUNK {
            ids.push(client.feed_lock_ex(name(round * CHUNK + i)).await?);
        }
        client.framed.flush().await?;
        let mut full = false;
        for id in ids {
            match client.event_for(id).await?.kind {
                EventKind::Granted { .. } => granted += 1,
                EventKind::Rejected {
                    reason: Reject::LimitExceeded(Limit::Locks),
                } => full = true,
                other => bail!("unexpected answer to a lock request: {other:?}"),
            }
        }
        client.ack().await?;
        if full {
            return Ok(granted);
        }
    }
    unreachable!("the loop returns or fails")
}

/// Opens a connection that sends [`QUERIES`] prefix queries and reads nothing; `None` if the
/// server refused the connection (over the budget's connection limit).
async fn slow_reader(addr: std::net::SocketAddr) -> Result<Option<dlock_tests::RawFramed>> {
    let mut framed = connect_framed(addr).await?;
    framed.send(hello("h11-slow", 0)).await?;
    match recv_raw(&mut framed).await? {
        Some(ServerMessage::Welcome(_)) => {}
        Some(ServerMessage::Refused(
            Refusal::TooManyConnections | Refusal::TooManyConnectionsFromPeer { .. },
        )) => return Ok(None),
        other => bail!("expected Welcome or a refusal, got {other:?}"),
    }
    for id in 1..=QUERIES {
        let query = ClientMessage::Request {
            id: RequestId(id),
            body: Request::Query(Query::Prefix {
                prefix: b"h11/".to_vec(),
                limit: u32::MAX,
                after: None,
            }),
        };
        // The server stops reading (flow control) or cuts the connection: stop writing.
        match tokio::time::timeout(WAIT / 10, framed.send(query)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => break,
        }
    }
    Ok(Some(framed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_budget_bounds_a_full_table_and_many_slow_readers() -> Result<()> {
    let _turn = one_at_a_time().await;
    let start = Instant::now();
    let dir = tempfile::tempdir()?;
    let budget_mib = budget_mib();
    let budget = format!("{budget_mib}MiB");
    let server = child(
        dir.path(),
        &[
            "--memory-budget",
            &budget,
            "--slow-reader-timeout",
            "2s",
            // One session fills the table, which holds more than a session's default limit at
            // full size.
            "--max-locks-per-session",
            "10000000",
        ],
    )
    .await?;
    let addr = server.addr();
    let base_kib = rss_kib(&server)?;
    let bystander = Bystander::start(addr, "h11").await?;

    let mut filler = RawClient::connect(addr, "h11-filler").await?;
    let granted = fill(&mut filler).await?;
    // The table was lowered to fit 40% of the budget at its worst case per lock.
    let most = (budget_mib << 20) as usize / 100 * 40 / (512 + 1024 + 64);
    ensure!(
        granted < most,
        "{granted} locks granted, more than the budget's {most}"
    );
    // Room for the bystander's cycles: give a few back.
    let some: Vec<_> = {
        let id = filler
            .send(Request::Query(Query::Session {
                session: filler.session,
                after: None,
            }))
            .await?;
        match filler.reply_for(id).await? {
            dlock_proto::Reply::Session {
                session: Some(info),
                ..
            } => info.locks.iter().take(10).map(|l| l.lock).collect(),
            other => bail!("expected the filler's session, got {other:?}"),
        }
    };
    for lock in some {
        filler.release(lock).await?;
    }

    // The connection limit was lowered to fit 35% of the budget: idle connections (which
    // the server keeps) are refused beyond it.
    let most_connections =
        (budget_mib << 20) as usize / 100 * 35 / (48 * 1024 + 2 * 65_536 + 2 * 65_536);
    let mut idle = Vec::new();
    loop {
        ensure!(idle.len() < tried(), "every idle connection was admitted");
        let mut framed = connect_framed(addr).await?;
        framed.send(hello("h11-idle", 0)).await?;
        match recv_raw(&mut framed).await? {
            Some(ServerMessage::Welcome(_)) => idle.push(framed),
            Some(ServerMessage::Refused(Refusal::TooManyConnections)) => break,
            other => bail!("expected Welcome or TooManyConnections, got {other:?}"),
        }
    }
    // The bystander and the filler hold two more.
    let connections = idle.len() + 2;
    ensure!(
        connections <= most_connections,
        "{connections} connections admitted, more than the budget's {most_connections}"
    );
    drop(idle);

    let (attackers, cycles) = bystander
        .alongside(async {
            // One after another, each cut (or refused while the cut ones are closing).
            let mut open = Vec::new();
            for _ in 0..tried() {
                if let Some(c) = slow_reader(addr).await? {
                    open.push(c);
                }
            }
            Ok(open.len())
        })
        .await?;
    let peak_kib = peak_rss_kib(&server)?;
    bystander.cycles(3).await?;
    bystander.check_held().await?;
    let grown = peak_kib.saturating_sub(base_kib);
    eprintln!(
        "h11 memory budget {budget_mib} MiB: {granted} locks granted before Limit::Locks, \
         at most {connections} connections, {attackers} slow readers admitted of {}; \
         RSS at start {}, peak {} \
         (+{}); bystander cycles during the attack: {cycles} ({})",
        tried(),
        mib(base_kib),
        mib(peak_kib),
        mib(grown),
        bystander.times()
    );
    ensure!(
        grown <= budget_mib * 1024,
        "the server grew by {} over a budget of {budget_mib} MiB",
        mib(grown)
    );
    took("h11 memory budget", start);
    Ok(())
}
