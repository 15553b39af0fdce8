//! Keeping a session alive: renewals about every TTL/3, acknowledgements of received events,
//! the local lease, and noticing a connection on which renewals go unanswered.
//!
//! Each wait between renewals is drawn uniformly from TTL/3 ± a tenth ([`JITTER_DIVISOR`]),
//! from a generator seeded per session, so the mean stays TTL/3. Without it, sessions that
//! connect together (every client of a restarted server, or of a new leader after a
//! fail-over) would renew together for as long as they live, the server taking their
//! renewals in one burst every TTL/3; with it their renewals drift apart a little with
//! every period.
//!
//! The local lease lapses at `send instant of the latest confirmed renewal + TTL − margin`.
//! The server cannot expire the session before `send instant + TTL`, so a client that gives
//! its locks up at that instant does so before anyone else can be granted them.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::lease::Lease;

/// Send an `Ack` at least every this many events.
pub(crate) const ACK_EVERY: u64 = 64;

/// A renewal carries an `Ack` once this many events wait for one. The server keeps every
/// event for a replay until it is acknowledged, and the reply to a renewal is an event too:
/// an `Ack` with every renewal would acknowledge nothing but the previous renewal's reply
/// on an idle session, and cost the server a second message per renewal (about a fifth of
/// what idle sessions cost it, measured with `loadgen -s idle`). An idle session now
/// acknowledges with every fourth renewal, and the server keeps at most four such replies.
pub(crate) const ACK_WITH_RENEWAL: u64 = 4;

/// How long before the server's earliest expiry the local lease lapses: the configured
/// margin, or max(TTL/10, 100 ms); at most TTL/2.
pub(crate) fn margin(configured: Option<Duration>, ttl: Duration) -> Duration {
    configured
        .unwrap_or_else(|| (ttl / 10).max(Duration::from_millis(100)))
        .min(ttl / 2)
}

/// How long a renewal may go unanswered before its connection counts as dead: a sixth of the
/// TTL, at least a second. A server answers a renewal within milliseconds (a cluster's leader
/// within one commit); one that does not is gone without a word (its machine, or the
/// network to it) or cannot renew (a leader cut off from its majority). The client then
/// drops the connection and reconnects, trying the other endpoints, while the lease still
/// has most of its time left.
pub(crate) fn answer_timeout(ttl: Duration) -> Duration {
    (ttl / 6).max(Duration::from_secs(1))
}

/// The longest wait between two attempts to reach a server while a session of `ttl` may be
/// resumed: a tenth of the TTL, at least 50 ms. Its locks are kept until the lease lapses, so
/// a server (or a cluster) back within it must be found in time, however often the attempts
/// failed before (the backoff alone grows to seconds when every endpoint refuses, as all do
/// while a whole cluster restarts).
pub(crate) fn retry_cap(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(50))
}

/// A wait between renewals is TTL/3 plus or minus TTL/3 divided by this, uniformly.
pub(crate) const JITTER_DIVISOR: u32 = 10;

/// The range each wait between two renewals of a lease of `ttl` is drawn from, uniformly:
/// TTL/3 plus or minus a tenth of that. Sessions that start together (every client of a
/// restarted server) so drift apart instead of renewing together for as long as they live.
pub fn renewal_wait_range(ttl: Duration) -> RangeInclusive<Duration> {
    let third = ttl / 3;
    let jitter = third / JITTER_DIVISOR;
    third - jitter..=third + jitter
}

/// The renewal state of one session.
#[derive(Debug)]
pub(crate) struct Renewal {
    ttl: Duration,
    margin: Duration,
    /// Draws the waits between renewals (see the module docs).
    rng: StdRng,
    /// When the next renewal is due.
    renew_at: Instant,
    /// When the oldest renewal not answered yet on this connection was sent.
    unanswered_since: Option<Instant>,
    /// Highest event sequence number received.
    last_seq: u64,
    /// Highest sequence number acknowledged to the server.
    acked_seq: u64,
    /// The local lease, shared with the session's guards so that they can judge it
    /// themselves.
    lease: Arc<Lease>,
}

impl Renewal {
    /// A session opened by a `Hello` sent at `sent_at` and welcomed at `now`; `seed` seeds
    /// the waits between its renewals.
    pub(crate) fn new(
        ttl: Duration,
        margin: Duration,
        sent_at: Instant,
        now: Instant,
        seed: u64,
    ) -> Self {
        let mut r = Renewal {
            ttl,
            margin,
            rng: StdRng::seed_from_u64(seed),
            renew_at: now,
            unanswered_since: None,
            last_seq: 0,
            acked_seq: 0,
            lease: Arc::new(Lease::new(sent_at + ttl - margin)),
        };
        r.renew_at = now + r.next_wait();
        r
    }

    /// The wait before the next renewal: uniformly random in [`renewal_wait_range`].
    fn next_wait(&mut self) -> Duration {
        let range = renewal_wait_range(self.ttl);
        let micros = u64::try_from((*range.end() - *range.start()).as_micros()).unwrap_or(u64::MAX);
        *range.start() + Duration::from_micros(self.rng.random_range(0..=micros))
    }

    /// The local lease.
    pub(crate) fn lease(&self) -> &Arc<Lease> {
        &self.lease
    }

    /// The highest event sequence number received.
    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Records an event's sequence number; `false` for one already seen (a replay after a
    /// resume), which is to be dropped.
    pub(crate) fn observe(&mut self, seq: u64) -> bool {
        if seq <= self.last_seq {
            return false;
        }
        self.last_seq = seq;
        true
    }

    /// When the next renewal is due.
    pub(crate) fn renew_at(&self) -> Instant {
        self.renew_at
    }

    /// Starts a renewal at `now`: schedules the next one and returns the sequence number to
    /// acknowledge with it, if [`ACK_WITH_RENEWAL`] events wait for an acknowledgement.
    pub(crate) fn renew(&mut self, now: Instant) -> Option<u64> {
        self.renew_at = now + self.next_wait();
        self.unanswered_since.get_or_insert(now);
        if self.last_seq < self.acked_seq + ACK_WITH_RENEWAL {
            return None;
        }
        self.acked_seq = self.last_seq;
        Some(self.last_seq)
    }

    /// A resume was accepted: the server let go of every event up to the last one received
    /// (the resume named it, and none arrives between the resume and its acceptance), as an
    /// `Ack` would have.
    pub(crate) fn resumed(&mut self) {
        self.acked_seq = self.last_seq;
    }

    /// The sequence number to acknowledge now, if many events went unacknowledged.
    pub(crate) fn ack_due(&mut self) -> Option<u64> {
        if self.last_seq >= self.acked_seq + ACK_EVERY {
            self.acked_seq = self.last_seq;
            return Some(self.last_seq);
        }
        None
    }

    /// The server renewed the lease after `sent` (a confirmed renewal, or an accepted
    /// resume). A confirmation that arrives after the local lease has lapsed extends
    /// nothing: the lapse stands.
    pub(crate) fn confirm(&mut self, sent: Instant, now: Instant) {
        self.unanswered_since = None;
        self.lease.extend(now, sent + self.ttl - self.margin);
    }

    /// The connection is gone: its unanswered renewals are not held against the next one.
    pub(crate) fn connection_ended(&mut self) {
        self.unanswered_since = None;
    }

    /// The longest wait between two attempts to reach a server while this session may be
    /// resumed ([`retry_cap`] of this TTL).
    pub(crate) fn retry_cap(&self) -> Duration {
        retry_cap(self.ttl)
    }

    /// How long a renewal may go unanswered ([`answer_timeout`] of this TTL).
    pub(crate) fn answer_timeout(&self) -> Duration {
        answer_timeout(self.ttl)
    }

    /// When the connection counts as dead unless a renewal is answered before (see
    /// [`answer_timeout`]).
    pub(crate) fn answer_due(&self) -> Option<Instant> {
        self.unanswered_since
            .map(|sent| sent + self.answer_timeout())
    }

    /// The local lease deadline.
    pub(crate) fn lapse_at(&self) -> Instant {
        self.lease.deadline()
    }

    /// Whether the local lease has lapsed at `now` (latched: the guards agree).
    pub(crate) fn lapsed(&self, now: Instant) -> bool {
        self.lease.lapsed_at(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_margin_defaults_to_a_tenth_of_the_ttl_with_bounds() {
        assert_eq!(margin(None, S * 3), S * 3 / 10);
        assert_eq!(margin(None, S / 2), Duration::from_millis(100));
        assert_eq!(margin(Some(S * 10), S * 4), S * 2);
        assert_eq!(margin(Some(S / 4), S * 4), S / 4);
    }

    /// Whether `at` is a third of a 3 s TTL after `from`, give or take its jitter.
    fn about_a_third_after(at: Instant, from: Instant) -> bool {
        at >= from && renewal_wait_range(S * 3).contains(&(at - from))
    }

    #[test]
    fn renewals_come_about_every_third_of_the_ttl_and_acknowledge_what_was_seen() {
        let t0 = Instant::now();
        let mut r = Renewal::new(S * 3, S / 3, t0, t0, 7);
        assert!(about_a_third_after(r.renew_at(), t0));
        assert!(r.observe(1) && r.observe(2));
        assert!(!r.observe(2), "a replayed event is dropped");
        // Fewer than ACK_WITH_RENEWAL events wait: the renewal goes alone.
        assert_eq!(r.renew(t0 + S), None);
        assert!(about_a_third_after(r.renew_at(), t0 + S));
        for seq in 3..ACK_WITH_RENEWAL {
            assert!(r.observe(seq));
        }
        assert_eq!(r.renew(t0 + S * 2), None);
        assert!(r.observe(ACK_WITH_RENEWAL));
        assert_eq!(r.renew(t0 + S * 3), Some(ACK_WITH_RENEWAL));
        assert_eq!(r.renew(t0 + S * 4), None, "nothing new to acknowledge");
        // Many events: acknowledged without waiting for a renewal.
        let base = ACK_WITH_RENEWAL;
        for seq in (base + 1)..(base + ACK_EVERY) {
            assert!(r.observe(seq));
            assert_eq!(r.ack_due(), None);
        }
        assert!(r.observe(base + ACK_EVERY));
        assert_eq!(r.ack_due(), Some(base + ACK_EVERY));
        assert_eq!(r.ack_due(), None);
        // A resume acknowledges what it names: the next renewal has nothing to add.
        let resumed_at = base + ACK_EVERY + 2;
        assert!(r.observe(resumed_at - 1) && r.observe(resumed_at));
        r.resumed();
        for seq in 1..ACK_WITH_RENEWAL {
            assert!(r.observe(resumed_at + seq));
        }
        assert_eq!(r.renew(t0 + S * 5), None);
        assert!(r.observe(resumed_at + ACK_WITH_RENEWAL));
        assert_eq!(r.renew(t0 + S * 6), Some(resumed_at + ACK_WITH_RENEWAL));
    }

    #[test]
    fn the_lease_runs_from_the_last_confirmed_send() {
        let t0 = Instant::now();
        let mut r = Renewal::new(S * 3, S / 3, t0, t0 + S / 10, 7);
        assert_eq!(r.lapse_at(), t0 + S * 3 - S / 3);
        r.confirm(t0 + S, t0 + S * 2);
        assert_eq!(r.lapse_at(), t0 + S * 4 - S / 3);
        assert!(!r.lapsed(t0 + S * 3));
        // Late: lapsed, and a confirmation after that revives nothing.
        assert!(r.lapsed(t0 + S * 4));
        r.confirm(t0 + S * 4, t0 + S * 4);
        assert!(r.lapsed(t0));
    }

    #[test]
    fn an_unanswered_renewal_is_due_an_answer_a_sixth_of_the_ttl_later() {
        assert_eq!(answer_timeout(S * 12), S * 2);
        assert_eq!(answer_timeout(S * 3), S, "at least a second");
        let t0 = Instant::now();
        let mut r = Renewal::new(S * 12, S, t0, t0, 7);
        assert_eq!(r.answer_due(), None, "nothing asked yet");
        r.renew(t0 + S * 4);
        assert_eq!(r.answer_due(), Some(t0 + S * 6));
        // A second renewal before an answer: the first one's deadline stands.
        r.renew(t0 + S * 5);
        assert_eq!(r.answer_due(), Some(t0 + S * 6));
        r.confirm(t0 + S * 4, t0 + S * 5);
        assert_eq!(r.answer_due(), None);
        r.renew(t0 + S * 9);
        r.connection_ended();
        assert_eq!(r.answer_due(), None, "a new connection starts afresh");
    }

    #[test]
    fn waits_between_renewals_spread_over_a_fifth_of_the_third_around_it() {
        // Many renewals with a fixed seed: every wait lies within TTL/3 ± a tenth, both ends
        // of that range are reached, and the mean is TTL/3 (a wait of exactly TTL/3 would
        // fail the second; waits drawn only above or below it, the third).
        let t0 = Instant::now();
        let mut r = Renewal::new(S * 3, S / 3, t0, t0, 42);
        let range = renewal_wait_range(S * 3);
        let jitter = S / JITTER_DIVISOR;
        assert_eq!(range, S - jitter..=S + jitter);
        let (mut low, mut high, mut total) = (false, false, Duration::ZERO);
        let mut now = t0;
        const DRAWS: u32 = 2_000;
        for _ in 0..DRAWS {
            r.renew(now);
            let wait = r.renew_at() - now;
            assert!(range.contains(&wait), "{wait:?}");
            low |= wait < S - jitter / 2;
            high |= wait > S + jitter / 2;
            total += wait;
            now = r.renew_at();
        }
        assert!(low && high, "the waits reach both ends of the range");
        let mean = total / DRAWS;
        assert!(mean.abs_diff(S) < jitter / 10, "mean wait {mean:?}");
    }

    #[test]
    fn sessions_that_start_together_renew_apart() {
        // Two sessions welcomed at the same instant, seeded differently (as two clients are):
        // their renewals drift apart, period by period.
        let t0 = Instant::now();
        let mut a = Renewal::new(S * 3, S / 3, t0, t0, 1);
        let mut b = Renewal::new(S * 3, S / 3, t0, t0, 2);
        for _ in 0..20 {
            let (ta, tb) = (a.renew_at(), b.renew_at());
            a.renew(ta);
            b.renew(tb);
        }
        assert!(
            a.renew_at().max(b.renew_at()) - a.renew_at().min(b.renew_at()) > S / 100,
            "after 20 periods two sessions still renew within 10 ms of each other"
        );
    }
}
