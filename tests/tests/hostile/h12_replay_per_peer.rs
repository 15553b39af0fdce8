//! Unacknowledged events per client address: an attacker on one address spreads
//! unacknowledged events over many sessions, each holding fewer than a victim on another
//! address. Together they outgrow the replay pool, whose own rule closes the session holding
//! the most: without a per-address share that is the victim's. With
//! `--max-replay-bytes-per-peer` the attacker's address goes over its share first and loses
//! its own sessions; the victim resumes with every event it has not acknowledged.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use anyhow::{Result, bail, ensure};
use dlock_proto::{ClientMessage, EventKind, LockFlags, LockRequest, Mode, Request, ServerMessage};
use dlock_tests::{RawClient, TestServer};
use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;

use crate::{sized, took};

/// All replay buffers together (a grant costs about a hundred bytes in one).
const POOL: usize = 256 * 1024;

/// One address's share: a quarter of the pool, as by default.
const PER_PEER: usize = POOL / 4;

/// Grants the victim leaves unacknowledged: the largest single buffer, well within its
/// address's share.
const VICTIM_EVENTS: usize = 200;

/// Sessions of the attacker, each with fewer unacknowledged grants than the victim, but
/// together several times the pool: 40 × 150, or 200 × 150 at full size.
fn attacker_sessions() -> usize {
    sized(40, 200)
}

/// Unacknowledged grants per attacker session.
const ATTACKER_EVENTS: usize = 150;

/// The victim's lease: longer than the test.
const LEASE_MS: u64 = 120_000;

/// Takes `n` EX locks named `prefix/i` in one pipelined batch and waits for every grant,
/// acknowledging none.
async fn take_unacknowledged(client: &mut RawClient, prefix: &str, n: usize) -> Result<()> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = client.next_id();
        let body = Request::Lock(LockRequest {
            resource: format!("{prefix}/{i}").into_bytes(),
            mode: Mode::EX,
            flags: LockFlags::empty(),
            value: None,
            timeout_ms: None,
        });
        client
            .framed
            .feed(ClientMessage::Request { id, body })
            .await?;
        ids.push(id);
    }
    client.framed.flush().await?;
    for id in ids {
        let event = client.event_for(id).await?;
        ensure!(
            matches!(event.kind, EventKind::Granted { .. }),
            "{prefix}: expected a grant, got {event:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_over_many_sessions_cannot_evict_another_addresss_session() -> Result<()> {
    let start = Instant::now();
    let server = TestServer::start_with(dlock_server::Config {
        replay_pool_bytes: POOL,
        max_replay_bytes_per_peer: Some(PER_PEER),
        ..TestServer::config()
    })
    .await?;
    let addr = server.addr();

    // The victim (127.0.0.1) holds the largest buffer of all, then drops its connection: its
    // session lives on with the events it never acknowledged.
    let mut victim = RawClient::connect_with_ttl(addr, "h12-victim", LEASE_MS).await?;
    take_unacknowledged(&mut victim, "h12/victim", VICTIM_EVENTS).await?;
    victim.framed.get_mut().shutdown().await?;
    ensure!(
        victim.recv().await?.is_none(),
        "the server kept the victim's connection open"
    );

    // The attacker (127.0.0.2) spreads its unacknowledged grants over many sessions.
    let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut attackers = Vec::with_capacity(attacker_sessions());
    let mut closed = 0;
    for s in 0..attacker_sessions() {
        let mut attacker =
            RawClient::connect_from(from, addr, &format!("h12-attacker-{s}")).await?;
        match take_unacknowledged(&mut attacker, &format!("h12/attacker{s}"), ATTACKER_EVENTS).await
        {
            Ok(()) => attackers.push(attacker),
            // One of its own sessions closed under it: the address is over its share.
            Err(_) => closed += 1,
        }
    }
    // The attacker's earlier sessions are closed as its share fills: a ping on one fails.
    for attacker in &mut attackers {
        if attacker.ping().await.is_err() {
            closed += 1;
        }
    }
    let total = attacker_sessions() * ATTACKER_EVENTS;

    // The victim resumes from before its first event: every grant is replayed.
    victim.last_seq = 0;
    let welcome = victim.resume().await?;
    ensure!(welcome.resumed, "the victim's session was closed");
    let ping = victim.send(Request::Ping).await?;
    let mut replayed = 0;
    loop {
        match victim.recv().await? {
            Some(ServerMessage::Reply { id, .. }) if id == ping => break,
            Some(ServerMessage::Event { event, .. })
                if matches!(event.kind, EventKind::Granted { .. }) =>
            {
                replayed += 1;
            }
            other => bail!("unexpected message after the resume: {other:?}"),
        }
    }
    eprintln!(
        "h12 replay per address: pool {POOL} B, share {PER_PEER} B; victim resumed with {replayed} of {VICTIM_EVENTS} unacknowledged grants replayed; attacker: {} sessions x {ATTACKER_EVENTS} = {total} unacknowledged grants, {closed} of its sessions closed",
        attacker_sessions()
    );
    ensure!(
        replayed == VICTIM_EVENTS,
        "the victim got {replayed} of its {VICTIM_EVENTS} grants back"
    );
    ensure!(
        closed > 0,
        "the attacker's address kept {total} unacknowledged grants"
    );
    took("h12", start);
    Ok(())
}

/// Addresses the attacker of the next test spreads over, one connected session each.
const ATTACKER_ADDRESSES: u8 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_session_is_not_the_first_the_pool_evicts() -> Result<()> {
    let start = Instant::now();
    // Each address far under its share: only the pool's own rule acts.
    let server = TestServer::start_with(dlock_server::Config {
        replay_pool_bytes: POOL,
        max_replay_bytes_per_peer: Some(POOL),
        ..TestServer::config()
    })
    .await?;
    let addr = server.addr();

    // The victim holds the largest buffer of all, and its connection drops: it cannot
    // acknowledge until it is back, and its lease still promises it its locks.
    let mut victim = RawClient::connect_with_ttl(addr, "h12-away", LEASE_MS).await?;
    take_unacknowledged(&mut victim, "h12/away", VICTIM_EVENTS).await?;
    victim.framed.get_mut().shutdown().await?;
    ensure!(
        victim.recv().await?.is_none(),
        "the server kept the victim's connection open"
    );

    // Connected sessions on as many addresses, each with fewer unacknowledged grants than
    // the victim, together past the pool.
    let mut attackers = Vec::new();
    for a in 0..ATTACKER_ADDRESSES {
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 2 + a));
        let mut attacker = RawClient::connect_from(from, addr, &format!("h12-churn-{a}")).await?;
        if take_unacknowledged(&mut attacker, &format!("h12/churn{a}"), ATTACKER_EVENTS)
            .await
            .is_ok()
        {
            attackers.push(attacker);
        }
    }
    let mut closed = ATTACKER_ADDRESSES as usize - attackers.len();
    for attacker in &mut attackers {
        if attacker.ping().await.is_err() {
            closed += 1;
        }
    }

    victim.last_seq = 0;
    let welcome = victim.resume().await?;
    ensure!(
        welcome.resumed,
        "the disconnected session was evicted ({closed} connected ones closed)"
    );
    eprintln!(
        "h12 pool: {ATTACKER_ADDRESSES} connected sessions x {ATTACKER_EVENTS} unacknowledged grants on as many addresses, {closed} closed; the disconnected session with {VICTIM_EVENTS} resumed"
    );
    ensure!(closed > 0, "the pool closed nobody");
    took("h12 pool", start);
    Ok(())
}
