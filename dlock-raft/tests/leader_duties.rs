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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_leader_grants_grace_then_expires_by_its_own_ticks() -> Result<()> {
    let mut c = cluster(3).await?;
    let mut nodes = Vec::new();
    let mut seqs = Vec::new();
    let duties = CancellationToken::new();
    for id in 1..=3u64 {
        let l = c.listeners.remove(&id).context("listener")?;
        let node = start(id, &c.dirs[id as usize - 1], l).await?;
        let seq = Sequencer::new(id, node.raft.clone(), node.replica.clone(), GRACE);
        tokio::spawn(seq.clone().run(duties.child_token(), |_| {}));
        seqs.push(seq);
        nodes.push(node);
    }
    nodes[0]
        .raft
        .initialize(c.members.clone())
        .await
        .map_err(|e| anyhow::anyhow!("initialize: {e}"))?;
    let first = leader_among(&nodes.iter().collect::<Vec<_>>()).await?;
    let leader = &seqs[first as usize - 1];

    // A follower refuses proposals and names the leader.
    let follower = seqs
        .iter()
        .find(|s| !s.is_ready_leader())
        .context("follower")?;
    until("the follower knows the leader", || {
        follower.leader().is_some()
    })
    .await?;
    match follower.propose(Command::Tick).await {
        Err(ProposeError::NotLeader { leader: Some(m) }) => {
            assert_eq!(m, c.members[&first]);
        }
        other => panic!("a follower proposed: {other:?}"),
    }

    // A short lease holding a lock, and a long one.
    let open = |name: &str, ttl_ms| Command::OpenSession {
        name: name.into(),
        ttl_ms,
        secret: 1,
    };
    let short = SessionId(leader.propose(open("short", 400)).await?.index);
    let long = SessionId(leader.propose(open("long", 60_000)).await?.index);
    let lock = |session, name: &str| Command::Lock {
        session,
        request: RequestId(1),
        args: LockRequest::new(name, Mode::EX),
    };
    let applied = leader.propose(lock(short, "db")).await?;
    let old_token = granted_token(&applied.events).context("granted")?;
    for n in &nodes {
        wait_applied(&n.replica, applied.index).await?;
    }

    // Kill the leader: the new one extends every lease by the grace before anything else.
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
    let queued = leader.propose(lock(long, "db")).await?;
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
