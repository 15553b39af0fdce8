//! Admission control in the connection layer: one client address cannot take every
//! connection, and one connection that sends faster than its rate gets `Overloaded` answers
//! instead of a growing queue, while a well-behaved client next to it keeps working.

use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use dlock_proto::{
    ClientMessage, EventKind, Refusal, Reply, Request, RequestError, RequestId, ServerMessage,
};
use dlock_tests::raw::{connect_framed, recv_raw};
use dlock_tests::{RawClient, TestServer};
use futures_util::SinkExt;

use crate::{hello, took};

const PER_PEER: usize = 4;

#[tokio::test]
async fn one_address_holds_at_most_its_share_of_connections() -> Result<()> {
    let start = Instant::now();
    let server = TestServer::start_with(dlock_server::Config {
        max_connections_per_peer: PER_PEER,
        ..TestServer::config()
    })
    .await?;
    let addr = server.addr();
    let mut held = Vec::new();
    for i in 0..PER_PEER {
        held.push(RawClient::connect(addr, &format!("h10-{i}")).await?);
    }
    let mut extra = connect_framed(addr).await?;
    extra.send(hello("h10-extra", 0)).await?;
    match recv_raw(&mut extra).await? {
        Some(ServerMessage::Refused(Refusal::TooManyConnectionsFromPeer { limit })) => {
            ensure!(limit as usize == PER_PEER, "limit {limit}");
        }
        other => bail!("expected TooManyConnectionsFromPeer, got {other:?}"),
    }
    ensure!(
        recv_raw(&mut extra).await?.is_none(),
        "refused socket closed"
    );

    // A place comes back when a connection closes (poll: the server notices the close
    // asynchronously; bounded).
    held.pop().expect("one").goodbye().await?;
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut c = connect_framed(addr).await?;
        c.send(hello("h10-again", 0)).await?;
        match recv_raw(&mut c).await? {
            Some(ServerMessage::Welcome(_)) => break,
            Some(ServerMessage::Refused(Refusal::TooManyConnectionsFromPeer { .. }))
                if Instant::now() < deadline =>
            {
                tokio::task::yield_now().await
            }
            other => bail!("expected Welcome once a place was free, got {other:?}"),
        }
    }
    // The held connections kept working throughout.
    for c in &mut held {
        c.ping().await?;
    }
    took("h10 per-address connections", start);
    Ok(())
}

/// A burst over the per-address limit larger than the refusals the server holds open at once:
/// the connections beyond those are still told why (and closed at once), not just closed.
#[tokio::test]
async fn a_burst_past_the_refusals_held_open_is_still_told_why() -> Result<()> {
    let start = Instant::now();
    let server = TestServer::start_with(dlock_server::Config {
        max_connections_per_peer: 1,
        // The refusals below stay open for the whole test: their clients never close.
        shutdown_grace: std::time::Duration::from_secs(120),
        ..TestServer::config()
    })
    .await?;
    let addr = server.addr();
    let _admitted = RawClient::connect(addr, "h10-burst").await?;
    let mut held = Vec::new();
    for _ in 0..dlock_server::MAX_REFUSALS {
        let mut c = connect_framed(addr).await?;
        match recv_raw(&mut c).await? {
            Some(ServerMessage::Refused(Refusal::TooManyConnectionsFromPeer { .. })) => {}
            other => bail!("expected TooManyConnectionsFromPeer, got {other:?}"),
        }
        held.push(c);
    }
    // Every refusal is held open by its client now: the next one is answered at once.
    for _ in 0..3 {
        let mut extra = connect_framed(addr).await?;
        match recv_raw(&mut extra).await? {
            Some(ServerMessage::Refused(Refusal::TooManyConnectionsFromPeer { limit })) => {
                ensure!(limit == 1, "limit {limit}");
            }
            other => {
                bail!("expected TooManyConnectionsFromPeer past the held refusals, got {other:?}")
            }
        }
        ensure!(recv_raw(&mut extra).await?.is_none(), "closed at once");
    }
    took("h10 refusals past the held ones", start);
    Ok(())
}

/// Pings one flood sends at once.
const SENT: u64 = 200;

/// A server whose connections may each send 40 requests per second, in bursts of 4: a
/// pipelined batch of [`SENT`] is mostly over it.
async fn rate_limited() -> Result<TestServer> {
    TestServer::start_with(dlock_server::Config {
        max_request_rate: 40,
        ..TestServer::config()
    })
    .await
}

/// Sends [`SENT`] pings on `client` in one pipelined batch; their ids, in order.
async fn flood_pings(client: &mut RawClient) -> Result<Vec<RequestId>> {
    let mut ids = Vec::with_capacity(SENT as usize);
    for _ in 0..SENT {
        let id = client.next_id();
        let ping = ClientMessage::Request {
            id,
            body: Request::Ping,
        };
        client.framed.feed(ping).await?;
        ids.push(id);
    }
    client.framed.flush().await?;
    Ok(ids)
}

#[tokio::test]
async fn a_connection_over_its_rate_is_answered_overloaded_and_harms_nobody() -> Result<()> {
    let start = Instant::now();
    // (No bystander cycling here: it would be over the rate itself.)
    let server = rate_limited().await?;
    let mut flood = RawClient::connect(server.addr(), "h10-flood").await?;
    let mut other = RawClient::connect(server.addr(), "h10-other").await?;
    let (lock, _token) = other.acquire("h10/held", dlock_proto::Mode::EX).await?;
    flood_pings(&mut flood).await?;
    // Another connection has its own rate: its request passes while the flood is answered.
    other.ping().await?;

    let (pongs, overloaded) = crate::count_pongs(&mut flood, SENT).await?;
    eprintln!("h10 rate: {pongs} pongs, {overloaded} overloaded of {SENT}");
    ensure!(pongs >= 2, "the burst passes: {pongs}");
    ensure!(
        overloaded > 0,
        "over the rate some are refused: {overloaded}"
    );
    // Still served once the rate allows: poll until a ping passes (bounded).
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let id = flood.send(Request::Ping).await?;
        match flood.reply_for(id).await? {
            Reply::Pong { .. } => break,
            Reply::Error(RequestError::Overloaded) if Instant::now() < deadline => {
                tokio::task::yield_now().await
            }
            other => bail!("expected a pong once under the rate, got {other:?}"),
        }
    }
    // The other session's lock was never in question.
    let held = other.query_resource("h10/held").await?;
    ensure!(
        held.is_some_and(|r| r.granted.len() == 1 && r.granted[0].lock == lock),
        "the other session's lock is still granted"
    );
    took("h10 request rate", start);
    Ok(())
}

#[tokio::test]
async fn over_its_rate_a_connection_still_releases_cancels_and_renews() -> Result<()> {
    let start = Instant::now();
    let server = rate_limited().await?;
    let mut holder = RawClient::connect(server.addr(), "h10-holder").await?;
    holder.acquire("h10/wanted", dlock_proto::Mode::EX).await?;
    let mut flood = RawClient::connect(server.addr(), "h10-releaser").await?;
    let (mine, _) = flood.acquire("h10/mine", dlock_proto::Mode::EX).await?;
    let wait = flood
        .lock("h10/wanted", dlock_proto::Mode::EX, Default::default())
        .await?;
    let queued = flood.event_for(wait).await?;
    ensure!(queued.kind == EventKind::Queued, "{queued:?}");
    let queued = queued.lock.context("queued without a lock id")?;
    // The bucket runs dry; right behind the pings come a release, a cancel and a renewal.
    let pings = flood_pings(&mut flood).await?;
    let unlock = flood.unlock(mine).await?;
    flood.send(Request::Cancel { lock: queued }).await?;
    let renew = flood.send(Request::Renew).await?;
    let mut overloaded = 0;
    for id in pings {
        match flood.reply_for(id).await? {
            Reply::Pong { .. } => {}
            Reply::Error(RequestError::Overloaded) => overloaded += 1,
            other => bail!("unexpected reply {other:?}"),
        }
    }
    ensure!(overloaded > 0, "the pings ran the bucket dry");
    // Counted, but not refused: each is carried out (a cancel is answered by the cancelled
    // request's completion).
    let event = flood.event_for(unlock).await?;
    ensure!(event.kind == EventKind::Unlocked, "the unlock: {event:?}");
    let event = flood.event_for(wait).await?;
    ensure!(
        event.kind == EventKind::Cancelled,
        "the queued request: {event:?}"
    );
    let renewed = flood.event_for(renew).await?;
    ensure!(
        matches!(renewed.kind, EventKind::Renewed { .. }),
        "{renewed:?}"
    );
    let state = holder.query_resource("h10/mine").await?;
    ensure!(state.is_none(), "released: {state:?}");
    took("h10 releases over the rate", start);
    Ok(())
}

#[tokio::test]
async fn when_replay_buffers_outgrow_their_budget_the_session_that_stopped_acking_goes()
-> Result<()> {
    let start = Instant::now();
    // Room for a couple of hundred unacknowledged events over all sessions.
    let server = TestServer::start_with(dlock_server::Config {
        replay_pool_bytes: 20_000,
        ..TestServer::config()
    })
    .await?;
    let mut good = RawClient::connect(server.addr(), "h10-good").await?;
    let (held, _) = good.acquire("h10/good", dlock_proto::Mode::EX).await?;
    good.ack().await?;
    // The hog cycles a lock and never acknowledges: its replay buffer only grows.
    let mut hog = RawClient::connect(server.addr(), "h10-hog").await?;
    let mut cycles = 0;
    let closed = loop {
        ensure!(cycles < 10_000, "the hog was never closed");
        cycles += 1;
        // A send that fails means the server closed the hog's connection.
        let Ok(id) = hog
            .lock("h10/hog", dlock_proto::Mode::EX, Default::default())
            .await
        else {
            break true;
        };
        let lock = loop {
            match hog.recv().await? {
                Some(ServerMessage::Event { event, .. }) if event.request == Some(id) => {
                    break event.lock;
                }
                Some(ServerMessage::Event { event, .. })
                    if event.kind == dlock_proto::EventKind::SessionExpired =>
                {
                    break None;
                }
                Some(_) => {}
                None => break None,
            }
        };
        let Some(lock) = lock else { break true };
        if hog.unlock(lock).await.is_err() {
            break true;
        }
    };
    eprintln!("h10 replay pool: hog closed after {cycles} cycles");
    ensure!(closed);
    // The well-behaved session is untouched: its lock is held and it is served.
    good.ping().await?;
    let info = good.query_resource("h10/good").await?;
    ensure!(
        info.is_some_and(|r| r.granted.len() == 1 && r.granted[0].lock == held),
        "the well-behaved session's lock is still granted"
    );
    took("h10 replay pool", start);
    Ok(())
}
