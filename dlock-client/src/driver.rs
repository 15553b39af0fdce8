//! The background task: owns the connection and the session, routes events to callers.
//!
//! One task per client owns everything mutable: the connection, the session credentials,
//! the outstanding requests (by request id) and the held locks (by lock id). Handles talk
//! to it through one FIFO channel of [`Op`]s; it answers through oneshot channels.
//!
//! Request ids increase within a session. Every request stays *outstanding* until its final
//! answer arrives, and after a resume all outstanding requests are re-sent in id order; the
//! server does not apply a request twice and replays the events the client missed, whose
//! sequence numbers tell duplicates apart.

use dlock_proto::{ConvertRequest, LockRequest, UnlockRequest};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::machine::backoff::Backoff;
use dlock_core::{EventKind, FencingToken, LockFlags, LockId, Mode, Reject, RequestId};
use dlock_proto::{
    ClientMessage, DEFAULT_MAX_FRAME_LEN, Event, Hello, PROTOCOL_VERSION, Refusal, Reply, Request,
    RequestError, Resume, ServerMessage,
};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::client::SessionView;
use crate::conn::{Conn, Handshake, HandshakeError, handshake};
use crate::error::{Error, Result};
use crate::guard::{LockGuard, LockShared, LostReason};
use crate::lease::Lease;
use crate::op::{Grant, Op};
use crate::options::duration_ms;

/// Send an `Ack` at least every this many events, besides the one with each renewal.
const ACK_EVERY: u64 = 64;

/// How long `close` waits for the server to confirm `Goodbye`.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Settings from the [`ClientBuilder`](crate::ClientBuilder).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) addr: String,
    pub(crate) name: String,
    pub(crate) lease_ttl: Option<Duration>,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) safety_margin: Option<Duration>,
}

/// Connects, opens a session and spawns the background task.
pub(crate) async fn start(
    settings: Settings,
    view: Arc<SessionView>,
) -> Result<mpsc::UnboundedSender<Op>> {
    let hello = hello(&settings, None);
    let hs = handshake(settings.addr.clone(), hello, settings.connect_timeout)
        .await
        .map_err(|e| match e {
            HandshakeError::Io(e) => Error::Connect(Arc::new(e)),
            HandshakeError::Timeout => Error::Connect(Arc::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            ))),
            HandshakeError::Refused(r) => Error::Refused(r),
            HandshakeError::Protocol(s) => Error::Protocol(s),
        })?;
    let backoff = Backoff::new(settings.backoff_min, settings.backoff_max, rand::random());
    let (tx, rx) = mpsc::unbounded_channel();
    let mut driver = Driver {
        settings,
        ops: rx,
        weak_tx: tx.downgrade(),
        view,
        conn: None,
        connecting: None,
        retry_at: None,
        backoff,
        session: None,
        epoch: 0,
        next_id: 1,
        outstanding: BTreeMap::new(),
        deadlines: BTreeSet::new(),
        keys: HashMap::new(),
        locks: HashMap::new(),
        renew_at: None,
        close_reply: None,
        close_deadline: None,
        max_frame_len: DEFAULT_MAX_FRAME_LEN,
        exit: false,
    };
    driver.on_handshake(Ok(hs));
    tokio::spawn(driver.run());
    Ok(tx)
}

fn hello(settings: &Settings, resume: Option<Resume>) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        client_name: settings.name.clone(),
        lease_ttl_ms: settings.lease_ttl.map(duration_ms).unwrap_or(0),
        resume,
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<Handshake, HandshakeError>> + Send>>;

/// The session this client holds on the server.
struct Session {
    id: dlock_core::SessionId,
    secret: u128,
    ttl: Duration,
    /// Highest event sequence number received.
    last_seq: u64,
    /// Highest sequence number acknowledged to the server.
    acked_seq: u64,
    /// Send instant of the latest renewal the server confirmed: the server's lease runs at
    /// least until `confirmed + ttl`.
    confirmed: Instant,
    /// The local lease (`confirmed + ttl - margin`), shared with the session's guards so
    /// that they can judge it themselves.
    lease: Arc<Lease>,
}

/// A request waiting for its final answer.
struct Outstanding {
    body: Request,
    /// When it was first sent (a retransmission is not applied again, so only the first
    /// send can have renewed the lease).
    first_sent: Option<Instant>,
    /// Until when the caller waits for a first answer.
    deadline: Option<Instant>,
    pending: Pending,
}

enum Pending {
    Lock {
        key: u64,
        resource: Vec<u8>,
        reply: Option<oneshot::Sender<Result<LockGuard>>>,
        /// Told the lock id on "queued" (a [`PendingLock`](crate::PendingLock) waits for it).
        queued: Option<oneshot::Sender<LockId>>,
        lock: Option<LockId>,
        abandoned: bool,
    },
    Convert {
        key: u64,
        lock: LockId,
        reply: Option<oneshot::Sender<Result<Grant>>>,
        /// Told the lock id on "queued".
        queued: Option<oneshot::Sender<LockId>>,
    },
    Unlock {
        lock: LockId,
        reply: Option<oneshot::Sender<Result<()>>>,
        /// Sent by id ([`Client::unlock_by_id`](crate::Client::unlock_by_id)): a refusal is
        /// only reported, nothing is released in its place.
        by_id: bool,
        /// This is the plain unlock sent after another unlock of the lock was refused: if it
        /// is refused too, nothing more is tried.
        fallback: bool,
    },
    Cancel {
        lock: LockId,
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    Query {
        reply: oneshot::Sender<Result<Reply>>,
    },
    Ping {
        reply: oneshot::Sender<Result<String>>,
    },
    Renew,
    Goodbye,
}

impl Pending {
    /// Fails the caller, if one still waits.
    fn fail(self, err: Error) {
        match self {
            Pending::Lock { reply, .. } => {
                if let Some(r) = reply {
                    let _ = r.send(Err(err));
                }
            }
            Pending::Convert { reply, .. } => {
                if let Some(r) = reply {
                    let _ = r.send(Err(err));
                }
            }
            Pending::Unlock { reply, .. } | Pending::Cancel { reply, .. } => {
                if let Some(r) = reply {
                    let _ = r.send(Err(err));
                }
            }
            Pending::Query { reply } => {
                let _ = reply.send(Err(err));
            }
            Pending::Ping { reply } => {
                let _ = reply.send(Err(err));
            }
            Pending::Renew | Pending::Goodbye => {}
        }
    }
}

/// A granted lock of the current session.
struct LockEntry {
    shared: Arc<LockShared>,
    lost_tx: Option<oneshot::Sender<LostReason>>,
}

impl LockEntry {
    fn finish(mut self, reason: LostReason) {
        self.finish_with(reason);
    }

    fn finish_with(&mut self, reason: LostReason) {
        if let Some(tx) = self.lost_tx.take() {
            self.shared.set_lost(reason);
            let _ = tx.send(reason);
        }
    }
}

impl Drop for LockEntry {
    /// The task is going away (for example with its runtime): the lock can no longer be
    /// renewed, so it counts as lost.
    fn drop(&mut self) {
        self.finish_with(LostReason::Closed);
    }
}

struct Driver {
    settings: Settings,
    ops: mpsc::UnboundedReceiver<Op>,
    /// To hand out to new guards; weak so that the task stops when every handle is gone.
    weak_tx: mpsc::WeakUnboundedSender<Op>,
    view: Arc<SessionView>,
    conn: Option<Conn>,
    connecting: Option<Connecting>,
    /// When to try connecting again (only while disconnected and not connecting).
    retry_at: Option<Instant>,
    /// Reconnect delays.
    backoff: Backoff,
    session: Option<Session>,
    /// Incremented for every new session; guards of older sessions are refused.
    epoch: u64,
    next_id: u64,
    outstanding: BTreeMap<RequestId, Outstanding>,
    /// `(deadline, id)` of every outstanding request that has a deadline.
    deadlines: BTreeSet<(Instant, RequestId)>,
    /// Key of a lock/convert call → its request id, for `Abandon`.
    keys: HashMap<u64, RequestId>,
    locks: HashMap<LockId, LockEntry>,
    renew_at: Option<Instant>,
    close_reply: Option<oneshot::Sender<Result<()>>>,
    close_deadline: Option<Instant>,
    max_frame_len: usize,
    exit: bool,
}

/// Waits for the next frame, or forever without a connection.
async fn next_frame(
    conn: &mut Option<Conn>,
) -> Option<Result<Result<ServerMessage, dlock_proto::MalformedFrame>, dlock_proto::CodecError>> {
    match conn {
        Some(c) => c.reader.next().await,
        None => std::future::pending().await,
    }
}

/// Waits for the handshake in progress, or forever without one.
async fn next_handshake(connecting: &mut Option<Connecting>) -> Result<Handshake, HandshakeError> {
    match connecting {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

impl Driver {
    async fn run(mut self) {
        // One timer for the task's life, moved only when the next deadline changes: a fresh
        // sleep per wake-up would register and clear a timer entry for every frame.
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut timer_at: Option<Instant> = None;
        while !self.exit {
            let deadline = self.next_deadline();
            if deadline != timer_at {
                if let Some(at) = deadline {
                    timer.as_mut().reset(at);
                }
                timer_at = deadline;
            }
            tokio::select! {
                op = self.ops.recv() => match op {
                    Some(op) => self.on_op(op),
                    None => self.on_all_handles_dropped(),
                },
                frame = next_frame(&mut self.conn) => self.on_frame(frame),
                hs = next_handshake(&mut self.connecting) => {
                    self.connecting = None;
                    self.on_handshake(hs);
                }
                () = &mut timer, if timer_at.is_some() => {
                    // Elapsed: armed again on the next turn even if the deadline stays.
                    timer_at = None;
                }
            }
            self.on_timers();
            self.maybe_ack();
        }
        if let Some(conn) = self.conn.take() {
            conn.close_gracefully();
        }
        tracing::debug!("client task stopped");
    }

    // ---- timers -------------------------------------------------------------------------

    fn lapse_at(&self) -> Option<Instant> {
        Some(self.session.as_ref()?.lease.deadline())
    }

    /// How long before the server's earliest expiry the local lease lapses.
    fn margin(&self, ttl: Duration) -> Duration {
        self.settings
            .safety_margin
            .unwrap_or_else(|| (ttl / 10).max(Duration::from_millis(100)))
            .min(ttl / 2)
    }

    /// Records that the server renewed the lease after `sent` (a confirmed renewal, or an
    /// accepted resume). A confirmation that arrives after the local lease has lapsed
    /// extends nothing: the next `on_timers` declares the lapse.
    fn confirm(&mut self, sent: Instant) {
        let now = Instant::now();
        let Some(ttl) = self.session.as_ref().map(|s| s.ttl) else {
            return;
        };
        let margin = self.margin(ttl);
        let Some(s) = self.session.as_mut() else {
            return;
        };
        if s.lease.extend(now, sent + ttl - margin) {
            s.confirmed = s.confirmed.max(sent);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        };
        consider(self.lapse_at());
        if self.conn.is_some() {
            consider(self.renew_at);
        } else if self.connecting.is_none() {
            consider(self.retry_at);
        }
        consider(self.deadlines.first().map(|(t, _)| *t));
        consider(self.close_deadline);
        at
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        // The same latch the guards consult: once one of them has reported the lapse, this
        // agrees even if a renewal confirmation was handled in between.
        if self
            .session
            .as_ref()
            .is_some_and(|s| s.lease.lapsed_at(now))
        {
            tracing::warn!("lease renewal not confirmed in time: declaring every lock lost");
            self.session_lost(LostReason::LocalLeaseLapsed);
        }
        if self.close_deadline.is_some_and(|t| now >= t) {
            self.finish_close();
            return;
        }
        if self.conn.is_some() && self.session.is_some() && self.renew_at.is_some_and(|t| now >= t)
        {
            self.renew(now);
        }
        while let Some(&(t, id)) = self.deadlines.first() {
            if t > now {
                break;
            }
            self.deadlines.remove(&(t, id));
            self.on_request_deadline(id);
        }
        if self.conn.is_none()
            && self.connecting.is_none()
            && !self.exit
            && self.close_reply.is_none()
            && self.retry_at.is_none_or(|t| now >= t)
        {
            self.start_connecting();
        }
    }

    fn renew(&mut self, now: Instant) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        self.renew_at = Some(now + s.ttl / 3);
        let seq = s.last_seq;
        s.acked_seq = seq;
        self.send_raw(ClientMessage::Ack { seq });
        self.submit(Request::Renew, Pending::Renew, None);
    }

    fn maybe_ack(&mut self) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        if self.conn.is_some() && s.last_seq >= s.acked_seq + ACK_EVERY {
            let seq = s.last_seq;
            s.acked_seq = seq;
            self.send_raw(ClientMessage::Ack { seq });
        }
    }

    fn on_request_deadline(&mut self, id: RequestId) {
        // Without a connection the cause is known and says more than a bare timeout.
        let err = if self.conn.is_none() {
            Error::Disconnected
        } else {
            Error::RequestTimeout
        };
        let Some(o) = self.outstanding.get_mut(&id) else {
            return;
        };
        o.deadline = None;
        match &mut o.pending {
            Pending::Lock {
                reply,
                abandoned,
                queued,
                ..
            } => {
                // The request stays outstanding: if it is granted after all, it is released.
                *queued = None;
                if let Some(r) = reply.take() {
                    let _ = r.send(Err(err.clone()));
                }
                *abandoned = true;
            }
            Pending::Convert {
                reply,
                lock,
                queued,
                ..
            } => {
                *queued = None;
                if let Some(r) = reply.take() {
                    let _ = r.send(Err(err.clone()));
                }
                let lock = *lock;
                self.send_cancel(lock, None);
            }
            Pending::Unlock { reply, .. } | Pending::Cancel { reply, .. } => {
                if let Some(r) = reply.take() {
                    let _ = r.send(Err(err.clone()));
                }
            }
            Pending::Query { .. } | Pending::Ping { .. } => {
                if let Some(o) = self.remove(id) {
                    o.pending.fail(err.clone());
                }
            }
            Pending::Goodbye => self.finish_close(),
            Pending::Renew => {}
        }
    }

    // ---- connecting ---------------------------------------------------------------------

    fn start_connecting(&mut self) {
        let resume = self.session.as_ref().map(|s| Resume {
            session: s.id,
            secret: s.secret,
            last_seq: s.last_seq,
        });
        let hello = hello(&self.settings, resume);
        tracing::debug!(resume = resume.is_some(), "connecting");
        self.retry_at = None;
        self.connecting = Some(Box::pin(handshake(
            self.settings.addr.clone(),
            hello,
            self.settings.connect_timeout,
        )));
    }

    /// Schedules the next connection attempt with exponential backoff and jitter.
    fn schedule_retry(&mut self) {
        let delay = self.backoff.next_delay();
        self.retry_at = Some(Instant::now() + delay);
    }

    fn on_handshake(&mut self, res: Result<Handshake, HandshakeError>) {
        let hs = match res {
            Ok(hs) => hs,
            Err(HandshakeError::Refused(Refusal::UnknownSession)) if self.session.is_some() => {
                tracing::info!("server refused to resume the session: it is gone");
                self.session_lost(LostReason::SessionExpired);
                self.retry_at = Some(Instant::now());
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "connection attempt failed");
                if let HandshakeError::Refused(r) = &e {
                    if !matches!(r, Refusal::ShuttingDown | Refusal::TooManyConnections) {
                        // Nothing new will succeed on a refusal like a version mismatch.
                        self.fail_new_work(Error::Refused(r.clone()));
                    }
                }
                self.schedule_retry();
                return;
            }
        };
        let Handshake {
            conn,
            welcome,
            sent_at,
        } = hs;
        self.backoff.reset();
        self.max_frame_len =
            usize::try_from(welcome.max_frame_len).unwrap_or(DEFAULT_MAX_FRAME_LEN);
        if let Ok(mut v) = self.view.server_version.lock() {
            v.clone_from(&welcome.server_version);
        }
        self.view
            .lvb_len
            .store(u64::from(welcome.lvb_len), Ordering::Relaxed);
        let ttl = Duration::from_millis(welcome.lease_ttl_ms.max(1));
        let resumed = match &self.session {
            Some(s) if welcome.resumed && welcome.session == s.id => true,
            Some(_) => {
                // Asked to resume but got another session: the old one is gone.
                self.session_lost(LostReason::SessionExpired);
                false
            }
            None if welcome.resumed => {
                // A resume of a session this client has given up on: end it on the server
                // and start over.
                let id = self.alloc_id();
                let _ = conn.send(ClientMessage::Request {
                    id,
                    body: Request::Goodbye,
                });
                conn.close_gracefully();
                self.retry_at = Some(Instant::now());
                return;
            }
            None => false,
        };
        self.conn = Some(conn);
        let now = Instant::now();
        if resumed {
            tracing::debug!("session resumed");
            // The server renews the lease when it accepts the resume (any message of a
            // session renews it), which happened after `Hello` was sent.
            self.confirm(sent_at);
            // Re-send every outstanding request in id order; the server ignores the ones it
            // has already applied and replays their events.
            let ids: Vec<RequestId> = self.outstanding.keys().copied().collect();
            for id in ids {
                self.transmit(id);
            }
            // Renew at once as well: the next renewal is overdue after a disconnection.
            self.renew(now);
        } else {
            self.epoch += 1;
            let lease = Arc::new(Lease::new(sent_at + ttl - self.margin(ttl)));
            self.session = Some(Session {
                id: welcome.session,
                secret: welcome.secret,
                ttl,
                last_seq: 0,
                acked_seq: 0,
                confirmed: sent_at,
                lease,
            });
            self.view.id.store(welcome.session.0, Ordering::Release);
            tracing::debug!(session = %welcome.session, "session opened");
            // Requests submitted while there was no session go out now.
            let ids: Vec<RequestId> = self.outstanding.keys().copied().collect();
            for id in ids {
                self.transmit(id);
            }
            self.renew_at = Some(now + ttl / 3);
        }
    }

    /// Fails every outstanding request that has not been sent (new work waiting for a
    /// session) with `err`.
    fn fail_new_work(&mut self, err: Error) {
        if self.session.is_some() {
            return;
        }
        let ids: Vec<RequestId> = self.outstanding.keys().copied().collect();
        for id in ids {
            if let Some(o) = self.remove(id) {
                o.pending.fail(err.clone());
            }
        }
    }

    fn connection_lost(&mut self, why: &str) {
        if self.conn.take().is_some() {
            tracing::info!(why, "connection lost; reconnecting");
        }
        if self.close_reply.is_some() {
            self.finish_close();
            return;
        }
        self.schedule_retry();
    }

    /// The session is gone: every lock is lost and every outstanding request fails.
    fn session_lost(&mut self, reason: LostReason) {
        let err = match reason {
            LostReason::ServerShutdown => Error::ShuttingDown,
            LostReason::Closed => Error::Closed,
            _ => Error::SessionLost,
        };
        for (_, entry) in self.locks.drain() {
            entry.finish(reason);
        }
        let outstanding = std::mem::take(&mut self.outstanding);
        self.deadlines.clear();
        self.keys.clear();
        for (_, o) in outstanding {
            o.pending.fail(err.clone());
        }
        if self.session.take().is_some() {
            tracing::debug!(%reason, "session ended");
        }
        self.view.id.store(0, Ordering::Release);
        self.renew_at = None;
        // A handshake in progress may be resuming the session just given up: it must not
        // bring it back.
        self.connecting = None;
        if let Some(conn) = self.conn.take() {
            if reason == LostReason::LocalLeaseLapsed {
                // Best effort: if the server still hears us, release the locks at once.
                let id = self.alloc_id();
                let _ = conn.send(ClientMessage::Request {
                    id,
                    body: Request::Goodbye,
                });
                conn.close_gracefully();
            }
        }
        if reason != LostReason::Closed {
            // Open a fresh session for new work right away.
            self.retry_at = Some(Instant::now());
        }
    }

    // ---- ops from handles ---------------------------------------------------------------

    fn on_op(&mut self, op: Op) {
        if self.close_reply.is_some() {
            fail_op(op, Error::Closed);
            return;
        }
        match op {
            Op::Lock {
                key,
                resource,
                mode,
                flags,
                timeout_ms,
                reply,
                queued,
            } => {
                let body = Request::Lock(LockRequest {
                    resource: resource.clone(),
                    mode,
                    flags,
                    value: None,
                    timeout_ms,
                });
                if let Err(e) = self.check_size(&body) {
                    let _ = reply.send(Err(e));
                    return;
                }
                let pending = Pending::Lock {
                    key,
                    resource,
                    reply: Some(reply),
                    queued,
                    lock: None,
                    abandoned: false,
                };
                self.submit(body, pending, Some(key));
            }
            Op::Convert {
                key,
                lock,
                epoch,
                mode,
                flags,
                value,
                timeout_ms,
                reply,
                queued,
            } => {
                if let Err(e) = self.check_lock(lock, epoch) {
                    let _ = reply.send(Err(e));
                    return;
                }
                let body = Request::Convert(ConvertRequest {
                    lock,
                    mode,
                    flags,
                    value,
                    timeout_ms,
                });
                if let Err(e) = self.check_size(&body) {
                    let _ = reply.send(Err(e));
                    return;
                }
                let pending = Pending::Convert {
                    key,
                    lock,
                    reply: Some(reply),
                    queued,
                };
                self.submit(body, pending, Some(key));
            }
            Op::Unlock {
                lock,
                epoch,
                flags,
                value,
                reply,
            } => {
                if let Err(e) = self.check_lock(lock, epoch) {
                    if let Some(r) = reply {
                        let _ = r.send(Err(e));
                    }
                    return;
                }
                let body = Request::Unlock(UnlockRequest { lock, flags, value });
                if let Err(e) = self.check_size(&body) {
                    if epoch.is_none() {
                        // By id: nothing was given up, so nothing is released in its place.
                        if let Some(r) = reply {
                            let _ = r.send(Err(e));
                        }
                        return;
                    }
                    // The guard is gone either way: release the lock without the value, as
                    // a dropped guard does, and tell the caller why the value was not written.
                    if let Some(r) = reply {
                        let _ = r.send(Err(e));
                    }
                    self.send_unlock(lock, false);
                    return;
                }
                let pending = Pending::Unlock {
                    lock,
                    reply,
                    by_id: epoch.is_none(),
                    fallback: false,
                };
                self.submit(body, pending, None);
            }
            Op::Cancel { lock, epoch, reply } => {
                if let Err(e) = self.check_lock(lock, epoch) {
                    let _ = reply.send(Err(e));
                    return;
                }
                self.send_cancel(lock, Some(reply));
            }
            Op::Query { query, reply } => {
                self.submit(Request::Query(query), Pending::Query { reply }, None);
            }
            Op::Ping { reply } => {
                self.submit(Request::Ping, Pending::Ping { reply }, None);
            }
            Op::Abandon { key } => self.on_abandon(key),
            Op::Close { reply } => self.on_close(reply),
        }
    }

    /// A guard's operation needs its lock in this session; an operation by id (`epoch:
    /// None`) goes to the server whatever the id.
    fn check_lock(&self, lock: LockId, epoch: Option<u64>) -> Result<()> {
        let Some(epoch) = epoch else {
            return Ok(());
        };
        match self.locks.get(&lock) {
            Some(e) if e.shared.epoch == epoch => Ok(()),
            _ => Err(Error::SessionLost),
        }
    }

    /// Refuses a request that would not fit in one frame (it would break the connection).
    fn check_size(&self, body: &Request) -> Result<()> {
        let payload = match body {
            Request::Lock(LockRequest { resource, .. }) => resource.len(),
            Request::Convert(ConvertRequest { value, .. })
            | Request::Unlock(UnlockRequest { value, .. }) => value.as_ref().map_or(0, Vec::len),
            _ => 0,
        };
        if payload + 256 < self.max_frame_len {
            return Ok(());
        }
        let msg = ClientMessage::Request {
            id: RequestId(u64::MAX),
            body: body.clone(),
        };
        let len = dlock_proto::codec::encode_body(&msg)
            .map(|b| b.len())
            .map_err(|e| Error::Protocol(e.to_string()))?;
        if len > self.max_frame_len {
            return Err(Error::TooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        Ok(())
    }

    fn on_abandon(&mut self, key: u64) {
        let Some(id) = self.keys.remove(&key) else {
            return;
        };
        let Some(o) = self.outstanding.get_mut(&id) else {
            return;
        };
        match &mut o.pending {
            Pending::Lock {
                reply,
                queued,
                lock,
                abandoned,
                ..
            } => {
                *reply = None;
                *queued = None;
                *abandoned = true;
                if let Some(lock) = *lock {
                    // Queued: cancel it. If the grant raced the cancel, the Granted event
                    // finds the request abandoned and releases the lock.
                    self.send_cancel(lock, None);
                }
                // Otherwise the Queued or Granted answer is still to come and acts then.
            }
            Pending::Convert {
                reply,
                queued,
                lock,
                ..
            } => {
                *reply = None;
                *queued = None;
                let lock = *lock;
                self.send_cancel(lock, None);
            }
            _ => {}
        }
    }

    fn on_close(&mut self, reply: oneshot::Sender<Result<()>>) {
        self.close_reply = Some(reply);
        if self.session.is_some() && self.conn.is_some() {
            self.submit(Request::Goodbye, Pending::Goodbye, None);
            self.close_deadline = Some(Instant::now() + CLOSE_WAIT);
        } else {
            self.finish_close();
        }
    }

    fn finish_close(&mut self) {
        self.session_lost(LostReason::Closed);
        self.connecting = None;
        self.close_deadline = None;
        if let Some(r) = self.close_reply.take() {
            let _ = r.send(Ok(()));
        }
        self.exit = true;
    }

    fn on_all_handles_dropped(&mut self) {
        // Nobody can use the session any more: end it so its locks (none should be left, as
        // guards keep the task alive) and its lease go at once.
        if self.session.is_some() {
            let id = self.alloc_id();
            if let Some(conn) = &self.conn {
                let _ = conn.send(ClientMessage::Request {
                    id,
                    body: Request::Goodbye,
                });
            }
        }
        self.session_lost(LostReason::Closed);
        self.exit = true;
    }

    // ---- sending ------------------------------------------------------------------------

    fn alloc_id(&mut self) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        id
    }

    /// Registers an outstanding request and sends it if connected.
    fn submit(&mut self, body: Request, pending: Pending, key: Option<u64>) -> RequestId {
        let id = self.alloc_id();
        let deadline = match pending {
            Pending::Renew | Pending::Goodbye => None,
            _ => self.settings.request_timeout.map(|d| Instant::now() + d),
        };
        if let Some(d) = deadline {
            self.deadlines.insert((d, id));
        }
        if let Some(key) = key {
            self.keys.insert(key, id);
        }
        self.outstanding.insert(
            id,
            Outstanding {
                body,
                first_sent: None,
                deadline,
                pending,
            },
        );
        self.transmit(id);
        id
    }

    /// Sends (or re-sends) an outstanding request, if there is a connection and a session.
    fn transmit(&mut self, id: RequestId) {
        if self.session.is_none() {
            return;
        }
        let Some(conn) = &self.conn else {
            return;
        };
        let Some(o) = self.outstanding.get_mut(&id) else {
            return;
        };
        let msg = ClientMessage::Request {
            id,
            body: o.body.clone(),
        };
        if conn.send(msg).is_err() {
            self.connection_lost("writer stalled");
            return;
        }
        if o.first_sent.is_none() {
            o.first_sent = Some(Instant::now());
        }
    }

    fn send_raw(&mut self, msg: ClientMessage) {
        let stalled = self.conn.as_ref().is_some_and(|c| c.send(msg).is_err());
        if stalled {
            self.connection_lost("writer stalled");
        }
    }

    fn send_cancel(&mut self, lock: LockId, reply: Option<oneshot::Sender<Result<()>>>) {
        self.submit(
            Request::Cancel { lock },
            Pending::Cancel { lock, reply },
            None,
        );
    }

    /// Sends a plain unlock nobody waits for (the release of a dropped or consumed guard).
    fn send_unlock(&mut self, lock: LockId, fallback: bool) {
        let body = Request::Unlock(UnlockRequest {
            lock,
            flags: LockFlags::empty(),
            value: None,
        });
        let pending = Pending::Unlock {
            lock,
            reply: None,
            by_id: false,
            fallback,
        };
        self.submit(body, pending, None);
    }

    /// The server refused an unlock (or did not take it). Whoever sent it no longer has a
    /// guard (`unlock_with` and `Drop` consume it), so unless the lock is gone anyway it would
    /// stay held until the session ends: release it as a dropped guard does, with a plain
    /// unlock, after a cancel if a request on the lock is pending (BUSY, R45). Tried once.
    fn on_unlock_refused(&mut self, lock: LockId, err: &Error, fallback: bool) {
        match err {
            // The server has no such lock: nothing is held, forget it here too.
            Error::NotFound => {
                if let Some(e) = self.locks.remove(&lock) {
                    e.finish(LostReason::Released);
                }
                return;
            }
            // The session is gone or going, and the locks with it.
            Error::SessionLost | Error::Closed | Error::ShuttingDown => return,
            _ => {}
        }
        if !self.locks.contains_key(&lock) {
            return;
        }
        if fallback {
            tracing::warn!(%lock, error = %err, "plain unlock refused; the lock stays held until the session ends");
            return;
        }
        tracing::debug!(%lock, error = %err, "unlock refused; releasing the lock with a plain unlock");
        if matches!(err, Error::Busy) {
            self.send_cancel(lock, None);
        }
        self.send_unlock(lock, true);
    }

    fn remove(&mut self, id: RequestId) -> Option<Outstanding> {
        let o = self.outstanding.remove(&id)?;
        if let Some(d) = o.deadline {
            self.deadlines.remove(&(d, id));
        }
        match &o.pending {
            Pending::Lock { key, .. } | Pending::Convert { key, .. } => {
                self.keys.remove(key);
            }
            _ => {}
        }
        Some(o)
    }

    fn clear_deadline(&mut self, id: RequestId) {
        if let Some(o) = self.outstanding.get_mut(&id) {
            if let Some(d) = o.deadline.take() {
                self.deadlines.remove(&(d, id));
            }
        }
    }

    // ---- receiving ----------------------------------------------------------------------

    fn on_frame(
        &mut self,
        frame: Option<
            Result<Result<ServerMessage, dlock_proto::MalformedFrame>, dlock_proto::CodecError>,
        >,
    ) {
        match frame {
            None => self.connection_lost("closed by the server"),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "read failed");
                self.connection_lost("read failed");
            }
            Some(Ok(Err(malformed))) => {
                tracing::warn!(error = %malformed, "malformed frame from the server");
                self.connection_lost("malformed frame");
            }
            Some(Ok(Ok(msg))) => self.on_message(msg),
        }
    }

    fn on_message(&mut self, msg: ServerMessage) {
        match msg {
            ServerMessage::Event { seq, event } => self.on_event(seq, event),
            ServerMessage::Reply { id, body } => self.on_reply(id, body),
            ServerMessage::ShuttingDown => {
                tracing::info!("server shutting down");
                self.session_lost(LostReason::ServerShutdown);
                self.conn = None;
                self.schedule_retry();
            }
            ServerMessage::ProtocolError(e) => {
                tracing::warn!(error = %e, "server reported a protocol error");
                self.connection_lost("protocol error");
            }
            ServerMessage::Welcome(_) | ServerMessage::Refused(_) => {
                self.connection_lost("unexpected handshake frame");
            }
        }
    }

    fn on_event(&mut self, seq: u64, event: Event) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        if event.session != s.id {
            tracing::warn!(session = %event.session, "event for another session");
            return;
        }
        if seq <= s.last_seq {
            // Replayed after a resume and already seen.
            return;
        }
        s.last_seq = seq;
        let Event {
            request,
            lock,
            kind,
            ..
        } = event;
        match kind {
            EventKind::SessionExpired => {
                self.session_lost(LostReason::SessionExpired);
            }
            EventKind::SessionClosed => {
                if self.close_reply.is_some() {
                    self.finish_close();
                } else {
                    self.session_lost(LostReason::Closed);
                }
            }
            EventKind::Blocking { mode } => {
                if let Some(e) = lock.and_then(|l| self.locks.get(&l)) {
                    e.shared.push_blocking(mode);
                }
            }
            EventKind::Renewed { .. } => {
                if let Some(o) = request.and_then(|id| self.remove(id)) {
                    if let (Pending::Renew, Some(sent)) = (&o.pending, o.first_sent) {
                        self.confirm(sent);
                    }
                }
            }
            EventKind::SessionOpened { .. } => {}
            EventKind::Rejected {
                reason: Reject::UnknownSession,
            } => {
                self.session_lost(LostReason::SessionExpired);
            }
            kind => {
                if let Some(id) = request {
                    self.on_completion(id, lock, kind);
                }
            }
        }
    }

    fn on_completion(&mut self, id: RequestId, lock: Option<LockId>, kind: EventKind) {
        if let (EventKind::Cancelled, Some(l)) = (&kind, lock) {
            // A successful cancel produces only the cancelled request's completion. The
            // server applies requests in id order, so the cancel that succeeded is the first
            // one of this lock sent after the cancelled request; later ones get NOT_PENDING.
            self.resolve_cancel(l, id);
        }
        let Some(o) = self.outstanding.get_mut(&id) else {
            tracing::debug!(%id, ?kind, "event for no outstanding request");
            return;
        };
        match &mut o.pending {
            Pending::Lock {
                lock: lock_slot,
                abandoned,
                queued,
                ..
            } => match kind {
                EventKind::Queued => {
                    *lock_slot = lock;
                    if let (Some(q), Some(l)) = (queued.take(), lock) {
                        let _ = q.send(l);
                    }
                    let abandoned = *abandoned;
                    self.clear_deadline(id);
                    if abandoned {
                        if let Some(l) = lock {
                            self.send_cancel(l, None);
                        }
                    }
                }
                EventKind::Granted {
                    mode,
                    token,
                    value,
                    value_valid,
                } => {
                    let Some(o) = self.remove(id) else { return };
                    let Pending::Lock {
                        resource,
                        reply,
                        abandoned,
                        ..
                    } = o.pending
                    else {
                        return;
                    };
                    let Some(lock) = lock else {
                        if let Some(r) = reply {
                            let _ = r.send(Err(Error::Protocol("grant without a lock id".into())));
                        }
                        return;
                    };
                    self.on_granted(
                        lock,
                        resource,
                        mode,
                        token,
                        value,
                        value_valid,
                        reply,
                        abandoned,
                    );
                }
                other => {
                    if let Some(o) = self.remove(id) {
                        o.pending.fail(outcome_error(&other));
                    }
                }
            },
            Pending::Convert {
                lock: l, queued, ..
            } => match kind {
                EventKind::Queued => {
                    if let Some(q) = queued.take() {
                        let _ = q.send(*l);
                    }
                    self.clear_deadline(id);
                }
                EventKind::Granted {
                    mode,
                    token,
                    value,
                    value_valid,
                } => {
                    let l = *l;
                    if let Some(e) = self.locks.get(&l) {
                        e.shared.set_granted(mode, token);
                    }
                    if let Some(Outstanding {
                        pending: Pending::Convert { reply: Some(r), .. },
                        ..
                    }) = self.remove(id)
                    {
                        let _ = r.send(Ok(Grant {
                            mode,
                            token,
                            value,
                            value_valid,
                        }));
                    }
                }
                other => {
                    if let Some(o) = self.remove(id) {
                        o.pending.fail(outcome_error(&other));
                    }
                }
            },
            Pending::Unlock { .. } => {
                let Some(o) = self.remove(id) else { return };
                let Pending::Unlock {
                    lock: l,
                    reply,
                    by_id,
                    fallback,
                } = o.pending
                else {
                    return;
                };
                let res = match kind {
                    EventKind::Unlocked => {
                        if let Some(e) = self.locks.remove(&l) {
                            e.finish(LostReason::Released);
                        }
                        Ok(())
                    }
                    other => {
                        let err = outcome_error(&other);
                        if !by_id || matches!(err, Error::NotFound) {
                            self.on_unlock_refused(l, &err, fallback);
                        }
                        Err(err)
                    }
                };
                if let Some(r) = reply {
                    let _ = r.send(res);
                }
            }
            Pending::Cancel { .. } => {
                // Only a refusal carries the cancel's own id.
                if let Some(o) = self.remove(id) {
                    o.pending.fail(outcome_error(&kind));
                }
            }
            Pending::Goodbye => {
                // Refused Goodbye: nothing more to wait for.
                self.remove(id);
                if self.close_reply.is_some() {
                    self.finish_close();
                }
            }
            Pending::Renew | Pending::Query { .. } | Pending::Ping { .. } => {
                self.remove(id);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_granted(
        &mut self,
        lock: LockId,
        resource: Vec<u8>,
        mode: Mode,
        token: FencingToken,
        value: Option<Vec<u8>>,
        value_valid: bool,
        reply: Option<oneshot::Sender<Result<LockGuard>>>,
        abandoned: bool,
    ) {
        let (lost_tx, lost_rx) = oneshot::channel();
        // Grants only arrive within a session; without one the lock counts as lost at once.
        let lease = self
            .session
            .as_ref()
            .map_or_else(|| Arc::new(Lease::new(Instant::now())), |s| s.lease.clone());
        let lvb_len =
            usize::try_from(self.view.lvb_len.load(Ordering::Relaxed)).unwrap_or(usize::MAX);
        let shared = Arc::new(LockShared::new(
            lock, self.epoch, resource, mode, token, lvb_len, lease, lost_rx,
        ));
        self.locks.insert(
            lock,
            LockEntry {
                shared: shared.clone(),
                lost_tx: Some(lost_tx),
            },
        );
        let tx = match (abandoned, reply, self.weak_tx.upgrade()) {
            (false, Some(reply), Some(tx)) => {
                // If the caller stopped waiting just now, the guard comes back and its drop
                // releases the lock.
                let guard = LockGuard::new(shared, tx, value, value_valid);
                let _ = reply.send(Ok(guard));
                return;
            }
            (_, _, tx) => tx,
        };
        drop(tx);
        // Nobody wants this grant any more: release it.
        self.send_unlock(lock, false);
    }

    fn resolve_cancel(&mut self, lock: LockId, cancelled: RequestId) {
        let first = self
            .outstanding
            .range(cancelled..)
            .find(|(_, o)| matches!(o.pending, Pending::Cancel { lock: l, .. } if l == lock))
            .map(|(id, _)| *id);
        if let Some(Outstanding {
            pending: Pending::Cancel { reply: Some(r), .. },
            ..
        }) = first.and_then(|id| self.remove(id))
        {
            let _ = r.send(Ok(()));
        }
    }

    fn on_reply(&mut self, id: RequestId, body: Reply) {
        if let Reply::Error(RequestError::DuplicateRequestId(_)) = body {
            // A retransmission the server still had in flight: its answer is coming.
            return;
        }
        let Some(o) = self.remove(id) else {
            return;
        };
        match (o.pending, body) {
            (Pending::Query { reply }, Reply::Error(e)) => {
                let _ = reply.send(Err(request_error(e)));
            }
            (Pending::Query { reply }, body) => {
                let _ = reply.send(Ok(body));
            }
            (Pending::Ping { reply }, Reply::Pong { server_version }) => {
                let _ = reply.send(Ok(server_version));
            }
            (
                Pending::Unlock {
                    lock,
                    reply,
                    by_id,
                    fallback,
                },
                Reply::Error(e),
            ) => {
                // Not applied (for example overloaded): the lock is still held.
                let err = request_error(e);
                if !by_id {
                    self.on_unlock_refused(lock, &err, fallback);
                }
                if let Some(r) = reply {
                    let _ = r.send(Err(err));
                }
            }
            (pending, Reply::Error(e)) => {
                if matches!(pending, Pending::Goodbye) && self.close_reply.is_some() {
                    self.finish_close();
                    return;
                }
                pending.fail(request_error(e));
            }
            (pending, other) => {
                pending.fail(Error::Protocol(format!("unexpected reply {other:?}")));
            }
        }
    }
}

/// The error a non-grant completion means.
fn outcome_error(kind: &EventKind) -> Error {
    match kind {
        EventKind::NotQueued => Error::NotQueued,
        EventKind::Deadlock => Error::Deadlock,
        EventKind::Cancelled => Error::Cancelled,
        EventKind::TimedOut => Error::TimedOut,
        EventKind::Rejected { reason } => reason.clone().into(),
        other => Error::Protocol(format!("unexpected event {other:?}")),
    }
}

fn request_error(e: RequestError) -> Error {
    match e {
        RequestError::Overloaded => Error::Overloaded,
        other => Error::Protocol(other.to_string()),
    }
}

fn fail_op(op: Op, err: Error) {
    match op {
        Op::Lock { reply, .. } => {
            let _ = reply.send(Err(err));
        }
        Op::Convert { reply, .. } => {
            let _ = reply.send(Err(err));
        }
        Op::Unlock { reply, .. } => {
            if let Some(r) = reply {
                let _ = r.send(Err(err));
            }
        }
        Op::Cancel { reply, .. } => {
            let _ = reply.send(Err(err));
        }
        Op::Query { reply, .. } => {
            let _ = reply.send(Err(err));
        }
        Op::Ping { reply } => {
            let _ = reply.send(Err(err));
        }
        Op::Close { reply } => {
            let _ = reply.send(Ok(()));
        }
        Op::Abandon { .. } => {}
    }
}
