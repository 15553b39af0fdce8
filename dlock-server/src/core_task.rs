//! The task that owns the engine: it applies commands from every connection in one order,
//! drives time, keeps the fencing-token floor ahead of use, and routes events to sessions.
//!
//! After a restart it is first in the recovery grace ([`crate::grace`]): sessions open and
//! renew, queries and pings are answered, but every command that could grant or change locks
//! is held in a bounded FIFO and applied, in arrival order, when the grace ends.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use dlock_core::{Command, Core, Event, EventKind, Input, Reject, RequestId, SessionId};
use dlock_proto::{
    Hello, PROTOCOL_VERSION, ProtocolError, Query, Refusal, Reply, Request, RequestError,
    ServerMessage, Welcome,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::audit::Audit;
use crate::conn::{ConnHandle, ConnId};
use crate::floor::Floor;
use crate::grace::LeaseRecord;
use crate::{Config, ServerError};

/// The request id of renewals the server makes on a client's behalf (on Ack, Query, Ping and
/// resume). Their `Renewed` events are not forwarded.
const INTERNAL_REQUEST: RequestId = RequestId(u64::MAX);

/// The largest event buffer capacity kept between commands.
const EVENTS_BUF_KEEP: usize = 1024;

/// A message from a connection to the core task.
#[derive(Debug)]
pub(crate) enum CoreMsg {
    /// A validated `Hello` (protocol version already checked).
    Hello {
        conn: ConnHandle,
        hello: Hello,
        reply: oneshot::Sender<HelloOutcome>,
    },
    /// The connection has queued `Welcome` and the replay up to `up_to_seq`; live events may
    /// flow now.
    ReplayDone {
        session: SessionId,
        conn: ConnId,
        up_to_seq: u64,
    },
    /// A client request.
    Request {
        session: SessionId,
        conn: ConnId,
        id: RequestId,
        body: Request,
    },
    /// The client acknowledged every event up to `seq`.
    Ack {
        session: SessionId,
        conn: ConnId,
        seq: u64,
    },
    /// The connection is gone.
    Disconnected { session: SessionId, conn: ConnId },
}

/// The core's answer to a `Hello`.
#[derive(Debug)]
pub(crate) enum HelloOutcome {
    /// `messages` = `Welcome` and the replayed events, to be sent in order.
    Welcome {
        session: SessionId,
        messages: Vec<ServerMessage>,
        up_to_seq: u64,
    },
    Refused(Refusal),
}

/// The server's per-session state: event sequence numbers, the replay buffer, the highest
/// request id seen, and the attached connection.
#[derive(Debug)]
struct SessionState {
    ttl_ms: u64,
    secret: u128,
    /// The `seq` of the next event.
    next_seq: u64,
    /// Events not yet acknowledged, oldest first.
    replay: VecDeque<(u64, Event)>,
    /// The highest engine request id applied; lower or equal ids are retransmissions.
    max_request: Option<u64>,
    conn: Option<ConnHandle>,
    /// The attached connection is still sending `Welcome` and the replay; live events are
    /// only buffered until `ReplayDone`.
    replaying: bool,
}

/// The recovery grace after a restart: until `until`, lock-changing commands wait in `held`.
#[derive(Debug)]
pub(crate) struct Grace {
    /// When the grace ends.
    pub(crate) until: Instant,
    /// Whether the grace waits out every lease the previous lifetime recorded (so the record
    /// may be lowered when it ends).
    pub(crate) covers_previous: bool,
    /// Held commands, in arrival order.
    held: VecDeque<Command>,
}

impl Grace {
    /// A grace ending at `until`, with nothing held yet.
    pub(crate) fn new(until: Instant, covers_previous: bool) -> Grace {
        Grace {
            until,
            covers_previous,
            held: VecDeque::new(),
        }
    }
}

/// The core task.
pub(crate) struct CoreTask {
    core: Core,
    config: Arc<Config>,
    floor: Floor,
    /// The index of the next input. Starts above the persisted ceiling.
    next_index: u64,
    start: Instant,
    sessions: HashMap<SessionId, SessionState>,
    /// Sessions whose replay buffer overflowed during the current batch.
    overflowed: Vec<SessionId>,
    /// The opt-in audit log, opened when the task starts.
    audit: Option<Audit>,
    /// The longest lease granted, recorded ahead of confirming sessions.
    lease_record: LeaseRecord,
    /// The recovery grace, while it lasts.
    grace: Option<Grace>,
    /// A reused buffer for the events of one command (see `apply` and `dispatch`).
    events_buf: Vec<Event>,
}

impl CoreTask {
    /// A task starting its clock at `start` (the grace, if any, is measured from it too).
    pub(crate) fn new(
        config: Arc<Config>,
        floor: Floor,
        lease_record: LeaseRecord,
        start: Instant,
        grace: Option<Grace>,
    ) -> CoreTask {
        let next_index = floor.ceiling() + 1;
        CoreTask {
            core: Core::new(config.engine.clone()),
            config,
            floor,
            next_index,
            start,
            sessions: HashMap::new(),
            overflowed: Vec::new(),
            audit: None,
            lease_record,
            grace,
            events_buf: Vec::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs until `shutdown` is cancelled or every sender is gone.
    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::Receiver<CoreMsg>,
        shutdown: CancellationToken,
    ) -> Result<(), ServerError> {
        if let Some(audit) = &self.config.audit_log {
            self.audit = Some(Audit::open(audit.clone())?);
        }
        let max_batch = self.config.max_batch.max(1);
        let mut batch = Vec::with_capacity(max_batch);
        // One timer for the whole run, moved only when the wake-up time changes: a fresh
        // `sleep_until` per batch would register and clear a timer entry every time.
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut timer_at: Option<Instant> = None;
        loop {
            let deadline = self
                .core
                .next_deadline()
                .map(|ms| self.start + Duration::from_millis(ms));
            let grace_until = self.grace.as_ref().map(|g| g.until);
            let wake_at = match (deadline, grace_until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if wake_at != timer_at {
                if let Some(at) = wake_at {
                    timer.as_mut().reset(at);
                }
                timer_at = wake_at;
            }
            // Shutdown is checked first so that a busy inbox cannot delay it; the inbox comes
            // before the timers because the grace's end and a due Tick are also checked after
            // every batch.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                n = rx.recv_many(&mut batch, max_batch) => {
                    if n == 0 {
                        break;
                    }
                    for msg in batch.drain(..) {
                        self.handle(msg)?;
                    }
                }
                // The engine's next deadline or the grace's end, whichever comes first.
                () = &mut timer, if timer_at.is_some() => {
                    // Elapsed: armed again below even if the wake-up time stays the same.
                    timer_at = None;
                }
            }
            // The grace ends here, between batches, and never by a clock read inside `handle`:
            // a command arriving after the deadline but before this point is held too, so the
            // held commands always go first and arrival order is kept.
            if grace_until.is_some_and(|until| until <= Instant::now()) {
                self.end_grace()?;
            }
            if self
                .core
                .next_deadline()
                .is_some_and(|d| d <= self.now_ms())
            {
                let events = self.apply(Command::Tick)?;
                self.dispatch(events);
            }
            self.close_overflowed()?;
        }
        debug!(sessions = self.sessions.len(), "core task stopped");
        Ok(())
    }

    /// Applies one command with the next index and the current time; persists a higher
    /// fencing-token ceiling first when needed, so nothing is sent before it is durable.
    fn apply(&mut self, command: Command) -> Result<Vec<Event>, ServerError> {
        let index = self.next_index;
        self.next_index += 1;
        let now_ms = self.now_ms();
        let input = Input {
            index,
            now_ms,
            command,
        };
        // The event buffer is handed back by `dispatch`, so a command normally allocates none.
        let mut events = std::mem::take(&mut self.events_buf);
        events.clear();
        let events = match &mut self.audit {
            None => {
                self.core.apply_into(input, &mut events);
                events
            }
            Some(audit) => {
                let ts_us = crate::audit::now_us();
                self.core.apply_into(input.clone(), &mut events);
                // Written before the caller dispatches the events.
                audit.record(ts_us, &input, &events);
                events
            }
        };
        let used = self.core.last_index().max(self.core.last_token().0);
        self.floor.ensure_above(used)?;
        Ok(events)
    }

    /// Applies the commands held during the grace, in arrival order, and lowers the lease
    /// record once the previous lifetime's leases are certainly over.
    fn end_grace(&mut self) -> Result<(), ServerError> {
        let Some(grace) = self.grace.take() else {
            return Ok(());
        };
        info!(
            held = grace.held.len(),
            "recovery grace over: granting again"
        );
        for command in grace.held {
            let events = self.apply(command)?;
            self.dispatch(events);
        }
        if grace.covers_previous {
            self.lease_record.previous_leases_over()?;
        }
        Ok(())
    }

    fn handle(&mut self, msg: CoreMsg) -> Result<(), ServerError> {
        match msg {
            CoreMsg::Hello { conn, hello, reply } => self.hello(conn, hello, reply),
            CoreMsg::ReplayDone {
                session,
                conn,
                up_to_seq,
            } => {
                self.replay_done(session, conn, up_to_seq);
                Ok(())
            }
            CoreMsg::Request {
                session,
                conn,
                id,
                body,
            } => self.request(session, conn, id, body),
            CoreMsg::Ack { session, conn, seq } => {
                let Some(s) = self.attached(session, conn) else {
                    return Ok(());
                };
                while s.replay.front().is_some_and(|(q, _)| *q <= seq) {
                    s.replay.pop_front();
                }
                self.renew(session)
            }
            CoreMsg::Disconnected { session, conn } => {
                if let Some(s) = self.attached(session, conn) {
                    s.conn = None;
                    s.replaying = false;
                    debug!(%session, "connection lost; session kept until its lease runs out");
                }
                Ok(())
            }
        }
    }

    /// The session, if `conn` is its attached connection.
    fn attached(&mut self, session: SessionId, conn: ConnId) -> Option<&mut SessionState> {
        self.sessions
            .get_mut(&session)
            .filter(|s| s.conn.as_ref().is_some_and(|c| c.id == conn))
    }

    fn renew(&mut self, session: SessionId) -> Result<(), ServerError> {
        let events = self.apply(Command::Renew {
            session,
            request: INTERNAL_REQUEST,
        })?;
        self.dispatch(events);
        Ok(())
    }

    fn welcome(&self, session: SessionId, s: &SessionState, resumed: bool) -> ServerMessage {
        ServerMessage::Welcome(Welcome {
            session,
            secret: s.secret,
            lease_ttl_ms: s.ttl_ms,
            server_version: crate::SERVER_VERSION.to_owned(),
            protocol_version: PROTOCOL_VERSION,
            resumed,
            lvb_len: u32::try_from(self.config.engine.lvb_len).unwrap_or(u32::MAX),
            max_frame_len: u32::try_from(self.config.max_frame_len).unwrap_or(u32::MAX),
            now_ms: self.core.clock_ms(),
        })
    }

    fn hello(
        &mut self,
        conn: ConnHandle,
        hello: Hello,
        reply: oneshot::Sender<HelloOutcome>,
    ) -> Result<(), ServerError> {
        let peer = conn.peer();
        if let Some(resume) = hello.resume {
            let session = resume.session;
            let known = self
                .sessions
                .get(&session)
                .is_some_and(|s| s.secret == resume.secret)
                && self.core.check_secret(session, resume.secret);
            if !known {
                let _ = reply.send(HelloOutcome::Refused(Refusal::UnknownSession));
                return Ok(());
            }
            self.renew(session)?;
            let Some(s) = self.sessions.get_mut(&session) else {
                // The renewal found the lease already run out.
                let _ = reply.send(HelloOutcome::Refused(Refusal::UnknownSession));
                return Ok(());
            };
            if let Some(old) = s.conn.take() {
                old.close(
                    Some(ServerMessage::ProtocolError(ProtocolError::Superseded)),
                    false,
                );
            }
            // Everything up to `last_seq` has reached the client.
            while s.replay.front().is_some_and(|(q, _)| *q <= resume.last_seq) {
                s.replay.pop_front();
            }
            s.conn = Some(conn);
            s.replaying = true;
            let s = &self.sessions[&session];
            let mut messages = Vec::with_capacity(s.replay.len() + 1);
            messages.push(self.welcome(session, s, true));
            messages.extend(s.replay.iter().map(|(seq, event)| ServerMessage::Event {
                seq: *seq,
                event: event.clone(),
            }));
            let up_to_seq = s.next_seq - 1;
            info!(%session, %peer, replayed = messages.len() - 1, "session resumed");
            if reply
                .send(HelloOutcome::Welcome {
                    session,
                    messages,
                    up_to_seq,
                })
                .is_err()
                && let Some(s) = self.sessions.get_mut(&session)
            {
                s.conn = None;
                s.replaying = false;
            }
            return Ok(());
        }

        let ttl_ms = if hello.lease_ttl_ms == 0 {
            u64::try_from(self.config.default_lease_ttl.as_millis()).unwrap_or(u64::MAX)
        } else {
            hello.lease_ttl_ms
        };
        let secret: u128 = rand::random();
        let session = SessionId(self.next_index);
        let events = self.apply(Command::OpenSession {
            name: hello.client_name.clone(),
            ttl_ms,
            secret,
        })?;
        let mut outcome = Err(Reject::UnknownSession);
        let mut others = Vec::new();
        for event in events {
            if event.session == session {
                match event.kind {
                    EventKind::SessionOpened { ttl_ms } => outcome = Ok(ttl_ms),
                    EventKind::Rejected { reason } => outcome = Err(reason),
                    _ => {}
                }
            } else {
                others.push(event);
            }
        }
        self.dispatch(others);
        match outcome {
            Ok(ttl_ms) => {
                // Written ahead: a restart must know how long this session's lease may last.
                self.lease_record.granting(ttl_ms)?;
                let state = SessionState {
                    ttl_ms,
                    secret,
                    next_seq: 1,
                    replay: VecDeque::new(),
                    max_request: None,
                    conn: Some(conn),
                    replaying: true,
                };
                let messages = vec![self.welcome(session, &state, false)];
                self.sessions.insert(session, state);
                info!(%session, %peer, name = %hello.client_name, ttl_ms, "session opened");
                if reply
                    .send(HelloOutcome::Welcome {
                        session,
                        messages,
                        up_to_seq: 0,
                    })
                    .is_err()
                    && let Some(s) = self.sessions.get_mut(&session)
                {
                    s.conn = None;
                    s.replaying = false;
                }
            }
            Err(reason) => {
                debug!(%peer, %reason, "session refused");
                let _ = reply.send(HelloOutcome::Refused(Refusal::Rejected(reason)));
            }
        }
        Ok(())
    }

    fn replay_done(&mut self, session: SessionId, conn: ConnId, up_to_seq: u64) {
        let Some(s) = self.attached(session, conn) else {
            return;
        };
        s.replaying = false;
        let Some(handle) = s.conn.clone() else {
            return;
        };
        // Events that arrived while the replay was being queued.
        for (seq, event) in s.replay.iter().filter(|(q, _)| *q > up_to_seq) {
            let msg = ServerMessage::Event {
                seq: *seq,
                event: event.clone(),
            };
            if !push(&handle, msg) {
                s.conn = None;
                break;
            }
        }
    }

    fn request(
        &mut self,
        session: SessionId,
        conn: ConnId,
        id: RequestId,
        body: Request,
    ) -> Result<(), ServerError> {
        let Some(s) = self.attached(session, conn) else {
            // A straggler of a superseded connection, or a session that has ended.
            return Ok(());
        };
        let command = match body {
            Request::Query(query) => {
                let handle = s.conn.clone();
                self.renew(session)?;
                let reply = self.query(query);
                if let Some(handle) = handle {
                    self.reply(session, &handle, id, reply);
                }
                return Ok(());
            }
            Request::Ping => {
                let handle = s.conn.clone();
                self.renew(session)?;
                if let Some(handle) = handle {
                    let pong = Reply::Pong {
                        server_version: crate::SERVER_VERSION.to_owned(),
                    };
                    self.reply(session, &handle, id, pong);
                }
                return Ok(());
            }
            _ if s.max_request.is_some_and(|m| id.0 <= m) => {
                // A retransmission after a resume: its events come from the replay.
                return self.renew(session);
            }
            Request::Renew => Command::Renew {
                session,
                request: id,
            },
            Request::Goodbye => Command::CloseSession {
                session,
                request: id,
            },
            Request::Lock(args) => Command::Lock {
                session,
                request: id,
                args,
            },
            Request::Convert(args) => Command::Convert {
                session,
                request: id,
                args,
            },
            Request::Unlock(args) => Command::Unlock {
                session,
                request: id,
                args,
            },
            Request::Cancel { lock } => Command::Cancel {
                session,
                request: id,
                lock,
            },
        };
        let handle = s.conn.clone();
        let previous_max = s.max_request.replace(id.0);
        if self.grace.is_some() && !matches!(command, Command::Renew { .. }) {
            // Recovery grace: nothing may be granted yet. A new session learns lock ids only
            // from events, which come after the grace, so holding every lock-changing command
            // keeps each session's order.
            let full = self
                .grace
                .as_ref()
                .is_some_and(|g| g.held.len() >= self.config.grace_queue_capacity);
            if full {
                // Refused, not received: the id may be used again.
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.max_request = previous_max;
                }
                if let Some(handle) = handle {
                    self.reply(session, &handle, id, Reply::Error(RequestError::Overloaded));
                }
                return Ok(());
            }
            if let Some(grace) = &mut self.grace {
                grace.held.push_back(command);
            }
            // Any message renews the lease, held or not.
            return self.renew(session);
        }
        let events = self.apply(command)?;
        self.dispatch(events);
        Ok(())
    }

    fn query(&self, query: Query) -> Reply {
        // The caller renewed its session just before, so the core clock is current.
        let now_ms = self.core.clock_ms();
        // Pages are built within a frame, so no query holds the core task for longer than
        // building one frame's worth of answer, however large the table.
        let budget = self.config.max_frame_len.saturating_sub(REPLY_ENVELOPE);
        match query {
            Query::Resource(name) => Reply::Resources {
                now_ms,
                resources: self.core.resource(&name).into_iter().collect(),
                more: false,
            },
            Query::Prefix {
                prefix,
                limit,
                after,
            } => {
                let limit = (limit as usize).min(self.config.max_query_resources);
                let (resources, more) =
                    self.core
                        .resources_page(&prefix, after.as_deref(), limit, budget);
                Reply::Resources {
                    now_ms,
                    resources,
                    more,
                }
            }
            Query::Session { session, after } => {
                let page = self.core.session_page(session, after, usize::MAX, budget);
                let more = page.as_ref().is_some_and(|(_, more)| *more);
                Reply::Session {
                    now_ms,
                    session: page.map(|(info, _)| info),
                    more,
                }
            }
        }
    }

    /// Sends a reply, shrinking a resource list that does not fit in one frame (only a
    /// single resource with very many locks can: pages are built within a frame).
    fn reply(&mut self, session: SessionId, handle: &ConnHandle, id: RequestId, mut body: Reply) {
        loop {
            if surely_fits(&body, self.config.max_frame_len) {
                break;
            }
            let msg = ServerMessage::Reply { id, body };
            let fits = dlock_proto::codec::encode_body(&msg)
                .is_ok_and(|b| b.len() <= self.config.max_frame_len);
            let ServerMessage::Reply { body: b, .. } = msg else {
                return;
            };
            body = b;
            if fits {
                break;
            }
            body = match body {
                Reply::Resources {
                    now_ms,
                    mut resources,
                    ..
                } if resources.len() > 1 => {
                    resources.truncate(resources.len() / 2);
                    Reply::Resources {
                        now_ms,
                        resources,
                        more: true,
                    }
                }
                _ => Reply::Error(RequestError::ReplyTooLarge),
            };
        }
        if !push(handle, ServerMessage::Reply { id, body })
            && let Some(s) = self.sessions.get_mut(&session)
        {
            s.conn = None;
        }
    }

    /// Routes engine events to their sessions: numbers them, keeps them for replay, and
    /// forwards them to the attached connection.
    fn dispatch(&mut self, mut events: Vec<Event>) {
        for event in events.drain(..) {
            match event.kind {
                EventKind::Renewed { .. } if event.request == Some(INTERNAL_REQUEST) => continue,
                // The Welcome says this.
                EventKind::SessionOpened { .. } => continue,
                _ => {}
            }
            let session = event.session;
            let Some(s) = self.sessions.get_mut(&session) else {
                continue;
            };
            let ended = matches!(
                event.kind,
                EventKind::SessionExpired | EventKind::SessionClosed
            );
            if ended {
                match event.kind {
                    EventKind::SessionExpired => info!(%session, "session expired"),
                    _ => debug!(%session, "session closed"),
                }
            }
            let seq = s.next_seq;
            s.next_seq += 1;
            if s.replay.len() >= self.config.replay_capacity && !ended {
                // The client stopped acknowledging; the session cannot be kept consistent.
                if !self.overflowed.contains(&session) {
                    self.overflowed.push(session);
                }
                continue;
            }
            s.replay.push_back((seq, event.clone()));
            if let Some(handle) = &s.conn
                && !s.replaying
                && !push(handle, ServerMessage::Event { seq, event })
            {
                s.conn = None;
            }
            if ended {
                if let Some(handle) = s.conn.take() {
                    handle.close(None, true);
                }
                self.sessions.remove(&session);
            }
        }
        // Kept for the next command unless one large output (a mass expiry) grew it.
        if events.capacity() <= EVENTS_BUF_KEEP {
            self.events_buf = events;
        }
    }

    /// Ends the sessions whose replay buffer overflowed: the client is told the session
    /// expired, and the engine releases its locks as for a closed session (R50).
    fn close_overflowed(&mut self) -> Result<(), ServerError> {
        while let Some(session) = self.overflowed.pop() {
            let Some(mut s) = self.sessions.remove(&session) else {
                continue;
            };
            warn!(%session, capacity = self.config.replay_capacity, "replay buffer overflow; closing session");
            if let Some(handle) = s.conn.take() {
                let event = Event {
                    session,
                    request: None,
                    lock: None,
                    kind: EventKind::SessionExpired,
                };
                let msg = ServerMessage::Event {
                    seq: s.next_seq,
                    event,
                };
                // After the events already queued, if it fits.
                let _ = handle.tx.try_send(msg);
                handle.close(None, true);
            }
            let events = self.apply(Command::CloseSession {
                session,
                request: INTERNAL_REQUEST,
            })?;
            self.dispatch(events);
        }
        Ok(())
    }
}

/// Bytes of a reply frame around its list: message and reply tags, the request id, `now_ms`,
/// the list length, the option tag and `more` (each integer at most 10 bytes).
const REPLY_ENVELOPE: usize = 64;

/// Whether `body` fits in a frame of `max` bytes by the views' upper size bounds, without
/// encoding it (false means "encode and see").
fn surely_fits(body: &Reply, max: usize) -> bool {
    let size = match body {
        Reply::Resources { resources, .. } => resources
            .iter()
            .map(dlock_proto::ResourceInfo::approx_size)
            .sum(),
        Reply::Session { session, .. } => session
            .as_ref()
            .map_or(0, dlock_proto::SessionInfo::approx_size),
        Reply::Pong { server_version } => server_version.len(),
        Reply::Error(_) => 0,
    };
    size + REPLY_ENVELOPE <= max
}

/// Queues `msg` on a connection's outbox. A full outbox disconnects a slow reader; its
/// session stays (R51) and the client can resume. `false` if the connection is detached.
fn push(handle: &ConnHandle, msg: ServerMessage) -> bool {
    match handle.tx.try_send(msg) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            warn!(peer = %handle.peer(), "client too slow reading; closing connection");
            handle.close(
                Some(ServerMessage::ProtocolError(ProtocolError::SlowReader)),
                false,
            );
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}
