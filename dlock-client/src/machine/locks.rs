//! The lock table: the granted locks of the current session, and the machine's end of each
//! lock's shared state (through which it delivers blocking notifications and loss).

use std::sync::Arc;

use dlock_core::{FencingToken, LockId, Mode};
use tokio::sync::oneshot;

use crate::lease::Lease;
use crate::lock_state::{LockShared, LostReason};

/// A granted lock of the current session.
struct LockEntry {
    shared: Arc<LockShared>,
    lost_tx: Option<oneshot::Sender<LostReason>>,
}

impl LockEntry {
    /// Records the loss and completes the guard's `Lost` future (once).
    fn finish(&mut self, reason: LostReason) {
        if let Some(tx) = self.lost_tx.take() {
            self.shared.set_lost(reason);
            let _ = tx.send(reason);
        }
    }
}

impl Drop for LockEntry {
    /// The machine is going away (for example with its runtime): the lock can no longer be
    /// renewed, so it counts as lost.
    fn drop(&mut self) {
        self.finish(LostReason::Closed);
    }
}

/// The held locks, by id.
#[derive(Default)]
pub(crate) struct Locks {
    map: foldhash::HashMap<LockId, LockEntry>,
}

/// What a new lock's shared state is made of.
pub(crate) struct Granted {
    pub(crate) lock: LockId,
    pub(crate) epoch: u64,
    pub(crate) resource: Vec<u8>,
    pub(crate) mode: Mode,
    pub(crate) token: FencingToken,
    pub(crate) value_block_len: usize,
    pub(crate) lease: Arc<Lease>,
}

impl Locks {
    /// Records a granted new lock; returns the state its guard shares.
    pub(crate) fn insert(&mut self, g: Granted) -> Arc<LockShared> {
        let (lost_tx, lost_rx) = oneshot::channel();
        let shared = Arc::new(LockShared::new(
            g.lock,
            g.epoch,
            g.resource,
            g.mode,
            g.token,
            g.value_block_len,
            g.lease,
            lost_rx,
        ));
        let entry = LockEntry {
            shared: shared.clone(),
            lost_tx: Some(lost_tx),
        };
        // A lock id the server reuses replaces an entry it has ended (dropped: Closed).
        self.map.insert(g.lock, entry);
        shared
    }

    /// The lock's shared state.
    pub(crate) fn get(&self, lock: LockId) -> Option<&LockShared> {
        self.map.get(&lock).map(|e| &*e.shared)
    }

    /// Whether `lock` is a lock of the session with `epoch`.
    pub(crate) fn belongs(&self, lock: LockId, epoch: u64) -> bool {
        self.map.get(&lock).is_some_and(|e| e.shared.epoch == epoch)
    }

    /// Whether the lock is held.
    pub(crate) fn contains(&self, lock: LockId) -> bool {
        self.map.contains_key(&lock)
    }

    /// The lock ended: forget it and tell its guard why.
    pub(crate) fn finish(&mut self, lock: LockId, reason: LostReason) {
        if let Some(mut e) = self.map.remove(&lock) {
            e.finish(reason);
        }
    }

    /// Every lock ended with the session.
    pub(crate) fn finish_all(&mut self, reason: LostReason) {
        for (_, mut e) in self.map.drain() {
            e.finish(reason);
        }
    }
}
