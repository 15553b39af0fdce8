//! The request rate of one client address: many connections of one address, each far under
//! its own rate, together get `Overloaded` answers once the address's shared rate is spent
//! (the per-connection limit alone would let 1,000 connections take 1,000 times it), while a
//! client on another address is served as usual.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use anyhow::{Result, bail, ensure};
use dlock_proto::{ClientMessage, Reply, Request, RequestError, RequestId, ServerMessage};
use dlock_tests::{RawClient, TestServer};
use futures_util::SinkExt;

use crate::{sized, took};

/// The address's rate: 200 requests per second, bursts of 20.
const PER_PEER_RATE: u64 = 200;

/// The attacker's connections: 10, or 1,000 at full size.
fn connections() -> usize {
    sized(10, 1_000)
}

/// Pings each attacker connection pipelines at once: far under the connection's own burst
/// (a tenth of the default 50,000 per second).
const PINGS: u64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connections_of_one_address_share_one_request_rate() -> Result<()> {
    let start = Instant::now();
    let server = TestServer::start_with(dlock_server::Config {
        max_request_rate_per_peer: PER_PEER_RATE,
        ..TestServer::config()
    })
    .await?;
    let addr = server.addr();
    let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    // The address's bucket is made with its first connection.
    let first_connect = Instant::now();
    let mut attackers = Vec::with_capacity(connections());
    for c in 0..connections() {
        attackers.push(RawClient::connect_from(from, addr, &format!("h13-{c}")).await?);
    }
    let mut other = RawClient::connect(addr, "h13-other").await?;

    for attacker in &mut attackers {
        for id in 1..=PINGS {
            let ping = ClientMessage::Request {
                id: RequestId(id),
                body: Request::Ping,
            };
            attacker.framed.feed(ping).await?;
        }
        attacker.framed.flush().await?;
    }
    // Another address has a rate of its own: its requests pass while the flood is refused.
    for _ in 0..5 {
        other.ping().await?;
    }

    let (mut pongs, mut overloaded) = (0u64, 0u64);
    for attacker in &mut attackers {
        let mut answered = BTreeSet::new();
        while answered.len() < PINGS as usize {
            match attacker.recv().await? {
                Some(ServerMessage::Reply { id, body }) => {
                    ensure!(answered.insert(id.0), "request {id:?} answered twice");
                    match body {
                        Reply::Pong { .. } => pongs += 1,
                        Reply::Error(RequestError::Overloaded) => overloaded += 1,
                        other => bail!("unexpected reply {other:?}"),
                    }
                }
                Some(_) => {}
                None => bail!("connection closed after {} answers", answered.len()),
            }
        }
    }
    let elapsed = first_connect.elapsed();
    let sent = connections() as u64 * PINGS;
    // What the shared bucket can have passed since it was made: its burst and its rate over
    // the time it took (a bucket that sat full earns nothing meanwhile).
    let allowed = PER_PEER_RATE / 10 + (PER_PEER_RATE as f64 * elapsed.as_secs_f64()).ceil() as u64;
    eprintln!(
        "h13 rate per address: {} connections x {PINGS} pings = {sent}, {:.3} s from the first connection to the last answer; {pongs} passed (at most {allowed} for {PER_PEER_RATE}/s), {overloaded} overloaded",
        connections(),
        elapsed.as_secs_f64()
    );
    ensure!(pongs >= 1, "the burst passes: {pongs}");
    ensure!(
        pongs <= allowed,
        "{pongs} requests of one address passed, over its rate ({allowed})"
    );
    ensure!(
        overloaded == sent - pongs,
        "every other request is answered Overloaded"
    );
    took("h13", start);
    Ok(())
}
