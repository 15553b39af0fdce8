//! Time-driven work: lease expiry and request timeouts (R65).
//!
//! One ordered set of `(deadline, what)` holds every lease end and every request deadline,
//! so an update is O(log n) and [`Core::next_deadline`] is its first key. Only `Tick` looks
//! at it; a tick with nothing due does nothing.

use serde::{Deserialize, Serialize};

use crate::engine::{Core, Effects};
use crate::{Event, EventKind, LockId, SessionId};

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Timer {
    /// A session's lease ends.
    Lease(SessionId),
    /// A queued request's timeout runs out (R65).
    Request(LockId),
}

impl Timer {
    /// The least timer of any deadline (for range queries by time).
    pub(crate) const FIRST: Timer = Timer::Lease(SessionId(0));
}

impl Core {
    /// `Tick`: due timers in deadline order, as many as this input's
    /// [`STEP_WORK`](crate::STEP_WORK) leaves room for (the rest stay due, so the next
    /// deadline has passed already). An expired session is removed as R50 with one
    /// SessionExpired event; a timed-out request is cancelled as R46/R47 but completes
    /// with TIMEDOUT. The grant passes of the affected resources run after the expiries,
    /// once per resource, and before any request deadline is judged.
    pub(crate) fn tick(&mut self, fx: &mut Effects, out: &mut Vec<Event>) {
        while let Some(&(at, what)) = self.timers.first() {
            if at > self.clock_ms || fx.step_work == 0 {
                break;
            }
            self.timers.pop_first();
            fx.step_work -= 1;
            match what {
                Timer::Lease(s) => self.expire_session(s, fx, out),
                Timer::Request(id) => {
                    // Grants made possible by work due earlier come first: a request
                    // that became grantable before its deadline is granted, not timed out.
                    self.run_grant_passes(fx, out);
                    // Never a lock of an ended session: a tick removes those before it
                    // looks at a timer, and stops at its budget while any are left.
                    if let Some(&r) = self.lock_ids.get(&id) {
                        self.abort_pending(r, EventKind::TimedOut, fx, out);
                    }
                }
            }
        }
    }
}
