//! Repeated fail-overs over three in-process nodes on 127.0.0.1 with dlock's default
//! timing: the leader is stopped, a new leader grants a lock with a greater token, and the
//! stopped node comes back from its directory — `DLOCK_FAILOVER_KILLS` times (default 5).
//! How long a fail-over takes is measured by the `failover` bench in `benches/`, not here.

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use dlock_core::{Command, LockRequest, Mode, RequestId, SessionId};
use dlock_raft::Sequencer;
use tokio_util::sync::CancellationToken;

const GRACE: Duration = Duration::from_secs(5);

/// Proposes on whichever live node leads until it is applied.
async fn propose(seqs: &[Option<Sequencer>], command: Command) -> Result<dlock_raft::Applied> {
    propose_on_leader(seqs.iter().flatten(), command).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_leader_stop_is_followed_by_a_grant_with_a_greater_token_from_a_new_leader()
-> Result<()> {
    let kills: usize = std::env::var("DLOCK_FAILOVER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut c = cluster(3).await?;
    let duties = CancellationToken::new();
    let started = c.start_all(Cluster::defaults).await?;
    let mut seqs: Vec<Option<Sequencer>> = started
        .iter()
        .map(|n| Some(sequencer(n, GRACE, &duties)))
        .collect();
    let mut nodes: Vec<Option<Node>> = started.into_iter().map(Some).collect();
    let open = Command::OpenSession {
        name: "bench".into(),
        ttl_ms: 60_000,
        secret: 3,
    };
    let session = SessionId(propose(&seqs, open).await?.index);
    let mut last_token = 0;
    for k in 0..kills as u64 {
        until("a ready leader", || {
            seqs.iter().flatten().any(Sequencer::is_ready_leader)
        })
        .await?;
        let i = seqs
            .iter()
            .position(|s| s.as_ref().is_some_and(Sequencer::is_ready_leader))
            .context("leader")?;
        let node = nodes[i].take().context("live")?;
        seqs[i] = None;
        kill(&node).await?;
        let lock = Command::Lock {
            session,
            request: RequestId(k + 1),
            args: LockRequest::new(format!("r{k}"), Mode::EX),
        };
        let applied = propose(&seqs, lock).await?;
        let token = granted_token(&applied.events).context("granted")?;
        assert!(
            token > last_token,
            "fail-over {k}: token {token} after {last_token}"
        );
        last_token = token;
        // The stopped node comes back from its directory.
        drop(node);
        let id = i as u64 + 1;
        let l = rebind(&c, id).await?;
        let n = start(id, &c.dirs[i], l).await?;
        seqs[i] = Some(sequencer(&n, GRACE, &duties));
        nodes[i] = Some(n);
    }
    duties.cancel();
    for n in nodes.iter().flatten() {
        kill(n).await?;
    }
    Ok(())
}
