//! Exactly once across fail-over (HA rule 5), with [`Config::exactly_once`].
//!
//! A client that loses its connection re-sends, in id order, every request it has no final
//! answer for. A single server recognises those itself; a new leader of a cluster has no
//! record of what its predecessor answered, so the engine keeps one, in replicated state
//! that snapshots carry: per session the highest request id applied and a ring of its last
//! [`REMEMBERED_ANSWERS`] final answers that are not grants. A command whose request id is
//! at or below that highest id is a retransmission: it changes nothing, not even the lease,
//! and is answered again, level-triggered, from the remembered answer or from the state of
//! the lock it created or names.
//!
//! A grant is never remembered: every lock keeps the id of the request that created it
//! (`Lock::origin`), so a re-sent `Lock` finds its lock however long ago, and however many
//! answers ago, it was granted, and is answered from that lock as it stands (mode, token,
//! value block). The ring never holds a token or a value.
//!
//! [`Config::exactly_once`]: crate::Config::exactly_once

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::engine::{Core, reject, reply};
use crate::grant::read_for_grant;
use crate::lock::{LockRef, Status};
use crate::{Command, Event, EventKind, LockFlags, LockId, Reject, RequestId, SessionId};

/// How many final answers that are not grants each session remembers, with
/// [`Config::exactly_once`](crate::Config::exactly_once). A client re-sends only the
/// requests it had no answer for when its connection broke, and a server lets at most a few
/// dozen of one connection's requests wait for the engine, so the answers lost in a
/// fail-over are among a session's most recent ones. An older re-sent request is still
/// answered from state (see the crate docs). A session's record costs at most about
/// 3.7 KB (56 bytes an answer); an engine without `exactly_once` keeps none.
pub const REMEMBERED_ANSWERS: usize = 64;

/// A session's record of what it was answered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Once {
    /// The highest request id applied for the session ([`RequestId::DRIVER`] before any:
    /// it never counts).
    max: RequestId,
    /// The last final answers that are not grants, oldest first, by request id.
    answers: VecDeque<(RequestId, Answer)>,
}

impl Default for Once {
    fn default() -> Once {
        Once {
            max: RequestId::DRIVER,
            answers: VecDeque::new(),
        }
    }
}

/// A remembered final answer: the lock it named and what it said.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Answer {
    lock: Option<LockId>,
    kind: Final,
}

/// A final answer that is not a grant (a grant is answered from its lock).
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Final {
    NotQueued,
    Deadlock,
    Cancelled,
    TimedOut,
    Unlocked,
    Rejected(Reject),
}

impl Final {
    fn of(kind: &EventKind) -> Option<Final> {
        Some(match kind {
            EventKind::NotQueued => Final::NotQueued,
            EventKind::Deadlock => Final::Deadlock,
            EventKind::Cancelled => Final::Cancelled,
            EventKind::TimedOut => Final::TimedOut,
            EventKind::Unlocked => Final::Unlocked,
            EventKind::Rejected { reason } => Final::Rejected(reason.clone()),
            _ => return None,
        })
    }

    fn kind(&self) -> EventKind {
        match self {
            Final::NotQueued => EventKind::NotQueued,
            Final::Deadlock => EventKind::Deadlock,
            Final::Cancelled => EventKind::Cancelled,
            Final::TimedOut => EventKind::TimedOut,
            Final::Unlocked => EventKind::Unlocked,
            Final::Rejected(reason) => EventKind::Rejected {
                reason: reason.clone(),
            },
        }
    }
}

impl Once {
    fn remember(&mut self, request: RequestId, answer: Answer) {
        if self.answers.len() >= REMEMBERED_ANSWERS {
            self.answers.pop_front();
        }
        self.answers.push_back((request, answer));
    }

    fn answer(&self, request: RequestId) -> Option<&Answer> {
        self.answers
            .iter()
            .rev()
            .find(|(r, _)| *r == request)
            .map(|(_, a)| a)
    }
}

/// The cancel whose own request id a successful cancel's answer is also remembered under:
/// its reply is the cancelled request's completion, which carries that request's id.
pub(crate) type CancelKey = (SessionId, RequestId, LockId);

impl Core {
    /// [`Core::execute`] with exactly once: a retransmission is answered again and not
    /// executed; the final answers of anything else are remembered.
    pub(crate) fn execute_once(&mut self, command: Command, out: &mut Vec<Event>) {
        if self.note_request(&command) {
            self.answer_again(&command, out);
            return;
        }
        let cancel = match command {
            Command::Cancel {
                session,
                request,
                lock,
            } => Some((session, request, lock)),
            _ => None,
        };
        let start = out.len();
        self.execute(command, out);
        self.remember_answers(cancel, &out[start..]);
    }

    /// Notes `command`'s request id for its session (with `exactly_once`). Returns whether
    /// it is a retransmission, to be answered by [`Core::answer_again`] and not applied.
    ///
    /// Only `Lock`, `Convert`, `Unlock` and `Cancel` count, and only they are ever
    /// retransmissions. A server applies one connection's commands in the order they were
    /// sent, except renewals, which it gathers into batches on their own path: a renewal
    /// sent after a re-sent request may be applied before it, and were its id counted, the
    /// re-sent request would be taken for a retransmission and never applied. A re-sent
    /// `Renew` renews again, which is harmless, and a `CloseSession` of a session that still
    /// exists was never applied. A command of an unknown session is left to its usual
    /// rejection, and [`RequestId::DRIVER`] never counts.
    fn note_request(&mut self, command: &Command) -> bool {
        match resendable(command) {
            Some((session, request)) => self.note(session, request),
            None => false,
        }
    }

    /// Notes `request` of a `resendable` command for `session`; whether it is a
    /// retransmission.
    fn note(&mut self, session: SessionId, request: RequestId) -> bool {
        if request == RequestId::DRIVER {
            return false;
        }
        let Some(s) = self.sessions.get_mut(&session) else {
            return false;
        };
        let once = s.once.get_or_insert_default();
        if request > once.max {
            once.max = request;
            false
        } else {
            true
        }
    }

    /// Remembers the final answers that are not grants among `events` (the events of one
    /// input), each for its session under its request id, and, for a successful `cancel`,
    /// its reply under the cancel's own id too.
    fn remember_answers(&mut self, cancel: Option<CancelKey>, events: &[Event]) {
        for e in events {
            let Some(request) = e.request.filter(|&r| r != RequestId::DRIVER) else {
                continue;
            };
            let Some(kind) = Final::of(&e.kind) else {
                continue;
            };
            let Some(s) = self.sessions.get_mut(&e.session) else {
                continue;
            };
            let answer = Answer { lock: e.lock, kind };
            s.once.get_or_insert_default().remember(request, answer);
        }
        let Some((session, request, lock)) = cancel else {
            return;
        };
        let cancelled = events.first().is_some_and(|e| {
            e.session == session && e.lock == Some(lock) && e.kind == EventKind::Cancelled
        });
        if let (true, Some(s)) = (cancelled, self.sessions.get_mut(&session)) {
            let answer = Answer {
                lock: Some(lock),
                kind: Final::Cancelled,
            };
            s.once.get_or_insert_default().remember(request, answer);
        }
    }

    /// Answers a retransmitted `command` again, from what is remembered or from state,
    /// changing nothing. See the crate docs, "Exactly once", for each command's answer.
    fn answer_again(&self, command: &Command, out: &mut Vec<Event>) {
        let Some((session, request)) = resendable(command) else {
            return;
        };
        let remembered = self
            .sessions
            .get(&session)
            .and_then(|s| s.once.as_deref())
            .and_then(|o| o.answer(request));
        if let Some(a) = remembered {
            out.push(reply(session, request, a.lock, a.kind.kind()));
            return;
        }
        let event = match command {
            Command::Lock { args, .. } => {
                let valblk = args.flags.contains(LockFlags::VALBLK);
                match self.lock_created_by(session, request) {
                    Some(r) => self.state_of(r, session, request, valblk),
                    None => reject(session, request, None, Reject::NotFound),
                }
            }
            Command::Convert { args, .. } => {
                let valblk = args.flags.contains(LockFlags::VALBLK);
                let status = self
                    .find_lock(session, args.lock)
                    .and_then(|r| Some((r, &self.locks.get(r.0)?.status)));
                match status {
                    Some((r, Status::Granted { mode, .. })) if *mode == args.mode => {
                        self.state_of(r, session, request, valblk)
                    }
                    Some((_, Status::Converting { conv, .. }))
                        if conv.pending.request == request =>
                    {
                        reply(session, request, Some(args.lock), EventKind::Queued)
                    }
                    _ => reject(session, request, Some(args.lock), Reject::NotFound),
                }
            }
            Command::Unlock { args, .. } => match self.find_lock(session, args.lock) {
                // What the unlock itself answered.
                None => reply(session, request, Some(args.lock), EventKind::Unlocked),
                Some(_) => reject(session, request, Some(args.lock), Reject::NotFound),
            },
            Command::Cancel { lock, .. } => {
                let pending = self
                    .find_lock(session, *lock)
                    .and_then(|r| self.locks.get(r.0))
                    .is_some_and(|l| l.status.pending().is_some());
                if pending {
                    // Still pending, so this cancel cancelled nothing.
                    reject(session, request, Some(*lock), Reject::NotPending)
                } else {
                    reply(session, request, Some(*lock), EventKind::Cancelled)
                }
            }
            _ => return,
        };
        out.push(event);
    }

    /// The lock of `session` that its `Lock` request `request` created, if it still exists.
    /// Walks the session's locks: only a retransmission pays for it.
    fn lock_created_by(&self, session: SessionId, request: RequestId) -> Option<LockRef> {
        let s = self.sessions.get(&session)?;
        s.locks
            .iter(&self.locks)
            .find(|(_, l)| l.origin == request)
            .map(|(r, _)| r)
    }

    /// Where lock `r` stands, as the answer to `request`: `Granted` with the mode it holds
    /// (also while converting), its token and, with VALBLK, the value block as a new lock's
    /// grant reads it; `Queued` while it waits.
    fn state_of(&self, r: LockRef, session: SessionId, request: RequestId, valblk: bool) -> Event {
        let Some(lock) = self.locks.get(r.0) else {
            return reject(session, request, None, Reject::NotFound);
        };
        let (mode, token) = match &lock.status {
            Status::Granted { mode, token } => (*mode, *token),
            Status::Converting { from, conv, .. } => (*from, conv.token),
            Status::Waiting { .. } => {
                return reply(session, request, Some(lock.id), EventKind::Queued);
            }
        };
        let (value, value_valid) = match self.resources.get(lock.res.0) {
            Some(res) => read_for_grant(res, valblk, None, mode, self.config.lvb_len),
            None => (None, true),
        };
        let kind = EventKind::Granted {
            mode,
            token,
            value,
            value_valid,
        };
        reply(session, request, Some(lock.id), kind)
    }

    /// The highest id of a `Lock`, `Convert`, `Unlock` or `Cancel` applied for `session` with
    /// [`Config::exactly_once`](crate::Config::exactly_once): a request at or below it is a
    /// retransmission. `None` without `exactly_once`, for an unknown session, or before its
    /// first request ([`RequestId::DRIVER`] never counts).
    pub fn last_request(&self, session: SessionId) -> Option<RequestId> {
        let once = self.sessions.get(&session)?.once.as_deref()?;
        (once.max != RequestId::DRIVER).then_some(once.max)
    }
}

/// The session and request id of a command that can be a retransmission (`Lock`, `Convert`,
/// `Unlock`, `Cancel`).
fn resendable(command: &Command) -> Option<(SessionId, RequestId)> {
    match *command {
        Command::Lock {
            session, request, ..
        }
        | Command::Convert {
            session, request, ..
        }
        | Command::Unlock {
            session, request, ..
        }
        | Command::Cancel {
            session, request, ..
        } => Some((session, request)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{Answer, Once, REMEMBERED_ANSWERS};
    use crate::RequestId;

    /// What `REMEMBERED_ANSWERS` promises a session costs at most.
    #[test]
    fn a_sessions_record_costs_at_most_3_7_kb() {
        let entry = std::mem::size_of::<(RequestId, Answer)>();
        assert_eq!(entry, 56);
        let most = std::mem::size_of::<Once>() + REMEMBERED_ANSWERS * entry;
        assert!(most <= 3_700, "{most}");
    }
}
