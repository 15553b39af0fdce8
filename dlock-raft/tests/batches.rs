//! Entries that carry several commands: each is applied as its own engine input, with an
//! index above the previous one, the same on every replica; ids and fencing tokens stay
//! distinct and increasing within an entry and across entries; a re-sent request in a batch
//! is answered from the first; a leader killed while batches are in flight loses none that
//! were acknowledged.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, ensure};
use common::*;
use dlock_core::{Command, EventKind, LockRequest, Mode, RequestId, SessionId};
use dlock_raft::{Proposal, Raft};

/// Three running nodes with exactly-once on, the cluster formed; the leader's id.
async fn three() -> Result<(Cluster, BTreeMap<u64, Node>, u64)> {
    let mut c = cluster(3).await?;
    let started = c
        .start_all(|c, id| {
            let mut options = c.defaults(id);
            options.engine.exactly_once = true;
            options
        })
        .await?;
    let nodes = by_id(started);
    let leader = leader_among(&nodes.values().collect::<Vec<_>>()).await?;
    Ok((c, nodes, leader))
}

/// Proposes `commands` as one entry through `raft` and waits for it to apply.
async fn batch(raft: &Raft, now_ms: u64, commands: Vec<Command>) -> Result<dlock_raft::Applied> {
    let resp = raft
        .client_write(Proposal { now_ms, commands })
        .await
        .map_err(|e| anyhow::anyhow!("client_write: {e}"))?;
    Ok(resp.data)
}

fn lock(session: SessionId, request: u64, name: &str, mode: Mode) -> Command {
    Command::Lock {
        session,
        request: RequestId(request),
        args: LockRequest::new(name, mode),
    }
}

/// Every grant among `events`: the request and its token, in order.
fn grants(events: &[dlock_core::Event]) -> Vec<(RequestId, u64)> {
    events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Granted { token, .. } => Some((e.request?, token.0)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_takes_consecutive_inputs_with_distinct_growing_ids_and_tokens() -> Result<()> {
    let (_c, nodes, leader) = three().await?;
    let raft = &nodes[&leader].raft;
    let open = |secret| Command::OpenSession {
        name: format!("s{secret}"),
        ttl_ms: 60_000,
        secret,
    };

    let first = batch(raft, 10, vec![open(1)]).await?;
    let s1 = SessionId(first.input);
    assert_eq!(first.opened, vec![(1, s1)]);
    assert_eq!(
        first.input, first.index,
        "a lone command's input is its entry's index"
    );

    // One entry: a second session, three locks, and the first lock re-sent.
    let applied = batch(
        raft,
        20,
        vec![
            open(2),
            lock(s1, 1, "a", Mode::EX),
            lock(s1, 2, "b", Mode::EX),
            lock(s1, 3, "c", Mode::PR),
            lock(s1, 1, "a", Mode::EX),
        ],
    )
    .await?;
    ensure!(
        applied.input == applied.index + 4,
        "five inputs: {applied:?}"
    );
    let s2 = SessionId(applied.index);
    assert_eq!(
        applied.opened,
        vec![(2, s2)],
        "the session id is its input index"
    );
    assert!(s2 > s1);
    let got = grants(&applied.events);
    assert_eq!(
        got.iter().map(|(r, _)| r.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 1],
        "the re-sent request is answered again: {got:?}"
    );
    let tokens: Vec<u64> = got.iter().map(|(_, t)| *t).collect();
    assert!(
        tokens[0] > first.index && tokens[0] < tokens[1] && tokens[1] < tokens[2],
        "tokens grow within the entry: {tokens:?}"
    );
    assert_eq!(tokens[3], tokens[0], "the re-send gets the original token");
    assert!(tokens[2] <= applied.input);

    // The next entry's command comes after every input of the batch.
    let next = batch(raft, 30, vec![lock(s2, 1, "a", Mode::EX)]).await?;
    assert_eq!(next.input, applied.input + 1);
    assert!(grants(&next.events).is_empty(), "queued behind s1");
    let after = batch(raft, 40, vec![lock(s2, 2, "d", Mode::EX)]).await?;
    let token_d = grants(&after.events).first().context("granted d")?.1;
    assert!(token_d > tokens[2] && token_d == after.input);

    // Every replica derived the same inputs: the same holders, tokens and last input.
    let expected = holder(&nodes[&leader].replica, "a").context("a held")?;
    assert_eq!(expected, (s1, Mode::EX, tokens[0]));
    for node in nodes.values() {
        wait_applied(&node.replica, after.index).await?;
        for (name, token) in [("a", tokens[0]), ("b", tokens[1]), ("c", tokens[2])] {
            assert_eq!(holder(&node.replica, name).map(|h| h.2), Some(token));
        }
        assert_eq!(node.replica.read(|c| c.last_index()), after.input);
        let held_by_s1 = node.replica.read(|c| c.session_lock_count(s1));
        assert_eq!(held_by_s1, 3, "the re-send made no second lock");
    }
    same_engines(nodes.values(), after.index).await?;
    for node in nodes.values() {
        kill(node).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_with_batches_in_flight_loses_none_it_acknowledged() -> Result<()> {
    let (_c, nodes, leader) = three().await?;
    let raft = nodes[&leader].raft.clone();
    // One session per writer: request ids grow within each (exactly-once reads a lower
    // one as a re-send).
    let opens = (0..4u128)
        .map(|secret| Command::OpenSession {
            name: format!("w{secret}"),
            ttl_ms: 60_000,
            secret,
        })
        .collect();
    let opened = batch(&raft, 10, opens).await?.opened;
    assert_eq!(opened.len(), 4);

    // Writers keep batches of eight locks in flight; every acknowledged grant is kept.
    let acked: Arc<Mutex<BTreeMap<String, (SessionId, u64)>>> = Arc::default();
    let mut writers = Vec::new();
    for (w, (_, session)) in opened.into_iter().enumerate() {
        let (raft, acked) = (raft.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for round in 0..1_000u64 {
                let commands = (0..8u64)
                    .map(|i| {
                        let n = round * 8 + i;
                        lock(session, n + 1, &format!("w{w}-{n}"), Mode::EX)
                    })
                    .collect();
                let Ok(resp) = raft
                    .client_write(Proposal {
                        now_ms: 20,
                        commands,
                    })
                    .await
                else {
                    return;
                };
                let mut acked = acked.lock().unwrap();
                for e in &resp.data.events {
                    if let (EventKind::Granted { token, .. }, Some(r)) = (&e.kind, e.request) {
                        acked.insert(format!("w{w}-{}", r.0 - 1), (session, token.0));
                    }
                }
            }
        }));
    }
    until("some batches acknowledged", || {
        acked.lock().unwrap().len() >= 200
    })
    .await?;
    kill(&nodes[&leader]).await?;
    for w in writers {
        w.await?;
    }
    let acked = acked.lock().unwrap().clone();
    let rest: Vec<&Node> = nodes.values().filter(|n| n.id != leader).collect();
    let new = leader_among(&rest).await?;
    let replica = &nodes[&new].replica;
    until("every acknowledged grant applied by the new leader", || {
        acked.keys().all(|name| holder(replica, name).is_some())
    })
    .await?;
    for (name, (session, token)) in &acked {
        assert_eq!(
            holder(replica, name),
            Some((*session, Mode::EX, *token)),
            "{name}"
        );
    }
    let distinct: std::collections::BTreeSet<u64> = acked.values().map(|(_, t)| *t).collect();
    assert_eq!(distinct.len(), acked.len(), "every token distinct");
    for node in rest {
        kill(node).await?;
    }
    Ok(())
}
