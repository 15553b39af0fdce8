//! The restart grace as the core task lives it ([`crate::grace`] has the why and the
//! record): until the grace ends, every command that could grant or change locks is held,
//! in arrival order, and applied when it ends.

use std::collections::VecDeque;

use dlock_core::Command;
use tokio::time::Instant;
use tracing::info;

use super::engine::Engine;
use super::routing::apply_and_route;
use super::sessions::Sessions;
use crate::ServerError;
use crate::grace::LeaseRecord;

/// The recovery grace after a restart: until `until`, lock-changing commands wait in `held`.
#[derive(Debug)]
pub(crate) struct Grace {
    /// When the grace ends.
    pub(crate) until: Instant,
    /// Whether the grace waits out every lease the previous lifetime recorded (so the record
    /// may be lowered when it ends).
    pub(crate) covers_previous: bool,
    /// Held commands, in arrival order.
    held: VecDeque<Command>,
}

/// Why a command was not held.
#[derive(Debug)]
pub(super) enum NotHeld {
    /// Renewals are applied at once: they grant nothing, and any message renews the lease.
    ApplyNow(Command),
    /// The held queue is full.
    Full,
}

impl Grace {
    /// A grace ending at `until`, with nothing held yet.
    pub(crate) fn new(until: Instant, covers_previous: bool) -> Grace {
        Grace {
            until,
            covers_previous,
            held: VecDeque::new(),
        }
    }

    /// Holds `command` until the grace ends, unless it is a renewal or `capacity` commands
    /// are held already.
    ///
    /// A new session learns lock ids only from events, which come after the grace, so
    /// holding every lock-changing command keeps each session's order.
    pub(super) fn hold(&mut self, command: Command, capacity: usize) -> Result<(), NotHeld> {
        if matches!(command, Command::Renew { .. }) {
            return Err(NotHeld::ApplyNow(command));
        }
        if self.held.len() >= capacity {
            return Err(NotHeld::Full);
        }
        self.held.push_back(command);
        Ok(())
    }
}

/// Ends the grace: applies the held commands in arrival order, and lowers the lease record
/// once the previous lifetime's leases are certainly over.
pub(super) fn end(
    grace: Grace,
    engine: &mut Engine,
    sessions: &mut Sessions,
    lease_record: &mut LeaseRecord,
) -> Result<(), ServerError> {
    info!(
        held = grace.held.len(),
        "recovery grace over: granting again"
    );
    for command in grace.held {
        apply_and_route(engine, sessions, command)?;
    }
    if grace.covers_previous {
        lease_record.previous_leases_over()?;
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
        let mut grace = Grace::new(Instant::now(), true);
        assert!(matches!(
            grace.hold(renew(1), 2),
            Err(NotHeld::ApplyNow(Command::Renew { .. }))
        ));
        assert!(grace.hold(goodbye(2), 2).is_ok());
        assert!(grace.hold(goodbye(3), 2).is_ok());
        assert!(matches!(grace.hold(goodbye(4), 2), Err(NotHeld::Full)));
        // A renewal is never held, even with the queue full.
        assert!(matches!(grace.hold(renew(5), 2), Err(NotHeld::ApplyNow(_))));
        let held: Vec<Command> = grace.held.into_iter().collect();
        assert_eq!(held, vec![goodbye(2), goodbye(3)]);
    }
}
