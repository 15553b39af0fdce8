//! Three in-process nodes over real TCP on 127.0.0.1: elect a leader, write, kill the
//! leader, a new leader is elected, the state is intact and tokens keep growing; the old
//! leader restarted from its directory catches up.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dlock_core::{Command, EventKind, LockRequest, LockState, Mode, RequestId, SessionId};
use dlock_raft::{Member, NodeId, NodeOptions, Proposal, Raft, Replica, open_node, serve_peers};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(10);

struct Node {
    raft: Raft,
    replica: Replica,
    stop: CancellationToken,
}

async fn start(id: NodeId, dir: &TempDir, listener: TcpListener) -> Result<Node> {
    let (raft, replica) = open_node(NodeOptions::new(id, dir.path())).await?;
    let stop = CancellationToken::new();
    tokio::spawn(serve_peers(listener, raft.clone(), stop.clone()));
    Ok(Node {
        raft,
        replica,
        stop,
    })
}

async fn kill(node: &Node) -> Result<()> {
    node.stop.cancel();
    node.raft.shutdown().await.context("shutdown")?;
    Ok(())
}

/// Waits until one of `nodes` (by id) is leader and the others agree; returns its id.
async fn leader_among(nodes: &BTreeMap<NodeId, &Node>) -> Result<NodeId> {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        for (&id, node) in nodes {
            let m = node.raft.metrics().borrow().clone();
            if m.current_leader == Some(id)
                && m.state.is_leader()
                && nodes
                    .values()
                    .all(|n| n.raft.metrics().borrow().current_leader == Some(id))
            {
                return Ok(id);
            }
        }
        if tokio::time::Instant::now() > until {
            bail!("no leader within {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn write(raft: &Raft, now_ms: u64, command: Command) -> Result<dlock_raft::Applied> {
    let resp = raft
        .client_write(Proposal { now_ms, command })
        .await
        .map_err(|e| anyhow::anyhow!("client_write: {e}"))?;
    Ok(resp.data)
}

fn granted_token(applied: &dlock_raft::Applied) -> Option<u64> {
    applied.events.iter().find_map(|e| match e.kind {
        EventKind::Granted { token, .. } => Some(token.0),
        _ => None,
    })
}

fn holder(replica: &Replica, name: &str) -> Option<(SessionId, Mode, u64)> {
    replica.read(|core| {
        let r = core.resource(name.as_bytes())?;
        let l = r.granted.first()?;
        let LockState::Granted { mode } = l.state else {
            return None;
        };
        Some((l.session, mode, l.token?.0))
    })
}

async fn wait_applied(replica: &Replica, index: u64) -> Result<()> {
    let until = tokio::time::Instant::now() + DEADLINE;
    while replica.last_applied_index() < index {
        if tokio::time::Instant::now() > until {
            bail!("index {index} not applied within {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_new_leader_keeps_every_lock_and_tokens_grow() -> Result<()> {
    let dirs: Vec<TempDir> = (0..3)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        members.insert(
            id,
            Member {
                client_addr: format!("127.0.0.1:{}", 7000 + id),
                raft_addr: l.local_addr()?.to_string(),
            },
        );
        listeners.push(l);
    }
    let mut nodes = BTreeMap::new();
    for (id, l) in (1..=3u64).zip(listeners) {
        nodes.insert(id, start(id, &dirs[id as usize - 1], l).await?);
    }
    nodes[&1]
        .raft
        .initialize(members.clone())
        .await
        .map_err(|e| anyhow::anyhow!("initialize: {e}"))?;
    let all: BTreeMap<NodeId, &Node> = nodes.iter().map(|(k, v)| (*k, v)).collect();
    let first = leader_among(&all).await?;
    let leader = &nodes[&first].raft;

    let open = write(
        leader,
        10,
        Command::OpenSession {
            name: "a".into(),
            ttl_ms: 60_000,
            secret: 7,
        },
    )
    .await?;
    assert!(matches!(
        open.events[0].kind,
        EventKind::SessionOpened { .. }
    ));
    let session = SessionId(open.index);
    let mut tokens = BTreeMap::new();
    for (i, (name, mode)) in [("db", Mode::EX), ("cfg", Mode::PR), ("log", Mode::CW)]
        .into_iter()
        .enumerate()
    {
        let applied = write(
            leader,
            20 + i as u64,
            Command::Lock {
                session,
                request: RequestId(i as u64 + 1),
                args: LockRequest::new(name, mode),
            },
        )
        .await?;
        let token = granted_token(&applied).context("granted")?;
        assert_eq!(token, applied.index, "the token is the entry's log index");
        tokens.insert(name, (mode, token));
    }
    let last = leader
        .metrics()
        .borrow()
        .last_applied
        .context("applied")?
        .index;
    for node in nodes.values() {
        wait_applied(&node.replica, last).await?;
    }

    // Kill the leader; the other two elect a new one.
    kill(&nodes[&first]).await?;
    let rest: BTreeMap<NodeId, &Node> = nodes
        .iter()
        .filter(|(k, _)| **k != first)
        .map(|(k, v)| (*k, v))
        .collect();
    let second = leader_among(&rest).await?;
    assert_ne!(second, first);
    let leader = &nodes[&second].raft;
    for (name, (mode, token)) in &tokens {
        assert_eq!(
            holder(&nodes[&second].replica, name),
            Some((session, *mode, *token)),
            "{name} still held after the fail-over"
        );
    }
    // The next grant on a held resource comes after every earlier token.
    let applied = write(
        leader,
        30,
        Command::Unlock {
            session,
            request: RequestId(10),
            args: dlock_core::UnlockRequest::new(dlock_core::LockId(tokens["db"].1)),
        },
    )
    .await?;
    assert!(matches!(applied.events[0].kind, EventKind::Unlocked));
    let applied = write(
        leader,
        31,
        Command::Lock {
            session,
            request: RequestId(11),
            args: LockRequest::new("db", Mode::EX),
        },
    )
    .await?;
    let token = granted_token(&applied).context("granted again")?;
    assert!(
        tokens.values().all(|(_, t)| token > *t),
        "{token} after {tokens:?}"
    );

    // The killed node restarts from its directory and catches up from its log.
    let l = TcpListener::bind(&members[&first].raft_addr).await?;
    let restarted = start(first, &dirs[first as usize - 1], l).await?;
    wait_applied(&restarted.replica, applied.index).await?;
    assert_eq!(
        holder(&restarted.replica, "db"),
        Some((session, Mode::EX, token))
    );
    for node in rest.values().chain([&&restarted]) {
        kill(node).await?;
    }
    Ok(())
}
