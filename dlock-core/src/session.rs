//! Sessions and leases: open, renew, and the end of a session (R50).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::engine::{Core, Effects, reject};
use crate::lock::LockRef;
use crate::resource::{InSession, List};
use crate::timers::Timer;
use crate::{Event, EventKind, Invalid, Limit, LockId, Mode, Reject, RequestId, SessionId};

/// A live session. Its `Debug` leaves the secret out, so that state dumps can be logged.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Session {
    pub(crate) name: String,
    pub(crate) ttl_ms: u64,
    pub(crate) expires_at: u64,
    pub(crate) secret: u128,
    /// Every lock it owns, whatever its state, in lock id order.
    pub(crate) locks: List<InSession>,
    /// Its locks with a queued request (waiting or converting): the deadlock search walks
    /// these, never all of the session's locks.
    pub(crate) pending: BTreeSet<LockId>,
    /// With [`Config::exactly_once`](crate::Config::exactly_once): its highest request id
    /// and its last final answers (`once.rs`). Allocated at its first request, so that a
    /// session of an engine without it costs one word.
    pub(crate) once: Option<Box<crate::once::Once>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("name", &self.name)
            .field("ttl_ms", &self.ttl_ms)
            .field("expires_at", &self.expires_at)
            .field("locks", &self.locks)
            .field("pending", &self.pending)
            .field("once", &self.once)
            .finish_non_exhaustive()
    }
}

impl Core {
    pub(crate) fn open_session(
        &mut self,
        name: String,
        ttl_ms: u64,
        secret: u128,
        out: &mut Vec<Event>,
    ) {
        let id = SessionId(self.last_index);
        // The reply to OpenSession has no client request id of its own.
        let refuse = |reason: Reject| Event {
            session: id,
            request: None,
            lock: None,
            kind: EventKind::Rejected { reason },
        };
        let c = &self.config;
        if ttl_ms < c.min_ttl_ms || ttl_ms > c.max_ttl_ms {
            let reason = Invalid::TtlOutOfRange {
                ttl_ms,
                min_ms: c.min_ttl_ms,
                max_ms: c.max_ttl_ms,
            };
            out.push(refuse(reason.into()));
            return;
        }
        if name.len() > c.max_session_name_len {
            let reason = Invalid::SessionNameTooLong {
                len: name.len(),
                max: c.max_session_name_len,
            };
            out.push(refuse(reason.into()));
            return;
        }
        if self.sessions.len() >= c.max_sessions {
            out.push(refuse(Reject::LimitExceeded(Limit::Sessions)));
            return;
        }
        let expires_at = self.clock_ms.saturating_add(ttl_ms);
        self.timers.insert((expires_at, Timer::Lease(id)));
        let session = Session {
            name,
            ttl_ms,
            expires_at,
            secret,
            locks: List::default(),
            pending: BTreeSet::new(),
            once: None,
        };
        self.sessions.insert(id, session);
        out.push(Event {
            session: id,
            request: None,
            lock: None,
            kind: EventKind::SessionOpened { ttl_ms },
        });
    }

    /// Renews a live session's lease; `None` if the session does not exist.
    pub(crate) fn touch(&mut self, id: SessionId) -> Option<u64> {
        let s = self.sessions.get_mut(&id)?;
        let old = s.expires_at;
        s.expires_at = self.clock_ms.saturating_add(s.ttl_ms);
        let (new, ttl) = (s.expires_at, s.ttl_ms);
        if new != old {
            self.timers.remove(&(old, Timer::Lease(id)));
            self.timers.insert((new, Timer::Lease(id)));
        }
        Some(ttl)
    }

    /// `ExtendLeases`: every lease ends no earlier than `clock + grace_ms`.
    pub(crate) fn extend_leases(&mut self, grace_ms: u64) {
        let floor = self.clock_ms.saturating_add(grace_ms);
        for (&id, s) in &mut self.sessions {
            if s.expires_at < floor {
                self.timers.remove(&(s.expires_at, Timer::Lease(id)));
                s.expires_at = floor;
                self.timers.insert((floor, Timer::Lease(id)));
            }
        }
    }

    /// Renews the session's lease, or produces the UnknownSession rejection of `request`.
    pub(crate) fn live_session(
        &mut self,
        id: SessionId,
        request: RequestId,
        lock: Option<LockId>,
        out: &mut Vec<Event>,
    ) -> bool {
        if self.touch(id).is_some() {
            true
        } else {
            out.push(reject(id, request, lock, Reject::UnknownSession));
            false
        }
    }

    /// R50: ends a session. Every lock it owns is removed as if force-unlocked, with no
    /// completion to it; a removed PW or EX granted mode (also of a converting lock) makes
    /// the value block not valid (R29b). The affected resources are marked for a grant pass.
    ///
    /// The session is gone at once (its ids are unknown from here on, R51); its locks go
    /// within this input's [`STEP_WORK`](crate::STEP_WORK), the rest in the
    /// following `Tick`s ([`continue_ending`](Self::continue_ending)).
    pub(crate) fn end_session(&mut self, id: SessionId, fx: &mut Effects) {
        let Some(session) = self.sessions.remove(&id) else {
            return;
        };
        self.timers.remove(&(session.expires_at, Timer::Lease(id)));
        if session.locks.len > 0 {
            self.ending.insert(id, session.locks);
            self.continue_ending(fx);
        }
    }

    /// Removes locks of ended sessions, in session id order and each session's in lock id
    /// order, until this input's budget is spent. Each removal is a force-unlock of its own,
    /// atomic on its resource (R51), as Linux's `dlm_clear_proc_locks` takes a dead
    /// process's locks one by one.
    pub(crate) fn continue_ending(&mut self, fx: &mut Effects) {
        while fx.step_work > 0 {
            let Some(entry) = self.ending.first_entry() else {
                return;
            };
            let Some(first) = entry.get().head.get() else {
                // Not left behind by `remove_lock`, which drops an emptied list.
                entry.remove();
                continue;
            };
            if self.locks.get(first.0).is_none() {
                // Unreachable: a listed lock exists. Dropping the list keeps this finite.
                entry.remove();
                continue;
            }
            self.remove_dead(first, fx);
        }
    }

    /// Removes lock `r` of an ended session (R50): a PW or EX granted mode, also of a
    /// converting lock, makes the value block not valid (R29b). Counts against the budget.
    pub(crate) fn remove_dead(&mut self, r: LockRef, fx: &mut Effects) {
        if let Some(l) = self.locks.get(r.0)
            && matches!(l.status.granted_mode(), Some(Mode::PW | Mode::EX))
            && let Some(res) = self.resources.get_mut(l.res.0)
        {
            crate::lvb::invalidate(res);
        }
        self.remove_lock(r, fx);
        fx.step_work = fx.step_work.saturating_sub(1);
    }

    /// Whether `session` has ended and still owns locks being removed.
    pub(crate) fn is_ending(&self, session: SessionId) -> bool {
        !self.ending.is_empty() && self.ending.contains_key(&session)
    }

    /// A lease ran out (`Tick`): one SessionExpired event, then R50.
    pub(crate) fn expire_session(&mut self, id: SessionId, fx: &mut Effects, out: &mut Vec<Event>) {
        if !self.sessions.contains_key(&id) {
            return;
        }
        out.push(Event {
            session: id,
            request: None,
            lock: None,
            kind: EventKind::SessionExpired,
        });
        self.end_session(id, fx);
    }
}
