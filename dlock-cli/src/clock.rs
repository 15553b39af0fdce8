//! An estimate of the server's lock-table clock, to turn `since_ms` into "for how long".
//!
//! Query replies stamp each lock with the server core's clock (milliseconds of the server's
//! monotonic clock) but not the current value of that clock. dlock learns it once, right after
//! connecting, from its own session: the server sets `expires_at_ms = now + ttl_ms` whenever it
//! renews the session, and it renews it on every message, the session query included, so
//! `expires_at_ms - ttl_ms` is the server clock when it answered (and, were that renewal
//! skipped, the clock at the handshake a few milliseconds earlier). From then on the local
//! monotonic clock advances the estimate. Ages are for display only; nothing depends on their
//! exactness.

use std::time::{Duration, Instant};

/// The server's core clock, anchored to a local instant.
#[derive(Clone, Copy, Debug)]
pub struct ServerClock {
    core_ms: u64,
    /// `None`: frozen at `core_ms` (tests).
    anchor: Option<Instant>,
}

impl ServerClock {
    /// The server clock read `core_ms` just now.
    pub fn new(core_ms: u64) -> ServerClock {
        ServerClock {
            core_ms,
            anchor: Some(Instant::now()),
        }
    }

    /// A clock that always reads `core_ms` (for tests and fixed output).
    pub fn fixed(core_ms: u64) -> ServerClock {
        ServerClock {
            core_ms,
            anchor: None,
        }
    }

    /// The estimated server clock now, in milliseconds.
    pub fn now_ms(&self) -> u64 {
        let elapsed = self.anchor.map_or(0, |a| a.elapsed().as_millis());
        self.core_ms
            .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }

    /// How long ago the server clock read `since_ms` (zero if that seems to be in the future).
    pub fn age(&self, since_ms: u64) -> Duration {
        Duration::from_millis(self.now_ms().saturating_sub(since_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_saturate() {
        let c = ServerClock::fixed(1_000);
        assert_eq!(c.age(400), Duration::from_millis(600));
        assert_eq!(c.age(5_000), Duration::ZERO);
    }

    #[test]
    fn live_clock_never_goes_below_its_anchor() {
        let c = ServerClock::new(1_000);
        assert!(c.now_ms() >= 1_000);
    }
}
