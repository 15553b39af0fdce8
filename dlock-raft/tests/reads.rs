//! Linearizable reads over three in-process nodes: the leader confirms a read index that
//! covers every write it acknowledged, a follower refuses and names the leader, and a leader
//! cut off from its majority confirms nothing.

mod common;

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::*;
use dlock_core::{Command, LockRequest, Mode, RequestId, SessionId};
use dlock_raft::{ReadError, Sequencer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_leader_with_a_majority_confirms_a_read_index() -> Result<()> {
    let mut c = cluster(3).await?;
    let nodes = c.start_all(Cluster::defaults).await?;
    let first = leader_among(&nodes.iter().collect::<Vec<_>>()).await?;
    let seq = |n: &Node| {
        Sequencer::new(
            n.id,
            n.raft.clone(),
            n.replica.clone(),
            Duration::from_secs(1),
        )
    };
    let leader = &nodes[first as usize - 1];
    let open = Command::OpenSession {
        name: "reader".into(),
        ttl_ms: 60_000,
        secret: 7,
    };
    let s = SessionId(write(&leader.raft, 1, open).await?.index);
    let lock = Command::Lock {
        session: s,
        request: RequestId(1),
        args: LockRequest::new("db", Mode::EX),
    };
    let granted = write(&leader.raft, 2, lock).await?.index;

    // The leader's read index covers the acknowledged grant, and its engine shows it.
    let index = tokio::time::timeout(DEADLINE, seq(leader).read_index()).await??;
    ensure!(
        index >= granted,
        "read index {index} below the grant at {granted}"
    );
    ensure!(leader.replica.last_applied_index() >= index);
    ensure!(holder(&leader.replica, "db").is_some_and(|(holder, ..)| holder == s));

    // A follower confirms nothing and names the leader.
    let follower = nodes.iter().find(|n| n.id != first).context("a follower")?;
    match tokio::time::timeout(DEADLINE, seq(follower).read_index()).await? {
        Err(ReadError::NotLeader { leader: Some(m) }) => {
            ensure!(m == c.members[&first], "the follower names {m:?}")
        }
        other => bail!("a follower's read: {other:?}"),
    }

    // Cut off from both followers, the leader still holds its table but must not vouch for
    // it: another leader may already have moved past it.
    for n in nodes.iter().filter(|n| n.id != first) {
        kill(n).await?;
    }
    match tokio::time::timeout(DEADLINE, seq(leader).read_index()).await? {
        Err(ReadError::NoQuorum(_) | ReadError::NotLeader { .. }) => {}
        other => bail!("a leader without a majority read: {other:?}"),
    }
    ensure!(
        holder(&leader.replica, "db").is_some(),
        "the table is still there"
    );
    kill(leader).await?;
    Ok(())
}
