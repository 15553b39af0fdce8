//! [`PendingLock`]: a new lock request the caller does not wait for, so that it can look at
//! it (query, by-id calls), cancel it explicitly and learn the outcome.

use std::sync::{Mutex, MutexGuard};

use dlock_core::LockId;

use crate::convert::{CancelOutcome, cancel_lock};
use crate::error::{Error, Result};
use crate::guard::LockGuard;
use crate::op::{OpSender, Waiting};

/// A new lock request the server has answered, granted at once or queued
/// ([`Client::lock_request`](crate::Client::lock_request)).
///
/// While it waits, the lock exists on the server under [`lock_id`](Self::lock_id) (WAITING),
/// so it can be queried, cancelled with [`cancel`](Self::cancel) (which reports what the
/// cancel achieved), or reached with the by-id calls of [`Client`](crate::Client).
/// [`granted`](Self::granted) waits for the completion. Dropping it cancels the request like
/// dropping a [`Client::lock`](crate::Client::lock) future (and releases the lock if it was
/// granted meanwhile).
#[must_use = "dropping a PendingLock cancels the request"]
pub struct PendingLock {
    tx: OpSender,
    lock: LockId,
    /// Behind a (short, never held across an await) lock so that `is_granted(&self)` can
    /// pick up a completion that has arrived.
    state: Mutex<ReqState>,
}

enum ReqState {
    Granted(LockGuard),
    /// Completed without a grant (cancelled, timed out, ...).
    Failed(Error),
    /// Still waiting; dropping the [`Waiting`] cancels the request.
    Waiting(Waiting),
    /// Taken by [`PendingLock::granted`].
    Taken,
}

impl std::fmt::Debug for PendingLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLock")
            .field("lock", &self.lock)
            .field("granted", &self.is_granted())
            .finish()
    }
}

impl PendingLock {
    pub(crate) fn granted_at_once(tx: OpSender, guard: LockGuard) -> Self {
        PendingLock {
            tx,
            lock: guard.lock_id(),
            state: Mutex::new(ReqState::Granted(guard)),
        }
    }

    pub(crate) fn queued(tx: OpSender, lock: LockId, waiting: Waiting) -> Self {
        PendingLock {
            tx,
            lock,
            state: Mutex::new(ReqState::Waiting(waiting)),
        }
    }

    /// The server's id of the lock (WAITING until granted).
    pub fn lock_id(&self) -> LockId {
        self.lock
    }

    /// Whether the request is known to be granted: granted at once, or its grant has reached
    /// this client since (a grant the server sent before the answer to a later request of
    /// this client, say a ping, has arrived by then). `false` while it waits, and after it
    /// completed without a grant; [`granted`](Self::granted) waits and tells which.
    pub fn is_granted(&self) -> bool {
        matches!(*self.poll_state(), ReqState::Granted(_))
    }

    /// The state, with a completion that has arrived taken in.
    fn poll_state(&self) -> MutexGuard<'_, ReqState> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let ReqState::Waiting(w) = &mut *st {
            if let Some(res) = w.try_take() {
                *st = match res.and_then(|o| LockGuard::from_outcome(o, self.tx.clone())) {
                    Ok(guard) => ReqState::Granted(guard),
                    Err(e) => ReqState::Failed(e),
                };
            }
        }
        st
    }

    /// Cancels the request (R46): [`CancelOutcome::Cancelled`] if it was still waiting
    /// ([`granted`](Self::granted) then fails with [`Error::Cancelled`] and the lock id is
    /// gone), or [`CancelOutcome::NotPending`] if it had been granted first (R48;
    /// [`granted`](Self::granted) then returns the guard).
    pub async fn cancel(&self) -> Result<CancelOutcome> {
        cancel_lock(&self.tx, self.lock).await
    }

    /// Waits until the request completes: the guard once granted, or its outcome
    /// ([`Error::Cancelled`], [`Error::TimedOut`], [`Error::Deadlock`], ...). Dropping the
    /// future cancels the request.
    pub async fn granted(self) -> Result<LockGuard> {
        let state = std::mem::replace(&mut *self.poll_state(), ReqState::Taken);
        match state {
            ReqState::Granted(g) => Ok(g),
            ReqState::Failed(e) => Err(e),
            ReqState::Waiting(w) => LockGuard::from_outcome(w.await?, self.tx.clone()),
            ReqState::Taken => Err(Error::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn pending_lock_is_send_and_sync() {
        assert_send_sync::<PendingLock>();
    }
}
