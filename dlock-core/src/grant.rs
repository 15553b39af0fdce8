//! Grants, queue moves and the grant pass (R9..R14).

use crate::engine::{Core, Effects};
use crate::lock::{LockRef, Notified, ResRef, Status};
use crate::lvb::{self, LvbOp};
use crate::resource::{List, Resource};
use crate::timers::Timer;
use crate::{Event, EventKind, Mode};

/// Which of its resource's three queues a lock is linked into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Queue {
    Grant,
    Convert,
    Wait,
}

impl Queue {
    pub(crate) fn of(status: &Status) -> Queue {
        match status {
            Status::Granted { .. } => Queue::Grant,
            Status::Converting { .. } => Queue::Convert,
            Status::Waiting { .. } => Queue::Wait,
        }
    }
}

/// The list of `res` that holds locks of queue `q`.
pub(crate) fn list_mut(res: &mut Resource, q: Queue) -> &mut List {
    match q {
        Queue::Grant => &mut res.granted,
        Queue::Convert => &mut res.queues_mut().convert,
        Queue::Wait => &mut res.queues_mut().wait,
    }
}

/// The value and validity a VALBLK grant from `gr` to `rq` reports (R26, R27): only a read
/// reports the value block; otherwise `(None, true)`.
pub(crate) fn read_for_grant(
    res: &Resource,
    valblk: bool,
    gr: Option<Mode>,
    rq: Mode,
    lvb_len: usize,
) -> (Option<Vec<u8>>, bool) {
    if valblk && lvb::lvb_op(gr, rq) == LvbOp::Read {
        let (v, valid) = lvb::read(res, lvb_len);
        (Some(v), valid)
    } else {
        (None, true)
    }
}

impl Core {
    /// Moves lock `r` from queue `from` to the tail of queue `to` of its resource.
    pub(crate) fn relink(&mut self, r: LockRef, rr: ResRef, from: Queue, to: Queue) {
        let Some(res) = self.resources.get_mut(rr.0) else {
            return;
        };
        list_mut(res, from).unlink(&mut self.locks, r);
        list_mut(res, to).push_back(&mut self.locks, r);
        res.shrink();
    }

    /// Removes lock `r` entirely from whatever queue it is on: its held mode, its queued
    /// request, its timer and its ids. Destroys the resource when it was its last lock
    /// (R1); otherwise marks the resource for a grant pass. Returns the resource.
    pub(crate) fn remove_lock(&mut self, r: LockRef, fx: &mut Effects) -> Option<ResRef> {
        let lock = self.locks.get(r.0)?;
        let (id, session, rr) = (lock.id, lock.session, lock.res);
        let queue = Queue::of(&lock.status);
        let held = lock.status.granted_mode();
        let wanted = lock.status.requested_mode();
        let deadline = lock.status.pending().and_then(|p| p.deadline);
        let res = self.resources.get_mut(rr.0)?;
        list_mut(res, queue).unlink(&mut self.locks, r);
        if let Some(m) = held {
            res.held[m.index()] -= 1;
        }
        if let (Some(m), Some(q)) = (wanted, res.queues.as_mut()) {
            q.modes[m.index()] -= 1;
        }
        res.shrink();
        let unused = res.is_unused();
        if let Some(d) = deadline {
            self.timers.remove(&(d, Timer::Request(id)));
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.locks.unlink(&mut self.locks, r);
            s.pending.remove(&id);
        } else if let Some(list) = self.ending.get_mut(&session) {
            list.unlink(&mut self.locks, r);
            if list.len == 0 {
                self.ending.remove(&session);
            }
        }
        self.lock_ids.remove(&id);
        if let Some(l) = self.locks.remove(r.0) {
            self.tally.sub(crate::census::Tally::key(&l.status));
        }
        if unused {
            if let Some(res) = self.resources.remove(rr.0) {
                self.names.remove(&res.name);
            }
            fx.dirty.remove(&rr);
        } else {
            fx.dirty.insert(rr);
        }
        Some(rr)
    }

    /// Ends the queued request of lock `r` without granting it, completing it with `kind`
    /// (CANCELLED R46/R47, TIMEDOUT R65 or DEADLOCK R41). A waiting lock is removed; a
    /// converting lock goes back to the grant queue at its old mode. Either way the resource
    /// gets a grant pass.
    pub(crate) fn abort_pending(
        &mut self,
        r: LockRef,
        kind: EventKind,
        fx: &mut Effects,
        out: &mut Vec<Event>,
    ) {
        let Some(lock) = self.locks.get(r.0) else {
            return;
        };
        let (id, session, rr) = (lock.id, lock.session, lock.res);
        let (from, to, token, pending) = match &lock.status {
            Status::Granted { .. } => return,
            Status::Waiting { pending, .. } => {
                let request = pending.request;
                self.remove_lock(r, fx);
                out.push(Event {
                    session,
                    request: Some(request),
                    lock: Some(id),
                    kind,
                });
                return;
            }
            Status::Converting { from, to, conv } => (*from, *to, conv.token, conv.pending.clone()),
        };
        self.relink(r, rr, Queue::Convert, Queue::Grant);
        if let Some(res) = self.resources.get_mut(rr.0) {
            // Back on the grant queue, where walks did not see it while it converted (R33).
            res.holder_joined(id, from);
        }
        if let Some(q) = self
            .resources
            .get_mut(rr.0)
            .and_then(|res| res.queues.as_mut())
        {
            q.modes[to.index()] -= 1;
        }
        if let Some(res) = self.resources.get_mut(rr.0) {
            res.shrink();
        }
        if let Some(d) = pending.deadline {
            self.timers.remove(&(d, Timer::Request(id)));
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.pending.remove(&id);
        }
        let clock = self.clock_ms;
        if let Some(l) = self.locks.get_mut(r.0) {
            self.tally.sub(crate::census::Tally::key(&l.status));
            l.status = Status::Granted { mode: from, token };
            self.tally.add(crate::census::Tally::key(&l.status));
            l.since_ms = clock;
        }
        out.push(Event {
            session,
            request: Some(pending.request),
            lock: Some(id),
            kind,
        });
        fx.touched.push(id);
        fx.dirty.insert(rr);
    }

    /// R12: the grant pass. Phase 1 grants convert-queue heads while they are compatible
    /// with every other holder; phase 2 runs only when the convert queue is empty and grants
    /// wait-queue heads while they are compatible with all holders. Each grant updates the
    /// held counts before the next head is tested. Stops at the first head that cannot be
    /// granted (strict FIFO, R10, R13). O(1) per test thanks to the held counts. A head
    /// of an ended session is removed instead ([`Core::end_session`]).
    pub(crate) fn grant_pass(&mut self, rr: ResRef, fx: &mut Effects, out: &mut Vec<Event>) {
        loop {
            let Some(res) = self.resources.get(rr.0) else {
                return;
            };
            let Some(q) = res.queues.as_deref() else {
                return;
            };
            let head = q.convert.head.get().or(q.wait.head.get());
            let Some(h) = head else { return };
            let Some(lock) = self.locks.get(h.0) else {
                return;
            };
            // A queued request of an ended session is never granted: it goes now, as the
            // end of its session would have removed it (R50).
            if self.is_ending(lock.session) {
                self.remove_dead(h, fx);
                continue;
            }
            let ok = match lock.status {
                Status::Converting { from, to, .. } => res.allows(to, Some(from)),
                Status::Waiting { mode, .. } => res.allows(mode, None),
                Status::Granted { .. } => false,
            };
            if !ok {
                return;
            }
            self.grant_queued(h, fx, out);
        }
    }

    /// Grants the queued request of lock `r` (R14): moves it to the grant queue, gives it a
    /// token, reads the value block if asked (R27) and emits its completion.
    fn grant_queued(&mut self, r: LockRef, fx: &mut Effects, out: &mut Vec<Event>) {
        let Some(lock) = self.locks.get(r.0) else {
            return;
        };
        let (id, session, rr) = (lock.id, lock.session, lock.res);
        let (from, to, pending) = match &lock.status {
            Status::Granted { .. } => return,
            Status::Converting { from, to, conv } => (Some(*from), *to, conv.pending.clone()),
            Status::Waiting { mode, pending } => (None, *mode, (**pending).clone()),
        };
        let queue = if from.is_some() {
            Queue::Convert
        } else {
            Queue::Wait
        };
        self.relink(r, rr, queue, Queue::Grant);
        let token = self.next_token();
        let lvb_len = self.config.lvb_len;
        let Some(res) = self.resources.get_mut(rr.0) else {
            return;
        };
        if let Some(f) = from {
            res.held[f.index()] -= 1;
        }
        res.held[to.index()] += 1;
        res.holder_joined(id, to);
        if let Some(q) = res.queues.as_mut() {
            q.modes[to.index()] -= 1;
        }
        res.shrink();
        let (value, value_valid) = read_for_grant(res, pending.valblk, from, to, lvb_len);
        if let Some(d) = pending.deadline {
            self.timers.remove(&(d, Timer::Request(id)));
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.pending.remove(&id);
        }
        let clock = self.clock_ms;
        if let Some(l) = self.locks.get_mut(r.0) {
            self.tally.sub(crate::census::Tally::key(&l.status));
            l.status = Status::Granted { mode: to, token };
            self.tally.add(crate::census::Tally::key(&l.status));
            l.since_ms = clock;
            l.notified = Notified::NONE;
        }
        out.push(Event {
            session,
            request: Some(pending.request),
            lock: Some(id),
            kind: EventKind::Granted {
                mode: to,
                token,
                value,
                value_valid,
            },
        });
        fx.touched.push(id);
    }
}
