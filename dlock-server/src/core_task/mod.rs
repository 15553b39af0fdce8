//! The task that owns the engine: it applies commands from every connection in one order,
//! drives time, keeps the fencing-token floor ahead of use, and routes events to sessions.
//!
//! After a restart it is first in the recovery grace ([`crate::grace`]): sessions open and
//! renew, queries and pings are answered, but every command that could grant or change locks
//! is held in a bounded FIFO and applied, in arrival order, when the grace ends.
//!
//! The parts, each in its own file and none importing this one: [`engine`] (indices, clock,
//! floor and audit around `apply`), [`sessions`] (the server's part of each session and its
//! replay buffer), [`routing`] (events to sessions, replay overflow), [`outbound`] (delivery
//! to connections, slow readers), [`requests`] (client requests, queries, reply sizes),
//! [`grace`] (the restart grace) and [`turns`] (client addresses served in turns). Five more
//! hold a part of the task's own methods (`impl CoreTask`), so they name the task and
//! nothing here names them: [`run`] (the run loop, and the inbox through which connections
//! reach it or, on an idle single server, handle their message in their own task),
//! [`handshake`] (opening and resuming sessions), [`cluster`] (leadership and the log's
//! feed), [`reads`] (in a cluster, queries answered after a linearizable read) and
//! [`status`] (the HTTP listener's questions). This file is the handling of each message
//! from a connection and what ends every batch of them: about 650 lines on purpose, so that
//! the path every client request takes (`take_turns` or `handle_in_place`, `handle`,
//! `request`, `end_batch`) reads in one place.

mod action;
mod authz;
mod cluster;
mod engine;
mod gather;
mod grace;
mod handshake;
mod outbound;
mod reads;
mod requests;
mod routing;
pub(crate) mod run;
mod sessions;
pub(crate) mod stats;
mod status;
mod turns;

use std::sync::Arc;

use dlock_core::{Command, Event, EventKind, Limit, Reject, RequestId, SessionId};
use dlock_proto::{Reply, Request, RequestError};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use self::action::Action;
pub(crate) use self::cluster::ClusterLink;
use self::cluster::ClusterSide;
use self::engine::Engine;
pub(crate) use self::grace::Grace;
use self::grace::NotHeld;
use self::reads::{Reads, WaitingQuery};
use self::routing::{apply_and_route, apply_for_server, close_overflowed};
use self::sessions::Sessions;
pub(crate) use self::stats::{CORE_REJECT_LABELS, REQUEST_KINDS};
use self::turns::{Turn, Turns};
use crate::floor::Floor;
use crate::grace::LeaseRecord;
use crate::handle::ConnId;
use crate::msg::CoreMsg;
use crate::security::Security;
use crate::{Config, ServerError};

/// A map keyed by ids the server hands out itself (sessions, connections, locks): hashed
/// with foldhash, several times cheaper per lookup than the default SipHash, which showed up
/// as about a tenth of the server's instructions per request. The keys are not chosen by
/// clients, so a hasher without SipHash's resistance to chosen keys is enough.
type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A map keyed by client addresses, which a client does choose (within what it can bind):
/// foldhash's quality variant, seeded per process.
type PeerMap<V> = std::collections::HashMap<std::net::IpAddr, V, foldhash::quality::RandomState>;

/// The most work one wake-up does before it delivers what it produced (see
/// `CoreTask::take_turns`): a client's answer waits for at most about this much of other
/// clients' work after its request was handled.
const SLICE: std::time::Duration = std::time::Duration::from_millis(1);

/// Messages other than `Renew` renew a lease at most once per this share of it (see
/// `CoreTask::renew_implicitly`).
const IMPLICIT_RENEWAL_SHARE: u64 = 8;

/// The core task.
pub(crate) struct CoreTask {
    config: Arc<Config>,
    engine: Engine,
    sessions: Sessions,
    /// The longest lease granted, recorded ahead of confirming sessions.
    lease_record: LeaseRecord,
    /// The recovery grace, while it lasts.
    grace: Option<Grace>,
    /// Rules in force and the count of denials.
    security: Arc<Security>,
    /// In a cluster: leadership, sessions being opened through the log.
    cluster: Option<ClusterSide>,
    /// In a cluster: what the node applies, in log order (taken by `run`).
    feed: Option<mpsc::Receiver<dlock_raft::Applied>>,
    /// In a cluster: queries waiting for a linearizable read.
    reads: Option<Reads>,
    /// In a cluster: how the read rounds end (taken by `run`).
    read_ends: Option<reads::Ended>,
    /// Messages taken from the inbox and not yet handled, queued by address.
    turns: Turns<CoreMsg>,
    /// When the run loop's timer is set to wake it (`None`: not set); a message handled in a
    /// connection's task that needs an earlier wake-up pokes the loop.
    armed: Option<Instant>,
    /// The error that ended a message handled in a connection's task, for the run loop to
    /// end with.
    failed: Option<ServerError>,
    /// The run loop has ended (or was dropped): nothing more is handled in place either.
    stopped: bool,
}

/// The next entry from a cluster's feed; never, on a single server.
async fn next_applied(
    feed: &mut Option<mpsc::Receiver<dlock_raft::Applied>>,
) -> Option<dlock_raft::Applied> {
    match feed {
        Some(feed) => feed.recv().await,
        None => std::future::pending().await,
    }
}

/// Whether the leader's clock changed (`false`: its sender is gone); never, on a single
/// server.
async fn next_clock(
    clock: &mut Option<tokio::sync::watch::Receiver<Option<dlock_raft::LeaderClock>>>,
) -> bool {
    match clock {
        Some(clock) => clock.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

impl CoreTask {
    /// A task starting its clock at `start` (the grace, if any, is measured from it too).
    pub(crate) fn new(
        config: Arc<Config>,
        floor: Floor,
        lease_record: LeaseRecord,
        start: Instant,
        grace: Option<Grace>,
        security: Arc<Security>,
        cluster: Option<ClusterLink>,
    ) -> CoreTask {
        let (reads, read_ends) = cluster
            .as_ref()
            .map(|link| Reads::new(link.sequencer.clone()))
            .unzip();
        let (engine, side, feed) = match cluster {
            None => (Engine::new(config.engine.clone(), floor, start), None, None),
            Some(link) => {
                let replicated = engine::Replicated {
                    replica: link.sequencer.replica().clone(),
                    proposals: link.proposals,
                    clock: link.sequencer.clock(),
                    renewals: Vec::new(),
                    renewals_since: None,
                };
                let engine = Engine::replicated(config.engine.clone(), floor, start, replicated);
                (
                    engine,
                    Some(ClusterSide::new(link.sequencer)),
                    Some(link.feed),
                )
            }
        };
        CoreTask {
            engine,
            cluster: side,
            feed,
            reads,
            read_ends,
            turns: Turns::default(),
            armed: None,
            failed: None,
            stopped: false,
            sessions: Sessions::new(
                config.replay_capacity,
                config.replay_pool_bytes,
                config.replay_bytes_per_peer(),
            ),
            config,
            lease_record,
            grace,
            security,
        }
    }

    /// Queues `batch` in the turns of its addresses, then handles up to `max_batch` of the
    /// turns' messages, stopping early once [`SLICE`] has been spent, so that what was
    /// handled is delivered without waiting for a long batch (a thousand goodbyes of a
    /// thousand locks each, say).
    fn take_turns(
        &mut self,
        batch: &mut Vec<CoreMsg>,
        max_batch: usize,
    ) -> Result<(), ServerError> {
        for msg in batch.drain(..) {
            let turn = self.turn_of(&msg);
            self.turns.push(turn, msg);
        }
        // One clock read per message: the instant after one message is the time of the
        // next one's inputs, the end of its service time and the slice's measure.
        let busy = Instant::now();
        let mut now = busy;
        let mut handled = Ok(());
        for _ in 0..max_batch {
            let Some(msg) = self.turns.pop() else { break };
            (handled, now) = self.handle_at(msg, now);
            if handled.is_err() || now.saturating_duration_since(busy) >= SLICE {
                break;
            }
        }
        self.count_busy_until(busy, now);
        handled
    }

    /// Handles `msg` with the engine's clock pinned at `now`; how it went, and the instant
    /// it was done (the end of a request's service time, which this records).
    fn handle_at(&mut self, msg: CoreMsg, now: Instant) -> (Result<(), ServerError>, Instant) {
        let received = msg.received();
        self.engine.pin_clock(Some(now));
        let handled = self.handle(msg);
        let end = Instant::now();
        self.engine.pin_clock(None);
        if let Some(received) = received {
            let service = end.saturating_duration_since(received);
            self.sessions.monitor.stats.service.observe(service);
        }
        (handled, end)
    }

    /// Handles one message in a connection's task (see [`CoreInbox`]), then does what ends
    /// every wake-up of the run loop, delivery included. Whether the run loop has to be poked:
    /// it now has something to do sooner than its timer would wake it for.
    ///
    /// `start` is the instant the connection read for the message, if it waited for nothing
    /// since (the lock is only tried, never waited for); it is then the start of the
    /// handling, one clock read less per request. Otherwise the clock is read here, under the
    /// lock: the busy time (the wake-up histogram) must not count a wait before the lock.
    fn handle_in_place(
        &mut self,
        msg: CoreMsg,
        here: ConnId,
        start: Option<Instant>,
    ) -> Result<bool, ServerError> {
        // Not before the end of what was handled last (another connection's task may have
        // had the lock since `start` was read): busy times never overlap.
        let start = start.map_or_else(Instant::now, |s| s.max(self.engine.latest()));
        let (handled, end) = self.handle_at(msg, start);
        self.count_busy_until(start, end);
        handled?;
        // What ends the batch is not counted as busy time: that would cost another clock read
        // per request, for the few instructions of an empty end.
        self.end_batch(Some(here), end)?;
        self.end_wakeup();
        let wake_at = self.wake_at();
        Ok(wake_at.is_some() && self.armed.is_none_or(|armed| wake_at < Some(armed)))
    }

    /// When the run loop must next wake on its own: the engine's next deadline, the grace's
    /// end or its next held command's timeout, whichever comes first.
    fn wake_at(&self) -> Option<Instant> {
        let grace_until = self.grace.as_ref().map(|g| g.until);
        let held_timeout = self.grace.as_ref().and_then(Grace::next_timeout);
        [self.engine.deadline(), grace_until, held_timeout]
            .into_iter()
            .flatten()
            .min()
    }

    /// What ends every batch, after its messages and before the next: the grace's timeouts
    /// and end, a due `Tick`, the renewals' flush, closing replay overflows, then delivery
    /// (by the task of connection `here`, if any). `after` is the time the batch ended, the
    /// time of what this does.
    fn end_batch(&mut self, here: Option<ConnId>, after: Instant) -> Result<(), ServerError> {
        self.engine.pin_clock(Some(after));
        let ended = self.end_batch_pinned(here, after);
        self.engine.pin_clock(None);
        ended
    }

    /// [`end_batch`](Self::end_batch) with the engine's clock pinned at `after`.
    fn end_batch_pinned(
        &mut self,
        here: Option<ConnId>,
        after: Instant,
    ) -> Result<(), ServerError> {
        // The grace ends here, between batches, and never by a clock read inside `handle`:
        // a command arriving after the deadline but before this point is held too, so the
        // held commands always go first and arrival order is kept.
        if let Some(grace) = &mut self.grace
            && grace.next_timeout().is_some_and(|at| at <= after)
        {
            let mut timed_out = grace.time_out(after);
            self.sessions.route(&self.engine.core(), &mut timed_out);
        }
        if self.grace.as_ref().is_some_and(|g| g.until <= after)
            && let Some(grace) = self.grace.take()
        {
            grace::end(
                grace,
                &mut self.engine,
                &mut self.sessions,
                &mut self.lease_record,
            )?;
        }
        if self.engine.tick_due() {
            self.apply(Command::Tick)?;
        }
        self.engine.flush_renewals_if_due();
        close_overflowed(&mut self.engine, &mut self.sessions)?;
        // Victims of conversions, ticks and the grace's end, remembered untraced.
        self.trace_deadlocks(None);
        // Delivery comes last, after the whole batch, the grace's end, the Tick and the
        // overflow closes: each connection gets everything this wake-up produced for it
        // in one burst, so its task wakes once and writes once (see `outbound`). The
        // order of messages to one connection is the order they were produced in.
        self.sessions.deliver(here);
        Ok(())
    }

    /// The address whose turn `msg` waits for: the connection's for a `Hello`, the address
    /// that opened the session otherwise (the same for every message of a connection after
    /// its handshake, so a connection's messages keep their order), none for the HTTP
    /// listener's questions and for sessions that have ended.
    fn turn_of(&self, msg: &CoreMsg) -> Turn {
        match msg {
            CoreMsg::Hello { conn, .. } => Some(conn.peer().ip()),
            CoreMsg::Request { session, .. }
            | CoreMsg::Ack { session, .. }
            | CoreMsg::ReplayDone { session, .. }
            | CoreMsg::Disconnected { session, .. }
            | CoreMsg::InputEnded { session, .. } => self.sessions.map.get(session).map(|s| s.peer),
            CoreMsg::Status { .. } => None,
        }
    }

    /// Adds the time since `since` to the core task's busy time.
    fn count_busy(&mut self, since: Instant) {
        self.count_busy_until(since, Instant::now());
    }

    /// Adds the time from `since` to `until` to the core task's busy time.
    fn count_busy_until(&mut self, since: Instant, until: Instant) {
        let ns =
            u64::try_from(until.saturating_duration_since(since).as_nanos()).unwrap_or(u64::MAX);
        let stats = &mut self.sessions.monitor.stats;
        stats.busy_ns = stats.busy_ns.saturating_add(ns);
        stats.wake_ns = stats.wake_ns.saturating_add(ns);
    }

    /// Ends a wake-up: its busy time, if it had any, goes into the wake-up histogram.
    fn end_wakeup(&mut self) {
        let stats = &mut self.sessions.monitor.stats;
        let ns = std::mem::take(&mut stats.wake_ns);
        if ns > 0 {
            stats.wakeup.observe(std::time::Duration::from_nanos(ns));
        }
    }

    /// Applies `command` and routes its events.
    fn apply(&mut self, command: Command) -> Result<(), ServerError> {
        apply_and_route(&mut self.engine, &mut self.sessions, command)
    }

    fn handle(&mut self, msg: CoreMsg) -> Result<(), ServerError> {
        match msg {
            CoreMsg::Hello {
                conn,
                hello,
                identity,
                reply,
            } => self.hello(conn, hello, identity, reply),
            CoreMsg::ReplayDone {
                session,
                conn,
                up_to_seq,
            } => {
                self.sessions.replay_done(session, conn, up_to_seq);
                Ok(())
            }
            CoreMsg::Request {
                session,
                conn,
                id,
                body,
                slot,
                received: _,
            } => self.request(session, conn, id, body, slot),
            CoreMsg::Status { query, reply } => {
                self.status(query, reply);
                Ok(())
            }
            CoreMsg::Ack { session, conn, seq } => {
                if !self.sessions.acknowledge(session, conn, seq) {
                    return Ok(());
                }
                self.renew_implicitly(session)
            }
            CoreMsg::Disconnected { session, conn } => {
                if self.sessions.detach(session, conn) {
                    debug!(%session, "connection lost; session kept until its lease runs out");
                }
                Ok(())
            }
            CoreMsg::InputEnded { session, conn } => {
                // Every request the connection sent was handled before this (a connection's
                // messages keep their order in the turns), so its answers are queued ahead
                // of the close, which is delivered with them at the end of this wake-up.
                if self.sessions.detach(session, conn.id) {
                    debug!(%session, "client closed its sending half; session kept until its lease runs out");
                }
                // Closed even if the session no longer has it (a close already queued or done
                // wins): the reader waits for this close.
                self.sessions.out.close(session, &conn, None, true);
                Ok(())
            }
        }
    }

    /// Renews a session's lease for a message that is not a `Renew` (an ack, a ping, a query,
    /// a retransmission, a command held by the grace): any message renews a lease, but these
    /// do so at most once per [`IMPLICIT_RENEWAL_SHARE`] of the lease. A client that sends
    /// them by the thousand then costs the engine (and the audit log) nothing, and a lease
    /// still lasts at least `(1 - 1/IMPLICIT_RENEWAL_SHARE) * TTL` after any message.
    fn renew_implicitly(&mut self, session: SessionId) -> Result<(), ServerError> {
        if let Some(lease) = self.engine.core().session_lease(session) {
            let renewed = lease.expires_at_ms.saturating_sub(lease.ttl_ms);
            let share = lease.ttl_ms / IMPLICIT_RENEWAL_SHARE;
            if self.engine.now_ms() < renewed.saturating_add(share) {
                return Ok(());
            }
        }
        self.renew(session)
    }

    /// Renews a session's lease on the client's behalf.
    fn renew(&mut self, session: SessionId) -> Result<(), ServerError> {
        apply_for_server(&mut self.engine, &mut self.sessions, session, |request| {
            Command::Renew { session, request }
        })
    }

    fn request(
        &mut self,
        session: SessionId,
        conn: ConnId,
        id: RequestId,
        body: Request,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<(), ServerError> {
        self.sessions.monitor.request(&body);
        let Some(s) = self.sessions.attached(session, conn) else {
            // A straggler of a superseded connection, or a session that has ended.
            return Ok(());
        };
        let identity = s.identity.clone();
        let rules = if self.security.has_rules() {
            self.security.current().rules.clone()
        } else {
            None
        };
        let action = action::action(session, id, body);
        // R55: INVALID comes first. A command that fails the engine's static checks goes to
        // the engine, which refuses it and changes nothing, past the server's own checks
        // (permissions, its per-address limit, the recovery grace). Without any of those
        // the engine alone checks, once.
        let own_checks =
            rules.is_some() || self.config.max_locks_per_peer.is_some() || self.grace.is_some();
        let invalid = own_checks
            && matches!(&action, Action::Command(c) if self.engine.core().check_arguments(c).is_err());
        if !invalid
            && let Some(rules) = &rules
            && !authz::allowed(
                rules,
                &self.engine.core(),
                session,
                identity.as_deref(),
                &action,
            )
        {
            self.security.denied();
            self.sessions.monitor.rejected("permission_denied");
            debug!(%session, identity = identity.as_deref().unwrap_or("-"), "permission denied");
            self.reply(
                session,
                conn,
                id,
                Reply::Error(RequestError::PermissionDenied),
            );
            return Ok(());
        }
        let Some(s) = self.sessions.attached(session, conn) else {
            return Ok(());
        };
        let command = match action {
            Action::Query(dlock_proto::Query::Cluster) if self.cluster.is_some() => {
                self.renew_implicitly(session)?;
                let view = self.cluster.as_ref().map(ClusterSide::view);
                self.reply(session, conn, id, Reply::Cluster(view));
                return Ok(());
            }
            Action::Query(query) if self.reads.is_some() => {
                // In a cluster: answered once a read index confirms this node still leads
                // (`reads`), never from a table another leader may have moved past.
                self.renew_implicitly(session)?;
                if let Some(reads) = &mut self.reads {
                    reads.push(WaitingQuery {
                        session,
                        conn,
                        id,
                        query,
                        rules,
                        identity,
                        _slot: slot,
                    });
                }
                return Ok(());
            }
            Action::Query(query) => {
                self.renew_implicitly(session)?;
                let now_ms = self.engine.now_ms();
                let view = rules.as_deref().map(|r| (r, identity.as_deref()));
                let reply = requests::query(&self.engine.core(), query, now_ms, &self.config, view);
                self.reply(session, conn, id, reply);
                return Ok(());
            }
            Action::Ping => {
                self.renew_implicitly(session)?;
                let pong = Reply::Pong {
                    server_version: crate::SERVER_VERSION.to_owned(),
                };
                self.reply(session, conn, id, pong);
                return Ok(());
            }
            Action::Command(_) if s.conn_max_request.is_some_and(|m| id.0 <= m) => {
                // Not a retransmission (those come on a new connection, in id order): an id
                // this connection already used, or one going backwards. Not applied, and said
                // so, rather than left unanswered.
                self.sessions.monitor.rejected("duplicate_request_id");
                debug!(%session, %id, "request id not above one this connection used");
                let error = Reply::Error(RequestError::DuplicateRequestId(id));
                self.reply(session, conn, id, error);
                return self.renew_implicitly(session);
            }
            Action::Command(_) if s.max_request.is_some_and(|m| id.0 <= m) => {
                // A retransmission after a resume: its events come from the replay.
                s.conn_max_request = Some(id.0);
                return self.renew_implicitly(session);
            }
            Action::Command(command) => command,
        };
        let peer = s.peer;
        let previous_max = s.max_request.replace(id.0);
        let previous_conn_max = s.conn_max_request.replace(id.0);
        if let Command::Lock { .. } = command
            && !invalid
            && let Some(cap) = self.config.max_locks_per_peer
            && self.sessions.locks_for(peer) >= cap
        {
            // The server's own limit: answered as the engine answers its limits, an event
            // that is kept for replay like any other answer to a request.
            let event = Event {
                session,
                request: Some(id),
                lock: None,
                kind: EventKind::Rejected {
                    reason: Reject::LimitExceeded(Limit::LocksPerPeer),
                },
            };
            self.sessions.route(&self.engine.core(), &mut vec![event]);
            return self.renew_implicitly(session);
        }
        if self.cluster.is_some() {
            if !self.engine.try_propose(command) {
                self.sessions.monitor.rejected("overloaded");
                if let Some(s) = self.sessions.map.get_mut(&session) {
                    s.max_request = previous_max;
                    s.conn_max_request = previous_conn_max;
                }
                self.reply(session, conn, id, Reply::Error(RequestError::Overloaded));
            }
            return Ok(());
        }
        let Some(grace) = self.grace.as_mut().filter(|_| !invalid) else {
            // Only a session that owns a lock can close a wait-for cycle (R39): the name is
            // copied for tracing a possible cycle only then, not on every request.
            let probe = match &command {
                Command::Lock { args, .. }
                    if self.engine.core().session_lock_count(session) > 0 =>
                {
                    Some(status::Probe {
                        session,
                        request: id,
                        target: status::Target::Resource(args.resource.clone()),
                        mode: args.mode,
                    })
                }
                Command::Convert { args, .. } => Some(status::Probe {
                    session,
                    request: id,
                    target: status::Target::Lock(args.lock),
                    mode: args.mode,
                }),
                _ => None,
            };
            self.apply(command)?;
            self.trace_deadlocks(probe);
            return Ok(());
        };
        // Recovery grace: nothing may be granted yet.
        match grace.hold(command, self.config.grace_queue_capacity, Instant::now()) {
            // Any message renews the lease, held or not.
            Ok(()) => self.renew_implicitly(session),
            Err(NotHeld::ApplyNow(command)) => self.apply(command),
            Err(NotHeld::Answer(event)) => {
                self.sessions.route(&self.engine.core(), &mut vec![event]);
                self.renew_implicitly(session)
            }
            Err(NotHeld::Full) => {
                self.sessions.monitor.rejected("grace_queue_full");
                // Refused, not received: the id may be used again.
                if let Some(s) = self.sessions.map.get_mut(&session) {
                    s.max_request = previous_max;
                    s.conn_max_request = previous_conn_max;
                }
                let overloaded = Reply::Error(RequestError::Overloaded);
                self.reply(session, conn, id, overloaded);
                Ok(())
            }
        }
    }

    /// Sends a reply to request `id` on `session`'s connection `conn`, shrunk to fit in a
    /// frame.
    fn reply(&mut self, session: SessionId, conn: ConnId, id: RequestId, body: Reply) {
        let msg = requests::fitted_reply(id, body, self.config.max_frame_len);
        self.sessions.send_to(session, conn, msg);
    }
}
