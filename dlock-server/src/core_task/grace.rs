//! The restart grace as the core task lives it ([`crate::grace`] has the why and the
//! record): until the grace ends, every command that could grant or change locks is held,
//! in arrival order, and applied when it ends.
//!
//! Two kinds of request are answered during the grace instead of waiting for its end, since
//! their caller asked not to wait (longer): a new lock with NOQUEUE cannot be granted at once,
//! so it gets `NotQueued` on arrival; a request with a timeout gets `TimedOut` once its
//! timeout, counted from its arrival, has passed while it is still held, and a held request
//! whose timeout has not passed is applied with what is left of it.
//!
//! A `Goodbye` of a session with nothing held is applied at once: such a session holds no
//! lock and waits for none (nothing is granted during the grace), so ending it changes no
//! other session's locks, and its client (a `dlock ping`, a `dlock acquire --no-wait`) need
//! not wait for the grace to end before it can exit.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use dlock_core::{Command, Event, EventKind, LockFlags, SessionId};
use tokio::time::Instant;
use tracing::info;

use super::engine::Engine;
use super::routing::apply_and_route;
use super::sessions::Sessions;
use crate::ServerError;
use crate::grace::LeaseRecord;

/// A held command; `None` once it was answered with `TimedOut` during the grace.
#[derive(Debug)]
struct Held {
    command: Option<Command>,
    /// When its timeout runs out, for a request with one.
    deadline: Option<Instant>,
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
    held: VecDeque<Held>,
    /// The held requests with a timeout, by deadline: (deadline, position in `held` counted
    /// from the first command ever held).
    timeouts: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Commands held before the first one still in `held`.
    popped: u64,
}

/// Why a command was not held.
#[derive(Debug)]
pub(super) enum NotHeld {
    /// Applied at once: renewals (they grant nothing, and any message renews the lease) and
    /// the `Goodbye` of a session with nothing held.
    ApplyNow(Command),
    /// Answered at once with this event (a NOQUEUE request, which cannot be granted now).
    Answer(Event),
    /// The held queue is full.
    Full,
}

/// The timeout of a lock or conversion request, if it has one.
fn timeout_ms(command: &Command) -> Option<u64> {
    match command {
        Command::Lock { args, .. } => args.timeout_ms,
        Command::Convert { args, .. } => args.timeout_ms,
        _ => None,
    }
}

/// The session a command is of, for commands a session sends.
fn session_of(command: &Command) -> Option<SessionId> {
    match command {
        Command::Renew { session, .. }
        | Command::CloseSession { session, .. }
        | Command::Lock { session, .. }
        | Command::Convert { session, .. }
        | Command::Unlock { session, .. }
        | Command::Cancel { session, .. } => Some(*session),
        _ => None,
    }
}

/// The event that ends a held request of `command` with `kind`: addressed as the engine
/// addresses a new request's (no lock id) or a conversion's (its lock).
fn answer(command: &Command, kind: EventKind) -> Option<Event> {
    let (session, request, lock) = match command {
        Command::Lock {
            session, request, ..
        } => (*session, *request, None),
        Command::Convert {
            session,
            request,
            args,
        } => (*session, *request, Some(args.lock)),
        _ => return None,
    };
    Some(Event {
        session,
        request: Some(request),
        lock,
        kind,
    })
}

impl Grace {
    /// A grace ending at `until`, with nothing held yet.
    pub(crate) fn new(until: Instant, covers_previous: bool) -> Grace {
        Grace {
            until,
            covers_previous,
            held: VecDeque::new(),
            timeouts: BinaryHeap::new(),
            popped: 0,
        }
    }

    /// Holds `command` (arriving at `now`) until the grace ends, unless it is a renewal, the
    /// `Goodbye` of a session with nothing held, a NOQUEUE lock request, or `capacity`
    /// commands are held already.
    ///
    /// A new session learns lock ids only from events, which come after the grace, so
    /// holding every lock-changing command keeps each session's order.
    pub(super) fn hold(
        &mut self,
        command: Command,
        capacity: usize,
        now: Instant,
    ) -> Result<(), NotHeld> {
        match &command {
            Command::Renew { .. } => return Err(NotHeld::ApplyNow(command)),
            Command::CloseSession { session, .. } if !self.holds_any_of(*session) => {
                return Err(NotHeld::ApplyNow(command));
            }
            Command::Lock { args, .. } if args.flags.contains(LockFlags::NOQUEUE) => {
                if let Some(event) = answer(&command, EventKind::NotQueued) {
                    return Err(NotHeld::Answer(event));
                }
            }
            _ => {}
        }
        if self.held.len() >= capacity {
            return Err(NotHeld::Full);
        }
        let deadline = timeout_ms(&command).map(|ms| now + Duration::from_millis(ms));
        if let Some(at) = deadline {
            let position = self.popped + self.held.len() as u64;
            self.timeouts.push(Reverse((at, position)));
        }
        self.held.push_back(Held {
            command: Some(command),
            deadline,
        });
        Ok(())
    }

    /// Whether a command of `session` is held.
    fn holds_any_of(&self, session: SessionId) -> bool {
        self.held.iter().any(|h| {
            h.command
                .as_ref()
                .is_some_and(|c| session_of(c) == Some(session))
        })
    }

    /// When the next held request times out, if any does.
    pub(super) fn next_timeout(&self) -> Option<Instant> {
        self.timeouts.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the held requests whose timeout has passed by `now` and returns their
    /// `TimedOut` answers, in deadline order.
    pub(super) fn time_out(&mut self, now: Instant) -> Vec<Event> {
        let mut answers = Vec::new();
        while let Some(Reverse((at, position))) = self.timeouts.peek().copied() {
            if at > now {
                break;
            }
            self.timeouts.pop();
            let Some(held) = position
                .checked_sub(self.popped)
                .and_then(|i| self.held.get_mut(usize::try_from(i).ok()?))
            else {
                continue;
            };
            if let Some(event) = held
                .command
                .take()
                .and_then(|c| answer(&c, EventKind::TimedOut))
            {
                answers.push(event);
            }
        }
        answers
    }
}

/// Ends the grace: applies the held commands in arrival order (a request with a timeout
/// keeps what is left of it), and lowers the lease record once the previous lifetime's
/// leases are certainly over.
pub(super) fn end(
    mut grace: Grace,
    engine: &mut Engine,
    sessions: &mut Sessions,
    lease_record: &mut LeaseRecord,
) -> Result<(), ServerError> {
    let now = Instant::now();
    let mut timed_out = grace.time_out(now);
    sessions.route(&engine.core(), &mut timed_out);
    info!(
        held = grace.held.len(),
        "recovery grace over: granting again"
    );
    for held in grace.held {
        let Some(mut command) = held.command else {
            continue;
        };
        if let Some(deadline) = held.deadline {
            let left = u64::try_from(deadline.saturating_duration_since(now).as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            match &mut command {
                Command::Lock { args, .. } => args.timeout_ms = Some(left),
                Command::Convert { args, .. } => args.timeout_ms = Some(left),
                _ => {}
            }
        }
        apply_and_route(engine, sessions, command)?;
    }
    // Lowering the record is an optimisation (a shorter grace after the next restart): if it
    // cannot be written, the higher record stays, which is safe, and the server goes on.
    if grace.covers_previous
        && let Err(e) = lease_record.previous_leases_over()
    {
        tracing::warn!(error = %e, "could not lower the lease record; the next restart's grace stays as long as recorded");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use dlock_core::{RequestId, SessionId};

    use super::*;

    fn renew(request: u64) -> Command {
        Command::Renew {
            session: SessionId(1),
            request: RequestId(request),
        }
    }

    fn goodbye(request: u64) -> Command {
        Command::CloseSession {
            session: SessionId(1),
            request: RequestId(request),
        }
    }

    #[test]
    fn holds_lock_changing_commands_in_order_up_to_the_capacity() {
        let now = Instant::now();
        let mut grace = Grace::new(now, true);
        assert!(matches!(
            grace.hold(renew(1), 2, now),
            Err(NotHeld::ApplyNow(Command::Renew { .. }))
        ));
        // A goodbye of a session with nothing held is applied at once.
        assert!(matches!(
            grace.hold(goodbye(2), 2, now),
            Err(NotHeld::ApplyNow(Command::CloseSession { .. }))
        ));
        let unlock = Command::Unlock {
            session: SessionId(1),
            request: RequestId(3),
            args: dlock_core::UnlockRequest::new(dlock_core::LockId(7)),
        };
        assert!(grace.hold(unlock.clone(), 2, now).is_ok());
        // Behind a held command of its session, it waits its turn.
        assert!(grace.hold(goodbye(4), 2, now).is_ok());
        assert!(matches!(grace.hold(goodbye(5), 2, now), Err(NotHeld::Full)));
        // A renewal is never held, even with the queue full.
        assert!(matches!(
            grace.hold(renew(5), 2, now),
            Err(NotHeld::ApplyNow(_))
        ));
        let held: Vec<Command> = grace.held.into_iter().filter_map(|h| h.command).collect();
        assert_eq!(held, vec![unlock, goodbye(4)]);
    }

    fn lock(request: u64, flags: LockFlags, timeout_ms: Option<u64>) -> Command {
        Command::Lock {
            session: SessionId(1),
            request: RequestId(request),
            args: dlock_core::LockRequest {
                flags,
                timeout_ms,
                ..dlock_core::LockRequest::new("r", dlock_core::Mode::EX)
            },
        }
    }

    #[test]
    fn noqueue_is_answered_at_once_and_timeouts_count_from_arrival() {
        let start = Instant::now();
        let mut grace = Grace::new(start + Duration::from_secs(60), true);
        // NOQUEUE: not held, answered NOT_QUEUED with no lock (none exists).
        match grace.hold(lock(1, LockFlags::NOQUEUE, None), 10, start) {
            Err(NotHeld::Answer(e)) => {
                assert_eq!(
                    (e.request, e.lock, e.kind),
                    (Some(RequestId(1)), None, EventKind::NotQueued)
                );
            }
            other => panic!("{other:?}"),
        }
        grace
            .hold(lock(2, LockFlags::empty(), Some(3_000)), 10, start)
            .unwrap();
        grace
            .hold(lock(3, LockFlags::empty(), None), 10, start)
            .unwrap();
        grace
            .hold(
                lock(4, LockFlags::empty(), Some(1_000)),
                10,
                start + Duration::from_millis(500),
            )
            .unwrap();
        assert_eq!(
            grace.next_timeout(),
            Some(start + Duration::from_millis(1_500))
        );
        assert!(
            grace
                .time_out(start + Duration::from_millis(1_499))
                .is_empty()
        );
        let out = grace.time_out(start + Duration::from_millis(3_000));
        let ids: Vec<_> = out.iter().map(|e| (e.request, e.kind.clone())).collect();
        assert_eq!(
            ids,
            vec![
                (Some(RequestId(4)), EventKind::TimedOut),
                (Some(RequestId(2)), EventKind::TimedOut)
            ]
        );
        assert_eq!(grace.next_timeout(), None);
        // The request without a timeout is still held, in its place.
        let held: Vec<Command> = grace.held.into_iter().filter_map(|h| h.command).collect();
        assert_eq!(held, vec![lock(3, LockFlags::empty(), None)]);
    }
}
