//! Operations from the handles, request deadlines, and the end of the machine.

use dlock_core::{LockId, RequestId};
use dlock_proto::{ClientMessage, Query, Request};
use tokio::time::Instant;

use super::conn_state::ConnState;
use super::retries::Retry;
use super::{CLOSE_WAIT, SessionMachine};
use crate::error::{Error, Result};
use crate::lock_state::LostReason;
use crate::op::{Call, Key, Op, Origin, Outcome, Responder, What};

impl SessionMachine {
    /// An operation from a handle.
    pub(crate) fn handle_op(&mut self, op: Op, now: Instant) {
        if self.state.is_closing() {
            match op {
                Op::Call(call) => call.fail(Error::Closed),
                Op::Close(reply) => {
                    let _ = reply.send(Ok(Outcome::Closed));
                }
                Op::Abandon(_) => {}
            }
            return;
        }
        match op {
            Op::Call(call) => self.on_call(call, now),
            Op::Abandon(key) => self.on_abandon(key, now),
            Op::Close(reply) => self.on_close(reply, now),
        }
    }

    /// Every handle is gone: nobody can use the session any more, so end it (its locks,
    /// none of which should be left as guards keep the channel open, and its lease go at
    /// once) and stop.
    pub(crate) fn handle_handles_gone(&mut self, now: Instant) {
        if self.session.is_some() && self.state.can_send() {
            let id = self.requests.alloc_id();
            self.transmits.push_back(ClientMessage::Request {
                id,
                body: Request::Goodbye,
            });
        }
        self.session_lost(LostReason::Closed, now);
        self.stop();
    }

    fn on_call(&mut self, call: Call, now: Instant) {
        let target = match &call.what {
            What::Convert { req, origin, .. } => Some((req.lock, *origin)),
            What::Unlock { req, origin } => Some((req.lock, *origin)),
            What::Cancel { lock, origin } => Some((*lock, *origin)),
            _ => None,
        };
        if let Some((lock, origin)) = target {
            if let Err(e) = self.check_lock(lock, origin) {
                return call.fail(e);
            }
        }
        if let Err(e) = self.check_size(&call) {
            let release = match &call.what {
                // The guard is gone either way: release the lock without the value, as a
                // dropped guard does, and tell the caller why the value was not written. By
                // id nothing was given up, so nothing is released in its place.
                What::Unlock {
                    req,
                    origin: Origin::Guard(_),
                } => Some(req.lock),
                _ => None,
            };
            call.fail(e);
            if let Some(lock) = release {
                self.send_unlock(lock, Origin::Release, now);
            }
            return;
        }
        if self.requests.must_wait(&call) {
            // An earlier lock request on the resource was given up and its outcome is not
            // known yet: this one goes once it is (see `Requests::give_up`).
            self.requests.hold(call);
            return;
        }
        self.submit(call, now);
    }

    /// Sends the held lock calls whose resources have no request given up any more (see
    /// `Requests::give_up`): after what settled them (the release of a grant that came too
    /// late, say), so the server sees that first.
    pub(super) fn release_held(&mut self, now: Instant) {
        for call in self.requests.release_held() {
            self.submit(call, now);
        }
    }

    /// A guard's operation needs its lock in this session; any other goes to the server
    /// whatever the id.
    fn check_lock(&self, lock: LockId, origin: Origin) -> Result<()> {
        match origin {
            Origin::Guard(epoch) if !self.locks.belongs(lock, epoch) => Err(Error::SessionLost),
            _ => Ok(()),
        }
    }

    /// Refuses a request that would not fit in one frame (it would break the connection).
    fn check_size(&self, call: &Call) -> Result<()> {
        let payload = match &call.what {
            What::Lock { req, .. } => req.resource.len(),
            What::Convert { req, .. } => req.value.as_ref().map_or(0, Vec::len),
            What::Unlock { req, .. } => req.value.as_ref().map_or(0, Vec::len),
            What::Query(Query::Resource(name)) => name.len(),
            What::Query(Query::Prefix { prefix, after, .. }) => {
                prefix.len() + after.as_ref().map_or(0, Vec::len)
            }
            _ => 0,
        };
        if payload.saturating_add(256) < self.max_frame_len {
            return Ok(());
        }
        let msg = ClientMessage::Request {
            id: RequestId(u64::MAX),
            body: call.body(),
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

    fn on_abandon(&mut self, key: Key, now: Instant) {
        let Some(id) = self.requests.take_key(key) else {
            // Held back and never sent: forgotten.
            drop(self.requests.unhold(key));
            return;
        };
        let Some(o) = self.requests.get_mut(id) else {
            return;
        };
        if o.first_sent.is_none() {
            // Never sent (no connection since it was made): it is forgotten, not sent later
            // for nobody.
            self.requests.remove(id);
            return;
        }
        o.call.reply = None;
        let cancel = match &mut o.call.what {
            // Queued: cancel it; if the grant raced the cancel, the grant finds nobody
            // waiting and releases the lock. Not yet answered: the answer acts then.
            What::Lock { queued, .. } => {
                *queued = None;
                o.lock
            }
            What::Convert { queued, req, .. } => {
                *queued = None;
                Some(req.lock)
            }
            _ => None,
        };
        self.requests.give_up(id);
        if let Some(lock) = cancel {
            self.send_cancel(lock, now);
        }
    }

    fn on_close(&mut self, reply: Responder, now: Instant) {
        if self.session.is_some() && matches!(self.state, ConnState::Connected) {
            self.submit(Call::silent(What::Goodbye), now);
            self.state = ConnState::Closing {
                reply,
                deadline: now + CLOSE_WAIT,
            };
        } else {
            self.finish_close(now);
            let _ = reply.send(Ok(Outcome::Closed));
        }
    }

    /// A request got no first answer in time.
    pub(super) fn on_request_deadline(&mut self, id: RequestId, now: Instant) {
        // Without a connection the cause is known and says more than a bare timeout.
        let err = if self.state.can_send() {
            Error::RequestTimeout
        } else {
            Error::Disconnected
        };
        let Some(o) = self.requests.get_mut(id) else {
            return;
        };
        if o.first_sent.is_none() && matches!(o.call.what, What::Lock { .. } | What::Convert { .. })
        {
            // Never sent (no connection since it was made), and its caller is told it
            // failed: it is forgotten, not sent once a connection comes, where a lock would
            // be taken for nobody and a conversion change a guard whose caller was told it
            // did not. (An unlock or cancel still goes: a guard consumed by its unlock
            // cannot release the lock again.)
            if let Some(o) = self.requests.remove(id) {
                o.call.fail(err);
            }
            return;
        }
        let cancel = match &mut o.call.what {
            // The request stays outstanding: if it is granted after all, it is released.
            What::Lock { queued, .. } => {
                *queued = None;
                None
            }
            What::Convert { queued, req, .. } => {
                *queued = None;
                Some(req.lock)
            }
            What::Unlock { .. } | What::Cancel { .. } => None,
            What::Query(_) | What::Ping => {
                if let Some(o) = self.requests.remove(id) {
                    o.call.fail(err);
                }
                return;
            }
            What::Goodbye => return self.finish_close(now),
            What::Renew => return,
        };
        let given_up = matches!(o.call.what, What::Lock { .. });
        let _ = o.call.answer(Err(err));
        if given_up {
            self.requests.give_up(id);
        }
        if let Some(lock) = cancel {
            self.send_cancel(lock, now);
        }
    }

    /// Sends again what the server refused as overloaded and is due at `now` (see
    /// [`retries`](super::retries)): an unlock only while its lock is held, a renewal only
    /// while it can be sent (a resume renews too).
    pub(super) fn retry_due(&mut self, now: Instant) {
        while let Some(retry) = self.retries.pop_due(now) {
            match retry {
                Retry::Unlock(lock) if self.locks.contains(lock) => {
                    self.send_unlock(lock, Origin::Release, now);
                }
                Retry::Unlock(_) => {}
                Retry::Cancel(lock) => self.send_cancel(lock, now),
                Retry::Renew if self.state.can_send() => self.renew(now),
                Retry::Renew => {}
            }
        }
    }
}
