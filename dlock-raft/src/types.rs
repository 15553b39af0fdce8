//! openraft's type configuration for dlock, and what an entry carries and returns.

use std::fmt;
use std::io::Cursor;

use dlock_core::{Command, Event};
use serde::{Deserialize, Serialize};

/// A node's id in the cluster.
pub type NodeId = u64;

/// A member of the cluster: where its clients connect and where its peers do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The address clients connect to (`host:port`), given to clients that ask a follower
    /// where the leader is.
    pub client_addr: String,
    /// The address of the peer protocol (`host:port`).
    pub raft_addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.client_addr, self.raft_addr)
    }
}

/// What one application entry of the log carries: a command for the engine and the time the
/// leader stamped it with. The input index is the entry's log index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The leader's clock when it proposed the command (core clock milliseconds).
    pub now_ms: u64,
    /// The command.
    pub command: Command,
}

/// What applying one entry produced: its log index and the engine's events (none for the
/// blank and membership entries openraft writes itself).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The log index of the entry (the input index of the engine).
    pub index: u64,
    /// The events, in the order the engine produced them.
    pub events: Vec<Event>,
    /// For an `OpenSession` entry, the secret it carried: the node that proposed it finds
    /// its new session (or the refusal, which names no session the proposer knows) by it.
    pub opened: Option<u128>,
}

openraft::declare_raft_types!(
    /// openraft's type configuration for dlock.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A running Raft node of dlock.
pub type Raft = openraft::Raft<TypeConfig>;

/// A log entry of dlock's Raft log.
pub type Entry = openraft::Entry<TypeConfig>;

/// A log id of dlock's Raft log.
pub type LogId = openraft::LogId<NodeId>;

/// The storage error type of dlock's Raft log.
pub type StorageError = openraft::StorageError<NodeId>;
