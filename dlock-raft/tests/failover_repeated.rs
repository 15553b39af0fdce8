//! Repeated fail-overs over three in-process nodes on 127.0.0.1 with dlock's default
//! timing: the leader is stopped, a new leader grants a lock with a greater token, and the
//! stopped node comes back from its directory — `DLOCK_FAILOVER_KILLS` times (default 5).
//! How long a fail-over takes is measured by the `failover` bench in `benches/`, not here.

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use dlock_core::{Command, EventKind, LockRequest, Mode, RequestId, SessionId};
use dlock_raft::{ProposeError, Sequencer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const GRACE: Duration = Duration::from_secs(5);

async fn start_seq(
    id: u64,
    c: &Cluster,
    listener: TcpListener,
    duties: &CancellationToken,
) -> Result<(Node, Sequencer)> {
    let node = start(id, &c.dirs[id as usize - 1], listener).await?;
    let seq = Sequencer::new(id, node.raft.clone(), node.replica.clone(), GRACE);
    tokio::spawn(seq.clone().run(duties.child_token(), |_| {}));
    Ok((node, seq))
}

/// Proposes on whichever live node leads until it is applied.
async fn propose(seqs: &[Option<Sequencer>], command: Command) -> Result<dlock_raft::Applied> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        for s in seqs.iter().flatten() {
            if s.is_ready_leader() {
                match s.propose(command.clone()).await {
                    Ok(a) => return Ok(a),
                    Err(ProposeError::NotLeader { .. } | ProposeError::NotReady) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "nobody took {command:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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
    let mut nodes = Vec::new();
    let mut seqs = Vec::new();
    for id in 1..=3u64 {
        let l = c.listeners.remove(&id).context("listener")?;
        let (n, s) = start_seq(id, &c, l, &duties).await?;
        nodes.push(Some(n));
        seqs.push(Some(s));
    }
    let first = nodes[0].as_ref().context("node 1")?;
    c.form(first).await?;
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
        let token = applied
            .events
            .iter()
            .find_map(|e| match e.kind {
                EventKind::Granted { token, .. } => Some(token.0),
                _ => None,
            })
            .context("granted")?;
        assert!(
            token > last_token,
            "fail-over {k}: token {token} after {last_token}"
        );
        last_token = token;
        // The stopped node comes back from its directory.
        drop(node);
        let id = i as u64 + 1;
        let l = rebind(&c, id).await?;
        let (n, s) = start_seq(id, &c, l, &duties).await?;
        nodes[i] = Some(n);
        seqs[i] = Some(s);
    }
    duties.cancel();
    for n in nodes.iter().flatten() {
        kill(n).await?;
    }
    Ok(())
}
