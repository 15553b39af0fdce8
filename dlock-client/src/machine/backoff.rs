//! Reconnect delays: exponential backoff with full jitter.
//!
//! Attempt `k` (0 for the first retry after a success) waits a uniformly random time in
//! `[0, min(min_delay · 2^k, max_delay)]` ("full jitter"). Clients cut off at the same moment
//! therefore spread their retries over the whole window instead of returning together, and
//! the window still doubles per failure up to the cap.
//!
//! The randomness comes from a seeded generator owned by the value, so a test with a fixed
//! seed sees a fixed sequence of delays.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The largest exponent used: `2^16` times the minimum is beyond any sensible cap.
const MAX_EXPONENT: u32 = 16;

/// Exponential backoff with full jitter (see the module docs).
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    /// Failed attempts since the last success.
    attempts: u32,
    rng: StdRng,
}

impl Backoff {
    /// Delays between `min` and `max` (a `max` below `min` counts as `min`), jittered by a
    /// generator seeded with `seed`.
    pub(crate) fn new(min: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            attempts: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The upper bound of the next delay: `min · 2^attempts`, capped at `max`.
    pub(crate) fn window(&self) -> Duration {
        self.min
            .saturating_mul(1u32 << self.attempts.min(MAX_EXPONENT))
            .min(self.max)
    }

    /// The delay before the next attempt, uniformly random in `[0, window]`; the window of the
    /// attempt after it doubles.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let window = self.window();
        let micros = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
        let delay = Duration::from_micros(self.rng.random_range(0..=micros));
        self.attempts = self.attempts.saturating_add(1);
        delay
    }

    /// A connection succeeded: the next failure starts again at the minimum.
    pub(crate) fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn windows_double_from_the_minimum_up_to_the_cap() {
        let mut b = Backoff::new(MS * 100, MS * 800, 1);
        let mut windows = Vec::new();
        for _ in 0..6 {
            windows.push(b.window());
            b.next_delay();
        }
        assert_eq!(windows, [100, 200, 400, 800, 800, 800].map(|m| MS * m));
        b.reset();
        assert_eq!(b.window(), MS * 100);
    }

    #[test]
    fn full_jitter_spreads_delays_over_the_whole_window() {
        // Many draws with a fixed seed: every delay lies in [0, window], and the draws reach
        // both the lower and the upper quarter of the window (equal jitter, which never goes
        // below half the window, would fail the first; no jitter would fail both).
        let mut b = Backoff::new(MS * 100, MS * 100, 7);
        let delays: Vec<Duration> = (0..400).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= MS * 100), "{delays:?}");
        assert!(delays.iter().any(|d| *d < MS * 25), "never below a quarter");
        assert!(
            delays.iter().any(|d| *d > MS * 75),
            "never above three quarters"
        );
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(
            distinct.len() > 300,
            "only {} distinct delays",
            distinct.len()
        );
    }

    #[test]
    fn each_delay_stays_within_its_growing_window() {
        let mut b = Backoff::new(MS * 10, MS * 1000, 3);
        for k in 0..12u32 {
            let window = (MS * 10 * 2u32.pow(k.min(16))).min(MS * 1000);
            assert_eq!(b.window(), window);
            let d = b.next_delay();
            assert!(d <= window, "attempt {k}: {d:?} > {window:?}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let mut a = Backoff::new(MS * 50, MS * 5000, 42);
        let mut b = Backoff::new(MS * 50, MS * 5000, 42);
        let da: Vec<_> = (0..10).map(|_| a.next_delay()).collect();
        let db: Vec<_> = (0..10).map(|_| b.next_delay()).collect();
        assert_eq!(da, db);
    }
}
