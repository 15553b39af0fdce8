//! Whether each peer answers, as this node's calls to it find: one warning when a peer stops
//! answering, one a minute while it stays silent, and a note when it answers again, instead
//! of a line for every heartbeat (20 a second) that openraft's own logs would give.
//!
//! It also spaces out new connections to a peer whose connections fail to open other than by
//! a refusal of the TCP connect (which costs neither side anything): not accepted in time, or
//! accepted and never greeted (a stopped process, whose kernel still completes TCP handshakes
//! and queues them), or refused at the greeting. Every heartbeat and append would otherwise open
//! one, about 20 a second, each left in the stopped peer's accept queue for it to find when
//! it runs again. After such a failure the next connection waits [`RECONNECT_GAP_MIN`],
//! doubling with each failure in a row up to [`RECONNECT_GAP_MAX`]; calls meanwhile fail at
//! once, as unreachable (openraft backs off from those).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::types::NodeId;

/// How often a peer that stays silent is warned about again.
pub(crate) const SILENT_AGAIN: Duration = Duration::from_secs(60);

/// The wait before a new connection to a peer after one failed to open.
pub(crate) const RECONNECT_GAP_MIN: Duration = Duration::from_millis(50);

/// The longest wait between new connections to a peer whose connections fail to open: how
/// late, at most, a member that runs again is found (a restarted one takes longer to start).
pub(crate) const RECONNECT_GAP_MAX: Duration = Duration::from_millis(500);

/// What a call's outcome calls for in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Said {
    /// Nothing new.
    Nothing,
    /// The peer stopped answering (the first failure after an answer, or ever).
    Silent,
    /// Still silent, for this long and this many failed calls since it stopped.
    StillSilent(Duration, u64),
    /// It answers again after being silent this long.
    Back(Duration),
}

#[derive(Debug)]
struct Silence {
    since: Instant,
    said: Instant,
    failures: u64,
    /// The wait after the last connection that failed to open (zero: none did).
    gap: Duration,
    /// No new connection before this.
    connect_at: Instant,
}

/// The peers that do not answer, by id (shared by every connection of a node), and how
/// many they are, read without the lock on every answered call.
#[derive(Debug, Default)]
pub(crate) struct Reach {
    silent: Mutex<BTreeMap<NodeId, Silence>>,
    count: AtomicUsize,
}

impl Reach {
    /// A call to `peer` failed at `now`; `hold`: its connection failed to open, so the next
    /// one waits (see the module docs).
    pub(crate) fn failed(&self, peer: NodeId, now: Instant, hold: bool) -> Said {
        let mut map = self.lock();
        let (said, s) = match map.get_mut(&peer) {
            None => {
                let s = map.entry(peer).or_insert(Silence {
                    since: now,
                    said: now,
                    failures: 1,
                    gap: Duration::ZERO,
                    connect_at: now,
                });
                (Said::Silent, s)
            }
            Some(s) => {
                s.failures += 1;
                if now.duration_since(s.said) >= SILENT_AGAIN {
                    s.said = now;
                    (
                        Said::StillSilent(now.duration_since(s.since), s.failures),
                        s,
                    )
                } else {
                    (Said::Nothing, s)
                }
            }
        };
        if hold {
            s.gap = (s.gap * 2).clamp(RECONNECT_GAP_MIN, RECONNECT_GAP_MAX);
            s.connect_at = now + s.gap;
        }
        self.count.store(map.len(), Ordering::Relaxed);
        said
    }

    /// Whether a new connection to `peer` may be opened at `now`. Takes no lock while every
    /// peer answers.
    pub(crate) fn may_connect(&self, peer: NodeId, now: Instant) -> bool {
        if self.count.load(Ordering::Relaxed) == 0 {
            return true;
        }
        self.lock().get(&peer).is_none_or(|s| now >= s.connect_at)
    }

    /// A call to `peer` was answered at `now`. Takes no lock while every peer answers (the
    /// path of every append and heartbeat).
    pub(crate) fn answered(&self, peer: NodeId, now: Instant) -> Said {
        if self.count.load(Ordering::Relaxed) == 0 {
            return Said::Nothing;
        }
        let mut map = self.lock();
        let back = map.remove(&peer);
        self.count.store(map.len(), Ordering::Relaxed);
        back.map_or(Said::Nothing, |s| Said::Back(now.duration_since(s.since)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, Silence>> {
        self.silent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_peer_is_said_once_then_once_a_minute_then_back() {
        let r = Reach::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(r.answered(2, at(0)), Said::Nothing);
        assert_eq!(r.failed(2, at(10), false), Said::Silent);
        // Heartbeats every 50 ms fail quietly for a minute.
        for ms in (60..60_010).step_by(50) {
            assert_eq!(r.failed(2, at(ms), false), Said::Nothing, "at {ms} ms");
        }
        assert_eq!(r.count.load(Ordering::Relaxed), 1);
        assert_eq!(
            r.failed(2, at(60_010), false),
            Said::StillSilent(Duration::from_secs(60), 1_201)
        );
        assert_eq!(
            r.failed(3, at(60_020), false),
            Said::Silent,
            "each peer on its own"
        );
        assert_eq!(
            r.answered(2, at(61_010)),
            Said::Back(Duration::from_secs(61))
        );
        assert_eq!(r.answered(2, at(61_060)), Said::Nothing);
        assert_eq!(r.failed(2, at(61_070), false), Said::Silent);
    }

    #[test]
    fn connections_that_fail_to_open_are_spaced_out_doubling_to_a_cap() {
        let r = Reach::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(r.may_connect(2, at(0)));
        // A call on an open connection that fails does not hold new ones back.
        r.failed(2, at(0), false);
        assert!(r.may_connect(2, at(0)));
        // Each connection that fails to open doubles the wait before the next, up to the cap.
        let mut t = 0;
        let mut gaps = Vec::new();
        for _ in 0..6 {
            r.failed(2, at(t), true);
            let gap = (t..t + 1_000).find(|&ms| r.may_connect(2, at(ms))).unwrap() - t;
            gaps.push(gap);
            t += gap;
        }
        assert_eq!(gaps, [50, 100, 200, 400, 500, 500]);
        assert!(r.may_connect(3, at(t)), "each peer on its own");
        // An answer ends it.
        r.failed(2, at(t), true);
        assert!(!r.may_connect(2, at(t)));
        r.answered(2, at(t));
        assert!(r.may_connect(2, at(t)));
        r.failed(2, at(t), true);
        assert!(r.may_connect(2, at(t + 50)), "the wait starts over");
    }
}
