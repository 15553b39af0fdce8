//! A crowded resource: thousands of locks on one name, and a connection that asks for that
//! resource again and again, by name and by prefix. Every answer fits in a frame: it lists
//! as many of the locks as fit (the grant queue first) and counts the others in `omitted`,
//! and its work is proportional to what it lists, not to the resource's locks. Before, such
//! a query built every lock's entry only to answer "reply too large", and at a million locks
//! each one held the core task for over half a second: a short lease elsewhere lapsed.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use dlock_client::Client;
use dlock_proto::{
    ClientMessage, EventKind, LockFlags, LockRequest, Mode, Query, Reply, Request, RequestId,
    ServerMessage,
};
use dlock_tests::RawClient;
use dlock_tests::hostile::Bystander;
use futures_util::SinkExt;

use crate::{one_at_a_time, sized, took};

/// Sessions that each hold [`PER_SESSION`] NL locks on the one resource.
fn sessions() -> usize {
    sized(2, 10)
}

/// Locks each session holds on it: 10,000 (100,000 at full size, a million in all).
fn per_session() -> usize {
    sized(10_000, 100_000)
}

const RESOURCE: &str = "h16/crowded";

/// Queries the attacker sends in one burst, half by name and half by prefix.
const QUERIES: u64 = 40;

/// Takes `n` NL locks on [`RESOURCE`] through `holder`, pipelined in chunks.
async fn fill(holder: &mut RawClient, n: usize) -> Result<()> {
    let mut left = n;
    while left > 0 {
        let chunk = left.min(500);
        let mut ids = Vec::with_capacity(chunk);
        for _ in 0..chunk {
            let id = holder.next_id();
            let lock = Request::Lock(LockRequest {
                resource: RESOURCE.as_bytes().to_vec(),
                mode: Mode::NL,
                flags: LockFlags::empty(),
                value: None,
                timeout_ms: None,
            });
            holder
                .framed
                .feed(ClientMessage::Request { id, body: lock })
                .await?;
            ids.push(id);
        }
        holder.framed.flush().await?;
        for id in ids {
            let event = holder.event_for(id).await?;
            ensure!(
                matches!(event.kind, EventKind::Granted { .. }),
                "NL lock {id}: {event:?}"
            );
        }
        holder.ack().await?;
        left -= chunk;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_of_a_resource_with_more_locks_than_a_frame_holds_list_what_fits() -> Result<()> {
    let _turn = one_at_a_time().await;
    let start = Instant::now();
    let server = crate::unrated_server().await?;
    let addr = server.addr();
    let lease = Duration::from_millis(sized(1_000, 2_000) as u64);
    let bystander =
        Bystander::start_with(Client::builder(addr.to_string()).lease_ttl(lease), "h16").await?;
    let total = sessions() * per_session();
    let mut holders = Vec::new();
    for i in 0..sessions() {
        let mut holder = RawClient::connect(addr, &format!("h16-holder-{i}")).await?;
        fill(&mut holder, per_session()).await?;
        holders.push(holder);
    }
    let (listed, cycles) = bystander
        .alongside(async {
            let mut attacker = RawClient::connect(addr, "h16-attacker").await?;
            let max_frame_len = attacker.welcome.max_frame_len as usize;
            let mut sent = Vec::new();
            for q in 0..QUERIES {
                let query = if q % 2 == 0 {
                    Query::Resource(RESOURCE.as_bytes().to_vec())
                } else {
                    Query::Prefix {
                        prefix: b"h16/".to_vec(),
                        limit: 0,
                        after: None,
                    }
                };
                sent.push(attacker.send(Request::Query(query)).await?);
            }
            let mut listed = 0;
            for id in sent {
                let body = attacker.reply_for(id).await?;
                let encoded = dlock_proto::codec::encode_body(&ServerMessage::Reply {
                    id: RequestId(1),
                    body: body.clone(),
                })?;
                ensure!(
                    encoded.len() <= max_frame_len,
                    "an answer of {} bytes exceeds the frame limit of {max_frame_len}",
                    encoded.len()
                );
                let Reply::Resources {
                    resources, more, ..
                } = body
                else {
                    bail!("expected the resource, got {body:?}");
                };
                let [info] = &resources[..] else {
                    bail!("expected the one resource, got {} of them", resources.len());
                };
                ensure!(!more, "nothing follows the one resource");
                listed = info.granted.len() + info.converting.len() + info.waiting.len();
                ensure!(listed > 0, "no lock listed");
                ensure!(
                    listed as u64 + info.omitted == total as u64,
                    "{listed} listed and {} omitted of {total}",
                    info.omitted
                );
                ensure!(info.omitted > 0, "all {total} locks fit in a frame?");
            }
            Ok(listed)
        })
        .await?;
    bystander.cycles(3).await?;
    bystander
        .check_held()
        .await
        .context("the short-lease session")?;
    eprintln!(
        "h16 crowded resource: {total} NL locks on one name; {QUERIES} queries by name and prefix, each listing {listed} and counting the rest; bystander with a {lease:?} lease: {cycles} cycles ({}), lock kept",
        bystander.times()
    );
    took("h16", start);
    Ok(())
}
