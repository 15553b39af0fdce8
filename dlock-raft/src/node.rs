//! A node put together: log, state machine, network and openraft.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::{Config, SnapshotPolicy};

use crate::log_store::DEFAULT_SEGMENT_BYTES;
use crate::network::PeerNetwork;
use crate::types::{NodeId, Raft};
use crate::{LogStore, RaftStoreError, Replica, StateMachine};

/// What it takes to open a node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// This node's id.
    pub id: NodeId,
    /// Where the log (`log/`) and the snapshot live.
    pub dir: PathBuf,
    /// The engine's configuration for a node that starts empty (a snapshot carries its own).
    pub engine: dlock_core::Config,
    /// openraft's configuration ([`raft_config`] gives dlock's defaults).
    pub raft: Config,
    /// The size at which a log segment is closed.
    pub segment_bytes: u64,
    /// Where applied entries go, in log order (see [`StateMachine::with_feed`]), except what
    /// the node applies again while it opens ([`StateMachine::feed_after`]).
    pub feed: Option<crate::state_machine::Feed>,
    /// This node's address book: the raft address it uses to reach each peer, consulted
    /// before the address the cluster membership records (see [`PeerNetwork`]). Empty: the
    /// membership's addresses.
    pub peer_addrs: BTreeMap<NodeId, String>,
    /// Where every applied input is recorded (see [`StateMachine::with_auditor`]).
    pub auditor: Option<crate::state_machine::SharedAuditor>,
    /// The secret this node proves to the peers it connects to, and asks them to prove
    /// (see [`crate::peer_auth`]); the peer listener must be served with
    /// [`serve_peers_authenticated`](crate::serve_peers_authenticated) and the same secret.
    pub peer_secret: Option<crate::PeerSecret>,
    /// This node's rejoin guard (see [`crate::rejoin`]), which its vote requests report;
    /// [`RejoinGuard::off`](crate::RejoinGuard::off) by default.
    pub rejoin: crate::RejoinGuard,
}

impl NodeOptions {
    /// Options with dlock's defaults for node `id` keeping its files in `dir`.
    pub fn new(id: NodeId, dir: impl Into<PathBuf>) -> NodeOptions {
        NodeOptions {
            id,
            dir: dir.into(),
            engine: dlock_core::Config::default(),
            raft: raft_config(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            feed: None,
            peer_addrs: BTreeMap::new(),
            auditor: None,
            peer_secret: None,
            rejoin: crate::RejoinGuard::off(),
        }
    }
}

/// dlock's openraft configuration: heartbeats every 50 ms, elections after 200..400 ms of
/// silence, a snapshot every 10,000 entries keeping the last 1,000 in the log, snapshot
/// chunks of 1 MiB. A node refuses to vote for 400 ms (the longest election timeout) after
/// its vote last changed, so survivors that time out together hold each other off for a
/// round or more (the `failover` bench in `benches/` measures what a fail-over takes).
///
/// A leader that restarts stands for election like any other member (openraft's
/// `enable_leader_restore` is off). A leader sends entries to its followers while its own
/// write of them may still be queued, so it can come back from a crash without an entry a
/// follower holds; taking up the same term again, it would give its next entry that
/// entry's log id, and the follower, seeing the id it already has, would keep and apply its
/// own. In a new term every log id is new (see `tests/recovery.rs`).
///
/// A follower whose log went back to empty (a member whose data directory was lost, back under
/// its old id) is caught up from the start (`allow_log_reversion`): without it the leader,
/// which remembers how far that follower's log reached, would stop replicating to it for
/// good, and the member would look healthy while holding nothing. What makes this safe is
/// that such a member does not vote until it has caught up (see [`crate::rejoin`]).
pub fn raft_config() -> Config {
    Config {
        enable_leader_restore: Some(false),
        allow_log_reversion: Some(true),
        // A member that was paused or cut off asks first whether it would win: while the
        // others still follow the leader, it does not raise the term and depose it.
        enable_pre_vote: Some(true),
        cluster_name: "dlock".to_owned(),
        heartbeat_interval: 50,
        election_timeout_min: 200,
        election_timeout_max: 400,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(DEFAULT_SNAPSHOT_EVERY),
        max_in_snapshot_log_to_keep: DEFAULT_SNAPSHOT_EVERY / 10,
        snapshot_max_chunk_size: 1024 * 1024,
        ..Config::default()
    }
}

/// How many applied entries [`raft_config`] lets pass between snapshots.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 10_000;

/// Sets `config` to take a snapshot every `entries` applied entries (at least 1) and keep
/// the last tenth of them in the log after it, as [`raft_config`] does for 10,000. Fewer
/// means a smaller log and a follower behind by more than a tenth catching up by snapshot.
pub fn snapshot_every(config: &mut Config, entries: u64) {
    let entries = entries.max(1);
    config.snapshot_policy = SnapshotPolicy::LogsSinceLast(entries);
    config.max_in_snapshot_log_to_keep = entries / 10;
}

/// Why a node could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The storage could not be opened.
    #[error(transparent)]
    Store(#[from] RaftStoreError),
    /// openraft refused the configuration or failed to start.
    #[error("raft: {0}")]
    Raft(String),
}

/// Opens node `options.id` from its directory and starts it. Peers reach it through
/// [`serve_peers`](crate::serve_peers) on its raft address.
pub async fn open_node(options: NodeOptions) -> Result<(Raft, Replica), OpenError> {
    let config = options
        .raft
        .validate()
        .map_err(|e| OpenError::Raft(e.to_string()))?;
    let log = LogStore::open(options.dir.join("log"), options.segment_bytes)?;
    let mut sm = StateMachine::open(&options.dir, options.engine)?;
    if let Some(feed) = options.feed {
        // What `Raft::new` applies again before it returns stays out of the feed, which
        // nobody reads yet.
        sm = sm.with_feed(feed).feed_after(log.committed_index());
    }
    if let Some(auditor) = options.auditor {
        sm = sm.with_auditor(auditor);
    }
    let replica = sm.replica();
    let network = PeerNetwork::with_addresses(options.peer_addrs)
        .with_secret(options.peer_secret)
        .with_rejoin_guard(options.rejoin);
    let raft = Raft::new(options.id, Arc::new(config), network, log, sm)
        .await
        .map_err(|e| OpenError::Raft(e.to_string()))?;
    Ok((raft, replica))
}
