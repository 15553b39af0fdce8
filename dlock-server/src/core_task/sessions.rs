//! The server's part of each session: event numbers, the replay buffer, the highest request
//! id applied and the attached connection. The engine keeps the rest (lease, secret, locks)
//! and is asked for it; nothing here copies engine state.

use std::collections::VecDeque;

use super::{FastMap, PeerMap};
use std::net::IpAddr;

use dlock_core::{Event, LockId, SessionId};
use dlock_proto::{ProtocolError, ServerMessage};

use super::outbound::Outbound;
use super::stats::Monitor;
use crate::handle::{ConnHandle, ConnId};

/// One session as the server sees it.
#[derive(Debug)]
pub(super) struct SessionState {
    /// The `seq` of the next event.
    pub(super) next_seq: u64,
    /// Events not yet acknowledged, oldest first.
    pub(super) replay: VecDeque<(u64, Event)>,
    /// The highest engine request id applied; lower or equal ids are retransmissions.
    pub(super) max_request: Option<u64>,
    /// The highest engine request id the attached connection sent (applied or taken for a
    /// retransmission); forgotten when another connection attaches. A client re-sends on a
    /// new connection, in id order, so an id at or below this one is not a retransmission
    /// but an id used twice (or going backwards) on one connection.
    pub(super) conn_max_request: Option<u64>,
    /// The attached connection, if any.
    pub(super) conn: Option<ConnHandle>,
    /// The attached connection is still sending `Welcome` and the replay; live events are
    /// only buffered until `ReplayDone`.
    pub(super) replaying: bool,
    /// The address of the client that opened it: the session counts against that address's
    /// cap for as long as it lives, connected or not.
    pub(super) peer: IpAddr,
    /// What `replay` holds, in (approximate) bytes.
    replay_bytes: usize,
    /// When each of its queued requests was queued, by lock (for the queue wait histogram).
    pub(super) queued_at: FastMap<LockId, tokio::time::Instant>,
    /// The locks the engine said the session owns, when it last had an event: what the
    /// session adds to its address's lock count.
    locks: usize,
    /// The identity that opened it (`None` on a server that does not authenticate); only
    /// this identity may resume it.
    pub(super) identity: Option<std::sync::Arc<str>>,
}

impl SessionState {
    /// A session of the replicated engine that has no connection here yet (a cluster's new
    /// leader knows every session from the log, not from its clients): its events are
    /// numbered from `first_seq` on, above any number an earlier leader gave.
    pub(super) fn detached(identity: Option<std::sync::Arc<str>>, first_seq: u64) -> SessionState {
        SessionState {
            identity,
            peer: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            next_seq: first_seq,
            replay: VecDeque::new(),
            max_request: None,
            conn_max_request: None,
            conn: None,
            replaying: false,
            replay_bytes: 0,
            queued_at: FastMap::default(),
            locks: 0,
        }
    }

    /// A session just opened on `conn`, which is about to send `Welcome`.
    pub(super) fn new(conn: ConnHandle, identity: Option<std::sync::Arc<str>>) -> SessionState {
        SessionState {
            identity,
            peer: conn.peer().ip(),
            next_seq: 1,
            replay: VecDeque::new(),
            max_request: None,
            conn_max_request: None,
            conn: Some(conn),
            replaying: true,
            replay_bytes: 0,
            queued_at: FastMap::default(),
            locks: 0,
        }
    }

    /// Forgets the events up to `seq`: they have reached the client. Returns the bytes freed.
    fn acknowledge(&mut self, seq: u64) -> usize {
        let mut freed = 0;
        while self.replay.front().is_some_and(|(q, _)| *q <= seq) {
            if let Some((_, event)) = self.replay.pop_front() {
                freed += replay_cost(&event);
            }
        }
        self.replay_bytes -= freed;
        freed
    }
}

/// What a session's replay buffer counts for when the pool must close one: all it holds,
/// or a quarter of it while the session has no connection (see
/// [`Sessions::enforce_replay_pool`]).
fn weight(s: &SessionState) -> usize {
    if s.conn.is_some() {
        s.replay_bytes
    } else {
        s.replay_bytes / 4
    }
}

/// About what one event costs in a replay buffer.
pub(super) fn replay_cost(event: &Event) -> usize {
    std::mem::size_of::<(u64, Event)>() + crate::outbox::event_heap_bytes(&event.kind)
}

/// What the live sessions of one client address hold.
#[derive(Debug, Default)]
struct PeerUse {
    /// Sessions.
    sessions: usize,
    /// Locks the engine says they own (as of their last events).
    locks: usize,
    /// What their replay buffers hold together, in (approximate) bytes.
    replay_bytes: usize,
}

/// Every session the server serves, the settings of its replay buffers, and what is on its
/// way to the sessions' connections.
#[derive(Debug)]
pub(super) struct Sessions {
    pub(super) map: FastMap<SessionId, SessionState>,
    /// Messages and closes for connections, delivered at the end of the wake-up.
    pub(super) out: Outbound,
    /// Connections found lost while delivering (reused buffer).
    lost: Vec<(SessionId, ConnId)>,
    /// Most events kept per session.
    pub(super) replay_capacity: usize,
    /// Sessions whose replay buffer overflowed since the last `close_overflowed`.
    pub(super) overflowed: Vec<SessionId>,
    /// Live sessions and their locks per client address.
    per_peer: PeerMap<PeerUse>,
    /// What all replay buffers hold, in (approximate) bytes.
    replay_bytes: usize,
    /// Most bytes all replay buffers together may hold (the memory budget's share); over
    /// it, the session holding the most is closed as overflowed.
    replay_pool: usize,
    /// Most bytes the replay buffers of one client address's sessions may hold together; over
    /// it, that address's session holding the most is closed as overflowed.
    replay_per_peer: usize,
    /// Addresses that went over `replay_per_peer` since the last `enforce_replay_pool`.
    peers_over: Vec<IpAddr>,
    /// What the core task counts for `/metrics` and the status page.
    pub(super) monitor: Monitor,
}

impl Sessions {
    /// No sessions yet; each address's replay buffers may hold `replay_per_peer` bytes, all
    /// together `replay_pool`.
    pub(super) fn new(
        replay_capacity: usize,
        replay_pool: usize,
        replay_per_peer: usize,
    ) -> Sessions {
        Sessions {
            map: FastMap::default(),
            out: Outbound::default(),
            lost: Vec::new(),
            replay_capacity,
            overflowed: Vec::new(),
            per_peer: PeerMap::default(),
            replay_bytes: 0,
            replay_pool,
            replay_per_peer,
            peers_over: Vec::new(),
            monitor: Monitor::default(),
        }
    }

    /// Registers a session just opened.
    pub(super) fn insert(&mut self, session: SessionId, state: SessionState) {
        let used = self.per_peer.entry(state.peer).or_default();
        used.sessions += 1;
        used.locks += state.locks;
        self.map.insert(session, state);
    }

    /// Forgets a session that ended.
    pub(super) fn remove(&mut self, session: SessionId) -> Option<SessionState> {
        let state = self.map.remove(&session)?;
        self.replay_bytes -= state.replay_bytes;
        if let Some(used) = self.per_peer.get_mut(&state.peer) {
            used.sessions -= 1;
            used.locks -= state.locks;
            used.replay_bytes -= state.replay_bytes;
            if used.sessions == 0 {
                self.per_peer.remove(&state.peer);
            }
        }
        Some(state)
    }

    /// The client of `session` on `conn` has every event up to `seq`. `false` if `conn` is
    /// not the session's connection.
    pub(super) fn acknowledge(&mut self, session: SessionId, conn: ConnId, seq: u64) -> bool {
        let Some(s) = self.attached(session, conn) else {
            return false;
        };
        let freed = s.acknowledge(seq);
        let peer = s.peer;
        self.replay_bytes -= freed;
        if let Some(used) = self.per_peer.get_mut(&peer) {
            used.replay_bytes -= freed;
        }
        true
    }

    /// Keeps `event` (number `seq`) in `session`'s replay buffer. `false` if the buffer is at
    /// its capacity in events.
    pub(super) fn keep_for_replay(&mut self, session: SessionId, seq: u64, event: &Event) -> bool {
        let Some(s) = self.map.get_mut(&session) else {
            return false;
        };
        if s.replay.len() >= self.replay_capacity {
            return false;
        }
        let cost = replay_cost(event);
        s.replay.push_back((seq, event.clone()));
        s.replay_bytes += cost;
        self.replay_bytes += cost;
        let peer = s.peer;
        if let Some(used) = self.per_peer.get_mut(&peer) {
            used.replay_bytes += cost;
            if used.replay_bytes > self.replay_per_peer && !self.peers_over.contains(&peer) {
                self.peers_over.push(peer);
            }
        }
        true
    }

    /// If all replay buffers together hold more than their share of the memory budget, marks
    /// the session holding the most as overflowed (it is closed by `close_overflowed`, which
    /// frees its buffer). A client that stops acknowledging is the one whose buffer grows, so
    /// it is the one closed, not the well-behaved sessions beside it. A session without a
    /// connection counts a quarter of what it holds ([`weight`]): it cannot acknowledge
    /// until it is back, and its lease promises it its locks meanwhile, while connected
    /// sessions that do not acknowledge what they receive are the ones making the pool
    /// grow.
    pub(super) fn enforce_replay_pool(&mut self) {
        // First each address's own share: an address that spreads its unacknowledged events
        // over many sessions loses its own largest ones, never another address's session
        // (which the pool below, looking only at single sessions, could pick).
        for peer in std::mem::take(&mut self.peers_over) {
            self.enforce_peer_share(peer);
        }
        if self.replay_bytes <= self.replay_pool {
            return;
        }
        // Sessions already marked free their buffers when they are closed.
        let freed: usize = self
            .overflowed
            .iter()
            .filter_map(|id| self.map.get(id))
            .map(|s| s.replay_bytes)
            .sum();
        if self.replay_bytes - freed <= self.replay_pool {
            return;
        }
        let largest = self
            .map
            .iter()
            .filter(|(id, _)| !self.overflowed.contains(id))
            .max_by_key(|(id, s)| (weight(s), std::cmp::Reverse(**id)))
            .map(|(id, _)| *id);
        if let Some(session) = largest {
            tracing::warn!(
                %session,
                total = self.replay_bytes,
                pool = self.replay_pool,
                "replay buffers over their memory budget; closing the session holding the most"
            );
            self.overflowed.push(session);
        }
    }

    /// Marks the sessions of `peer` holding the most as overflowed until what its other
    /// sessions hold fits its share.
    fn enforce_peer_share(&mut self, peer: IpAddr) {
        let Some(used) = self.per_peer.get(&peer) else {
            return;
        };
        let mut kept = used.replay_bytes
            - self
                .overflowed
                .iter()
                .filter_map(|id| self.map.get(id))
                .filter(|s| s.peer == peer)
                .map(|s| s.replay_bytes)
                .sum::<usize>();
        while kept > self.replay_per_peer {
            let largest = self
                .map
                .iter()
                .filter(|(id, s)| s.peer == peer && !self.overflowed.contains(id))
                .max_by_key(|(id, s)| (s.replay_bytes, std::cmp::Reverse(**id)))
                .map(|(id, s)| (*id, s.replay_bytes));
            let Some((session, bytes)) = largest else {
                return;
            };
            tracing::warn!(
                %session,
                %peer,
                held = kept,
                share = self.replay_per_peer,
                "one address's replay buffers over its share; closing its session holding the most"
            );
            self.overflowed.push(session);
            kept -= bytes;
        }
    }

    /// How many live sessions the client address `peer` opened.
    pub(super) fn count_for(&self, peer: IpAddr) -> usize {
        self.per_peer.get(&peer).map_or(0, |used| used.sessions)
    }

    /// How many locks the live sessions of the client address `peer` own.
    pub(super) fn locks_for(&self, peer: IpAddr) -> usize {
        self.per_peer.get(&peer).map_or(0, |used| used.locks)
    }

    /// Takes the engine's count of `session`'s locks (`owned`) into its address's count.
    /// Every change of a session's locks comes with an event to that session (a grant, a
    /// queued request, an unlock, a cancel, a timeout, a deadlock refusal, the end of the
    /// session), so calling this for the session of every routed event keeps the counts exact.
    pub(super) fn count_locks(&mut self, session: SessionId, owned: usize) {
        let Some(s) = self.map.get_mut(&session) else {
            return;
        };
        if s.locks == owned {
            return;
        }
        if let Some(used) = self.per_peer.get_mut(&s.peer) {
            used.locks = used.locks - s.locks + owned;
        }
        s.locks = owned;
    }

    /// The session, if `conn` is its attached connection.
    pub(super) fn attached(
        &mut self,
        session: SessionId,
        conn: ConnId,
    ) -> Option<&mut SessionState> {
        self.map
            .get_mut(&session)
            .filter(|s| s.conn.as_ref().is_some_and(|c| c.id == conn))
    }

    /// Forgets the session's connection, if it is still `conn`; `true` if it was.
    pub(super) fn detach(&mut self, session: SessionId, conn: ConnId) -> bool {
        match self.attached(session, conn) {
            Some(s) => {
                s.conn = None;
                s.replaying = false;
                true
            }
            None => false,
        }
    }

    /// Attaches `conn` to a resumed session, closing the connection it replaces: forgets the
    /// events up to `last_seq` (the client has them) and returns the events to replay and
    /// the `seq` of the last one. `None` if the session is gone.
    pub(super) fn attach(
        &mut self,
        session: SessionId,
        conn: ConnHandle,
        last_seq: u64,
    ) -> Option<(Vec<ServerMessage>, u64)> {
        let s = self.map.get_mut(&session)?;
        if let Some(old) = s.conn.take() {
            let superseded = ServerMessage::ProtocolError(ProtocolError::Superseded);
            self.out.close(session, &old, Some(superseded), false);
        }
        self.replay_bytes -= s.acknowledge(last_seq);
        s.conn = Some(conn);
        s.conn_max_request = None;
        s.replaying = true;
        let replay = s
            .replay
            .iter()
            .map(|(seq, event)| ServerMessage::Event {
                seq: *seq,
                event: event.clone(),
            })
            .collect();
        Some((replay, s.next_seq - 1))
    }

    /// The connection has queued the replay up to `up_to_seq`: sends what arrived since and
    /// lets live events flow.
    pub(super) fn replay_done(&mut self, session: SessionId, conn: ConnId, up_to_seq: u64) {
        let Some(s) = self.map.get_mut(&session) else {
            return;
        };
        let Some(handle) = s.conn.as_ref().filter(|c| c.id == conn) else {
            return;
        };
        s.replaying = false;
        for (seq, event) in s.replay.iter().filter(|(q, _)| *q > up_to_seq) {
            let msg = ServerMessage::Event {
                seq: *seq,
                event: event.clone(),
            };
            self.out.send(session, handle, msg);
        }
    }

    /// Queues `msg` for `session`'s connection, if it is still `conn`.
    pub(super) fn send_to(&mut self, session: SessionId, conn: ConnId, msg: ServerMessage) {
        if let Some(handle) = self
            .map
            .get(&session)
            .and_then(|s| s.conn.as_ref())
            .filter(|c| c.id == conn)
        {
            self.out.send(session, handle, msg);
        }
    }

    /// Delivers what this wake-up produced to the connections' outboxes, and detaches the
    /// connections that could not take it (their sessions live on, R51).
    pub(super) fn deliver(&mut self, here: Option<ConnId>) {
        self.out.deliver(&mut self.lost, here);
        while let Some((session, conn)) = self.lost.pop() {
            self.detach(session, conn);
        }
    }
}
