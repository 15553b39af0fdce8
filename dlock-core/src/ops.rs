//! The lock commands: lock (R10, R22), convert (R11, R15..R21), unlock (R44, R45, R28,
//! R29a) and cancel (R46..R48). Checks run in the order of `validate.rs`.

use crate::engine::{Core, Effects, reject, reply};
use crate::grant::{Queue, read_for_grant};
use crate::lock::{Conversion, Link, Lock, LockRef, Notified, Pending, ResRef, Status};
use crate::lvb::{self, LvbOp};
use crate::name::Name;
use crate::resource::Resource;
use crate::timers::Timer;
use crate::validate;
use crate::{
    Command, ConvertRequest, Event, EventKind, Invalid, Limit, LockFlags, LockId, LockRequest,
    Mode, Reject, RequestId, SessionId, UnlockRequest,
};

impl Core {
    /// The static argument checks of R54 and R56 (name, value, flags) that `apply` runs
    /// first for a lock, convert or unlock, whatever the table holds: `Err` is the INVALID
    /// reason the engine would answer `command` with. For a shell that answers or holds
    /// some commands itself (its own limits and permissions, a recovery grace), so that
    /// INVALID still comes first (R55). Other commands pass.
    pub fn check_arguments(&self, command: &Command) -> Result<(), Invalid> {
        match command {
            Command::Lock { args, .. } => validate::lock_args(args, &self.config),
            Command::Convert { args, .. } => validate::convert_args(args, &self.config),
            Command::Unlock { args, .. } => validate::unlock_args(args, &self.config),
            _ => Ok(()),
        }
    }

    /// Finds `session`'s lock `id` (R6, R52: another session's lock reads as unknown).
    pub(crate) fn find_lock(&self, session: SessionId, id: LockId) -> Option<LockRef> {
        let r = *self.lock_ids.get(&id)?;
        (self.locks.get(r.0)?.session == session).then_some(r)
    }

    /// Links a new lock into the tables and returns its slot, or `None` when out of slots.
    fn insert_lock(&mut self, lock: Lock, queue: Queue) -> Option<LockRef> {
        let (id, session, rr) = (lock.id, lock.session, lock.res);
        let pending = lock.status.pending().is_some();
        let held = lock.status.granted_mode();
        let key = crate::census::Tally::key(&lock.status);
        let r = LockRef(self.locks.insert(lock)?);
        self.tally.add(key);
        let res = self.resources.get_mut(rr.0)?;
        crate::grant::list_mut(res, queue).push_back(&mut self.locks, r);
        if let (Queue::Grant, Some(mode)) = (queue, held) {
            res.holder_joined(id, mode);
        }
        self.lock_ids.insert(id, r);
        if let Some(s) = self.sessions.get_mut(&session) {
            s.locks.push_back(&mut self.locks, r);
            if pending {
                s.pending.insert(id);
            }
        }
        Some(r)
    }

    /// R10 / R22: a new lock.
    pub(crate) fn lock(
        &mut self,
        session: SessionId,
        request: RequestId,
        q: LockRequest,
        fx: &mut Effects,
        out: &mut Vec<Event>,
    ) {
        if !self.live_session(session, request, None, out) {
            return;
        }
        if let Err(e) = validate::lock_args(&q, &self.config) {
            out.push(reject(session, request, None, e.into()));
            return;
        }
        let owned = self
            .sessions
            .get(&session)
            .map_or(0, |s| s.locks.len as usize);
        if owned >= self.config.max_locks_per_session {
            let reason = Reject::LimitExceeded(Limit::LocksPerSession);
            out.push(reject(session, request, None, reason));
            return;
        }
        if self.locks.len() >= self.config.max_locks {
            let reason = Reject::LimitExceeded(Limit::Locks);
            out.push(reject(session, request, None, reason));
            return;
        }
        let existing = self.names.get(&q.resource[..]).copied();
        if existing.is_none() && self.resources.len() >= self.config.max_resources {
            let reason = Reject::LimitExceeded(Limit::Resources);
            out.push(reject(session, request, None, reason));
            return;
        }
        let valblk = q.flags.contains(LockFlags::VALBLK);
        let id = LockId(self.last_index);
        // R10: granted on arrival only if compatible with every holder and both queues
        // are empty (no queue jumping).
        let grantable = existing
            .and_then(|rr| self.resources.get(rr.0))
            .is_none_or(|res| !res.has_queued() && res.allows(q.mode, None));
        if grantable {
            let rr = match existing {
                Some(rr) => rr,
                None => {
                    let name = Name::new(q.resource);
                    let Some(slot) = self.resources.insert(Resource::new(name.clone())) else {
                        let reason = Reject::LimitExceeded(Limit::Resources);
                        out.push(reject(session, request, None, reason));
                        return;
                    };
                    self.names.insert(name, ResRef(slot));
                    ResRef(slot)
                }
            };
            let token = self.next_token();
            let lock = Lock {
                id,
                session,
                res: rr,
                status: Status::Granted {
                    mode: q.mode,
                    token,
                },
                origin: request,
                since_ms: self.clock_ms,
                prev: Link::NONE,
                next: Link::NONE,
                sprev: Link::NONE,
                snext: Link::NONE,
                notified: Notified::NONE,
            };
            if self.insert_lock(lock, Queue::Grant).is_none() {
                self.drop_if_unused(rr);
                let reason = Reject::LimitExceeded(Limit::LocksPerSession);
                out.push(reject(session, request, None, reason));
                return;
            }
            let lvb_len = self.config.lvb_len;
            let Some(res) = self.resources.get_mut(rr.0) else {
                return;
            };
            res.held[q.mode.index()] += 1;
            let (value, value_valid) = read_for_grant(res, valblk, None, q.mode, lvb_len);
            let kind = EventKind::Granted {
                mode: q.mode,
                token,
                value,
                value_valid,
            };
            out.push(reply(session, request, Some(id), kind));
            return;
        }
        let Some(rr) = existing else { return };
        if q.flags.contains(LockFlags::NOQUEUE) {
            // R22: nothing is created, nothing queued, nobody notified.
            out.push(reply(session, request, None, EventKind::NotQueued));
            return;
        }
        let queued = self.resources.get(rr.0).map_or(0, |r| r.queued_len());
        if queued as usize >= self.config.max_waiters_per_resource {
            let reason = Reject::LimitExceeded(Limit::WaitersPerResource);
            out.push(reject(session, request, None, reason));
            return;
        }
        // R40, R41: the arriving request is the youngest on any cycle it closes.
        if self.closes_cycle(rr, session, q.mode) {
            out.push(reply(session, request, None, EventKind::Deadlock));
            return;
        }
        let deadline = q.timeout_ms.map(|t| self.clock_ms.saturating_add(t));
        let pending = Box::new(Pending {
            request,
            valblk,
            age: self.last_index,
            deadline,
        });
        let lock = Lock {
            id,
            session,
            res: rr,
            status: Status::Waiting {
                mode: q.mode,
                pending,
            },
            origin: request,
            since_ms: self.clock_ms,
            prev: Link::NONE,
            next: Link::NONE,
            sprev: Link::NONE,
            snext: Link::NONE,
            notified: Notified::NONE,
        };
        if self.insert_lock(lock, Queue::Wait).is_none() {
            let reason = Reject::LimitExceeded(Limit::LocksPerSession);
            out.push(reject(session, request, None, reason));
            return;
        }
        if let Some(res) = self.resources.get_mut(rr.0) {
            res.queues_mut().modes[q.mode.index()] += 1;
        }
        if let Some(d) = deadline {
            self.timers.insert((d, Timer::Request(id)));
        }
        out.push(reply(session, request, Some(id), EventKind::Queued));
        self.collect_basts(rr, q.mode, fx);
    }

    fn drop_if_unused(&mut self, rr: ResRef) {
        if self.resources.get(rr.0).is_some_and(|r| r.is_unused()) {
            if let Some(res) = self.resources.remove(rr.0) {
                self.names.remove(&res.name);
            }
        }
    }

    /// R11, R15..R21: a conversion.
    pub(crate) fn convert(
        &mut self,
        session: SessionId,
        request: RequestId,
        q: ConvertRequest,
        fx: &mut Effects,
        out: &mut Vec<Event>,
    ) {
        let (id, to) = (q.lock, q.mode);
        if !self.live_session(session, request, Some(id), out) {
            return;
        }
        if let Err(e) = validate::convert_args(&q, &self.config) {
            out.push(reject(session, request, Some(id), e.into()));
            return;
        }
        let Some(r) = self.find_lock(session, id) else {
            out.push(reject(session, request, Some(id), Reject::NotFound));
            return;
        };
        let Some(lock) = self.locks.get(r.0) else {
            return;
        };
        let rr = lock.res;
        let quecvt = q.flags.contains(LockFlags::QUECVT);
        // The checks that need the lock's granted mode (R55: INVALID before BUSY).
        let invalid = match lock.status.granted_mode() {
            // R21, R54: a lock still waiting for its first grant has no granted mode to
            // convert from, so no QUECVT conversion of it is on R21's list.
            None if quecvt => Some(Invalid::QuecvtOnNewLock),
            None => None,
            Some(from) if quecvt && !from.allows_quecvt_to(to) => {
                Some(Invalid::QuecvtNotAllowed { from, to })
            }
            Some(from)
                if q.flags.contains(LockFlags::VALBLK)
                    && lvb::lvb_op(Some(from), to) == LvbOp::Write
                    && q.value.is_none() =>
            {
                Some(Invalid::MissingValue)
            }
            Some(_) => None,
        };
        if let Some(e) = invalid {
            out.push(reject(session, request, Some(id), e.into()));
            return;
        }
        // R15: only a granted lock with nothing pending converts.
        let Status::Granted { mode: from, .. } = lock.status else {
            out.push(reject(session, request, Some(id), Reject::Busy));
            return;
        };
        let Some(res) = self.resources.get(rr.0) else {
            return;
        };
        // R11 / R21: compatible with every other holder (and, with QUECVT, nothing queued
        // ahead). Same-mode (R16) and down (R17) conversions always pass.
        let now = res.allows(to, Some(from)) && (!quecvt || res.convert_len() == 0);
        if now {
            self.convert_in_place(r, from, (session, request), &q, fx, out);
            // R12: any conversion granted on arrival runs a grant pass.
            fx.dirty.insert(rr);
            self.run_grant_passes(fx, out);
            // R40: an in-place conversion that strengthens the mode gives queued requests
            // new edges towards this session.
            if !from.is_down_conversion(to) && from != to {
                self.break_cycles_through(session, fx, out);
            }
            return;
        }
        if q.flags.contains(LockFlags::NOQUEUE) {
            // R19: the lock stays granted at its old mode; nobody is notified.
            out.push(reply(session, request, Some(id), EventKind::NotQueued));
            return;
        }
        if res.queued_len() as usize >= self.config.max_waiters_per_resource {
            let reason = Reject::LimitExceeded(Limit::WaitersPerResource);
            out.push(reject(session, request, Some(id), reason));
            return;
        }
        let deadline = q.timeout_ms.map(|t| self.clock_ms.saturating_add(t));
        let pending = Pending {
            request,
            valblk: q.flags.contains(LockFlags::VALBLK),
            age: self.last_index,
            deadline,
        };
        self.relink(r, rr, Queue::Grant, Queue::Convert);
        if let Some(res) = self.resources.get_mut(rr.0) {
            res.queues_mut().modes[to.index()] += 1;
        }
        let clock = self.clock_ms;
        let mut since = clock;
        if let Some(l) = self.locks.get_mut(r.0) {
            if let Status::Granted { token, .. } = l.status {
                self.tally.sub(crate::census::Tally::key(&l.status));
                l.status = Status::Converting {
                    from,
                    to,
                    conv: Box::new(Conversion { token, pending }),
                };
                self.tally.add(crate::census::Tally::key(&l.status));
            }
            since = std::mem::replace(&mut l.since_ms, clock);
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.pending.insert(id);
        }
        // R20, R40, R41: the conversion is linked tentatively because, ahead of every
        // waiter, it also changes their edges. If it closes a cycle it is refused, as the
        // youngest request involved, and the lock goes back to `from` untouched.
        if self.queued_conversion_closes_cycle(r, session) {
            self.unqueue_conversion(r, since);
            out.push(reply(session, request, Some(id), EventKind::Deadlock));
            return;
        }
        if let Some(d) = deadline {
            self.timers.insert((d, Timer::Request(id)));
        }
        out.push(reply(session, request, Some(id), EventKind::Queued));
        self.collect_basts(rr, to, fx);
    }

    /// Undoes the tentative queueing of a conversion refused as a deadlock victim.
    fn unqueue_conversion(&mut self, r: LockRef, since_ms: u64) {
        let Some(lock) = self.locks.get(r.0) else {
            return;
        };
        let (id, session, rr) = (lock.id, lock.session, lock.res);
        let Status::Converting { from, to, ref conv } = lock.status else {
            return;
        };
        let token = conv.token;
        self.relink(r, rr, Queue::Convert, Queue::Grant);
        if let Some(res) = self.resources.get_mut(rr.0) {
            if let Some(q) = res.queues.as_mut() {
                q.modes[to.index()] -= 1;
            }
            // Queued only for the cycle check of this input, during which nothing walked
            // the holders: the marks of `told` still hold with it back.
            res.shrink();
        }
        if let Some(l) = self.locks.get_mut(r.0) {
            self.tally.sub(crate::census::Tally::key(&l.status));
            l.status = Status::Granted { mode: from, token };
            self.tally.add(crate::census::Tally::key(&l.status));
            l.since_ms = since_ms;
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.pending.remove(&id);
        }
    }

    /// Grants a conversion on arrival: new mode and token, value block per R26/R29a, reply.
    fn convert_in_place(
        &mut self,
        r: LockRef,
        from: Mode,
        (session, request): (SessionId, RequestId),
        q: &ConvertRequest,
        fx: &mut Effects,
        out: &mut Vec<Event>,
    ) {
        let to = q.mode;
        let Some(rr) = self.locks.get(r.0).map(|l| l.res) else {
            return;
        };
        let token = self.next_token();
        let lvb_len = self.config.lvb_len;
        let Some(res) = self.resources.get_mut(rr.0) else {
            return;
        };
        res.held[from.index()] -= 1;
        res.held[to.index()] += 1;
        res.holder_joined(q.lock, to);
        let valblk = q.flags.contains(LockFlags::VALBLK);
        let (mut value, mut value_valid) = (None, true);
        match lvb::lvb_op(Some(from), to) {
            LvbOp::Write => {
                // R29a: IVVALBLK on a conversion from PW or EX that writes (down, or to
                // the same mode: R26's write path) invalidates instead of writing. R29a
                // names unlock and down-conversion and is silent on the same mode; Linux's
                // `set_lvb_lock` invalidates on the whole write path, and a flag with no
                // effect would be ignored silently (R56).
                if q.flags.contains(LockFlags::IVVALBLK) {
                    lvb::invalidate(res);
                } else if let (true, Some(v)) = (valblk, q.value.as_deref()) {
                    lvb::write(res, v, lvb_len);
                }
            }
            LvbOp::Read if valblk => {
                let (v, valid) = lvb::read(res, lvb_len);
                (value, value_valid) = (Some(v), valid);
            }
            LvbOp::Read | LvbOp::Nothing => {}
        }
        let clock = self.clock_ms;
        if let Some(l) = self.locks.get_mut(r.0) {
            self.tally.sub(crate::census::Tally::key(&l.status));
            l.status = Status::Granted { mode: to, token };
            self.tally.add(crate::census::Tally::key(&l.status));
            l.since_ms = clock;
            l.notified = Notified::NONE;
        }
        let kind = EventKind::Granted {
            mode: to,
            token,
            value,
            value_valid,
        };
        out.push(reply(session, request, Some(q.lock), kind));
        fx.touched.push(q.lock);
    }

    /// R44, R45, R28, R29a: unlock.
    pub(crate) fn unlock(
        &mut self,
        session: SessionId,
        request: RequestId,
        q: UnlockRequest,
        fx: &mut Effects,
        out: &mut Vec<Event>,
    ) {
        if !self.live_session(session, request, Some(q.lock), out) {
            return;
        }
        if let Err(e) = validate::unlock_args(&q, &self.config) {
            out.push(reject(session, request, Some(q.lock), e.into()));
            return;
        }
        let UnlockRequest {
            lock: id,
            flags,
            value,
        } = q;
        let Some(r) = self.find_lock(session, id) else {
            out.push(reject(session, request, Some(id), Reject::NotFound));
            return;
        };
        let Some(lock) = self.locks.get(r.0) else {
            return;
        };
        let writer = matches!(lock.status.granted_mode(), Some(Mode::PW | Mode::EX));
        if writer && flags.contains(LockFlags::VALBLK) && value.is_none() {
            out.push(reject(
                session,
                request,
                Some(id),
                Invalid::MissingValue.into(),
            ));
            return;
        }
        // R45: a lock with a pending request must be cancelled first.
        if !matches!(lock.status, Status::Granted { .. }) {
            out.push(reject(session, request, Some(id), Reject::Busy));
            return;
        }
        let rr = lock.res;
        let lvb_len = self.config.lvb_len;
        if let (true, Some(res)) = (writer, self.resources.get_mut(rr.0)) {
            // R28 / R29a; unlocking from below PW never touches the value block.
            if flags.contains(LockFlags::IVVALBLK) {
                lvb::invalidate(res);
            } else if let (true, Some(v)) = (flags.contains(LockFlags::VALBLK), value.as_deref()) {
                lvb::write(res, v, lvb_len);
            }
        }
        self.remove_lock(r, fx);
        out.push(reply(session, request, Some(id), EventKind::Unlocked));
    }

    /// R46..R48: cancel.
    pub(crate) fn cancel(
        &mut self,
        session: SessionId,
        request: RequestId,
        id: LockId,
        fx: &mut Effects,
        out: &mut Vec<Event>,
    ) {
        if !self.live_session(session, request, Some(id), out) {
            return;
        }
        let Some(r) = self.find_lock(session, id) else {
            out.push(reject(session, request, Some(id), Reject::NotFound));
            return;
        };
        if self
            .locks
            .get(r.0)
            .is_some_and(|l| matches!(l.status, Status::Granted { .. }))
        {
            out.push(reject(session, request, Some(id), Reject::NotPending));
            return;
        }
        self.abort_pending(r, EventKind::Cancelled, fx, out);
    }
}
