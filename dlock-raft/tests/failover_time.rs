//! What a fail-over costs, measured over three in-process nodes on 127.0.0.1 with dlock's
//! default timing: the leader is stopped, and the clock runs until a new leader has granted
//! a lock. Repeated `DLOCK_FAILOVER_KILLS` times (default 5); each fail-over must finish
//! within [`BOUND`], and the figures are printed (`--nocapture`).

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use dlock_core::{Command, EventKind, LockRequest, Mode, RequestId, SessionId};
use dlock_raft::{ProposeError, Sequencer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const GRACE: Duration = Duration::from_secs(5);

/// The bound every fail-over must keep here. Most take about a second; when both survivors
/// time out together and split the vote, the next try comes after another election timeout
/// (see the figures this test prints).
const BOUND: Duration = Duration::from_secs(5);

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
async fn failover_time_from_leader_stop_to_first_grant_by_the_new_leader() -> Result<()> {
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
    first
        .raft
        .initialize(c.members.clone())
        .await
        .map_err(|e| anyhow::anyhow!("initialize: {e}"))?;
    let open = Command::OpenSession {
        name: "bench".into(),
        ttl_ms: 60_000,
        secret: 3,
    };
    let session = SessionId(propose(&seqs, open).await?.index);
    let mut times = Vec::new();
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
        let started = tokio::time::Instant::now();
        let node = nodes[i].take().context("live")?;
        seqs[i] = None;
        kill(&node).await?;
        let lock = Command::Lock {
            session,
            request: RequestId(k + 1),
            args: LockRequest::new(format!("r{k}"), Mode::EX),
        };
        let applied = propose(&seqs, lock).await?;
        let elapsed = started.elapsed();
        let token = applied
            .events
            .iter()
            .find_map(|e| match e.kind {
                EventKind::Granted { token, .. } => Some(token.0),
                _ => None,
            })
            .context("granted")?;
        assert!(token > last_token);
        last_token = token;
        times.push(elapsed);
        assert!(elapsed < BOUND, "fail-over {k} took {elapsed:?}");
        // The stopped node comes back from its directory.
        drop(node);
        let id = i as u64 + 1;
        let l = TcpListener::bind(&c.members[&id].raft_addr).await?;
        let (n, s) = start_seq(id, &c, l, &duties).await?;
        nodes[i] = Some(n);
        seqs[i] = Some(s);
    }
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1];
    println!(
        "fail-over (leader stop -> first grant by the new leader) over {} kills: min {:?}, p50 {:?}, p99 {:?}, max {:?}",
        times.len(),
        times[0],
        pct(0.50),
        pct(0.99),
        times[times.len() - 1]
    );
    duties.cancel();
    for n in nodes.iter().flatten() {
        kill(n).await?;
    }
    Ok(())
}
