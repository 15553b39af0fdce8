//! Admission control outside the engine: how many connections one client address may hold,
//! and how fast one connection, and all connections of one address together, may send
//! requests.
//!
//! Both are checked in the connection layer, before anything reaches the core task, so a
//! client over either limit costs the engine nothing: a connection over its address's share
//! is refused with `TooManyConnectionsFromPeer` and closed, and a request over its
//! connection's rate is answered `Overloaded` at once, by the connection itself.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::metrics::{NetMetrics, OpenConnection};
use crate::outbox::BytePool;

/// What an admitted connection holds while it lives: its place under the connection limit
/// and under its address's, and the pool its outbox draws on beyond its reserve.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// The place under `--max-connections`.
    pub(crate) _permit: OwnedSemaphorePermit,
    /// The place under `--max-connections-per-peer`.
    pub(crate) _slot: PeerSlot,
    /// The outboxes' shared pool.
    pub(crate) outbox_pool: Arc<BytePool>,
    /// The connection layer's counters.
    pub(crate) net: Arc<NetMetrics>,
    /// Counted as open while the connection lives.
    pub(crate) _open: OpenConnection,
}

/// Open connections per client address, shared by the accept loop and the connections.
#[derive(Debug, Default)]
pub(crate) struct PeerConnections {
    counts: Mutex<HashMap<IpAddr, PeerEntry>>,
}

/// One address's open connections and the request rate they share.
#[derive(Debug, Default)]
struct PeerEntry {
    count: usize,
    /// Made by the first connection that asks (see [`PeerSlot::shared_rate`]); lives as
    /// long as the address has a connection.
    rate: Option<SharedRate>,
}

/// A token bucket shared by every connection of one client address.
pub(crate) type SharedRate = Arc<Mutex<RateLimit>>;

/// One connection counted against its address; dropping it gives the place back.
#[derive(Debug)]
pub(crate) struct PeerSlot {
    table: Arc<PeerConnections>,
    ip: IpAddr,
}

impl PeerConnections {
    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, PeerEntry>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for one more connection from `ip`, or `None` if it already holds `limit`.
    pub(crate) fn try_acquire(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<PeerSlot> {
        let mut counts = self.counts();
        let entry = counts.entry(ip).or_default();
        if entry.count >= limit {
            return None;
        }
        entry.count += 1;
        Some(PeerSlot {
            table: self.clone(),
            ip,
        })
    }

    /// Connections currently counted for `ip`.
    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        self.counts().get(&ip).map_or(0, |e| e.count)
    }
}

impl PeerSlot {
    /// The request rate all connections of this address share: `rate` requests per second
    /// (bursts of a tenth of that), made by the first connection that asks.
    pub(crate) fn shared_rate(&self, rate: u64) -> SharedRate {
        let mut counts = self.table.counts();
        let entry = counts.entry(self.ip).or_default();
        entry
            .rate
            .get_or_insert_with(|| Arc::new(Mutex::new(RateLimit::new(rate, Instant::now()))))
            .clone()
    }
}

/// Takes one token from an address's shared bucket; `false` if the address is over its rate.
pub(crate) fn admit_shared(rate: &SharedRate, now: Instant) -> bool {
    rate.lock().unwrap_or_else(|p| p.into_inner()).admit(|| now)
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self.table.counts();
        if let Some(entry) = counts.get_mut(&self.ip) {
            entry.count -= 1;
            let count = entry.count;
            if count == 0 {
                // An address with no connection takes no memory.
                counts.remove(&self.ip);
            }
        }
    }
}

/// A token bucket: `rate` requests per second on average, bursts of up to `burst`.
///
/// The clock is read on every request under a limit (a vDSO call, a few nanoseconds), and
/// never without one. Reading it only when the bucket ran dry would credit the time the
/// bucket sat full as tokens too: a bucket left alone for a while, then emptied, would at once
/// pass a second burst, up to twice the burst in all.
#[derive(Debug)]
pub(crate) struct RateLimit {
    /// Requests per second; 0 means no limit.
    rate: u64,
    burst: u64,
    tokens: u64,
    /// Time up to which tokens have been credited; a full bucket earns nothing, so while it
    /// is full this is kept at the present.
    credited: Instant,
}

impl RateLimit {
    /// A full bucket for `rate` requests per second (0: unlimited), refilled over a tenth of a
    /// second: bursts of up to `rate / 10` (at least one) pass at once.
    pub(crate) fn new(rate: u64, now: Instant) -> RateLimit {
        let burst = (rate / 10).max(1);
        RateLimit {
            rate,
            burst,
            tokens: burst,
            credited: now,
        }
    }

    /// Takes one token; `false` if the connection is over its rate. `now` is read only
    /// under a limit.
    pub(crate) fn admit(&mut self, now: impl FnOnce() -> Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let now = now();
        let elapsed = now.saturating_duration_since(self.credited);
        let earned = elapsed.as_nanos().saturating_mul(u128::from(self.rate)) / 1_000_000_000;
        let earned = u64::try_from(earned).unwrap_or(u64::MAX);
        if self.tokens.saturating_add(earned) >= self.burst {
            // Full: the time it stays full earns nothing.
            self.tokens = self.burst;
            self.credited = now;
        } else if earned > 0 {
            // Credit exactly the time the earned tokens stand for, so no fraction is lost.
            self.tokens += earned;
            let nanos = u128::from(earned) * 1_000_000_000 / u128::from(self.rate);
            self.credited += Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

impl crate::Config {
    /// What the replay buffers of one client address's sessions may hold together:
    /// `--max-replay-bytes-per-peer`, or a quarter of the replay pool, so that one address
    /// spreading unacknowledged events over many sessions fills at most a quarter of the pool
    /// and the pool's own rule (close the largest session) is left for several addresses.
    pub(crate) fn replay_bytes_per_peer(&self) -> usize {
        self.max_replay_bytes_per_peer
            .unwrap_or(self.replay_pool_bytes / 4)
    }
}

/// Which acknowledgements a connection passes on to its session. They are cumulative: one
/// not above the last passed on tells the session nothing, and one over the connection's
/// rate is dropped (a later one covers it, and the client acknowledges with its renewals).
/// So a flood of them costs the engine no more than the connection's rate of requests.
#[derive(Debug, Default)]
pub(crate) struct AckFilter {
    /// The highest acknowledgement passed on.
    acked: u64,
}

impl AckFilter {
    /// Whether to pass on an acknowledgement of `seq`; `admitted` is asked (and charged)
    /// only for one that would tell the session something.
    pub(crate) fn pass(&mut self, seq: u64, admitted: impl FnOnce() -> bool) -> bool {
        if seq <= self.acked || !admitted() {
            return false;
        }
        self.acked = seq;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_pass_once_each_and_only_within_the_rate() {
        let mut acks = AckFilter::default();
        let mut asked = 0;
        let mut ask = |ok: bool| {
            asked += 1;
            ok
        };
        assert!(acks.pass(5, || ask(true)));
        // Not above the last passed on: dropped without asking the rate.
        assert!(!acks.pass(5, || ask(true)));
        assert!(!acks.pass(3, || ask(true)));
        // Over the rate: dropped, and not remembered.
        assert!(!acks.pass(9, || ask(false)));
        assert!(acks.pass(7, || ask(true)));
        assert_eq!(acks.acked, 7);
        assert_eq!(asked, 3);
    }

    #[test]
    fn a_peer_holds_at_most_its_limit_and_dropped_slots_come_back() {
        let table = Arc::new(PeerConnections::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = table.try_acquire(a, 2).unwrap();
        let _second = table.try_acquire(a, 2).unwrap();
        assert!(table.try_acquire(a, 2).is_none(), "third from a");
        let _other = table
            .try_acquire(b, 2)
            .expect("another address has its own share");
        drop(first);
        assert_eq!(table.count(a), 1);
        assert!(table.try_acquire(a, 2).is_some());
    }

    #[test]
    fn the_connections_of_one_address_share_one_rate() {
        let table = Arc::new(PeerConnections::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let slots: Vec<PeerSlot> = (0..10)
            .map(|_| table.try_acquire(a, 100).unwrap())
            .collect();
        // 1,000 per second: a burst of 100 for the ten connections together, not each.
        let rates: Vec<SharedRate> = slots.iter().map(|s| s.shared_rate(1000)).collect();
        let passed = (0..50)
            .flat_map(|_| rates.iter())
            .filter(|r| admit_shared(r, Instant::now()))
            .count();
        assert!((100..=101).contains(&passed), "{passed} passed");
        // Another address has its own bucket.
        let other = table.try_acquire(b, 100).unwrap().shared_rate(1000);
        assert!(admit_shared(&other, Instant::now()));
        // Once every connection of the address is gone, a new one starts afresh.
        drop(rates);
        drop(slots);
        let again = table.try_acquire(a, 100).unwrap().shared_rate(1000);
        assert!(admit_shared(&again, Instant::now()));
    }

    #[test]
    fn the_last_slot_of_an_address_removes_its_entry() {
        let table = Arc::new(PeerConnections::default());
        let a: IpAddr = "::1".parse().unwrap();
        drop(table.try_acquire(a, 1).unwrap());
        assert!(table.counts().is_empty());
    }

    #[test]
    fn a_bucket_passes_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = RateLimit::new(1000, start); // burst 100
        let passed = (0..150).filter(|_| bucket.admit(|| start)).count();
        assert_eq!(passed, 100, "the burst, then nothing at the same instant");
        // 25 ms later: 25 more.
        let later = start + Duration::from_millis(25);
        let passed = (0..150).filter(|_| bucket.admit(|| later)).count();
        assert_eq!(passed, 25);
        // A long pause refills no more than the burst.
        let much_later = later + Duration::from_secs(60);
        let passed = (0..500).filter(|_| bucket.admit(|| much_later)).count();
        assert_eq!(passed, 100);
    }

    #[test]
    fn a_bucket_that_sat_full_passes_one_burst_not_two() {
        let start = Instant::now();
        let mut bucket = RateLimit::new(1000, start); // burst 100
        // Left alone for a minute, then flooded at one instant: one burst passes.
        let later = start + Duration::from_secs(60);
        let passed = (0..300).filter(|_| bucket.admit(|| later)).count();
        assert_eq!(passed, 100);
        // Partly used, then left alone: it refills to the burst, no further.
        let t = later + Duration::from_secs(1);
        let passed = (0..40).filter(|_| bucket.admit(|| t)).count();
        assert_eq!(passed, 40);
        let t = t + Duration::from_secs(60);
        let passed = (0..300).filter(|_| bucket.admit(|| t)).count();
        assert_eq!(passed, 100);
        // Over any window, at most a burst plus the rate times the window: in 50 ms of
        // requests one every millisecond after the burst, 50 more.
        let passed = (1..=50)
            .map(|ms| t + Duration::from_millis(ms))
            .filter(|&at| bucket.admit(|| at))
            .count();
        assert_eq!(passed, 50);
    }

    #[test]
    fn fractions_of_a_token_are_not_lost() {
        let start = Instant::now();
        let mut bucket = RateLimit::new(30, start); // burst 3, one token per 33.3 ms
        for _ in 0..3 {
            assert!(bucket.admit(|| start));
        }
        // Ten steps of 10 ms earn three tokens in all (at 33.3, 66.7, 100 ms).
        let mut passed = 0;
        for step in 1..=10 {
            let now = start + Duration::from_millis(10 * step);
            if bucket.admit(|| now) {
                passed += 1;
            }
        }
        assert_eq!(passed, 3);
    }

    #[test]
    fn rate_zero_is_unlimited_and_never_reads_the_clock() {
        let mut bucket = RateLimit::new(0, Instant::now());
        for _ in 0..10_000 {
            assert!(bucket.admit(|| unreachable!("no clock read without a limit")));
        }
    }
}
