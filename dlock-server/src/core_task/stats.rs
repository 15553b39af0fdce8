//! What the core task counts for `/metrics` and remembers for the status page: engine
//! events by kind, requests by kind, rejections by reason, queue wait and request service
//! times, busy time, and the most recent deadlock cycles.
//!
//! Plain integers owned by the core task: counting costs an add, never a lock or an atomic;
//! `/metrics` gets a copy through the core's inbox (see `status`).

use std::collections::{BTreeMap, VecDeque};

use dlock_core::{Event, EventKind, Limit, LockId, Reject, RequestId, SessionId};
use dlock_proto::Request;
use dlock_proto::status::DeadlockCycle;

use crate::metrics::Hist;

/// Most deadlock cycles remembered for the status page.
pub(crate) const RECENT_CYCLES: usize = 16;

/// Counters of the core task, copied out for `/metrics`.
#[derive(Clone, Debug, Default)]
pub(crate) struct CoreStats {
    /// `Granted` events: new locks and conversions, at once or after queueing.
    pub(crate) grants: u64,
    /// `Unlocked` events.
    pub(crate) unlocks: u64,
    /// `Cancelled` events.
    pub(crate) cancels: u64,
    /// `TimedOut` events.
    pub(crate) timeouts: u64,
    /// `Deadlock` events: requests refused as deadlock victims.
    pub(crate) deadlocks: u64,
    /// `NotQueued` events: NOQUEUE requests that could not be granted at once.
    pub(crate) not_queued: u64,
    /// `SessionExpired` events: leases that ran out (or replay overflows).
    pub(crate) lease_expiries: u64,
    /// Sessions opened.
    pub(crate) sessions_opened: u64,
    /// Client requests by kind, in [`REQUEST_KINDS`] order.
    pub(crate) requests: [u64; REQUEST_KINDS.len()],
    /// Requests and `Hello`s refused by the core task, by reason label.
    pub(crate) rejected: BTreeMap<&'static str, u64>,
    /// From `Queued` to `Granted`, per queued request that was granted.
    pub(crate) queue_wait: Hist,
    /// From a request's arrival on its connection to the end of its handling by the core
    /// task (its reply, or its `Queued`, is on the way).
    pub(crate) service: Hist,
    /// Time the core task spent handling wake-ups, in nanoseconds.
    pub(crate) busy_ns: u64,
    /// Time the core task spent on each wake-up: handling what was ready, the due `Tick`,
    /// and delivering what it produced. Its largest bucket is how long the
    /// engine kept every other client waiting at once.
    pub(crate) wakeup: Hist,
    /// The busy time of the wake-up in progress, in nanoseconds (into [`wakeup`](Self::wakeup)
    /// at its end).
    pub(crate) wake_ns: u64,
}

/// The `kind` labels of client requests.
pub(crate) const REQUEST_KINDS: [&str; 8] = [
    "lock", "convert", "unlock", "cancel", "renew", "goodbye", "query", "ping",
];

/// What the core task counts and remembers.
#[derive(Debug, Default)]
pub(crate) struct Monitor {
    /// The counters.
    pub(crate) stats: CoreStats,
    /// Deadlock victims seen by routing and not yet traced: session, request, lock.
    pub(crate) victims: Vec<(SessionId, Option<RequestId>, Option<LockId>)>,
    /// The most recent deadlock cycles, oldest first.
    pub(crate) cycles: VecDeque<DeadlockCycle>,
}

impl Monitor {
    /// Counts a client request.
    pub(crate) fn request(&mut self, body: &Request) {
        let i = match body {
            Request::Lock(_) => 0,
            Request::Convert(_) => 1,
            Request::Unlock(_) => 2,
            Request::Cancel { .. } => 3,
            Request::Renew => 4,
            Request::Goodbye => 5,
            Request::Query(_) => 6,
            Request::Ping => 7,
        };
        self.stats.requests[i] += 1;
    }

    /// Counts a refusal with reason `label`.
    pub(crate) fn rejected(&mut self, label: &'static str) {
        *self.stats.rejected.entry(label).or_default() += 1;
    }

    /// Counts an engine event on its way to its session.
    pub(crate) fn event(&mut self, event: &Event) {
        let s = &mut self.stats;
        match &event.kind {
            EventKind::Granted { .. } => s.grants += 1,
            EventKind::Unlocked => s.unlocks += 1,
            EventKind::Cancelled => s.cancels += 1,
            EventKind::TimedOut => s.timeouts += 1,
            EventKind::NotQueued => s.not_queued += 1,
            EventKind::SessionExpired => s.lease_expiries += 1,
            EventKind::Deadlock => {
                s.deadlocks += 1;
                self.victims
                    .push((event.session, event.request, event.lock));
            }
            EventKind::Rejected { reason } => self.rejected(reject_label(reason)),
            _ => {}
        }
    }

    /// Remembers a deadlock cycle, forgetting the oldest beyond [`RECENT_CYCLES`].
    pub(crate) fn cycle(&mut self, cycle: DeadlockCycle) {
        if self.cycles.len() == RECENT_CYCLES {
            self.cycles.pop_front();
        }
        self.cycles.push_back(cycle);
    }
}

/// Every `reason` label the core task counts (see [`Monitor::rejected`]): its own refusals,
/// then the engine's ([`reject_label`]). `/metrics` shows each, at 0 until it first
/// happens, so that an alert on one does not wait for a series to appear.
pub(crate) const CORE_REJECT_LABELS: [&str; 18] = [
    "overloaded",
    "storage_unavailable",
    "too_many_sessions_from_peer",
    "permission_denied",
    "grace_queue_full",
    "duplicate_request_id",
    "unknown_session",
    "invalid",
    "not_found",
    "busy",
    "not_pending",
    "limit_sessions",
    "limit_resources",
    "limit_locks_per_session",
    "limit_waiters_per_resource",
    "limit_locks",
    "limit_locks_per_peer",
    "other",
];

/// The `reason` label of an engine rejection.
pub(crate) fn reject_label(reason: &Reject) -> &'static str {
    match reason {
        Reject::Invalid(_) => "invalid",
        Reject::NotFound => "not_found",
        Reject::Busy => "busy",
        Reject::NotPending => "not_pending",
        Reject::UnknownSession => "unknown_session",
        Reject::LimitExceeded(Limit::Sessions) => "limit_sessions",
        Reject::LimitExceeded(Limit::Resources) => "limit_resources",
        Reject::LimitExceeded(Limit::LocksPerSession) => "limit_locks_per_session",
        Reject::LimitExceeded(Limit::WaitersPerResource) => "limit_waiters_per_resource",
        Reject::LimitExceeded(Limit::Locks) => "limit_locks",
        Reject::LimitExceeded(Limit::LocksPerPeer) => "limit_locks_per_peer",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlock_core::{FencingToken, Mode};

    fn ev(kind: EventKind) -> Event {
        Event {
            session: SessionId(3),
            request: Some(RequestId(9)),
            lock: Some(LockId(4)),
            kind,
        }
    }

    #[test]
    fn every_engine_rejection_has_a_label_shown_before_it_happens() {
        let reasons = [
            Reject::Invalid(dlock_core::Invalid::EmptyName),
            Reject::NotFound,
            Reject::Busy,
            Reject::NotPending,
            Reject::UnknownSession,
            Reject::LimitExceeded(Limit::Sessions),
            Reject::LimitExceeded(Limit::Resources),
            Reject::LimitExceeded(Limit::LocksPerSession),
            Reject::LimitExceeded(Limit::WaitersPerResource),
            Reject::LimitExceeded(Limit::Locks),
            Reject::LimitExceeded(Limit::LocksPerPeer),
        ];
        for reason in &reasons {
            assert!(
                CORE_REJECT_LABELS.contains(&reject_label(reason)),
                "{reason:?}"
            );
        }
        let mut labels = CORE_REJECT_LABELS.to_vec();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), CORE_REJECT_LABELS.len(), "a label twice");
    }

    #[test]
    fn events_are_counted_by_kind_and_victims_kept() {
        let mut m = Monitor::default();
        let granted = EventKind::Granted {
            mode: Mode::EX,
            token: FencingToken(1),
            value: None,
            value_valid: true,
        };
        for kind in [
            granted.clone(),
            granted,
            EventKind::Unlocked,
            EventKind::Cancelled,
            EventKind::TimedOut,
            EventKind::NotQueued,
            EventKind::SessionExpired,
            EventKind::Deadlock,
            EventKind::Queued,
            EventKind::Rejected {
                reason: Reject::LimitExceeded(Limit::Locks),
            },
            EventKind::Rejected {
                reason: Reject::Busy,
            },
        ] {
            m.event(&ev(kind));
        }
        let s = &m.stats;
        assert_eq!(
            (s.grants, s.unlocks, s.cancels, s.timeouts, s.not_queued),
            (2, 1, 1, 1, 1)
        );
        assert_eq!((s.lease_expiries, s.deadlocks), (1, 1));
        assert_eq!(s.rejected.get("limit_locks"), Some(&1));
        assert_eq!(s.rejected.get("busy"), Some(&1));
        assert_eq!(
            m.victims,
            vec![(SessionId(3), Some(RequestId(9)), Some(LockId(4)))]
        );
    }

    #[test]
    fn only_the_most_recent_cycles_are_kept() {
        let mut m = Monitor::default();
        for i in 0..RECENT_CYCLES as u64 + 3 {
            m.cycle(DeadlockCycle {
                at_ms: i,
                victim: i,
                resource: None,
                mode: None,
                sessions: vec![i],
            });
        }
        assert_eq!(m.cycles.len(), RECENT_CYCLES);
        assert_eq!(m.cycles.front().map(|c| c.at_ms), Some(3));
    }
}
