//! The core task of a cluster member: it leads or it refuses.
//!
//! While this node leads with its term ready (the fail-over grace applied), it serves
//! clients as a single server does, except that commands become proposals to the Raft log
//! and their events arrive through the node's feed once applied. When it stops leading,
//! every connection is closed (its client finds the new leader and resumes there) and the
//! server's part of the sessions is dropped; when it starts, that part is rebuilt from the
//! replicated engine: every session detached, its events numbered above what any earlier
//! term could have used.

use crate::logged::Logged;
use std::collections::HashMap;
use std::sync::Arc;

use dlock_core::{EventKind, Reject, SessionId};
use dlock_proto::Refusal;
use dlock_raft::{Applied, LeaderClock, Sequencer};
use tokio::sync::oneshot;
use tracing::{debug, info};

use super::CoreTask;
use super::routing::SERVER_REQUEST;
use super::sessions::SessionState;
use crate::ServerError;
use crate::handle::ConnHandle;
use crate::msg::HelloOutcome;

/// A leadership numbers its events from `index << SEQ_INDEX_SHIFT`, where `index` is the
/// engine's last applied input when it took over (its own grace entry, so above every input
/// an earlier leadership applied, this node's own before a restart included): a client
/// resuming on a new leader never sees a number it has seen before, as long as an earlier
/// leadership gave one session fewer than `2^24` events per log entry it applied.
const SEQ_INDEX_SHIFT: u32 = 24;

/// Sessions read from the engine per page while the table is rebuilt.
const REBUILD_PAGE: usize = 1024;

/// What the core task of a cluster member is given: the node's sequencer and replicated
/// state, the queue of proposals (drained by `crate::cluster::propose`) and the feed of
/// applied entries.
#[derive(Debug)]
pub(crate) struct ClusterLink {
    pub(crate) sequencer: Sequencer,
    pub(crate) proposals: tokio::sync::mpsc::Sender<dlock_core::Command>,
    pub(crate) feed: tokio::sync::mpsc::Receiver<Applied>,
}

/// The cluster side of the core task.
pub(crate) struct ClusterSide {
    sequencer: Sequencer,
    /// The term this node leads with its grace applied, if it does.
    leading: Option<u64>,
    /// The first event number of this leadership (see [`first_seq`]).
    seq_base: u64,
    /// `OpenSession` proposals waiting for their entry to be applied, by secret.
    pending_opens: HashMap<u128, PendingOpen>,
}

impl std::fmt::Debug for ClusterSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSide")
            .field("leading", &self.leading)
            .field("pending_opens", &self.pending_opens.len())
            .finish_non_exhaustive()
    }
}

/// A `Hello` whose session is being opened through the log.
#[derive(Debug)]
pub(super) struct PendingOpen {
    pub(super) conn: ConnHandle,
    pub(super) identity: Option<Arc<str>>,
    pub(super) client_name: String,
    pub(super) reply: oneshot::Sender<HelloOutcome>,
}

impl ClusterSide {
    /// The cluster side of a node run by `sequencer`.
    pub(super) fn new(sequencer: Sequencer) -> ClusterSide {
        // Not leading yet: nothing applied needs routing (see `on_clock`).
        sequencer.replica().set_feeding(false);
        ClusterSide {
            sequencer,
            leading: None,
            seq_base: 1,
            pending_opens: HashMap::new(),
        }
    }

    /// Whether this node leads with its term ready.
    pub(super) fn leading(&self) -> bool {
        self.leading.is_some()
    }

    /// The refusal for a client that reached this node while it does not lead: the
    /// leader's client address when it is known and another node.
    pub(super) fn not_leader(&self) -> Refusal {
        let id = self.sequencer.id();
        let leader = self
            .sequencer
            .leader()
            .filter(|(leader, _)| *leader != id)
            .map(|(_, m)| m.client_addr);
        Refusal::NotLeader { leader }
    }

    /// The cluster as this node sees it.
    pub(super) fn view(&self) -> dlock_proto::status::ClusterView {
        crate::cluster::view(&self.sequencer)
    }

    /// Remembers a `Hello` whose `OpenSession` was proposed with `secret`.
    pub(super) fn pending_open(&mut self, secret: u128, open: PendingOpen) {
        self.pending_opens.insert(secret, open);
    }
}

/// The first event number of a leadership that took over at input `index`.
fn first_seq(index: u64) -> u64 {
    (index << SEQ_INDEX_SHIFT) | 1
}

/// The identity a session was opened by, as its name records it (`[identity] name`) on a
/// server that authenticates.
fn identity_of(name: &str) -> Option<Arc<str>> {
    let rest = name.strip_prefix('[')?;
    let (identity, _) = rest.split_once("] ")?;
    Some(Arc::from(identity))
}

impl CoreTask {
    /// Follows a change of the leader's clock: this node starts or stops leading.
    pub(super) fn on_clock(&mut self, clock: Option<LeaderClock>) {
        let Some(side) = &mut self.cluster else {
            return;
        };
        let term = clock.map(|c| c.term());
        if term == side.leading {
            return;
        }
        let was = std::mem::replace(&mut side.leading, term);
        // Only a leader routes what entries produce: a follower's state machine does not
        // feed it, and so does not wake this task once per entry. Feeding starts before the
        // engine is read below, so every entry applied after that read reaches the feed.
        side.sequencer.replica().set_feeding(term.is_some());
        if was.is_some() {
            self.step_down();
        }
        if let Some(term) = term {
            let base = first_seq(self.engine.core().last_index());
            if let Some(side) = &mut self.cluster {
                side.seq_base = base;
            }
            self.take_over(term, base);
        }
    }

    /// Stops serving: every client is disconnected (its client finds the new leader) and
    /// the server's part of the sessions is dropped.
    fn step_down(&mut self) {
        if let Some(reads) = &mut self.reads {
            reads.clear();
        }
        let refusal = self.cluster.as_ref().map(ClusterSide::not_leader);
        if let Some(side) = &mut self.cluster {
            for (_, open) in side.pending_opens.drain() {
                let refusal = refusal
                    .clone()
                    .unwrap_or(Refusal::NotLeader { leader: None });
                let _ = open.reply.send(HelloOutcome::Refused(refusal));
            }
        }
        let ids: Vec<SessionId> = self.sessions.map.keys().copied().collect();
        let closed = ids.len();
        for session in ids {
            if let Some(mut s) = self.sessions.remove(session)
                && let Some(handle) = s.conn.take()
            {
                self.sessions.out.close(session, &handle, None, false);
            }
        }
        info!(
            sessions = closed,
            "no longer leading; clients disconnected to find the new leader"
        );
    }

    /// Starts serving as the leader of `term`: every session of the engine gets its server
    /// part, detached until its client resumes here.
    fn take_over(&mut self, term: u64, first_seq: u64) {
        let authenticates = self.security.authenticates();
        let mut after = None;
        let mut count = 0usize;
        loop {
            let (page, more) = self.engine.core().sessions_page(after, REBUILD_PAGE);
            for s in &page {
                let identity = if authenticates {
                    identity_of(&s.name)
                } else {
                    None
                };
                self.sessions
                    .insert(s.session, SessionState::detached(identity, first_seq));
                count += 1;
            }
            after = page.last().map(|s| s.session);
            if !more || after.is_none() {
                break;
            }
        }
        info!(
            term,
            sessions = count,
            "leading: serving clients; sessions wait for their clients to resume here"
        );
    }

    /// Routes what one applied entry produced. Only the leader routes: followers have no
    /// clients.
    pub(super) fn on_applied(&mut self, applied: Applied) -> Result<(), ServerError> {
        let Some(side) = &mut self.cluster else {
            return Ok(());
        };
        if side.leading.is_none() {
            return Ok(());
        }
        let base = side.seq_base;
        let mut events = applied.events;
        for (secret, session) in applied.opened {
            let mut outcome = None;
            events.retain(|e| {
                if e.session != session {
                    return true;
                }
                match &e.kind {
                    EventKind::SessionOpened { ttl_ms } => outcome = Some(Ok(*ttl_ms)),
                    EventKind::Rejected { reason } if e.request.is_none() => {
                        outcome = Some(Err(reason.clone()));
                    }
                    _ => return true,
                }
                false
            });
            let Some(side) = &mut self.cluster else {
                return Ok(());
            };
            let pending = side.pending_opens.remove(&secret);
            self.opened(session, secret, base, outcome, pending);
        }
        events.retain(|e| e.request != Some(SERVER_REQUEST));
        if !events.is_empty() {
            self.sessions.route(&self.engine.core(), &mut events);
            self.trace_deadlocks(None);
        }
        Ok(())
    }

    /// The answer to a session opened through the log: `Welcome` to the client that asked
    /// here, or a detached session if it asked an earlier leader.
    fn opened(
        &mut self,
        session: SessionId,
        secret: u128,
        base: u64,
        outcome: Option<Result<u64, Reject>>,
        pending: Option<PendingOpen>,
    ) {
        match (outcome, pending) {
            (Some(Ok(ttl_ms)), Some(open)) => {
                let (peer, conn_id) = (open.conn.peer(), open.conn.id);
                let messages = vec![self.welcome(session, secret, ttl_ms, false)];
                let who = open.identity.as_deref().unwrap_or("-").to_owned();
                let mut state = SessionState::new(open.conn, open.identity);
                state.next_seq = base;
                self.sessions.insert(session, state);
                info!(%session, %peer, identity = %Logged(&who), name = %Logged(&open.client_name), ttl_ms, "session opened");
                self.sessions.monitor.stats.sessions_opened += 1;
                let outcome = HelloOutcome::Welcome {
                    session,
                    messages,
                    up_to_seq: base - 1,
                };
                if open.reply.send(outcome).is_err() {
                    self.sessions.detach(session, conn_id);
                }
            }
            (Some(Ok(_)), None) => {
                // Proposed by an earlier leader whose client never heard of it: it expires
                // unless someone resumes it.
                let identity = if self.security.authenticates() {
                    self.engine
                        .core()
                        .session_name(session)
                        .and_then(identity_of)
                } else {
                    None
                };
                self.sessions
                    .insert(session, SessionState::detached(identity, base));
            }
            (Some(Err(reason)), Some(open)) => {
                debug!(peer = %open.conn.peer(), %reason, "session refused");
                self.sessions
                    .monitor
                    .rejected(super::stats::reject_label(&reason));
                let _ = open
                    .reply
                    .send(HelloOutcome::Refused(Refusal::Rejected(reason)));
            }
            (None, Some(open)) => {
                let _ = open.reply.send(HelloOutcome::Refused(Refusal::Rejected(
                    Reject::UnknownSession,
                )));
            }
            (_, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_come_from_the_name_prefix_only() {
        assert_eq!(identity_of("[ops] job@host").as_deref(), Some("ops"));
        assert_eq!(identity_of("job@host"), None);
        assert_eq!(identity_of("[unclosed job"), None);
    }

    #[test]
    fn each_leadership_numbers_events_above_every_earlier_one() {
        // A leadership that took over at input 3 and applied up to input 9 before the next
        // took over at 10 had room for 2^24 events per session per input.
        assert!(first_seq(10) > first_seq(3) + 7 * (1 << 24) - 1);
        assert_eq!(first_seq(0), 1);
    }
}
