//! Requests the server did not take because it was overloaded, and that nobody waits for:
//! the release of a lock nobody holds a guard for, the cancel of a request nobody waits for,
//! the lease renewal. Each is sent again after a delay, for as long as the session lives.
//!
//! Giving up would cost more than the retry: a release given up leaves the lock held, with
//! no guard to release it, until the session ends (other clients wait for it all that time,
//! and this session's own requests for the resource deadlock on it); a cancel given up
//! leaves a request queued that nobody waits for. The delays double with each refusal, from
//! [`FIRST_DELAY`] up to [`MAX_DELAY`], and fall back to the first once the server takes one
//! of them again: one backoff for all, as the refusals come from one rate (the connection's).

use std::collections::VecDeque;
use std::time::Duration;

use dlock_core::LockId;
use tokio::time::Instant;

/// The delay before the first retry after the server took requests again.
pub(crate) const FIRST_DELAY: Duration = Duration::from_millis(10);

/// The longest delay between retries.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(1);

/// What to send again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// A plain unlock of the lock, if it is still held.
    Unlock(LockId),
    /// A cancel of the lock's pending request.
    Cancel(LockId),
    /// A lease renewal.
    Renew,
}

/// The retries waiting for their time, earliest first.
#[derive(Debug)]
pub(crate) struct Retries {
    queue: VecDeque<(Instant, Retry)>,
    delay: Duration,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            queue: VecDeque::new(),
            delay: FIRST_DELAY,
        }
    }
}

impl Retries {
    /// The server refused `retry` as overloaded at `now`: it goes again after the current
    /// delay, and the next refusal waits twice as long.
    pub(crate) fn refused(&mut self, retry: Retry, now: Instant) {
        let at = now + self.delay;
        self.delay = (self.delay * 2).min(MAX_DELAY);
        // Delays only grow between two resets, so the queue stays in order by pushing at
        // the back, except after a reset: then the entry goes to its place.
        let place = self.queue.partition_point(|&(t, _)| t <= at);
        self.queue.insert(place, (at, retry));
    }

    /// The server took a request again: the next refusal waits the first delay.
    pub(crate) fn taken(&mut self) {
        self.delay = FIRST_DELAY;
    }

    /// When the next retry is due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.queue.front().map(|&(t, _)| t)
    }

    /// A retry due at `now`, removed.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Retry> {
        match self.queue.front() {
            Some(&(t, _)) if t <= now => self.queue.pop_front().map(|(_, r)| r),
            _ => None,
        }
    }

    /// Forgets everything (the session is gone, and its locks and requests with it).
    pub(crate) fn clear(&mut self) {
        self.queue.clear();
        self.delay = FIRST_DELAY;
    }

    /// How many retries wait.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_start_over_once_taken() {
        let t0 = Instant::now();
        let mut r = Retries::default();
        let mut expected = Vec::new();
        let mut delay = FIRST_DELAY;
        for i in 0..10 {
            r.refused(Retry::Unlock(LockId(i)), t0);
            expected.push((t0 + delay, Retry::Unlock(LockId(i))));
            delay = (delay * 2).min(MAX_DELAY);
        }
        assert_eq!(r.next_deadline(), Some(t0 + FIRST_DELAY));
        assert_eq!(expected.last().unwrap().0, t0 + MAX_DELAY);
        // Taken again: the next refusal waits the first delay, before the others.
        r.taken();
        r.refused(Retry::Cancel(LockId(99)), t0);
        expected.insert(1, (t0 + FIRST_DELAY, Retry::Cancel(LockId(99))));
        let mut popped = Vec::new();
        let mut now = t0;
        while let Some(at) = r.next_deadline() {
            assert_eq!(r.pop_due(at - Duration::from_nanos(1)), None);
            now = now.max(at);
            while let Some(retry) = r.pop_due(now) {
                popped.push((now, retry));
            }
        }
        assert_eq!(popped, expected);
        r.refused(Retry::Unlock(LockId(1)), t0);
        r.clear();
        assert_eq!((r.len(), r.next_deadline()), (0, None));
    }
}
