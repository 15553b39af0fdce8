//! Blocking notifications cannot evict a session: a victim holds PW and disconnects without
//! `Goodbye` (its session lives on, R51), and an attacker queues and cancels requests that
//! the victim's lock blocks, alternating CW and PR, far more often than the victim's replay
//! buffer holds events. Were each request to add a notification to the victim's replay
//! buffer, the buffer would overflow and the server would close the victim's session; but a
//! lock is told at most once per mode since its last grant (R37), so the victim resumes,
//! finds at most one `Blocking` per distinct mode, and still holds its lock.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Result, bail, ensure};
use dlock_proto::{EventKind, LockFlags, LockState, Mode, Request, ServerMessage};
use dlock_tests::hostile::Bystander;
use dlock_tests::{RawClient, TestServer};
use tokio::io::AsyncWriteExt;

use crate::{full_size, sized, took};

/// The server's replay buffer per session (its default at full size).
const REPLAY_CAPACITY: usize = 64;

/// Requests the attacker queues and cancels: 1,000, or 20,000 at full size.
fn rounds() -> usize {
    sized(1_000, 20_000)
}

/// The attacker acknowledges its own events this often (each round makes two).
const ACK_EVERY: usize = 10;

/// The victim's lease: longer than the test.
const VICTIM_LEASE_MS: u64 = 60_000;

const RESOURCE: &str = "h7/contended";

/// Queues and cancels [`rounds`] requests on [`RESOURCE`], alternating CW and PR.
async fn flood(attacker: &mut RawClient) -> Result<()> {
    for round in 0..rounds() {
        let mode = if round % 2 == 0 { Mode::CW } else { Mode::PR };
        let id = attacker.lock(RESOURCE, mode, LockFlags::empty()).await?;
        let queued = attacker.event_for(id).await?;
        let (EventKind::Queued, Some(lock)) = (&queued.kind, queued.lock) else {
            bail!("round {round}: expected Queued, got {queued:?}");
        };
        attacker.send(Request::Cancel { lock }).await?;
        attacker
            .event_where("the cancel", |e| {
                e.lock == Some(lock) && e.kind == EventKind::Cancelled
            })
            .await?;
        if round % ACK_EVERY == ACK_EVERY - 1 {
            attacker.ack().await?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_and_cancel_floods_do_not_overflow_a_holders_replay_buffer() -> Result<()> {
    let start = Instant::now();
    let mut config = TestServer::config();
    if !full_size() {
        config.replay_capacity = REPLAY_CAPACITY;
    }
    let replay_capacity = config.replay_capacity;
    let server = TestServer::start_with(config).await?;
    let addr = server.addr();
    let bystander = Bystander::start(addr, "h7").await?;

    let mut victim = RawClient::connect_with_ttl(addr, "h7-victim", VICTIM_LEASE_MS).await?;
    let (lock, _) = victim.acquire(RESOURCE, Mode::PW).await?;
    victim.ack().await?;
    // Gone without a Goodbye: the server sees the end of the stream and closes its side.
    victim.framed.get_mut().shutdown().await?;
    ensure!(
        victim.recv().await?.is_none(),
        "the server kept the victim's connection open"
    );

    let mut attacker = RawClient::connect(addr, "h7-attacker").await?;
    let ((), cycles) = bystander.alongside(flood(&mut attacker)).await?;

    let welcome = victim.resume().await?;
    ensure!(welcome.resumed, "the victim's session was not resumed");
    // The replay comes before the answer to a request sent after the resume.
    let ping = victim.send(Request::Ping).await?;
    let mut blocking: BTreeMap<Mode, usize> = BTreeMap::new();
    let mut replayed = 0;
    loop {
        match victim.recv().await? {
            Some(ServerMessage::Reply { id, .. }) if id == ping => break,
            Some(ServerMessage::Event { event, .. }) => {
                replayed += 1;
                match event.kind {
                    EventKind::Blocking { mode } if event.lock == Some(lock) => {
                        *blocking.entry(mode).or_default() += 1;
                    }
                    other => bail!("unexpected replayed event {other:?}"),
                }
            }
            other => bail!("unexpected message after the resume: {other:?}"),
        }
    }
    eprintln!(
        "h7 blocking flood: {} queue+cancel rounds (CW/PR) in {:.1} s against a PW holder with a replay buffer of {replay_capacity}; victim resumed, {replayed} events replayed, Blocking per mode: {blocking:?}; bystander cycles: {cycles} ({})",
        rounds(),
        start.elapsed().as_secs_f64(),
        bystander.times()
    );
    // At most one per mode (R37); at least one per mode (R32: each was blocked).
    let expected: BTreeMap<Mode, usize> = [(Mode::CW, 1), (Mode::PR, 1)].into();
    ensure!(blocking == expected, "blocking notifications {blocking:?}");
    let info = victim.query_resource(RESOURCE).await?;
    let held = info.as_ref().is_some_and(|r| {
        r.granted.len() == 1
            && r.granted[0].lock == lock
            && r.granted[0].state == LockState::Granted { mode: Mode::PW }
    });
    ensure!(held, "the victim's lock is not held any more: {info:?}");
    bystander.cycles(3).await?;
    bystander.check_held().await?;
    took("h7", start);
    Ok(())
}
