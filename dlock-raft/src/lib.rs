//! dlock-raft: the dlock engine replicated through [openraft].
//!
//! The deterministic engine of `dlock-core` becomes the state machine of a replicated log:
//! every entry carries one or more commands, applied as consecutive engine inputs
//! `(index, now_ms, command)`. An input's index is derived from the entry's log index and
//! the engine's last input ([`input_index`]): the log index itself for an entry of one
//! command after entries of one command, otherwise one above the previous input. So the
//! ids and fencing tokens a grant carries (which `Core` derives from the input index) are
//! the same on every replica and grow across leader changes, restarts and snapshots (the
//! engine's last input index is part of its snapshot).
//!
//! The parts:
//! - [`types`]: openraft's type configuration ([`TypeConfig`]), what a log entry carries
//!   ([`Proposal`]) and what applying it returns ([`Applied`]), and the member description
//!   ([`Member`]: the client and peer addresses of a node);
//! - [`log_store`]: a durable segment log ([`LogStore`]): checksummed records, group commit
//!   (one fsync for every append waiting when the writer wakes up), a torn tail cut on
//!   restart, segments dropped once purged;
//! - [`state_machine`]: the engine as openraft's state machine ([`StateMachine`]), snapshots
//!   written to a temporary file and renamed;
//! - [`network`]: the peer network over TCP, framed like the client protocol
//!   (a `u32` length and a bincode body), with a version greeting and, given a
//!   [`PeerSecret`], a proof of the cluster secret ([`peer_auth`]) when a connection opens;
//! - [`accept`]: the peer port's bound on connections at once, its throttled warnings and
//!   its counters ([`PeerPortStats`]);
//! - [`leader`]: the leader's duties ([`Sequencer`]): proposals stamped with its clock, a
//!   grace for every session when its term starts, ticks when a deadline is due;
//! - [`rejoin`]: a member that starts with an empty directory votes only once it has caught
//!   up ([`RejoinGuard`]), so a lost disk brought back under its old id cannot elect a leader
//!   that lacks committed entries;
//! - [`read`]: linearizable reads ([`Sequencer::read_index`]): a heartbeat round to a
//!   majority, then the engine caught up to the read index;
//! - [`codec`]: the only module that knows how records and snapshots are encoded.
//!
//! [`open_node`] puts them together into a running [`Raft`] node, and a [`Sequencer`] on
//! it proposes commands while it leads.
//!
//! # What is guaranteed, and what is not yet
//!
//! - A command is applied once a majority has it on disk (fsynced); a node killed at any
//!   moment reopens from its directory (the torn tail of its log cut) and catches up from
//!   the leader's log, or by snapshot once the leader purged what it lacks. Three nodes
//!   stopped together recover every lock and token.
//! - Fencing tokens are input indices (the log index of the granting entry while entries
//!   carry one command each, above it once batches were applied): strictly increasing across
//!   leader changes, restarts and snapshots.
//! - A minority commits nothing.
//! - Each new term first gives every session the fail-over grace
//!   ([`Command::ExtendLeases`](dlock_core::Command::ExtendLeases)); time stands still
//!   while there is no leader.
//! - Reads that must be current go through a read index ([`Sequencer::read_index`]): a
//!   heartbeat round answered by a majority, then this node's engine caught up to what was
//!   committed when the round began; a leader cut off from its majority confirms none.
//! - A leader that stops hearing from a majority withdraws its clock (checked every 250 ms,
//!   [`Sequencer::clock`]): the server stops serving and its clients find the new leader.
//! - Each new term first applies the leader's engine configuration if it differs
//!   ([`Command::Configure`](dlock_core::Command::Configure)), so every replica judges by the
//!   same settings.
//! - `dlock-server`'s cluster mode runs on this (`--node-id`, `--peers`, `--init`): commands
//!   are submitted with [`Sequencer::submit`] and what each applied entry produced reaches
//!   the server through the node's [`Feed`], in log order.
//! - The server gathers renewals for 10 ms into one entry
//!   ([`Command::RenewMany`](dlock_core::Command::RenewMany)), and while earlier entries are
//!   in flight it gathers the commands that arrive into the next entry (at most
//!   [`MAX_BATCH`]): one log append, fsync, replication round and apply per batch rather than
//!   per command. A lone command goes at once.
//! - Members are added and removed one at a time ([`Sequencer::add_member`],
//!   [`Sequencer::remove_member`]).
//! - Not yet: peer connections are not encrypted (with a [`PeerSecret`], only members take
//!   part, proven when a connection opens).
#![forbid(unsafe_code)]
// openraft's `StorageError` is what its storage traits return; boxing it here would only move the size.
#![allow(clippy::result_large_err)]

pub mod accept;
pub mod codec;
pub mod error;
pub mod leader;
pub mod log_store;
pub mod membership;
pub mod network;
mod node;
pub mod peer_auth;
mod private_fs;
mod reach;
pub mod read;
pub mod rejoin;
pub mod state_machine;
pub mod types;

pub use accept::{PeerClose, PeerPortCounts, PeerPortStats};
pub use error::RaftStoreError;
pub use leader::{Answer, ClusterStatus, LeaderClock, ProposeError, Sequencer};
pub use log_store::LogStore;
pub use membership::{
    StandingNotice, hand_over, standing_catching_up, standing_of, watch_standing,
};
pub use network::{PeerNetwork, serve_peers, serve_peers_authenticated, serve_peers_counted};
pub use node::{
    DEFAULT_SNAPSHOT_EVERY, NodeOptions, OpenError, open_node, raft_config, snapshot_every,
};
pub use peer_auth::{PeerSecret, SecretError};
pub use read::ReadError;
pub use rejoin::RejoinGuard;
pub use state_machine::{Auditor, CoreGuard, Feed, Replica, SharedAuditor, StateMachine};
pub use types::{Applied, MAX_BATCH, Member, NodeId, Proposal, Raft, TypeConfig, input_index};

pub use openraft;
