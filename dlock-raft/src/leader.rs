//! What the leader does that followers do not: stamp proposals with its clock, give every
//! session a grace when its term starts, and propose ticks when the engine's next deadline
//! comes (rules 1, 2 and 4 of `HA.md`).
//!
//! - **Time.** Only the leader reads a clock, and only to stamp proposals. Once the first
//!   entry of its term is applied it takes `base` = the engine's clock and `t0` = now, and
//!   stamps each proposal `base + elapsed`. The engine keeps `max(clock, now_ms)`, so skew
//!   between machines never matters and time stands still while there is no leader.
//! - **Grace.** The first command of every term is [`Command::ExtendLeases`]: every lease
//!   ends no earlier than the leader's clock plus the fail-over grace. Proposals wait for it.
//! - **Expiry.** The leader proposes [`Command::Tick`] when the engine's next deadline is
//!   due by its clock; applying the tick expires whatever is due then. A stale or repeated
//!   tick does nothing.
//!
//! About 650 lines on purpose: the [`Sequencer`] is the one handle on the Raft node that the
//! server holds (proposals and their batches, membership changes, linearizable reads, status)
//! and runs the leader's duties above; they share its state.

use std::time::Duration;

use std::collections::BTreeMap;
use std::sync::Arc;

use dlock_core::{Command, Core};
use dlock_proto::status::{Role, Standing};
use openraft::ServerState;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::raft::ReadPolicy;
use openraft::rt::watch::WatchReceiver;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Replica;
use crate::accept::{PeerPortCounts, PeerPortStats};
use crate::types::{Applied, Member, NodeId, Proposal, Raft, TypeConfig};

/// How long a proposal waits for this node's term to be ready (its grace applied).
const READY_WAIT: Duration = Duration::from_secs(5);

/// How often a leader that stopped serving (it heard from no majority within its lease)
/// asks whether a majority answers again.
const QUORUM_CHECK: Duration = Duration::from_millis(250);

/// How long a majority has to answer that question (a heartbeat round; well above the
/// longest election timeout, so that a slow round on a loaded machine is not taken for a
/// lost majority).
const QUORUM_WAIT: Duration = Duration::from_secs(1);

/// The longest the leader sleeps between looks at the engine's next deadline (the deadline
/// moves as commands are applied).
const TICK_RECHECK: Duration = Duration::from_millis(20);

/// While ticks are in flight (proposed, not yet applied) and a deadline comes due that the
/// newest of them, stamped earlier, does not cover, the leader proposes another, at most
/// this often, each stamped when proposed: a commit that is slow (a loaded machine, a disk
/// that stalls, a leader briefly cut off from its peers) then delays when an expiry is seen,
/// not the engine time it happens at.
const TICK_AGAIN: Duration = Duration::from_millis(50);

/// The most ticks in flight at once: with one only for each [`TICK_AGAIN`] in which a new
/// deadline came due, over 12 s of stalled commits (a leader that hears from no majority stops
/// serving within its 400 ms lease, and its grace on serving again extends every lease).
const MAX_TICKS_IN_FLIGHT: usize = 256;

/// The leader's clock for one term: the engine's clock when the term became ready plus the
/// time since.
#[derive(Clone, Copy, Debug)]
pub struct LeaderClock {
    term: u64,
    base_ms: u64,
    t0: Instant,
}

impl LeaderClock {
    /// The term this clock belongs to.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The engine time a proposal made now is stamped with.
    pub fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.base_ms.saturating_add(elapsed)
    }
}

/// What [`Sequencer::submit`] returns: completes with the outcome of the proposal.
pub type Answer = openraft::alias::OneshotReceiverOf<
    TypeConfig,
    Result<openraft::raft::ClientWriteResponse<TypeConfig>, ClientWriteError<TypeConfig>>,
>;

/// Why a proposal was not applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProposeError {
    /// This node is not the leader (or stopped being it before the entry committed: the
    /// command may or may not have been applied; re-send it to the leader, by the same
    /// request id, to learn which).
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader, if known.
        leader: Option<Member>,
    },
    /// This node leads but its term did not become ready in time.
    #[error("the leader's term is not ready")]
    NotReady,
    /// openraft stopped.
    #[error("raft: {0}")]
    Fatal(String),
    /// A membership change was refused (another is in progress, the node is unknown, no
    /// voter would be left, ...).
    #[error("membership change refused: {0}")]
    Membership(String),
    /// A membership change did not finish within [`MEMBERSHIP_WAIT`]; what it says is where
    /// it stands.
    #[error("membership change not finished: {0}")]
    Unfinished(String),
}

/// How long [`Sequencer::add_member`] and [`Sequencer::remove_member`] wait for their change:
/// under the 10 s the HTTP listener gives a request.
pub const MEMBERSHIP_WAIT: Duration = Duration::from_secs(8);

/// How long [`Sequencer::add_member`] waits for the new learner to catch up, leaving the
/// rest of [`MEMBERSHIP_WAIT`] for the change that makes it a voter.
const CATCH_UP_WAIT: Duration = Duration::from_secs(6);

/// The result of a membership change running in `change`, if it ends within
/// [`MEMBERSHIP_WAIT`]; else [`ProposeError::Unfinished`] (it goes on).
async fn finish_within(
    change: tokio::task::JoinHandle<Result<(), ProposeError>>,
    id: NodeId,
) -> Result<(), ProposeError> {
    match tokio::time::timeout(MEMBERSHIP_WAIT, change).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(ProposeError::Fatal(e.to_string())),
        Err(_) => Err(ProposeError::Unfinished(format!(
            "the change for node {id} is proposed but not committed within \
             {MEMBERSHIP_WAIT:?}: a majority of the members may be down or cut off; it \
             completes when they answer (GET /api/cluster shows the membership)"
        ))),
    }
}

/// What one node knows of the cluster (what `dlock status` shows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    /// This node.
    pub id: NodeId,
    /// Every member: the voters, and learners being added.
    pub members: BTreeMap<NodeId, Member>,
    /// How many of [`members`](Self::members) vote (a majority of them commits).
    pub voters: usize,
    /// The members that do not vote: learners being added, caught up or not.
    pub learners: std::collections::BTreeSet<NodeId>,
    /// This node's Raft role.
    pub role: Role,
    /// Where this node stands in the membership it knows (`Removed`: taken out of the
    /// cluster).
    pub standing: Standing,
    /// The leader, if known.
    pub leader: Option<NodeId>,
    /// The current term.
    pub term: u64,
    /// Whether this node leads with its term ready for proposals.
    pub leading: bool,
    /// The last index in this node's log.
    pub last_log_index: u64,
    /// The last index this node knows to be committed (held by a majority).
    pub committed_index: u64,
    /// The last index this node applied.
    pub applied_index: u64,
    /// On the leader: the last index each member is known to hold (`None`: nothing yet).
    pub matched: BTreeMap<NodeId, Option<u64>>,
    /// On the leader: how long ago each other member last acknowledged a heartbeat or an
    /// append. A member that is down or cut off shows a growing age while its `matched`
    /// stays as it was; one that has not answered at all in this term (the old leader after
    /// a fail-over, say) shows how long this node has served as leader (`None` while it does
    /// not serve yet).
    pub heard: BTreeMap<NodeId, Option<Duration>>,
    /// This node's peer port: connections it answers now and those it closed (see
    /// [`Sequencer::with_peer_port`]).
    pub peer_port: PeerPortCounts,
}

/// The role an openraft server state stands for.
fn role_of(state: ServerState) -> Role {
    match state {
        ServerState::Leader => Role::Leader,
        ServerState::Follower => Role::Follower,
        ServerState::Candidate => Role::Candidate,
        ServerState::Learner => Role::Learner,
        ServerState::Shutdown => Role::Shutdown,
    }
}

/// Proposes commands on the leader, stamped with the leader's clock.
#[derive(Clone)]
pub struct Sequencer {
    id: NodeId,
    raft: Raft,
    replica: Replica,
    grace_ms: u64,
    clock: watch::Sender<Option<LeaderClock>>,
    /// The engine configuration this node applies when it takes over, if any.
    config: Option<Box<dlock_core::Config>>,
    /// The counters of this node's peer port, for [`status`](Sequencer::status).
    peer_port: Arc<PeerPortStats>,
    /// Whether this node is still catching up after starting empty.
    rejoin: crate::RejoinGuard,
}

impl std::fmt::Debug for Sequencer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequencer")
            .field("id", &self.id)
            .field("grace_ms", &self.grace_ms)
            .finish_non_exhaustive()
    }
}

impl Sequencer {
    /// A sequencer for node `id` giving `grace` to every session at each new term.
    pub fn new(id: NodeId, raft: Raft, replica: Replica, grace: Duration) -> Sequencer {
        Sequencer {
            id,
            raft,
            replica,
            grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            clock: watch::channel(None).0,
            config: None,
            peer_port: Arc::default(),
            rejoin: crate::RejoinGuard::off(),
        }
    }

    /// [`status`](Sequencer::status) reads this node's standing as one that is catching up
    /// while `guard` is on (see [`standing_catching_up`](crate::membership::standing_catching_up)).
    pub fn with_rejoin_guard(mut self, guard: crate::RejoinGuard) -> Sequencer {
        self.rejoin = guard;
        self
    }

    /// [`status`](Sequencer::status) reports `stats`, the counters this node's peer port
    /// keeps (see [`serve_peers_counted`](crate::serve_peers_counted)); without this, zeros.
    pub fn with_peer_port(mut self, stats: Arc<PeerPortStats>) -> Sequencer {
        self.peer_port = stats;
        self
    }

    /// When this node takes over as leader, it first makes `config` the engine's
    /// configuration (through the log, [`Command::Configure`], if it differs), so every
    /// replica decides by the leader's settings rather than by its own.
    pub fn with_config(mut self, config: dlock_core::Config) -> Sequencer {
        self.config = Some(Box::new(config));
        self
    }

    /// The shared view of the replicated state.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The Raft node.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The leader as this node knows it.
    pub fn leader(&self) -> Option<(NodeId, Member)> {
        // The server metrics change only with the vote, the leader or the membership: no
        // copy of the replication progress is made here.
        let server = self.raft.server_metrics();
        let m = server.borrow_watched();
        let id = m.current_leader?;
        let member = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, member))
    }

    /// Whether this node leads and its term is ready for proposals.
    pub fn is_ready_leader(&self) -> bool {
        let (state, term) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            (m.state, m.current_term)
        };
        state == ServerState::Leader && self.clock.borrow().is_some_and(|c| c.term == term)
    }

    /// The leader's clock while this node leads with its term ready, `None` otherwise; the
    /// receiver sees every change (a term becoming ready, leadership lost).
    pub fn clock(&self) -> watch::Receiver<Option<LeaderClock>> {
        self.clock.subscribe()
    }

    /// Proposes `command` stamped with the leader's clock without waiting for it to be
    /// applied: see [`submit_batch`](Self::submit_batch).
    pub async fn submit(&self, command: Command) -> Result<Answer, ProposeError> {
        self.submit_batch(vec![command]).await
    }

    /// Proposes `commands` as one entry stamped with the leader's clock, without waiting
    /// for it to be applied: the commands are applied in order as consecutive engine
    /// inputs, what they produce goes to the node's feed, and the returned answer completes
    /// once the entry is applied (or refused). Keep the answer until it completes: a
    /// dropped one makes openraft warn. Entries submitted one after another are applied in
    /// that order. Fails at once unless this node leads with its term ready. At most
    /// [`MAX_BATCH`](crate::types::MAX_BATCH) commands (a caller's bug otherwise, refused
    /// as [`ProposeError::Fatal`]).
    pub async fn submit_batch(&self, commands: Vec<Command>) -> Result<Answer, ProposeError> {
        if commands.len() > crate::types::MAX_BATCH {
            return Err(ProposeError::Fatal(format!(
                "{} commands in one entry (at most {})",
                commands.len(),
                crate::types::MAX_BATCH
            )));
        }
        let clock = *self.clock.borrow();
        let term = self.raft.metrics().borrow_watched().current_term;
        let Some(clock) = clock.filter(|c| c.term == term) else {
            return Err(self.not_leader());
        };
        let proposal = Proposal {
            now_ms: clock.now_ms(),
            commands,
        };
        // Told only when applied: the answer carries the log id.
        let (responder, answer) = openraft::impls::ProgressResponder::complete_only();
        match self.raft.client_write_ff(proposal, Some(responder)).await {
            Ok(()) => Ok(answer),
            Err(e) => Err(ProposeError::Fatal(e.to_string())),
        }
    }

    fn not_leader(&self) -> ProposeError {
        ProposeError::NotLeader {
            leader: self
                .leader()
                .filter(|(id, _)| *id != self.id)
                .map(|(_, m)| m),
        }
    }

    /// What this node knows of the cluster.
    pub fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        // Not heard from in this term: silent at least since this node began to serve.
        let serving_for = self
            .clock
            .borrow()
            .as_ref()
            .filter(|c| m.state == ServerState::Leader && c.term == m.current_term)
            .map(|c| c.t0.elapsed());
        let heard = crate::membership::heard_ago(&m)
            .into_iter()
            .map(|(id, ago)| (id, ago.or(serving_for)))
            .collect();
        ClusterStatus {
            id: self.id,
            members: membership
                .nodes()
                .map(|(id, member)| (*id, member.clone()))
                .collect(),
            voters: membership.voter_ids().count(),
            learners: membership.learner_ids().collect(),
            role: role_of(m.state),
            standing: crate::membership::standing_catching_up(
                membership,
                self.id,
                self.rejoin.is_on(),
            ),
            leader: m.current_leader,
            term: m.current_term,
            leading: self.is_ready_leader(),
            last_log_index: m.last_log_index.unwrap_or(0),
            committed_index: m.local_committed.as_ref().map_or(0, |l| l.index),
            applied_index: m.last_applied.as_ref().map_or(0, |l| l.index),
            matched: m
                .replication
                .map(|r| {
                    r.into_iter()
                        .map(|(id, l)| (id, l.map(|l| l.index)))
                        .collect()
                })
                .unwrap_or_default(),
            heard,
            peer_port: self.peer_port.counts(),
        }
    }

    /// Adds node `id` at `member`'s addresses as a voting member: it first catches up as a
    /// learner (from the log or a snapshot), then the membership changes (through a joint
    /// configuration). Only the leader can; the node must already run (with `--node-id id`).
    ///
    /// A learner that has not caught up within 6 s (not running, a wrong
    /// address, a long snapshot) stays a learner, which counts for no majority, and the call
    /// fails with [`ProposeError::Unfinished`]: call again once it has caught up. Adding a
    /// voter again at its addresses changes nothing; at other addresses it is refused.
    pub async fn add_member(&self, id: NodeId, member: Member) -> Result<(), ProposeError> {
        let membership = self.membership();
        if membership.voter_ids().any(|v| v == id) {
            return match membership.get_node(&id) {
                Some(known) if *known != member => Err(ProposeError::Membership(format!(
                    "node {id} is already a voter, at {known}: a member's addresses do not \
                     change; add the machine under a new id, then remove node {id}"
                ))),
                _ => Ok(()),
            };
        }
        let this = self.clone();
        // Run to the end even if the caller stops waiting: a change left half-way (a joint
        // configuration) would wait for the next change to finish it.
        let change = tokio::spawn(async move { this.add_member_now(id, member).await });
        finish_within(change, id).await
    }

    async fn add_member_now(&self, id: NodeId, member: Member) -> Result<(), ProposeError> {
        let added = self
            .raft
            .add_learner(id, member.clone(), false)
            .await
            .map_err(membership_error)?;
        // openraft's own wait counts a learner within 5,000 entries as caught up, one that
        // never answered included: wait for it to hold the entry that added it.
        let upto = added.log_id.index;
        let caught_up = self
            .raft
            .wait(Some(CATCH_UP_WAIT))
            .metrics(
                |m| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&id))
                        .is_some_and(|l| l.as_ref().is_some_and(|l| l.index >= upto))
                },
                "the new learner holds the entry that added it",
            )
            .await;
        if caught_up.is_err() {
            return Err(ProposeError::Unfinished(format!(
                "node {id} has not caught up with the log within {CATCH_UP_WAIT:?}: it stays \
                 a learner (no vote, no part in any majority); check that it runs with \
                 --node-id {id} and that {} reaches it, then call again, or remove it",
                member.raft_addr
            )));
        }
        let voters = std::collections::BTreeSet::from([id]);
        self.raft
            .change_membership(openraft::ChangeMembers::AddVoterIds(voters), false)
            .await
            .map_err(membership_error)?;
        Ok(())
    }

    /// Removes node `id`: a voter stops voting and receiving the log, a learner being added
    /// is dropped. Only the leader can. Removing the leader itself makes the rest elect
    /// another. A change not committed within [`MEMBERSHIP_WAIT`] (a majority of the new
    /// configuration down) fails with [`ProposeError::Unfinished`] and completes when they
    /// answer.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), ProposeError> {
        let membership = self.membership();
        let ids = std::collections::BTreeSet::from([id]);
        let change = if membership.voter_ids().any(|v| v == id) {
            openraft::ChangeMembers::RemoveVoters(ids)
        } else if membership.get_node(&id).is_some() {
            openraft::ChangeMembers::RemoveNodes(ids)
        } else {
            return Err(ProposeError::Membership(format!(
                "node {id} is not a member"
            )));
        };
        let raft = self.raft.clone();
        let change = tokio::spawn(async move {
            raft.change_membership(change, false)
                .await
                .map(drop)
                .map_err(membership_error)
        });
        finish_within(change, id).await
    }

    /// The membership this node knows.
    fn membership(&self) -> openraft::Membership<NodeId, Member> {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .clone()
    }

    /// Runs `f` on the engine once it reflects every command committed before the call: a
    /// linearizable read through openraft's read index. Only the leader answers.
    pub async fn read_linearizable<T>(
        &self,
        f: impl FnOnce(&Core) -> T,
    ) -> Result<T, ProposeError> {
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => Ok(self.replica.read(f)),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader {
                    leader: f.leader_node,
                })
            }
            Err(e) => Err(ProposeError::Fatal(e.to_string())),
        }
    }

    /// Proposes `command`, stamped with the leader's clock, and returns what applying it
    /// produced. Waits (at most a few seconds) for a new term's grace to be applied first.
    pub async fn propose(&self, command: Command) -> Result<Applied, ProposeError> {
        let mut rx = self.clock.subscribe();
        let clock = {
            let wait = rx.wait_for(|c| {
                let m = self.raft.metrics().borrow_watched().clone();
                c.is_some_and(|c| c.term == m.current_term) || m.state != ServerState::Leader
            });
            match tokio::time::timeout(READY_WAIT, wait).await {
                Ok(Ok(c)) => *c,
                Ok(Err(_)) => return Err(ProposeError::Fatal("sequencer dropped".into())),
                Err(_) => return Err(ProposeError::NotReady),
            }
        };
        let m = self.raft.metrics().borrow_watched().clone();
        let clock = clock.filter(|c| m.state == ServerState::Leader && c.term == m.current_term);
        let Some(clock) = clock else {
            return Err(self.not_leader());
        };
        self.write(clock, command).await
    }

    async fn write(&self, clock: LeaderClock, command: Command) -> Result<Applied, ProposeError> {
        self.write_at(clock.now_ms(), command).await
    }

    /// Proposes `command` stamped `now_ms` (read from this term's clock by the caller).
    async fn write_at(&self, now_ms: u64, command: Command) -> Result<Applied, ProposeError> {
        let proposal = Proposal {
            now_ms,
            commands: vec![command],
        };
        match self.raft.client_write(proposal).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader {
                    leader: f.leader_node,
                })
            }
            Err(RaftError::APIError(e)) => Err(ProposeError::Fatal(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(ProposeError::Fatal(e.to_string())),
        }
    }

    /// Whether this leader has heard from no majority for longer than its lease (openraft's,
    /// the longest election timeout): openraft then takes no write until one answers.
    fn lease_lapsed(&self) -> bool {
        let lease = Duration::from_millis(self.raft.config().election_timeout_max);
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        // A lone voter is its own majority.
        let alone = m.membership_config.membership().voter_ids().count() <= 1;
        !alone
            && m.last_quorum_acked
                .is_some_and(|at| openraft::Instant::elapsed(&*at) > lease)
    }

    /// Whether a majority answers this leader's heartbeats within a second (without
    /// waiting for anything to be applied).
    async fn quorum_answers(&self) -> bool {
        matches!(
            tokio::time::timeout(
                QUORUM_WAIT,
                self.raft.get_read_log_id(ReadPolicy::ReadIndex)
            )
            .await,
            Ok(Ok(_))
        )
    }

    /// Runs the leader's duties until `shutdown`: when this node becomes leader, start its
    /// clock and apply the grace; while it leads, propose ticks when they are due. Every
    /// applied tick's events go to `on_tick` (the server routes them).
    ///
    /// A leader that stops hearing from a majority (its openraft lease lapsed, looked at on
    /// every turn, at least every 20 ms) stops serving at once: its clock is withdrawn, so the server disconnects its clients, who
    /// look for the leader the majority elects. If the majority answers again before anyone
    /// replaces it, it serves again as at the start of a term: a fresh clock from the
    /// engine's and the fail-over grace for every session first.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        on_tick: impl Fn(Applied) + Send + Sync + 'static,
    ) {
        let on_tick = Arc::new(on_tick);
        // Every metrics report (several per log entry under load) changes `metrics`; the
        // server metrics change only with the vote, the leader, the role or the membership.
        // The loop waits on the latter except while a new term waits for its first entry
        // to be applied, so that a leader or a follower does not wake once per entry.
        let mut metrics = self.raft.metrics();
        let mut server = self.raft.server_metrics();
        // Ticks proposed and not yet applied, and when the last one was proposed and the
        // engine time it was stamped with (what the ticks in flight cover).
        let mut ticks: Vec<tokio::task::JoinHandle<()>> = Vec::new();
        let mut last_tick: Option<(Instant, u64)> = None;
        // Told when a tick has been applied (or failed): a deadline still due then (an ended
        // session with more locks to remove, `dlock_core::STEP_WORK`) gets its next
        // tick at once, not after TICK_AGAIN.
        let tick_done = Arc::new(tokio::sync::Notify::new());
        // The clock of a term whose leader lost its majority, withdrawn until it answers.
        let mut suspended: Option<LeaderClock> = None;
        loop {
            // The role and term come from the server metrics, the watch the loop waits on
            // while not leading: openraft sends them before the full metrics, so a role read
            // from the full metrics can be older than the server metrics just marked seen, and
            // a node that had just become leader would then wait, as a follower, for a change
            // of the server metrics that never comes (and never serve).
            let (state, current_term) = {
                let s = server.borrow_watched();
                (s.state, s.vote.leader_id.term)
            };
            let last_applied = metrics.borrow_watched().last_applied;
            let leading_term = (state == ServerState::Leader).then_some(current_term);
            if suspended.is_some() || leading_term.is_none() {
                // Not serving: what is in flight may never apply (a tick is harmless if it
                // does).
                ticks.drain(..).for_each(|t| t.abort());
            }
            if let Some(c) = suspended {
                if leading_term != Some(c.term) {
                    suspended = None;
                    continue;
                }
                if self.quorum_answers().await {
                    // Serving again starts like a new term: the clock restarts from the
                    // engine's and every session gets the grace (its client could not renew
                    // while this node did not serve), through the path below.
                    tracing::info!(
                        term = c.term,
                        "a majority answers again; serving after the grace"
                    );
                    suspended = None;
                    continue;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = server.changed() => {}
                    () = tokio::time::sleep(QUORUM_CHECK) => {}
                }
                continue;
            }
            let current = *self.clock.borrow();
            match (leading_term, current) {
                (Some(term), Some(c)) if c.term == term && self.lease_lapsed() => {
                    // openraft refuses every write until a majority acknowledges this leader
                    // again, while this clock runs on: what is due meanwhile would be stamped
                    // late once writes pass, ahead of the renewals refused meanwhile. Stop
                    // serving now; serving again starts like a new term, with the grace.
                    tracing::warn!(
                        term,
                        "heard from no majority within the leader lease; not serving clients \
                         until one answers"
                    );
                    self.clock.send_replace(None);
                    suspended = Some(c);
                    continue;
                }
                (Some(term), Some(c)) if c.term == term => {
                    // Leading and ready: tick when due.
                    let now = c.now_ms();
                    ticks.retain(|t| !t.is_finished());
                    // The ticks in flight cover what is due by the newest one's stamp.
                    let covered = last_tick.filter(|_| !ticks.is_empty()).map(|(_, s)| s);
                    let due = self.replica.read(|core| Due {
                        next: core.next_deadline(),
                        uncovered: match covered {
                            Some(s) => core.next_deadline_after(s),
                            None => core.next_deadline(),
                        },
                    });
                    let since = last_tick.map_or(TICK_AGAIN, |(t, _)| t.elapsed());
                    match due.plan(now, ticks.len(), since) {
                        TickPlan::Propose => {
                            // Proposed without waiting for it to apply (see TICK_AGAIN): the
                            // lease check above and the next tick go on meanwhile. Stamped
                            // now, not when the task first runs on a busy runtime.
                            let (this, on_tick) = (self.clone(), on_tick.clone());
                            let done = tick_done.clone();
                            ticks.push(tokio::spawn(async move {
                                match this.write_at(now, Command::Tick).await {
                                    Ok(applied) => on_tick(applied),
                                    Err(e) => tracing::debug!(error = %e, "tick not applied"),
                                }
                                done.notify_one();
                            }));
                            last_tick = Some((Instant::now(), now));
                        }
                        TickPlan::Wait(wait) => {
                            tokio::select! {
                                () = shutdown.cancelled() => return,
                                _ = server.changed() => {}
                                () = tick_done.notified(), if !ticks.is_empty() => {}
                                () = tokio::time::sleep(wait) => {}
                            }
                        }
                    }
                }
                (Some(term), _) if last_applied.is_some_and(|l| l.leader_id.term == term) => {
                    // The term's first entry is applied: start the clock, grant the grace.
                    let clock = LeaderClock {
                        term,
                        base_ms: self.replica.read(|core| core.clock_ms()),
                        t0: Instant::now(),
                    };
                    if let Some(config) = &self.config
                        && self.replica.read(|core| core.config() != config.as_ref())
                    {
                        let configure = Command::Configure {
                            config: config.clone(),
                        };
                        if let Err(e) = self.write(clock, configure).await {
                            tracing::debug!(error = %e, "configuration not applied");
                            tokio::select! {
                                () = shutdown.cancelled() => return,
                                _ = metrics.changed() => {}
                            }
                            continue;
                        }
                    }
                    let grace = Command::ExtendLeases {
                        grace_ms: self.grace_ms,
                    };
                    match self.write(clock, grace).await {
                        Ok(_) => {
                            tracing::info!(
                                term,
                                "leading; every session's lease extended by the fail-over grace"
                            );
                            self.clock.send_replace(Some(clock));
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "grace not applied");
                            tokio::select! {
                                () = shutdown.cancelled() => return,
                                _ = metrics.changed() => {}
                            }
                        }
                    }
                }
                (leading, current) => {
                    if leading.is_none() && current.is_some() {
                        self.clock.send_replace(None);
                    }
                    // A new leader waits for its term's first entry to be applied (only the
                    // full metrics say so); a follower only for a change of role or term.
                    let changed = if leading.is_some() {
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            r = metrics.changed() => r,
                        }
                    } else {
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            r = server.changed() => r,
                        }
                    };
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// What is due in the engine, as the leader's tick loop sees it.
#[derive(Clone, Copy, Debug)]
struct Due {
    /// The engine's next deadline ([`Core::next_deadline`]).
    next: Option<u64>,
    /// The first deadline the ticks in flight do not cover (after the newest one's stamp,
    /// [`Core::next_deadline_after`]); with none in flight, `next`.
    uncovered: Option<u64>,
}

/// What the tick loop does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TickPlan {
    /// Propose a tick now.
    Propose,
    /// Look again after this long (or when a tick in flight is done).
    Wait(Duration),
}

impl Due {
    /// The plan at engine time `now` with `in_flight` ticks proposed and not applied, the
    /// newest `since` ago. A tick goes when a deadline is due and none is in flight (also
    /// when one just applied left work due, an ended session's locks), or when a deadline
    /// has come due that the ticks in flight do not cover, at most once per [`TICK_AGAIN`]
    /// and up to [`MAX_TICKS_IN_FLIGHT`]: however long commits stall, each deadline gets a
    /// tick stamped within about [`TICK_AGAIN`] of it.
    fn plan(self, now: u64, in_flight: usize, since: Duration) -> TickPlan {
        let until = |at: u64| Duration::from_millis(at.saturating_sub(now)).min(TICK_RECHECK);
        match (self.next, self.uncovered) {
            (Some(at), _) if at <= now && in_flight == 0 => TickPlan::Propose,
            (Some(at), Some(new)) if at <= now && new <= now => {
                if since >= TICK_AGAIN && in_flight < MAX_TICKS_IN_FLIGHT {
                    TickPlan::Propose
                } else {
                    TickPlan::Wait(
                        TICK_AGAIN
                            .saturating_sub(since)
                            .max(Duration::from_millis(1)),
                    )
                }
            }
            (Some(at), None) if at <= now => TickPlan::Wait(TICK_RECHECK),
            (Some(at), Some(new)) if at <= now => {
                TickPlan::Wait(until(new).max(Duration::from_millis(1)))
            }
            (Some(at), _) => TickPlan::Wait(until(at)),
            (None, _) => TickPlan::Wait(TICK_RECHECK),
        }
    }
}

/// A failed membership change as a [`ProposeError`].
fn membership_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> ProposeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ProposeError::NotLeader {
            leader: f.leader_node,
        },
        RaftError::APIError(e) => ProposeError::Membership(e.to_string()),
        RaftError::Fatal(e) => ProposeError::Fatal(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG_AGO: Duration = Duration::from_secs(1);

    fn due(next: Option<u64>, uncovered: Option<u64>) -> Due {
        Due { next, uncovered }
    }

    #[test]
    fn a_due_deadline_with_no_tick_in_flight_gets_one() {
        let d = due(Some(1_000), Some(1_000));
        assert_eq!(d.plan(1_000, 0, Duration::ZERO), TickPlan::Propose);
        // Work left due by a tick that just applied (an ended session's locks).
        assert_eq!(
            due(Some(900), None).plan(1_000, 0, Duration::ZERO),
            TickPlan::Propose
        );
    }

    #[test]
    fn what_the_ticks_in_flight_cover_gets_no_other_tick() {
        // Commits stall: the deadline at 900 is covered by a tick stamped 950; the next
        // deadline comes at 1_300.
        let d = due(Some(900), Some(1_300));
        assert_eq!(
            d.plan(1_000, 1, LONG_AGO),
            TickPlan::Wait(TICK_RECHECK),
            "a tick every TICK_AGAIN for a covered deadline fills the log"
        );
        assert_eq!(
            d.plan(1_295, 1, LONG_AGO),
            TickPlan::Wait(Duration::from_millis(5))
        );
        assert_eq!(
            due(Some(900), None).plan(1_000, 3, LONG_AGO),
            TickPlan::Wait(TICK_RECHECK)
        );
    }

    #[test]
    fn a_deadline_due_during_a_long_stall_gets_a_tick_stamped_on_time() {
        // Over 1.6 s of stalled commits (more ticks in flight than the 32 that once
        // capped them), a lease that ends now still gets its tick now.
        let d = due(Some(900), Some(2_500));
        assert_eq!(d.plan(2_500, 40, LONG_AGO), TickPlan::Propose);
        // At most one per TICK_AGAIN.
        assert_eq!(
            d.plan(2_500, 40, Duration::from_millis(30)),
            TickPlan::Wait(Duration::from_millis(20))
        );
        // And never more than MAX_TICKS_IN_FLIGHT.
        assert!(matches!(
            d.plan(2_500, MAX_TICKS_IN_FLIGHT, LONG_AGO),
            TickPlan::Wait(_)
        ));
    }

    #[test]
    fn nothing_due_waits_for_the_next_deadline_or_a_recheck() {
        assert_eq!(
            due(Some(1_005), Some(1_005)).plan(1_000, 0, LONG_AGO),
            TickPlan::Wait(Duration::from_millis(5))
        );
        assert_eq!(
            due(Some(9_000), Some(9_000)).plan(1_000, 0, LONG_AGO),
            TickPlan::Wait(TICK_RECHECK)
        );
        assert_eq!(
            due(None, None).plan(1_000, 0, LONG_AGO),
            TickPlan::Wait(TICK_RECHECK)
        );
    }
}
