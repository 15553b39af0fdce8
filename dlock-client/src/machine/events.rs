//! Frames from the server: the handshake's answer, engine events (completions, blocking
//! notifications, session expiry) and replies.

use std::sync::Arc;

use dlock_core::{EventKind, FencingToken, LockId, Mode, Reject, RequestId};
use dlock_proto::{Event, Refusal, Reply, RequestError, ServerMessage};
use tokio::time::Instant;

use super::SessionMachine;
use super::conn_state::ConnState;
use super::locks::Granted;
use super::requests::Outstanding;
use super::retries::Retry;
use crate::error::Error;
use crate::lease::Lease;
use crate::lock_state::LostReason;
use crate::op::{Call, Grant, NewLock, Origin, Outcome, What};

/// A grant as an event carries it.
struct GrantEvent {
    mode: Mode,
    token: FencingToken,
    value: Option<Vec<u8>>,
    value_valid: bool,
}

impl SessionMachine {
    /// A frame from the server.
    pub(crate) fn handle_frame(&mut self, msg: ServerMessage, now: Instant) {
        match self.state {
            ConnState::Handshaking { sent_at, .. } => self.on_handshake_frame(msg, sent_at, now),
            ConnState::Connected | ConnState::Closing { .. } => {
                self.on_message(msg, now);
                self.maybe_ack();
            }
            // A frame of a connection already given up.
            _ => {}
        }
        self.release_held(now);
    }

    /// The error for a frame from the server that is not a valid message: in the handshake
    /// it says where to look, as something answered there, but not in dlock's words (an
    /// echo, another service whose first bytes pass for a frame's length).
    pub(crate) fn malformed(&self, malformed: &dlock_proto::codec::MalformedFrame) -> Error {
        if matches!(self.state, ConnState::Handshaking { .. }) {
            return Error::Protocol(format!(
                "{malformed} (in the handshake with {}: is this a dlock server's lock port?)",
                self.target
            ));
        }
        Error::Protocol(malformed.to_string())
    }

    fn on_handshake_frame(&mut self, msg: ServerMessage, sent_at: Instant, now: Instant) {
        let refusal = match msg {
            ServerMessage::Welcome(w) => return self.on_welcome(w, sent_at, now),
            ServerMessage::Refused(r) => r,
            ServerMessage::ShuttingDown => Refusal::ShuttingDown,
            other => {
                let err = Error::Protocol(format!("expected Welcome, got {other:?}"));
                return self.handle_connection_lost(err, now);
            }
        };
        self.disconnect(false);
        if let Refusal::NotLeader { .. } = refusal {
            // A member is up, even if the leader it names turns out not to be.
            self.election.not_leader(now);
        }
        if let Refusal::NotLeader {
            leader: Some(leader),
        } = &refusal
            && self.endpoints.redirect(leader.clone())
        {
            tracing::info!(%leader, "server is not the leader; connecting to the leader");
            self.connect(now);
            return;
        }
        if refusal == Refusal::UnknownSession && self.session.is_some() {
            tracing::info!("server refused to resume the session: it is gone");
            self.end_session(LostReason::SessionExpired);
            self.state = ConnState::Backoff { retry_at: now };
            return;
        }
        tracing::debug!(%refusal, "handshake refused");
        if !matches!(
            refusal,
            Refusal::ShuttingDown
                | Refusal::TooManyConnections
                | Refusal::TooManyConnectionsFromPeer { .. }
                | Refusal::NotLeader { .. }
                | Refusal::StorageUnavailable
        ) && self.session.is_none()
        {
            // Nothing new will succeed on a refusal like a version mismatch: fail the work
            // waiting for a session.
            for o in self.requests.drain() {
                o.call.fail(Error::Refused(refusal.clone()));
            }
        }
        self.attempt_failed(Error::Refused(refusal), now);
    }

    fn on_message(&mut self, msg: ServerMessage, now: Instant) {
        match msg {
            ServerMessage::Event { seq, event } => self.on_event(seq, event, now),
            ServerMessage::Reply { id, body } => self.on_reply(id, body, now),
            ServerMessage::ShuttingDown => {
                tracing::info!("server shutting down");
                self.session_lost(LostReason::ServerShutdown, now);
                if matches!(self.state, ConnState::Backoff { .. }) {
                    self.schedule_retry(now);
                }
            }
            ServerMessage::ProtocolError(e) => {
                tracing::warn!(error = %e, "server reported a protocol error");
                self.handle_connection_lost(Error::Protocol(e.to_string()), now);
            }
            ServerMessage::Welcome(_) | ServerMessage::Refused(_) | ServerMessage::Probed(_) => {
                let err = Error::Protocol("unexpected handshake frame".into());
                self.handle_connection_lost(err, now);
            }
        }
    }

    fn on_event(&mut self, seq: u64, event: Event, now: Instant) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        if event.session != s.id {
            tracing::warn!(session = %event.session, "event for another session");
            return;
        }
        if !s.renewal.observe(seq) {
            // Replayed after a resume and already seen.
            return;
        }
        let Event {
            request,
            lock,
            kind,
            ..
        } = event;
        match kind {
            EventKind::SessionExpired
            | EventKind::Rejected {
                reason: Reject::UnknownSession,
            } => self.session_lost(LostReason::SessionExpired, now),
            EventKind::SessionClosed => {
                if matches!(self.state, ConnState::Closing { .. }) {
                    self.finish_close(now);
                } else {
                    self.session_lost(LostReason::Closed, now);
                }
            }
            EventKind::Blocking { mode } => {
                if let Some(l) = lock.and_then(|l| self.locks.get(l)) {
                    l.push_blocking(mode);
                }
            }
            EventKind::Renewed { .. } => {
                let Some(o) = request.and_then(|id| self.requests.remove(id)) else {
                    return;
                };
                if let (What::Renew, Some(sent), Some(s)) =
                    (&o.call.what, o.first_sent, &mut self.session)
                {
                    s.renewal.confirm(sent, now);
                }
            }
            EventKind::SessionOpened { .. } => {}
            kind => {
                if let Some(id) = request {
                    self.on_completion(id, lock, kind, now);
                }
            }
        }
    }

    fn on_completion(
        &mut self,
        id: RequestId,
        lock: Option<LockId>,
        kind: EventKind,
        now: Instant,
    ) {
        // The server takes requests: retries of refused ones start over at the first delay.
        self.retries.taken();
        if let (EventKind::Cancelled, Some(l)) = (&kind, lock) {
            // A successful cancel produces only the cancelled request's completion: it
            // answers the first cancel of the lock sent after the cancelled request.
            if let Some(cid) = self.requests.first_cancel_of(l, id) {
                if let Some(mut o) = self.requests.remove(cid) {
                    let _ = o.call.answer(Ok(Outcome::Cancelled));
                }
            }
        }
        let Some(o) = self.requests.get_mut(id) else {
            tracing::debug!(%id, ?kind, "event for no outstanding request");
            return;
        };
        let grant = match kind {
            EventKind::Granted {
                mode,
                token,
                value,
                value_valid,
            } => GrantEvent {
                mode,
                token,
                value,
                value_valid,
            },
            EventKind::Queued => {
                match &mut o.call.what {
                    What::Lock { queued, .. } => {
                        o.lock = lock;
                        if let (Some(q), Some(l)) = (queued.take(), lock) {
                            let _ = q.send(l);
                        }
                    }
                    What::Convert { queued, req, .. } => {
                        if let Some(q) = queued.take() {
                            let _ = q.send(req.lock);
                        }
                    }
                    _ => {}
                }
                let abandoned_lock =
                    matches!(o.call.what, What::Lock { .. }) && o.call.reply.is_none();
                self.requests.clear_deadline(id);
                if abandoned_lock {
                    // Its caller stopped waiting before it knew the lock id: cancel it now.
                    if let Some(l) = lock {
                        self.send_cancel(l, now);
                    }
                }
                return;
            }
            other => {
                let Some(o) = self.requests.remove(id) else {
                    return;
                };
                return self.on_refused(o, other, now);
            }
        };
        let Some(o) = self.requests.remove(id) else {
            return;
        };
        self.on_granted(o, lock, grant, now);
    }

    /// A final answer other than a grant.
    fn on_refused(&mut self, mut o: Outstanding, kind: EventKind, now: Instant) {
        let res = match &o.call.what {
            What::Unlock { req, origin } => match kind {
                EventKind::Unlocked => {
                    self.locks.finish(req.lock, LostReason::Released);
                    Ok(Outcome::Unlocked)
                }
                other => {
                    let err = outcome_error(&other);
                    if follows_up(origin, &o.call, &err) {
                        let fallback = *origin == Origin::Fallback;
                        self.on_unlock_refused(req.lock, &err, fallback, now);
                    }
                    Err(err)
                }
            },
            What::Goodbye => {
                // Refused Goodbye: nothing more to wait for.
                if matches!(self.state, ConnState::Closing { .. }) {
                    self.finish_close(now);
                }
                return;
            }
            What::Renew | What::Query(_) | What::Ping => return,
            // Lock, convert and cancel: only a refusal carries a cancel's own id.
            _ => Err(outcome_error(&kind)),
        };
        let _ = o.call.answer(res);
    }

    fn on_granted(&mut self, o: Outstanding, lock: Option<LockId>, g: GrantEvent, now: Instant) {
        let mut call = o.call;
        let resource = match &mut call.what {
            What::Lock { req, .. } => std::mem::take(&mut req.resource),
            What::Convert { req, .. } => {
                if let Some(l) = self.locks.get(req.lock) {
                    l.set_granted(g.mode, g.token);
                }
                let _ = call.answer(Ok(Outcome::Converted(Grant {
                    mode: g.mode,
                    token: g.token,
                    value: g.value,
                    value_valid: g.value_valid,
                })));
                return;
            }
            _ => {
                call.fail(Error::Protocol(
                    "grant for a request that is no lock".into(),
                ));
                return;
            }
        };
        let Some(lock) = lock else {
            call.fail(Error::Protocol("grant without a lock id".into()));
            return;
        };
        // Grants only arrive within a session; without one the lock counts as lost at once.
        let lease = self
            .session
            .as_ref()
            .map_or_else(|| Arc::new(Lease::new(now)), |s| s.renewal.lease().clone());
        let shared = self.locks.insert(Granted {
            lock,
            epoch: self.epoch,
            resource,
            mode: g.mode,
            token: g.token,
            value_block_len: self.view.lvb_len(),
            lease,
        });
        let abandoned = call.reply.is_none();
        let returned = call.answer(Ok(Outcome::Locked(NewLock {
            shared,
            value: g.value,
            value_valid: g.value_valid,
        })));
        if abandoned || returned.is_some() {
            // Nobody wants this grant any more: release it.
            self.send_unlock(lock, Origin::Release, now);
        }
    }

    fn on_reply(&mut self, id: RequestId, body: Reply, now: Instant) {
        if let Reply::Error(RequestError::DuplicateRequestId(_)) = body {
            // An id this connection already sent (the server's answer to an id reused on
            // one connection, which this client never does: its ids increase and it re-sends
            // only on a new connection): the first request's answer is the one to wait for.
            return;
        }
        let Some(o) = self.requests.remove(id) else {
            return;
        };
        let mut call = o.call;
        let res = match (&call.what, body) {
            (What::Query(_), Reply::Error(e)) => Err(request_error(e)),
            (What::Query(_), body) => Ok(Outcome::Answer(body)),
            (What::Ping, Reply::Pong { server_version }) => Ok(Outcome::Pong(server_version)),
            (What::Unlock { req, origin }, Reply::Error(e)) => {
                // Not applied (refused by the rules, or not taken): the lock is still held.
                let err = request_error(e);
                if follows_up(origin, &call, &err) {
                    let fallback = *origin == Origin::Fallback;
                    self.on_unlock_refused(req.lock, &err, fallback, now);
                }
                Err(err)
            }
            (What::Goodbye, Reply::Error(_)) if matches!(self.state, ConnState::Closing { .. }) => {
                self.finish_close(now);
                return;
            }
            // What nobody waits for is sent again later: a cancel given up would leave its
            // request queued, a renewal given up would let the lease run out.
            (
                What::Cancel {
                    lock,
                    origin: Origin::Release,
                },
                Reply::Error(RequestError::Overloaded),
            ) => {
                self.retries.refused(Retry::Cancel(*lock), now);
                return;
            }
            (What::Renew, Reply::Error(RequestError::Overloaded)) => {
                self.retries.refused(Retry::Renew, now);
                return;
            }
            (_, Reply::Error(e)) => Err(request_error(e)),
            (_, other) => Err(Error::Protocol(format!("unexpected reply {other:?}"))),
        };
        let _ = call.answer(res);
    }

    /// The server refused the unlock of a dropped guard or of the client itself, or did not
    /// take an unlock at all (overloaded). Nobody holds a guard for the lock, so unless it is
    /// gone anyway it would stay held until the session ends: an unlock the server did not
    /// take is sent again after a delay (see [`retries`](super::retries)), for as long as it
    /// is not taken; one it refused goes again as a plain unlock, after a cancel if a request
    /// on the lock is pending (BUSY, R45), and a refused plain unlock is not tried again. (A
    /// guard's explicit unlock refused by the rules changes nothing: its caller was told.)
    fn on_unlock_refused(&mut self, lock: LockId, err: &Error, fallback: bool, now: Instant) {
        match err {
            // The server has no such lock: nothing is held, forget it here too.
            Error::NotFound => {
                self.locks.finish(lock, LostReason::Released);
                return;
            }
            // The session is gone or going, and the locks with it.
            Error::SessionLost | Error::Closed | Error::ShuttingDown => return,
            _ => {}
        }
        if !self.locks.contains(lock) {
            return;
        }
        if matches!(err, Error::Overloaded) {
            self.retries.refused(Retry::Unlock(lock), now);
            return;
        }
        if fallback {
            tracing::warn!(%lock, error = %err, "plain unlock refused; the lock stays held until the session ends");
            return;
        }
        tracing::debug!(%lock, error = %err, "unlock refused; releasing the lock with a plain unlock");
        if matches!(err, Error::Busy) {
            self.send_cancel(lock, now);
        }
        self.send_unlock(lock, Origin::Fallback, now);
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

/// Whether an unlock `call` from `origin` that failed with `err` (refused by the engine or
/// the rules, or not taken) is followed up with [`on_unlock_refused`](SessionMachine::on_unlock_refused).
/// A guard's explicit unlock that was refused changed nothing (R5, R54, R45): the lock stays
/// held, its caller told why. What a dropped guard or the client itself sent is followed up,
/// and so is an explicit unlock whose caller stopped waiting (nobody would learn of the
/// refusal, and the guard is gone), one the server did not take (overloaded: sent again, as
/// the guard's docs say), and any whose lock the server does not have (forgotten here too).
/// An unlock by id is its caller's alone.
fn follows_up(origin: &Origin, call: &Call, err: &Error) -> bool {
    if matches!(err, Error::NotFound) {
        return true;
    }
    if *origin == Origin::ById {
        return false;
    }
    let explicit =
        matches!(origin, Origin::Guard(_)) && call.reply.as_ref().is_some_and(|r| !r.is_closed());
    !explicit || matches!(err, Error::Overloaded)
}

fn request_error(e: RequestError) -> Error {
    match e {
        RequestError::Overloaded => Error::Overloaded,
        RequestError::PermissionDenied => Error::PermissionDenied,
        other => Error::Protocol(other.to_string()),
    }
}
