//! Recovery over three in-process nodes: a follower far behind catches up by snapshot, all
//! three nodes stopped and reopened recover the table from disk, a minority grants nothing,
//! and a leader that comes back without an entry it had sent does not reuse its log id.

mod common;

use dlock_raft::openraft::rt::watch::WatchReceiver;
use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use dlock_core::{Command, LockRequest, Mode, RequestId, SessionId};
use dlock_raft::openraft::SnapshotPolicy;
use dlock_raft::openraft::storage::{RaftLogReader, RaftLogStorage};
use dlock_raft::{LogStore, NodeOptions, log_store::DEFAULT_SEGMENT_BYTES};

fn open(name: &str) -> Command {
    Command::OpenSession {
        name: name.into(),
        ttl_ms: 60_000,
        secret: 9,
    }
}

fn lock(session: SessionId, request: u64, name: &str, mode: Mode) -> Command {
    Command::Lock {
        session,
        request: RequestId(request),
        args: LockRequest::new(name, mode),
    }
}

/// Options that snapshot every 50 entries and keep none of them in the log.
fn snapshotting(c: &Cluster, id: u64) -> NodeOptions {
    let mut o = c.defaults(id);
    o.raft.snapshot_policy = SnapshotPolicy::LogsSinceLast(50);
    o.raft.max_in_snapshot_log_to_keep = 0;
    o.raft.purge_batch_size = 1;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_far_behind_catches_up_by_snapshot() -> Result<()> {
    let mut c = cluster(3).await?;
    let nodes = c.start_all(snapshotting).await?;
    let first = leader_among(&nodes.iter().collect::<Vec<_>>()).await?;
    let leader = &nodes[first as usize - 1];
    let lagging = nodes.iter().find(|n| n.id != first).context("a follower")?;
    let lagging_id = lagging.id;
    kill(lagging).await?;

    let s = SessionId(write(&leader.raft, 1, open("s")).await?.index);
    let mut last = 0;
    for i in 0..300u64 {
        last = write(
            &leader.raft,
            2 + i,
            lock(s, i + 1, &format!("r{i}"), Mode::PR),
        )
        .await?
        .index;
    }
    until("the leader purged its log past the follower", || {
        leader
            .raft
            .metrics()
            .borrow_watched()
            .purged
            .is_some_and(|p| p.index > 100)
    })
    .await?;

    let l = rebind(&c, lagging_id).await?;
    let back = start_with(snapshotting(&c, lagging_id), l).await?;
    wait_applied(&back.replica, last).await?;
    assert!(
        back.raft.metrics().borrow_watched().snapshot.is_some(),
        "caught up through a snapshot"
    );
    assert!(
        c.dirs[lagging_id as usize - 1]
            .path()
            .join("snapshot.bin")
            .exists()
    );
    let locks = back.replica.read(|core| core.lock_count());
    assert_eq!(locks, 300);
    // The engine installed from the snapshot is the one the others applied entry by entry.
    let live: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.id != lagging_id)
        .chain([&back])
        .collect();
    same_engines(live.iter().copied(), last).await?;
    for n in live {
        kill(n).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_three_stopped_and_reopened_recover_the_table_from_disk() -> Result<()> {
    let mut c = cluster(3).await?;
    let nodes = c.start_all(snapshotting).await?;
    let first = leader_among(&nodes.iter().collect::<Vec<_>>()).await?;
    let raft = &nodes[first as usize - 1].raft;
    let s = SessionId(write(raft, 1, open("s")).await?.index);
    let mut expected = Vec::new();
    let mut last = 0;
    // More than one snapshot's worth, so recovery reads a snapshot and then the log.
    for i in 0..120u64 {
        let name = format!("k{i}");
        let applied = write(raft, 2 + i, lock(s, i + 1, &name, Mode::EX)).await?;
        let token = granted_token(&applied.events).context("granted")?;
        expected.push((name, token));
        last = applied.index;
    }
    for n in &nodes {
        kill(n).await?;
    }

    let mut back = Vec::new();
    for id in 1..=3 {
        let l = rebind(&c, id).await?;
        back.push(start_with(snapshotting(&c, id), l).await?);
    }
    let second = leader_among(&back.iter().collect::<Vec<_>>()).await?;
    for n in &back {
        wait_applied(&n.replica, last).await?;
        for (name, token) in &expected {
            assert_eq!(
                holder(&n.replica, name),
                Some((s, Mode::EX, *token)),
                "{name} on node {} (applied {}, {} locks, metrics {:?})",
                n.id,
                n.replica.last_applied_index(),
                n.replica.read(|core| core.lock_count()),
                n.raft.metrics().borrow_watched().clone()
            );
        }
    }
    // And the cluster goes on: the next token is above every earlier one.
    let raft = &back[second as usize - 1].raft;
    let applied = write(raft, 500, lock(s, 1000, "fresh", Mode::EX)).await?;
    let token = granted_token(&applied.events).context("granted")?;
    assert!(expected.iter().all(|(_, t)| token > *t));
    same_engines(&back, applied.index).await?;
    for n in &back {
        kill(n).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_grants_nothing() -> Result<()> {
    let mut c = cluster(3).await?;
    let nodes = c.start_all(snapshotting).await?;
    let first = leader_among(&nodes.iter().collect::<Vec<_>>()).await?;
    let leader = &nodes[first as usize - 1];
    let s = SessionId(write(&leader.raft, 1, open("s")).await?.index);
    let before = write(&leader.raft, 2, lock(s, 1, "db", Mode::EX))
        .await?
        .index;

    // The leader loses both followers: nothing it is asked commits.
    for n in nodes.iter().filter(|n| n.id != first) {
        kill(n).await?;
    }
    let t = write(&leader.raft, 3, lock(s, 2, "other", Mode::EX));
    let outcome = tokio::time::timeout(Duration::from_secs(2), t).await;
    assert!(
        !matches!(outcome, Ok(Ok(_))),
        "a minority committed: {outcome:?}"
    );
    assert_eq!(leader.replica.last_applied_index(), before);
    assert!(holder(&leader.replica, "other").is_none());
    kill(leader).await?;
    Ok(())
}

/// A leader's followers can hold an entry the leader's own disk does not: it sends entries
/// while its write of them may still be queued, and a crash then loses that write. Here the
/// loss is made by hand (the leader's log cut back by one entry while it is down). Back
/// within the followers' election timeout, the leader must not take up its old term: its
/// next entry would get the lost one's log id, which the followers would take for the entry
/// they hold and apply instead. Each node would then hold a lock the others do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_back_without_an_entry_it_sent_does_not_reuse_its_log_id() -> Result<()> {
    let mut c = cluster(3).await?;
    let mut nodes = c.start_all(Cluster::defaults).await?;
    let first = leader_among(&nodes.iter().collect::<Vec<_>>()).await?;
    let raft = nodes[first as usize - 1].raft.clone();
    let s = SessionId(write(&raft, 1, open("s")).await?.index);
    let kept = write(&raft, 2, lock(s, 1, "kept", Mode::EX)).await?;
    let sent = write(&raft, 3, lock(s, 2, "sent", Mode::EX)).await?;
    let sent_token = granted_token(&sent.events).context("sent granted")?;
    for n in &nodes {
        wait_applied(&n.replica, sent.index).await?;
    }
    let at = nodes.iter().position(|n| n.id == first).context("leader")?;
    let leader = nodes.remove(at);
    kill(&leader).await?;
    drop((leader, raft));

    // The crash: the leader's log ends at `kept`, its followers' at `sent`.
    let mut log = LogStore::open(
        c.dirs[first as usize - 1].path().join("log"),
        DEFAULT_SEGMENT_BYTES,
    )?;
    let kept_id = log
        .try_get_log_entries(kept.index..=kept.index)
        .await?
        .first()
        .context("the kept entry")?
        .log_id;
    log.truncate_after(Some(kept_id)).await?;
    drop(log);

    let l = rebind(&c, first).await?;
    nodes.push(start_with(c.defaults(first), l).await?);
    let second = leader_among(&nodes.iter().collect::<Vec<_>>()).await?;
    let raft = &nodes
        .iter()
        .find(|n| n.id == second)
        .context("leader")?
        .raft;
    let next = write(raft, 4, lock(s, 3, "next", Mode::EX)).await?;
    let next_token = granted_token(&next.events).context("next granted")?;
    for n in &nodes {
        wait_applied(&n.replica, next.index).await?;
        for (name, token) in [("sent", sent_token), ("next", next_token)] {
            assert_eq!(
                holder(&n.replica, name),
                Some((s, Mode::EX, token)),
                "{name} on node {} (leader {first}, then {second})",
                n.id
            );
        }
    }
    same_engines(&nodes, next.index).await?;
    for n in &nodes {
        kill(n).await?;
    }
    Ok(())
}
