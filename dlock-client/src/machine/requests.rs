//! The outstanding-request table.
//!
//! Request ids increase within a session. Every request stays outstanding until its final
//! answer arrives, and after a resume all outstanding requests are re-sent in id order; the
//! server does not apply a request twice and replays the events the client missed.

use std::collections::{BTreeMap, BTreeSet};

use dlock_core::{LockId, RequestId};
use tokio::time::Instant;

use crate::op::{Call, Key, What};

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
}

/// Every outstanding request, by id, with the deadlines and keys that find them.
#[derive(Default)]
pub(crate) struct Requests {
    next_id: u64,
    table: BTreeMap<RequestId, Outstanding>,
    /// `(deadline, id)` of every outstanding request that has a deadline.
    deadlines: BTreeSet<(Instant, RequestId)>,
    /// Key of a lock or convert call → its request id, for `Abandon`.
    /// (foldhash: keys come from this client's own calls, so SipHash's resistance to chosen
    /// keys buys nothing here, and its cost showed in the per-request profile.)
    keys: foldhash::HashMap<Key, RequestId>,
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
            self.deadlines.insert((d, id));
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
        if let Some(d) = o.deadline {
            self.deadlines.remove(&(d, id));
        }
        if let Some(key) = o.call.key() {
            self.keys.remove(&key);
        }
        Some(o)
    }

    /// The request of a lock or convert call, forgetting the key.
    pub(crate) fn take_key(&mut self, key: Key) -> Option<RequestId> {
        self.keys.remove(&key)
    }

    /// The request got a first answer: the caller's request timeout no longer applies.
    pub(crate) fn clear_deadline(&mut self, id: RequestId) {
        if let Some(d) = self.table.get_mut(&id).and_then(|o| o.deadline.take()) {
            self.deadlines.remove(&(d, id));
        }
    }

    /// The earliest request deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Removes and returns the id of one request whose deadline is at or before `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<RequestId> {
        let &(t, id) = self.deadlines.first()?;
        if t > now {
            return None;
        }
        self.deadlines.remove(&(t, id));
        if let Some(o) = self.table.get_mut(&id) {
            o.deadline = None;
        }
        Some(id)
    }

    /// Every outstanding id, in order (for sending them all).
    pub(crate) fn ids(&self) -> Vec<RequestId> {
        self.table.keys().copied().collect()
    }

    /// The first cancel of `lock` at or after `from`: the one a successful cancel of the
    /// request `from` answers (the server applies requests in id order, so later cancels of
    /// the lock find nothing pending and are answered with their own ids).
    pub(crate) fn first_cancel_of(&self, lock: LockId, from: RequestId) -> Option<RequestId> {
        self.table
            .range(from..)
            .find(|(_, o)| matches!(o.call.what, What::Cancel { lock: l, .. } if l == lock))
            .map(|(id, _)| *id)
    }

    /// Removes every request (the session is gone).
    pub(crate) fn drain(&mut self) -> Vec<Outstanding> {
        self.deadlines.clear();
        self.keys.clear();
        std::mem::take(&mut self.table).into_values().collect()
    }
}
