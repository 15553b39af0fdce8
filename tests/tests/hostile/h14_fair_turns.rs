//! Turns between client addresses: an address whose many sessions each pipeline a thousand
//! lock requests at once, then say goodbye to them all, does not keep another address's
//! client from being served. The core task handles what has arrived one message per address
//! in turn and delivers after at most about a millisecond of work, so the other address's
//! requests wait for about one of the flood's messages, not for all of them.
//!
//! The bound asserted is functional (the bystander on 127.0.0.1 completes lock cycles while
//! the attack from 127.0.0.2 is still running, and keeps its lock); the latency figures are
//! printed, and measured at full size by the `fairness` bench (`benches/README.md`).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use anyhow::{Result, bail, ensure};
use dlock_proto::{ClientMessage, EventKind, LockFlags, LockRequest, Request, ServerMessage};
use dlock_tests::hostile::Bystander;
use dlock_tests::{RawClient, TestServer};
use futures_util::SinkExt;
use futures_util::future::try_join_all;

use crate::{one_at_a_time, sized, took};

/// Attacking sessions: 50, or 1,000 at full size.
fn sessions() -> usize {
    sized(50, 1_000)
}

/// Lock requests each attacking session pipelines at once.
const LOCKS: usize = 1_000;

/// Cycles the bystander must complete while the attack runs.
const MIN_CYCLES: u64 = 5;

/// Sends `LOCKS` lock requests at once, waits for every grant (acknowledging them), then
/// says goodbye, which releases them all.
async fn flood(client: &mut RawClient, s: usize) -> Result<()> {
    let mut ids = Vec::with_capacity(LOCKS);
    for l in 0..LOCKS {
        let body = Request::Lock(LockRequest {
            resource: format!("h14/{s:04}/{l:05}").into_bytes(),
            mode: dlock_proto::Mode::EX,
            flags: LockFlags::empty(),
            value: None,
            timeout_ms: None,
        });
        let id = client.next_id();
        client
            .framed
            .feed(ClientMessage::Request { id, body })
            .await?;
        ids.push(id);
    }
    client.framed.flush().await?;
    let mut granted = 0;
    while granted < LOCKS {
        match client.recv().await? {
            Some(ServerMessage::Event { event, .. }) => match event.kind {
                EventKind::Granted { .. } => granted += 1,
                other => bail!("attacker {s}: expected grants, got {other:?}"),
            },
            Some(other) => bail!("attacker {s}: unexpected {other:?}"),
            None => bail!("attacker {s}: closed after {granted} grants"),
        }
    }
    client.ack().await?;
    client.goodbye().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_address_does_not_queue_ahead_of_another() -> Result<()> {
    let _turn = one_at_a_time().await;
    let start = Instant::now();
    let server = TestServer::start().await?;
    let addr = server.addr();
    let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let bystander = Bystander::start(addr, "h14").await?;
    let mut attackers = Vec::with_capacity(sessions());
    for s in 0..sessions() {
        attackers.push(RawClient::connect_from(from, addr, &format!("h14-{s}")).await?);
    }
    let attack_start = Instant::now();
    let attack = try_join_all(attackers.iter_mut().enumerate().map(|(s, c)| flood(c, s)));
    let ((), cycles) = bystander
        .alongside(async {
            attack.await?;
            Ok(())
        })
        .await?;
    let attack_took = attack_start.elapsed();
    bystander.check_held().await?;
    eprintln!(
        "h14 turns between addresses: {} sessions x {LOCKS} pipelined locks from 127.0.0.2 in {:.2} s; bystander on 127.0.0.1 meanwhile: {}",
        sessions(),
        attack_took.as_secs_f64(),
        bystander.times()
    );
    ensure!(
        cycles >= MIN_CYCLES,
        "the bystander completed {cycles} cycles while the attack ran (at least {MIN_CYCLES})"
    );
    took("h14", start);
    Ok(())
}
