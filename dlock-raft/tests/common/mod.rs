//! In-process nodes over real TCP on 127.0.0.1 for the cluster tests.
#![allow(dead_code)]

use dlock_raft::openraft::rt::watch::WatchReceiver;
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use dlock_core::{Command, LockState, Mode, SessionId};
use dlock_raft::{
    Member, NodeId, NodeOptions, Proposal, ProposeError, Raft, Replica, Sequencer, open_node,
    serve_peers, serve_peers_authenticated,
};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long any wait in these tests may take.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A running node.
pub struct Node {
    pub id: NodeId,
    pub raft: Raft,
    pub replica: Replica,
    pub stop: CancellationToken,
}

/// Three directories, listeners and member descriptions.
pub struct Cluster {
    pub dirs: Vec<TempDir>,
    pub members: BTreeMap<NodeId, Member>,
    pub listeners: BTreeMap<NodeId, TcpListener>,
}

pub async fn cluster(n: u64) -> Result<Cluster> {
    let mut dirs = Vec::new();
    let mut listeners = BTreeMap::new();
    let mut members = BTreeMap::new();
    for id in 1..=n {
        dirs.push(tempfile::tempdir()?);
        let l = TcpListener::bind("127.0.0.1:0").await?;
        members.insert(
            id,
            Member {
                client_addr: format!("127.0.0.1:{}", 7000 + id),
                raft_addr: l.local_addr()?.to_string(),
            },
        );
        listeners.insert(id, l);
    }
    Ok(Cluster {
        dirs,
        members,
        listeners,
    })
}

impl Cluster {
    /// Forms the cluster of every member through `node` (one of them, started).
    pub async fn form(&self, node: &Node) -> Result<()> {
        node.raft
            .initialize(self.members.clone())
            .await
            .map_err(|e| anyhow::anyhow!("initialize: {e}"))
    }

    /// dlock's default options for member `id`, in its directory.
    pub fn defaults(&self, id: NodeId) -> NodeOptions {
        NodeOptions::new(id, self.dirs[id as usize - 1].path())
    }

    /// Starts every member, each with `options(self, id)`, and forms the cluster through the
    /// first; the nodes in id order.
    pub async fn start_all(
        &mut self,
        options: impl Fn(&Cluster, NodeId) -> NodeOptions,
    ) -> Result<Vec<Node>> {
        let mut nodes = Vec::new();
        for id in 1..=self.dirs.len() as NodeId {
            let l = self
                .listeners
                .remove(&id)
                .ok_or_else(|| anyhow::anyhow!("no listener for node {id}"))?;
            nodes.push(start_with(options(self, id), l).await?);
        }
        self.form(&nodes[0]).await?;
        Ok(nodes)
    }
}

/// Opens node `id` from its directory and serves its peers on `listener`.
pub async fn start(id: NodeId, dir: &TempDir, listener: TcpListener) -> Result<Node> {
    start_with(NodeOptions::new(id, dir.path()), listener).await
}

/// Opens a node with `options` and serves its peers on `listener`.
pub async fn start_with(options: NodeOptions, listener: TcpListener) -> Result<Node> {
    let id = options.id;
    let secret = options.peer_secret.clone();
    let (raft, replica) = open_node(options).await?;
    let stop = CancellationToken::new();
    match secret {
        Some(secret) => tokio::spawn(serve_peers_authenticated(
            listener,
            raft.clone(),
            secret,
            stop.clone(),
        )),
        None => tokio::spawn(serve_peers(listener, raft.clone(), stop.clone())),
    };
    Ok(Node {
        id,
        raft,
        replica,
        stop,
    })
}

/// Binds `id`'s raft address again for a restarted node. The stopped node's peer listener
/// goes with its serving task, which notices the stop on its next poll: until then the
/// address is still in use, so binding is retried (every 10 ms, within [`DEADLINE`]).
pub async fn rebind(c: &Cluster, id: NodeId) -> Result<TcpListener> {
    let addr = &c.members[&id].raft_addr;
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        match TcpListener::bind(addr).await {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < until =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// Stops a node as a crash would, as far as its peers can tell.
pub async fn kill(node: &Node) -> Result<()> {
    node.stop.cancel();
    node.raft
        .shutdown()
        .await
        .map_err(|e| anyhow::anyhow!("shutdown: {e}"))?;
    Ok(())
}

/// Waits until one of `nodes` leads, has applied the first entry of its term (before that
/// it may still refuse writes while its vote is being saved) and all of them agree; returns
/// its id.
pub async fn leader_among(nodes: &[&Node]) -> Result<NodeId> {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        for node in nodes {
            let m = node.raft.metrics().borrow_watched().clone();
            if m.current_leader == Some(node.id)
                && m.state.is_leader()
                && m.last_applied
                    .is_some_and(|l| l.leader_id.term == m.current_term)
                && nodes
                    .iter()
                    .all(|n| n.raft.metrics().borrow_watched().current_leader == Some(node.id))
            {
                return Ok(node.id);
            }
        }
        if tokio::time::Instant::now() > until {
            bail!("no leader within {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `f` until it holds, within [`DEADLINE`].
pub async fn until(what: &str, mut f: impl FnMut() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !f() {
        if tokio::time::Instant::now() > deadline {
            bail!("{what}: not within {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Waits until `replica` applied `index`.
pub async fn wait_applied(replica: &Replica, index: u64) -> Result<()> {
    until(&format!("index {index} applied"), || {
        replica.last_applied_index() >= index
    })
    .await
}

/// `nodes` by id.
pub fn by_id(nodes: Vec<Node>) -> BTreeMap<NodeId, Node> {
    nodes.into_iter().map(|n| (n.id, n)).collect()
}

/// A [`Sequencer`] for `node`, with the fail-over `grace`, whose leader duties run until
/// `duties` is cancelled.
pub fn sequencer(node: &Node, grace: Duration, duties: &CancellationToken) -> Sequencer {
    let seq = Sequencer::new(node.id, node.raft.clone(), node.replica.clone(), grace);
    tokio::spawn(seq.clone().run(duties.child_token(), |_| {}));
    seq
}

/// Proposes `command` on whichever of `seqs` leads with its term ready, asking again while
/// the leadership moves, within [`DEADLINE`].
pub async fn propose_on_leader<'a>(
    seqs: impl IntoIterator<Item = &'a Sequencer> + Clone,
    command: Command,
) -> Result<dlock_raft::Applied> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        for s in seqs.clone() {
            if s.is_ready_leader() {
                match s.propose(command.clone()).await {
                    Ok(applied) => return Ok(applied),
                    Err(ProposeError::NotLeader { .. } | ProposeError::NotReady) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no leader took {command:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until every one of `nodes` has applied `index` and all of them stand at the same
/// input, then checks that their engines are the same there: their snapshots encode to the
/// same bytes. Replication and apply are deterministic, whether a replica applied the log
/// entry by entry, installed a snapshot or reopened its directory.
pub async fn same_engines<'a>(nodes: impl IntoIterator<Item = &'a Node>, index: u64) -> Result<()> {
    let replicas: Vec<&Replica> = nodes.into_iter().map(|n| &n.replica).collect();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut states = Vec::new();
        for replica in &replicas {
            let applied = replica.last_applied_index();
            let core = replica.core();
            let bytes = dlock_proto::codec::encode_body(&core.snapshot())?;
            states.push((applied, core.last_index(), bytes));
        }
        let (_, input, first) = &states[0];
        if states.iter().all(|(i, n, _)| *i >= index && n == input) {
            for (k, (_, _, bytes)) in states.iter().enumerate() {
                anyhow::ensure!(
                    bytes == first,
                    "replica {k} differs from replica 0 after input {input}"
                );
            }
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("replicas not at one input from index {index} on within {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The first granted lock on `name`: its session, mode and token.
pub fn holder(replica: &Replica, name: &str) -> Option<(SessionId, Mode, u64)> {
    replica.read(|core| {
        let r = core.resource(name.as_bytes())?;
        let l = r.granted.first()?;
        let LockState::Granted { mode } = l.state else {
            return None;
        };
        Some((l.session, mode, l.token?.0))
    })
}

/// The token of the first grant among `events`.
pub fn granted_token(events: &[dlock_core::Event]) -> Option<u64> {
    events.iter().find_map(|e| match e.kind {
        dlock_core::EventKind::Granted { token, .. } => Some(token.0),
        _ => None,
    })
}

/// Proposes `command` stamped `now_ms` through `raft` (the leader) and waits for it to apply.
pub async fn write(raft: &Raft, now_ms: u64, command: Command) -> Result<dlock_raft::Applied> {
    let resp = raft
        .client_write(Proposal {
            now_ms,
            commands: vec![command],
        })
        .await
        .map_err(|e| anyhow::anyhow!("client_write: {e}"))?;
    Ok(resp.data)
}
