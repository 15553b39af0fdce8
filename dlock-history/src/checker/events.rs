//! Each event's effect on the model: sessions opening and ending, requests queued and
//! completed, locks released. Grants are in [`grants`](super::grants).

use std::collections::BTreeSet;

use dlock_core::{Event, EventKind, LockId, Reject, SessionId};

use super::Checker;
use crate::model::{LockModel, SessionModel, State};
use crate::property::Property;
use crate::subject::Subject;
use crate::text;

impl Checker {
    /// Applies one event of the input `subject` to the model; `touched` collects the
    /// resources whose queues may have changed, `granted_on` those with a new grant.
    pub(super) fn event(
        &mut self,
        subject: &Subject,
        ev: &Event,
        touched: &mut BTreeSet<Vec<u8>>,
        granted_on: &mut BTreeSet<Vec<u8>>,
    ) {
        if let Some(lock) = ev.lock
            && let Some(l) = self.locks.get(&lock)
        {
            touched.insert(l.resource.clone());
        }
        match &ev.kind {
            EventKind::SessionOpened { ttl_ms } => {
                self.sessions.insert(
                    ev.session,
                    SessionModel {
                        ttl_ms: *ttl_ms,
                        last_touch_us: self.now_us,
                        expires_ms: self.clock_ms.saturating_add(*ttl_ms),
                        max_request: 0,
                        late_reported: false,
                    },
                );
            }
            EventKind::SessionExpired => {
                self.session_expired(ev.session);
                self.end_session(ev.session, touched);
            }
            EventKind::SessionClosed => {
                // The owner's own Goodbye (a client also sends one once its local lease
                // lapsed): its locks were given up by their owner.
                for (id, l) in &self.locks {
                    if l.session == ev.session
                        && let Some(h) = self.history.get_mut(id)
                    {
                        h.released_by_owner = true;
                    }
                }
                self.end_session(ev.session, touched);
            }
            EventKind::Renewed { .. } | EventKind::Blocking { .. } => {}
            EventKind::Rejected { reason } => {
                if matches!(reason, Reject::UnknownSession)
                    && self.sessions.contains_key(&ev.session)
                {
                    self.violation(
                        Property::Completion,
                        format!(
                            "the server calls session {} unknown, but it never expired or closed",
                            ev.session
                        ),
                    );
                }
            }
            EventKind::Queued => self.queued(subject, ev),
            EventKind::Granted { mode, token, .. } => {
                self.report.completions += 1;
                if let Some(r) = self.granted(subject, ev, *mode, *token) {
                    touched.insert(r.clone());
                    granted_on.insert(r);
                }
            }
            EventKind::NotQueued | EventKind::Deadlock => {
                self.report.completions += 1;
                // Immediate refusals leave no trace; a later DEADLOCK ends a queued request.
                if let Some(lock) = ev.lock
                    && let Some(l) = self.locks.get(&lock)
                    && l.state.pending().is_some()
                    && !subject.is_answered_by(ev)
                {
                    self.end_pending(ev, touched);
                }
            }
            EventKind::Cancelled | EventKind::TimedOut => {
                self.report.completions += 1;
                self.end_pending(ev, touched);
            }
            EventKind::Unlocked => {
                self.report.completions += 1;
                self.unlocked(ev);
            }
        }
    }

    /// Property 6 (both sides): an expiry comes no earlier than the lease and no later than
    /// the lease plus the allowance.
    fn session_expired(&mut self, session: SessionId) {
        self.report.expiries += 1;
        let Some(m) = self.sessions.get(&session).cloned() else {
            if !self.unseen(session.0) {
                self.violation(
                    Property::Completion,
                    format!("session {session} expired but was not alive"),
                );
            }
            return;
        };
        if self.engine_time {
            self.session_expired_engine(session, &m);
            return;
        }
        let lived = self.now_us.saturating_sub(m.last_touch_us);
        let ttl_us = m.ttl_ms * 1000;
        let late =
            i64::try_from(lived).unwrap_or(i64::MAX) - i64::try_from(ttl_us).unwrap_or(i64::MAX);
        if self.report.expiries == 1 || late > self.report.max_expiry_lateness_us {
            self.report.max_expiry_lateness_us = late;
        }
        if lived + self.cfg.early_tolerance_us < ttl_us {
            self.violation(
                Property::DeadRelease,
                format!(
                    "session {session} expired {:.3} ms after its last renewal, before its lease of {} ms",
                    lived as f64 / 1000.0,
                    m.ttl_ms
                ),
            );
        } else if lived > ttl_us + self.cfg.expiry_allowance_us && !m.late_reported {
            self.violation(
                Property::DeadRelease,
                format!(
                    "session {session} expired {} ms after its last renewal: lease {} ms + allowance {} ms",
                    lived / 1000,
                    m.ttl_ms,
                    self.cfg.expiry_allowance_us / 1000
                ),
            );
        }
    }

    /// Property 6 in engine time (a cluster): an expiry comes at a `Tick` stamped no earlier
    /// than the lease's end and no later than the allowance after it.
    fn session_expired_engine(&mut self, session: SessionId, m: &SessionModel) {
        let late_ms = i64::try_from(self.clock_ms).unwrap_or(i64::MAX)
            - i64::try_from(m.expires_ms).unwrap_or(i64::MAX);
        let late_us = late_ms.saturating_mul(1000);
        if self.report.expiries == 1 || late_us > self.report.max_expiry_lateness_us {
            self.report.max_expiry_lateness_us = late_us;
        }
        let early_ms = self.cfg.early_tolerance_us / 1000;
        let allowance_ms = self.cfg.expiry_allowance_us / 1000;
        if self.clock_ms.saturating_add(early_ms) < m.expires_ms {
            self.violation(
                Property::DeadRelease,
                format!(
                    "session {session} expired at engine time {} ms, before its lease ends at {} ms (lease {} ms)",
                    self.clock_ms, m.expires_ms, m.ttl_ms
                ),
            );
        } else if self.clock_ms > m.expires_ms.saturating_add(allowance_ms) && !m.late_reported {
            self.violation(
                Property::DeadRelease,
                format!(
                    "session {session} expired at engine time {} ms, {} ms after its lease ended (lease {} ms + allowance {} ms)",
                    self.clock_ms,
                    self.clock_ms - m.expires_ms,
                    m.ttl_ms,
                    allowance_ms
                ),
            );
        }
    }

    /// UNLOCKED: only a granted lock is released (R44, R45).
    fn unlocked(&mut self, ev: &Event) {
        let Some(lock) = ev.lock else {
            self.violation(
                Property::Completion,
                format!("UNLOCKED without a lock id: {}", text::event(ev)),
            );
            return;
        };
        match self.locks.get(&lock).map(|l| (l.state, l.since)) {
            Some((State::Granted { .. }, _)) => {
                if let Some(h) = self.history.get_mut(&lock) {
                    h.released_by_owner = true;
                }
                self.remove_lock(lock);
            }
            Some((state, since)) => self.violation_citing(
                Property::Completion,
                format!(
                    "UNLOCKED for lock {lock} {state} since {} (must be granted, R44/R45)",
                    self.location(since)
                ),
                &[since],
            ),
            // Granted before the history begins.
            None if self.unseen(lock.0) => {}
            None => self.violation(
                Property::Completion,
                format!("UNLOCKED for lock {lock}, which does not exist (R44/R45)"),
            ),
        }
    }

    /// QUEUED: a new lock joins the wait queue, or a granted lock the convert queue.
    fn queued(&mut self, subject: &Subject, ev: &Event) {
        let pos = self.pos;
        match subject {
            Subject::Lock {
                session,
                request,
                lock,
                resource,
                mode,
            } if ev.lock == Some(*lock) && ev.request == Some(*request) => {
                self.locks.insert(
                    *lock,
                    LockModel {
                        session: *session,
                        resource: resource.clone(),
                        state: State::Waiting {
                            mode: *mode,
                            request: *request,
                        },
                        since: pos,
                    },
                );
                self.resources
                    .entry(resource.clone())
                    .or_default()
                    .wait
                    .push_back(*lock);
            }
            Subject::Convert {
                request,
                lock,
                mode,
                ..
            } if ev.lock == Some(*lock) && ev.request == Some(*request) => {
                if !self.locks.contains_key(lock) && self.unseen(lock.0) {
                    // Granted before the history begins: its queue is not modelled.
                    return;
                }
                let Some(l) = self.locks.get_mut(lock) else {
                    self.violation(
                        Property::Completion,
                        format!("conversion of unknown lock {lock} queued"),
                    );
                    return;
                };
                let State::Granted { mode: from } = l.state else {
                    let state = l.state;
                    self.violation(
                        Property::Completion,
                        format!("conversion of lock {lock} queued while {state} (R15)"),
                    );
                    return;
                };
                l.state = State::Converting {
                    from,
                    to: *mode,
                    request: *request,
                };
                l.since = pos;
                let r = l.resource.clone();
                self.resources
                    .entry(r)
                    .or_default()
                    .convert
                    .push_back(*lock);
            }
            _ => self.violation(
                Property::Completion,
                format!(
                    "QUEUED that answers no request of this input: {}",
                    text::event(ev)
                ),
            ),
        }
    }

    /// CANCELLED, TIMEDOUT or a later DEADLOCK of a queued request.
    pub(super) fn end_pending(&mut self, ev: &Event, touched: &mut BTreeSet<Vec<u8>>) {
        let Some(lock) = ev.lock else {
            self.violation(
                Property::Completion,
                format!("completion without a lock id: {}", text::event(ev)),
            );
            return;
        };
        let Some(l) = self.locks.get(&lock).cloned() else {
            if self.unseen(lock.0) {
                return;
            }
            self.violation(
                Property::Completion,
                format!(
                    "{} for lock {lock}, which does not exist (a second completion?)",
                    text::kind(&ev.kind)
                ),
            );
            return;
        };
        if l.state.pending().is_none() || ev.request != l.state.pending() {
            self.violation(
                Property::Completion,
                format!(
                    "{} of {} for lock {lock} whose pending request is {} (a completion of nothing, or a second one)",
                    text::kind(&ev.kind),
                    text::request(ev.request),
                    match l.state.pending() {
                        Some(r) => r.0.to_string(),
                        None => "none".to_owned(),
                    }
                ),
            );
            return;
        }
        touched.insert(l.resource.clone());
        match l.state {
            State::Waiting { .. } => self.remove_lock(lock),
            State::Converting { from, .. } => {
                if let Some(res) = self.resources.get_mut(&l.resource) {
                    res.convert.retain(|x| *x != lock);
                }
                let pos = self.pos;
                if let Some(m) = self.locks.get_mut(&lock) {
                    m.state = State::Granted { mode: from };
                    m.since = pos;
                }
            }
            State::Granted { .. } => {}
        }
    }

    pub(super) fn remove_lock(&mut self, lock: LockId) {
        let Some(l) = self.locks.remove(&lock) else {
            return;
        };
        if let Some(res) = self.resources.get_mut(&l.resource) {
            res.holders.remove(&lock);
            res.convert.retain(|x| *x != lock);
            res.wait.retain(|x| *x != lock);
            if res.is_empty() {
                self.resources.remove(&l.resource);
            }
        }
    }

    fn end_session(&mut self, s: SessionId, touched: &mut BTreeSet<Vec<u8>>) {
        self.sessions.remove(&s);
        self.ended.insert(s, self.now_us);
        let mine: Vec<LockId> = self
            .locks
            .iter()
            .filter(|(_, l)| l.session == s)
            .map(|(id, _)| *id)
            .collect();
        for lock in mine {
            if let Some(l) = self.locks.get(&lock) {
                touched.insert(l.resource.clone());
            }
            self.remove_lock(lock);
        }
    }
}
