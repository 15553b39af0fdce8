//! openraft's type configuration for dlock, and what an entry carries and returns.

use std::fmt;
use std::io::Cursor;

use dlock_core::{Command, Event, SessionId};
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

/// What one application entry of the log carries: one or more commands for the engine
/// (applied in order, as consecutive inputs) and the time the leader stamped them with.
///
/// Each command becomes an engine input whose index is [`input_index`] of the entry's log
/// index and the previous input's: the log index itself when the entries before carried one
/// command each, otherwise one more than the previous input. Indices are so strictly
/// increasing, the same on every replica, and never below the entry's log index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The leader's clock when it proposed the commands (core clock milliseconds).
    pub now_ms: u64,
    /// The commands, applied in this order (at most [`MAX_BATCH`]).
    pub commands: Vec<Command>,
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} commands at {} ms", self.commands.len(), self.now_ms)
    }
}

/// The most commands one entry carries: the proposer gathers at most this many into one
/// entry (what openraft sends in one append stays well under the peer frame limit).
pub const MAX_BATCH: usize = 64;

/// The engine input index of a command carried by the entry at log index `log_index`, when
/// the engine's last input was `last_input`: the larger of the log index and
/// `last_input + 1`. One command per entry keeps input index = log index (and so a grant's
/// fencing token is its entry's log index); a batch of `n` commands takes `n` consecutive
/// indices from there, and the entries after continue above them.
pub fn input_index(log_index: u64, last_input: u64) -> u64 {
    log_index.max(last_input.saturating_add(1))
}

/// What applying one entry produced: its log index and the engine's events (none for the
/// blank and membership entries openraft writes itself).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The log index of the entry.
    pub index: u64,
    /// The engine input index of the entry's last command (see [`input_index`]; for a
    /// one-command entry, the input index of its command; the engine's last input before it
    /// for an entry without commands).
    pub input: u64,
    /// The events, in the order the engine produced them (of every command of the entry).
    pub events: Vec<Event>,
    /// For each `OpenSession` command of the entry, the secret it carried and the session
    /// id it was given (its input index): the node that proposed it finds its new session
    /// (or the refusal, which names no session the proposer knows) by the secret.
    pub opened: Vec<(u128, SessionId)>,
}

openraft::declare_raft_types!(
    /// openraft's type configuration for dlock.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = NodeId,
        Node = Member,
);

/// A running Raft node of dlock.
pub type Raft = openraft::Raft<TypeConfig, crate::StateMachine>;

/// A log entry of dlock's Raft log.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;

/// A log id of dlock's Raft log.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;

/// A vote of dlock's Raft log.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;

/// What a snapshot's data is: its bytes, in memory.
pub type SnapshotData = Cursor<Vec<u8>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_follow_log_indices_until_a_batch_then_stay_above() {
        // One command per entry: the input index is the log index.
        assert_eq!(input_index(5, 4), 5);
        // After blank or membership entries (no input), still the log index.
        assert_eq!(input_index(9, 5), 9);
        // A batch of three at log index 10 takes 10, 11, 12 ...
        let batch: Vec<u64> = (0..3)
            .scan(9, |last, _| {
                *last = input_index(10, *last);
                Some(*last)
            })
            .collect();
        assert_eq!(batch, vec![10, 11, 12]);
        // ... and the entry at log index 11 goes on above them.
        assert_eq!(input_index(11, 12), 13);
        assert_eq!(input_index(u64::MAX, u64::MAX), u64::MAX);
    }
}
