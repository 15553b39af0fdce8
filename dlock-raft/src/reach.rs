//! Whether each peer answers, as this node's calls to it find: one warning when a peer stops
//! answering, one a minute while it stays silent, and a note when it answers again, instead
//! of a line for every heartbeat (20 a second) that openraft's own logs would give.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::types::NodeId;

/// How often a peer that stays silent is warned about again.
pub(crate) const SILENT_AGAIN: Duration = Duration::from_secs(60);

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
}

/// The peers that do not answer, by id (shared by every connection of a node), and how
/// many they are, read without the lock on every answered call.
#[derive(Debug, Default)]
pub(crate) struct Reach {
    silent: Mutex<BTreeMap<NodeId, Silence>>,
    count: AtomicUsize,
}

impl Reach {
    /// A call to `peer` failed at `now`.
    pub(crate) fn failed(&self, peer: NodeId, now: Instant) -> Said {
        let mut map = self.lock();
        match map.get_mut(&peer) {
            None => {
                map.insert(
                    peer,
                    Silence {
                        since: now,
                        said: now,
                        failures: 1,
                    },
                );
                self.count.store(map.len(), Ordering::Relaxed);
                Said::Silent
            }
            Some(s) => {
                s.failures += 1;
                if now.duration_since(s.said) >= SILENT_AGAIN {
                    s.said = now;
                    Said::StillSilent(now.duration_since(s.since), s.failures)
                } else {
                    Said::Nothing
                }
            }
        }
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
        assert_eq!(r.failed(2, at(10)), Said::Silent);
        // Heartbeats every 50 ms fail quietly for a minute.
        for ms in (60..60_010).step_by(50) {
            assert_eq!(r.failed(2, at(ms)), Said::Nothing, "at {ms} ms");
        }
        assert_eq!(r.count.load(Ordering::Relaxed), 1);
        assert_eq!(
            r.failed(2, at(60_010)),
            Said::StillSilent(Duration::from_secs(60), 1_201)
        );
        assert_eq!(
            r.failed(3, at(60_020)),
            Said::Silent,
            "each peer on its own"
        );
        assert_eq!(
            r.answered(2, at(61_010)),
            Said::Back(Duration::from_secs(61))
        );
        assert_eq!(r.answered(2, at(61_060)), Said::Nothing);
        assert_eq!(r.failed(2, at(61_070)), Said::Silent);
    }
}
