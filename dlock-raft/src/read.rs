//! Linearizable reads (rule 8 of `HA.md`): before a query is answered from the local
//! engine, the leader confirms with a heartbeat round that a majority still follows it and
//! waits until its engine has applied everything committed when the round started (Raft's
//! read index).

use openraft::error::{LinearizableReadError, RaftError};
use openraft::raft::ReadPolicy;

use crate::leader::Sequencer;
use crate::types::Member;

/// Why a read index was not confirmed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// This node is not the leader (or learned of a newer term during the round).
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader, if known.
        leader: Option<Member>,
    },
    /// This node leads, but a majority did not answer the heartbeat round in time (a
    /// partition, or a slow round): it may have been replaced, so it must not answer.
    #[error("no majority confirmed the leadership: {0}")]
    NoQuorum(String),
    /// openraft stopped.
    #[error("raft: {0}")]
    Fatal(String),
}

impl Sequencer {
    /// Confirms that this node leads (a heartbeat round answered by a majority) and waits
    /// until its engine ([`replica`](Sequencer::replica)) has applied every entry committed
    /// when the call started; returns that read index. Whatever the replica shows afterwards
    /// reflects every write completed before the call: one call serves every read that
    /// arrived before it started (batching, as etcd does).
    pub async fn read_index(&self) -> Result<u64, ReadError> {
        match self.raft().ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(read) => Ok(read.index()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                Err(ReadError::NotLeader {
                    leader: f.leader_node,
                })
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(q))) => {
                Err(ReadError::NoQuorum(q.to_string()))
            }
            Err(RaftError::Fatal(e)) => Err(ReadError::Fatal(e.to_string())),
        }
    }
}
