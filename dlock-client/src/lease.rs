//! The local lease of one session: the instant after which this client counts the session's
//! locks as lost, shared by the background task and the session's guards.
//!
//! The deadline is `send instant of the latest confirmed renewal + TTL − safety margin`. The
//! server cannot expire the session before `send instant + TTL`, so a client that gives its
//! locks up at the deadline does so before anyone else can be granted them.
//!
//! The background task declares the loss when its timer fires, but a process that was paused
//! (a stalled VM, a long GC pause, a blocked runtime) wakes up with the timer not yet run.
//! Guards therefore also compare the clock with the deadline whenever they are asked whether
//! the lock is held. For both answers to agree, the lapse is a latch: the first observer of
//! `now >= deadline` sets it, under the same mutex that a late renewal confirmation needs to
//! move the deadline, so a lock reported lost is never reported held again.

use std::sync::Mutex;

use tokio::time::Instant;

/// The local lease of one session (see the module docs).
#[derive(Debug)]
pub(crate) struct Lease {
    state: Mutex<LeaseState>,
}

#[derive(Debug)]
struct LeaseState {
    deadline: Instant,
    lapsed: bool,
}

impl Lease {
    /// A lease that lapses at `deadline` unless extended.
    pub(crate) fn new(deadline: Instant) -> Lease {
        Lease {
            state: Mutex::new(LeaseState {
                deadline,
                lapsed: false,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LeaseState> {
        // Two plain fields: a panic while holding the lock cannot leave them inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current deadline.
    pub(crate) fn deadline(&self) -> Instant {
        self.state().deadline
    }

    /// Whether the lease has lapsed at `now`. Once it returns `true` it always does.
    pub(crate) fn lapsed_at(&self, now: Instant) -> bool {
        let mut s = self.state();
        if !s.lapsed && now >= s.deadline {
            s.lapsed = true;
        }
        s.lapsed
    }

    /// Moves the deadline to `deadline` if that is later (a renewal was confirmed), unless the
    /// lease has already lapsed at `now`: a confirmation that arrives after the deadline revives
    /// nothing, since a guard may already have reported its lock lost. Returns whether the
    /// lease is still alive.
    pub(crate) fn extend(&self, now: Instant, deadline: Instant) -> bool {
        let mut s = self.state();
        if !s.lapsed && now >= s.deadline {
            s.lapsed = true;
        }
        if s.lapsed {
            return false;
        }
        s.deadline = s.deadline.max(deadline);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lapses_at_the_deadline_and_stays_lapsed() {
        let t0 = Instant::now();
        let lease = Lease::new(t0 + Duration::from_secs(1));
        assert!(!lease.lapsed_at(t0));
        assert!(!lease.lapsed_at(t0 + Duration::from_millis(999)));
        assert!(lease.lapsed_at(t0 + Duration::from_secs(1)));
        // Asked again with an earlier instant (another thread's older reading): still lapsed.
        assert!(lease.lapsed_at(t0));
    }

    #[test]
    fn extends_only_forward_and_only_while_alive() {
        let t0 = Instant::now();
        let lease = Lease::new(t0 + Duration::from_secs(1));
        assert!(lease.extend(t0, t0 + Duration::from_secs(2)));
        assert_eq!(lease.deadline(), t0 + Duration::from_secs(2));
        // An older confirmation never shortens the lease.
        assert!(lease.extend(t0, t0 + Duration::from_millis(1500)));
        assert_eq!(lease.deadline(), t0 + Duration::from_secs(2));
        // A confirmation that arrives after the deadline does not revive it.
        assert!(!lease.extend(t0 + Duration::from_secs(2), t0 + Duration::from_secs(5)));
        assert!(lease.lapsed_at(t0));
        assert_eq!(lease.deadline(), t0 + Duration::from_secs(2));
    }

    #[test]
    fn a_lapse_seen_first_by_a_guard_wins_over_a_late_extension() {
        let t0 = Instant::now();
        let lease = Lease::new(t0 + Duration::from_secs(1));
        // A guard checks after the deadline, before the background task handles the renewal
        // confirmation that was waiting for it.
        assert!(lease.lapsed_at(t0 + Duration::from_secs(1)));
        assert!(!lease.extend(t0, t0 + Duration::from_secs(3)));
        assert!(lease.lapsed_at(t0 + Duration::from_secs(2)));
    }
}
