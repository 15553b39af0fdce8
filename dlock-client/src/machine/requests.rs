//! The outstanding-request table.
//!
//! Request ids increase within a session. Every request stays outstanding until its final
//! answer arrives, and after a resume all outstanding requests are re-sent in id order; the
//! server does not apply a request twice and replays the events the client missed.

use std::collections::VecDeque;

use dlock_core::{LockId, RequestId};
use tokio::time::Instant;

use crate::op::{Call, Key, What};

/// Room for this many requests is kept however few are outstanding (beyond it, the tables
/// shrink once they are an eighth full).
const SHRINK_ABOVE: usize = 1024;

/// A request waiting for its final answer.
pub(crate) struct Outstanding {
    pub(crate) call: Call,
    /// The lock the request is about, once known (a new lock's id comes with its first
    /// answer).
    pub(crate) lock: Option<LockId>,
    /// When it was first sent (a retransmission is not applied again, so only the first
    /// send can have renewed the lease).
    pub(crate) first_sent: Option<Instant>,
    /// Until when the caller waits for a first answer.
    deadline: Option<Instant>,
    /// A lock request whose caller stopped waiting before its outcome was known (see
    /// [`Requests::give_up`]).
    given_up: bool,
}

/// Every outstanding request, by id, with the deadlines and keys that find them.
///
/// Nothing here allocates per request once the tables have grown to the number of requests
/// outstanding at once: a tree map and set, empty between one request and the next, would
/// allocate and free a node for every request, and that showed in the per-request profile.
/// (foldhash: ids and keys come from this client's own calls, so SipHash's resistance to
/// chosen keys buys nothing here.)
#[derive(Default)]
pub(crate) struct Requests {
    next_id: u64,
    table: foldhash::HashMap<RequestId, Outstanding>,
    deadlines: Deadlines,
    /// Key of a lock or convert call → its request id, for `Abandon`.
    keys: foldhash::HashMap<Key, RequestId>,
    /// Resources with lock requests given up before their outcome was known, and how many.
    given_up: foldhash::HashMap<Vec<u8>, usize>,
    /// Lock calls held back until their resource has no such request (see
    /// [`must_wait`](Self::must_wait)), in the order they came; they get their ids when they
    /// go.
    held: VecDeque<Call>,
}

impl Requests {
    /// A fresh request id (also for frames that are not kept, like a parting `Goodbye`).
    pub(crate) fn alloc_id(&mut self) -> RequestId {
        self.next_id += 1;
        RequestId(self.next_id)
    }

    /// Registers a request; returns its id.
    pub(crate) fn insert(&mut self, call: Call, deadline: Option<Instant>) -> RequestId {
        let id = self.alloc_id();
        if let Some(d) = deadline {
            self.deadlines.push(d, id);
        }
        if let Some(key) = call.key() {
            self.keys.insert(key, id);
        }
        let lock = match &call.what {
            What::Convert { req, .. } => Some(req.lock),
            What::Unlock { req, .. } => Some(req.lock),
            What::Cancel { lock, .. } => Some(*lock),
            _ => None,
        };
        self.table.insert(
            id,
            Outstanding {
                call,
                lock,
                first_sent: None,
                deadline,
                given_up: false,
            },
        );
        id
    }

    pub(crate) fn get_mut(&mut self, id: RequestId) -> Option<&mut Outstanding> {
        self.table.get_mut(&id)
    }

    /// Removes a request that got its final answer.
    pub(crate) fn remove(&mut self, id: RequestId) -> Option<Outstanding> {
        let o = self.table.remove(&id)?;
        if o.deadline.is_some() {
            self.deadlines.forget(&self.table);
        }
        if let Some(key) = o.call.key() {
            self.keys.remove(&key);
        }
        if o.given_up
            && let What::Lock { req, .. } = &o.call.what
            && let Some(n) = self.given_up.get_mut(&req.resource)
        {
            *n -= 1;
            if *n == 0 {
                self.given_up.remove(&req.resource);
            }
        }
        // A hash map keeps its room: give back most of what a burst grew it to.
        if self.table.capacity() > SHRINK_ABOVE && self.table.len() < self.table.capacity() / 8 {
            self.table.shrink_to(self.table.len() * 2);
            self.keys.shrink_to(self.keys.len() * 2);
            self.deadlines
                .queue
                .shrink_to(self.deadlines.queue.len() * 2);
        }
        Some(o)
    }

    /// The caller of lock request `id`, which was sent, stopped waiting for it (dropped its
    /// future, or timed out) before its outcome was known. Until that outcome comes (and the
    /// lock, if granted after all, is released), a new lock request on the resource from
    /// this session would be judged by the server against it: as a deadlock with itself
    /// (R39) or, with NOQUEUE, as not grantable. So new lock calls on the resource wait
    /// ([`must_wait`](Self::must_wait)).
    pub(crate) fn give_up(&mut self, id: RequestId) {
        if let Some(o) = self.table.get_mut(&id)
            && !o.given_up
            && let What::Lock { req, .. } = &o.call.what
        {
            o.given_up = true;
            *self.given_up.entry(req.resource.clone()).or_default() += 1;
        }
    }

    /// Whether `call` must wait before it is sent: a lock call on a resource with a request
    /// given up, or with a call already waiting (calls on one resource keep their order).
    pub(crate) fn must_wait(&self, call: &Call) -> bool {
        if self.given_up.is_empty() && self.held.is_empty() {
            // As good as always: nothing given up, nothing to hash.
            return false;
        }
        let What::Lock { req, .. } = &call.what else {
            return false;
        };
        self.given_up.contains_key(&req.resource)
            || self.held.iter().any(|h| same_resource(h, &req.resource))
    }

    /// Holds `call` back (see [`must_wait`](Self::must_wait)).
    pub(crate) fn hold(&mut self, call: Call) {
        self.held.push_back(call);
    }

    /// The held call of `key`, taken out (its caller gave up before it was sent).
    pub(crate) fn unhold(&mut self, key: Key) -> Option<Call> {
        let at = self.held.iter().position(|c| c.key() == Some(key))?;
        self.held.remove(at)
    }

    /// The held calls whose resources no longer have a request given up, in their order.
    pub(crate) fn release_held(&mut self) -> Vec<Call> {
        if self.held.is_empty() {
            return Vec::new();
        }
        let (ready, wait): (VecDeque<Call>, VecDeque<Call>) =
            self.held.drain(..).partition(|c| match &c.what {
                What::Lock { req, .. } => !self.given_up.contains_key(&req.resource),
                _ => true,
            });
        self.held = wait;
        ready.into()
    }

    /// Every held call, taken out.
    pub(crate) fn take_held(&mut self) -> Vec<Call> {
        self.held.drain(..).collect()
    }

    /// The request of a lock or convert call, forgetting the key.
    pub(crate) fn take_key(&mut self, key: Key) -> Option<RequestId> {
        self.keys.remove(&key)
    }

    /// The request got a first answer: the caller's request timeout no longer applies.
    pub(crate) fn clear_deadline(&mut self, id: RequestId) {
        if self
            .table
            .get_mut(&id)
            .and_then(|o| o.deadline.take())
            .is_some()
        {
            self.deadlines.forget(&self.table);
        }
    }

    /// The earliest request deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first()
    }

    /// Removes and returns the id of one request whose deadline is at or before `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<RequestId> {
        let (t, id) = self.deadlines.queue.front().copied()?;
        if t > now {
            return None;
        }
        if let Some(o) = self.table.get_mut(&id) {
            o.deadline = None;
        }
        self.deadlines.forget(&self.table);
        Some(id)
    }

    /// Every outstanding id, in order (for sending them all).
    pub(crate) fn ids(&self) -> Vec<RequestId> {
        let mut ids: Vec<RequestId> = self.table.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// The first cancel of `lock` at or after `from`: the one a successful cancel of the
    /// request `from` answers (the server applies requests in id order, so later cancels of
    /// the lock find nothing pending and are answered with their own ids).
    pub(crate) fn first_cancel_of(&self, lock: LockId, from: RequestId) -> Option<RequestId> {
        self.table
            .iter()
            .filter(|(id, o)| {
                **id >= from && matches!(o.call.what, What::Cancel { lock: l, .. } if l == lock)
            })
            .map(|(id, _)| *id)
            .min()
    }

    /// Removes every request but those `keep` picks, which stay outstanding under new ids
    /// (in their order, with their deadlines) for the next session; returns the removed
    /// ones in id order. Only a request never sent can be kept: it is registered afresh.
    pub(crate) fn drain_except(&mut self, keep: impl Fn(&Outstanding) -> bool) -> Vec<Outstanding> {
        let mut gone = Vec::new();
        for o in self.drain() {
            if keep(&o) && o.first_sent.is_none() {
                self.insert(o.call, o.deadline);
            } else {
                gone.push(o);
            }
        }
        gone
    }

    /// Removes every request (the session is gone); held calls stay held, and no request is
    /// given up any more.
    pub(crate) fn drain(&mut self) -> Vec<Outstanding> {
        self.deadlines = Deadlines::default();
        self.keys.clear();
        self.given_up.clear();
        let mut all: Vec<(RequestId, Outstanding)> = self.table.drain().collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        all.into_iter().map(|(_, o)| o).collect()
    }
}

/// Whether `call` is a lock call on `resource`.
fn same_resource(call: &Call, resource: &[u8]) -> bool {
    matches!(&call.what, What::Lock { req, .. } if req.resource == resource)
}

/// The request deadlines, earliest first: `(deadline, id)` in a queue that is only pushed
/// at the back (a request's deadline is its send time plus the one request timeout, so they
/// come in order; one that does not is put in its place).
///
/// A removed request's or a cleared deadline's entry is not searched for: it is left where
/// it is and dropped when it reaches the front. The front is always live (every change that
/// can make it stale ends with [`forget`](Deadlines::forget)), so the first deadline is the
/// front's. Stale entries behind a live front are swept out when they outnumber the live
/// ones, which keeps the queue within twice the deadlines outstanding (plus a few).
#[derive(Default)]
struct Deadlines {
    queue: VecDeque<(Instant, RequestId)>,
    /// How many entries are live (their request is outstanding with that deadline).
    live: usize,
}

impl Deadlines {
    /// Stale entries tolerated before a sweep, whatever the live count.
    const SLACK: usize = 32;

    fn push(&mut self, at: Instant, id: RequestId) {
        self.live += 1;
        match self.queue.back() {
            Some(&(last, _)) if at < last => {
                let place = self.queue.partition_point(|&(t, _)| t <= at);
                self.queue.insert(place, (at, id));
            }
            _ => self.queue.push_back((at, id)),
        }
    }

    fn first(&self) -> Option<Instant> {
        self.queue.front().map(|&(t, _)| t)
    }

    /// One deadline is no longer live (its request was removed or its deadline cleared, in
    /// `table` already): drops the stale entries at the front, and sweeps if they pile up.
    fn forget(&mut self, table: &foldhash::HashMap<RequestId, Outstanding>) {
        self.live = self.live.saturating_sub(1);
        let is_live =
            |&(t, id): &(Instant, RequestId)| table.get(&id).is_some_and(|o| o.deadline == Some(t));
        while self.queue.front().is_some_and(|e| !is_live(e)) {
            self.queue.pop_front();
        }
        if self.queue.len() > 2 * self.live + Self::SLACK {
            self.queue.retain(is_live);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ping() -> Call {
        Call::silent(What::Ping)
    }

    #[test]
    fn deadlines_come_out_in_order_whatever_was_removed_or_cleared() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut r = Requests::default();
        let a = r.insert(ping(), Some(at(10)));
        let b = r.insert(ping(), Some(at(20)));
        let c = r.insert(ping(), None);
        let d = r.insert(ping(), Some(at(30)));
        // Out of order: goes before `d`.
        let e = r.insert(ping(), Some(at(25)));
        assert_eq!(r.next_deadline(), Some(at(10)));

        assert!(r.remove(a).is_some());
        assert_eq!(r.next_deadline(), Some(at(20)));
        r.clear_deadline(b);
        assert_eq!(r.next_deadline(), Some(at(25)));
        assert!(r.remove(c).is_some());
        assert_eq!(r.next_deadline(), Some(at(25)));

        assert_eq!(r.pop_expired(at(24)), None);
        assert_eq!(r.pop_expired(at(40)), Some(e));
        assert_eq!(r.pop_expired(at(40)), Some(d));
        assert_eq!(r.pop_expired(at(40)), None);
        assert_eq!(r.next_deadline(), None);
        // Expired requests stay outstanding (their caller is told; the answer may still come).
        assert_eq!(r.ids(), vec![b, d, e]);
    }

    #[test]
    fn deadline_queue_stays_bounded_behind_a_long_lived_deadline() {
        let t0 = Instant::now();
        let mut r = Requests::default();
        let slow = r.insert(ping(), Some(t0 + Duration::from_secs(30)));
        for i in 0..10_000u64 {
            let id = r.insert(
                ping(),
                Some(t0 + Duration::from_secs(30) + Duration::from_micros(i)),
            );
            assert!(r.remove(id).is_some());
            assert!(r.deadlines.queue.len() <= 2 + Deadlines::SLACK + 1);
        }
        assert_eq!(r.next_deadline(), Some(t0 + Duration::from_secs(30)));
        assert_eq!(r.pop_expired(t0 + Duration::from_secs(31)), Some(slow));
        assert_eq!(r.pop_expired(t0 + Duration::from_secs(31)), None);
        assert!(r.deadlines.queue.is_empty());
    }

    #[test]
    fn the_tables_give_back_the_room_a_burst_took() {
        let mut r = Requests::default();
        let ids: Vec<RequestId> = (0..100_000).map(|_| r.insert(ping(), None)).collect();
        let grown = r.table.capacity();
        assert!(grown >= 100_000);
        for id in &ids[..99_990] {
            assert!(r.remove(*id).is_some());
        }
        assert!(
            r.table.capacity() <= SHRINK_ABOVE,
            "{} of {grown}",
            r.table.capacity()
        );
        assert_eq!(r.ids(), ids[99_990..].to_vec());
    }

    #[test]
    fn ids_and_drain_are_in_id_order_and_cancels_found_from_an_id_on() {
        let mut r = Requests::default();
        let lock = LockId(7);
        let cancel = || {
            Call::silent(What::Cancel {
                lock,
                origin: crate::op::Origin::Release,
            })
        };
        let ids: Vec<RequestId> = (0..50).map(|_| r.insert(ping(), None)).collect();
        let c1 = r.insert(cancel(), None);
        let c2 = r.insert(cancel(), None);
        assert_eq!(r.first_cancel_of(lock, ids[0]), Some(c1));
        assert_eq!(r.first_cancel_of(lock, c2), Some(c2));
        assert_eq!(r.first_cancel_of(LockId(8), ids[0]), None);
        let mut all = ids.clone();
        all.extend([c1, c2]);
        assert_eq!(r.ids(), all);
        let drained = r.drain();
        assert_eq!(drained.len(), 52);
        assert!(matches!(drained[50].call.what, What::Cancel { .. }));
        assert!(r.ids().is_empty());
        assert_eq!(r.next_deadline(), None);
    }
}
