//! Event routing: each engine event is numbered, kept for replay and forwarded to its
//! session's connection; a session whose replay buffer overflows is closed.

use dlock_core::{Command, Core, Event, EventKind, RequestId, SessionId};
use dlock_proto::ServerMessage;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::engine::Engine;
use super::sessions::Sessions;
use crate::ServerError;

/// The request id of the commands the server makes on a client's behalf: renewals (on Ack,
/// Query, Ping, retransmissions, held commands and resume) and the close of an overflowed
/// session. Their answers are taken out of that command's events before routing (see
/// [`apply_for_server`]), never recognised by id later, so a client may use any id, this one
/// and `u64::MAX` included.
pub(super) const SERVER_REQUEST: RequestId = RequestId::DRIVER;

impl Sessions {
    /// Routes engine events to their sessions: numbers them, keeps them for replay, and
    /// forwards them to the attached connection; takes the engine's count of each session's
    /// locks into its address's count. Drains `events`.
    pub(super) fn route(&mut self, core: &Core, events: &mut Vec<Event>) {
        for event in events.drain(..) {
            if let EventKind::SessionOpened { .. } = event.kind {
                // The Welcome says this.
                continue;
            }
            self.monitor.event(&event);
            let session = event.session;
            self.count_locks(session, core.session_lock_count(session));
            let Some(s) = self.map.get_mut(&session) else {
                continue;
            };
            // Queue wait: from `Queued` to the request's completion (observed for grants).
            match (&event.kind, event.lock) {
                (EventKind::Queued, Some(lock)) => {
                    s.queued_at.insert(lock, Instant::now());
                }
                (
                    EventKind::Granted { .. }
                    | EventKind::Cancelled
                    | EventKind::TimedOut
                    | EventKind::Deadlock
                    | EventKind::NotQueued
                    | EventKind::Unlocked,
                    Some(lock),
                ) if !s.queued_at.is_empty() => {
                    if let Some(at) = s.queued_at.remove(&lock)
                        && matches!(event.kind, EventKind::Granted { .. })
                    {
                        self.monitor.stats.queue_wait.observe(at.elapsed());
                    }
                }
                _ => {}
            }
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
            if !ended && !self.keep_for_replay(session, seq, &event) {
                // The client stopped acknowledging; the session cannot be kept consistent.
                if !self.overflowed.contains(&session) {
                    self.overflowed.push(session);
                }
                continue;
            }
            let Some(s) = self.map.get(&session) else {
                continue;
            };
            if let Some(handle) = &s.conn {
                if !s.replaying {
                    self.out
                        .send(session, handle, ServerMessage::Event { seq, event });
                }
                if ended {
                    self.out.close(session, handle, None, true);
                }
            }
            if ended {
                self.remove(session);
            }
        }
        self.enforce_replay_pool();
    }
}

/// Applies `command` and routes its events.
pub(super) fn apply_and_route(
    engine: &mut Engine,
    sessions: &mut Sessions,
    command: Command,
) -> Result<(), ServerError> {
    let mut events = engine.apply(command)?;
    sessions.route(&engine.core(), &mut events);
    engine.recycle(events);
    Ok(())
}

/// Applies a command the server makes on `session`'s behalf (built by `command` with the
/// request id to use) and routes its events, except its own answer to `session`.
pub(super) fn apply_for_server(
    engine: &mut Engine,
    sessions: &mut Sessions,
    session: SessionId,
    command: impl FnOnce(RequestId) -> Command,
) -> Result<(), ServerError> {
    let mut events = engine.apply(command(SERVER_REQUEST))?;
    events.retain(|e| !(e.session == session && e.request == Some(SERVER_REQUEST)));
    sessions.route(&engine.core(), &mut events);
    engine.recycle(events);
    Ok(())
}

/// Ends the sessions whose replay buffer overflowed: the client is told the session
/// expired, and the engine releases its locks as for a closed session (R50).
pub(super) fn close_overflowed(
    engine: &mut Engine,
    sessions: &mut Sessions,
) -> Result<(), ServerError> {
    while let Some(session) = sessions.overflowed.pop() {
        let Some(mut s) = sessions.remove(session) else {
            continue;
        };
        warn!(%session, capacity = sessions.replay_capacity, "replay buffer overflow; closing session");
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
            // The last message, after the events already queued.
            sessions.out.close(session, &handle, Some(msg), true);
        }
        apply_for_server(engine, sessions, session, |request| Command::CloseSession {
            session,
            request,
        })?;
    }
    Ok(())
}
