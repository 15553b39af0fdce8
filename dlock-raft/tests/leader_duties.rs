//! The leader's duties over three in-process nodes: proposals stamped with the leader's
//! clock, the fail-over grace applied at each new term, and expiry through ticks the leader
//! proposes.

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use dlock_core::{Command, EventKind, LockRequest, Mode, RequestId, SessionId};
use dlock_raft::{ProposeError, Sequencer};
use tokio_util::sync::CancellationToken;

const GRACE: Duration = Duration::from_millis(1_500);

/// The node that leads with its term ready, if any.
fn ready_leader(seqs: &[Sequencer]) -> Option<usize> {
    seqs.iter().position(Sequencer::is_ready_leader)
}

/// Proposes on whichever node leads, asking again while the leadership moves.
async fn propose(seqs: &[Sequencer], command: Command) -> Result<dlock_raft::Applied> {
    propose_on_leader(seqs, command).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_leader_grants_grace_then_expires_by_its_own_ticks() -> Result<()> {
    let mut c = cluster(3).await?;
    let duties = CancellationToken::new();
    let nodes = c.start_all(Cluster::defaults).await?;
    let seqs: Vec<Sequencer> = nodes.iter().map(|n| sequencer(n, GRACE, &duties)).collect();
    leader_among(&nodes.iter().collect::<Vec<_>>()).await?;

    // A follower refuses proposals and names the leader. (If a loaded machine moves the
    // leadership meanwhile, ask again.)
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no follower refused"
        );
        let Some(leader) = ready_leader(&seqs) else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let other = (leader + 1) % seqs.len();
        match seqs[other].propose(Command::Tick).await {
            Err(ProposeError::NotLeader { leader: Some(m) }) => {
                assert!(c.members.values().any(|x| *x == m), "{m:?}");
                assert_ne!(m, c.members[&(other as u64 + 1)], "not itself");
                break;
            }
            Err(ProposeError::NotLeader { leader: None } | ProposeError::NotReady) | Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // A short lease holding a lock, and a long one.
    let open = |name: &str, ttl_ms| Command::OpenSession {
        name: name.into(),
        ttl_ms,
        secret: 1,
    };
    let short = SessionId(propose(&seqs, open("short", 400)).await?.index);
    let long = SessionId(propose(&seqs, open("long", 60_000)).await?.index);
    let lock = |session, name: &str| Command::Lock {
        session,
        request: RequestId(1),
        args: LockRequest::new(name, Mode::EX),
    };
    let applied = propose(&seqs, lock(short, "db")).await?;
    let old_token = granted_token(&applied.events).context("granted")?;
    for n in &nodes {
        wait_applied(&n.replica, applied.index).await?;
    }

    // The leader's view of the cluster, and reads that see every committed command.
    until("a ready leader", || ready_leader(&seqs).is_some()).await?;
    let l = ready_leader(&seqs).context("a leader")?;
    // The status reads openraft's metrics, which learn of an application a moment after
    // the state machine made it.
    until("the leader's status shows the lock applied", || {
        seqs[l].status().applied_index >= applied.index
    })
    .await?;
    let status = seqs[l].status();
    assert_eq!(status.members, c.members);
    assert_eq!(status.leader, Some(l as u64 + 1));
    assert!(status.leading && status.term >= 1);
    let seen = seqs[l]
        .read_linearizable(|core| core.session(short).map(|s| s.locks.len()))
        .await?;
    assert_eq!(seen, Some(1));
    // A follower does not answer (unless a loaded machine just made it the leader).
    let other = &seqs[(l + 1) % 3];
    let read = other.read_linearizable(|core| core.session_count()).await;
    assert!(
        matches!(read, Err(ProposeError::NotLeader { .. })) || other.status().leading,
        "{read:?}"
    );

    // Kill the leader: the new one extends every lease by the grace before anything else.
    until("a ready leader", || ready_leader(&seqs).is_some()).await?;
    let first = ready_leader(&seqs).context("a leader")? as u64 + 1;
    kill(&nodes[first as usize - 1]).await?;
    let rest: Vec<_> = nodes.iter().filter(|n| n.id != first).collect();
    let second = leader_among(&rest).await?;
    let leader = &seqs[second as usize - 1];
    let replica = &nodes[second as usize - 1].replica;
    until("the new term is ready", || leader.is_ready_leader()).await?;
    let (clock, expires) = replica.read(|core| {
        (
            core.clock_ms(),
            core.session(short).map(|s| s.expires_at_ms),
        )
    });
    let expires = expires.context("the short session survived the fail-over")?;
    assert!(
        expires >= clock + GRACE.as_millis() as u64 - 50,
        "lease ends at {expires}, clock {clock}"
    );
    assert_eq!(holder(replica, "db").map(|h| h.0), Some(short));

    // The other session queues; once the grace is over, a tick the leader proposes expires
    // the short session and grants the lock, with a greater token.
    let live: Vec<Sequencer> = (1..=3u64)
        .filter(|id| *id != first)
        .map(|id| seqs[id as usize - 1].clone())
        .collect();
    let queued = propose(&live, lock(long, "db")).await?;
    assert!(matches!(queued.events[0].kind, EventKind::Queued));
    let start = tokio::time::Instant::now();
    until("the short session expired and the lock passed on", || {
        holder(replica, "db").is_some_and(|(s, _, _)| s == long)
    })
    .await?;
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    let (_, _, token) = holder(replica, "db").context("holder")?;
    assert!(token > old_token, "{token} > {old_token}");
    assert!(replica.read(|core| core.session(short).is_none()));

    duties.cancel();
    for n in rest {
        kill(n).await?;
    }
    Ok(())
}
