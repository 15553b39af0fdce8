//! [`PendingLock`], [`PendingConvert`] and [`CancelOutcome`]: requests the caller does not
//! wait for, so that it can look at them (query, blocking notifications), cancel them
//! explicitly and learn the outcome.

use std::sync::{Mutex, MutexGuard};

use dlock_core::{FencingToken, LockId, Mode};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::guard::LockGuard;
use crate::op::{AbandonOnDrop, Grant, Op};

/// What an explicit cancel achieved ([`PendingLock::cancel`], [`PendingConvert::cancel`],
/// [`Client::cancel_by_id`](crate::Client::cancel_by_id)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CancelOutcome {
    /// The pending request or conversion was cancelled: it completes with
    /// [`Error::Cancelled`]. A cancelled new request's lock no longer exists (R46); a
    /// cancelled conversion leaves the lock at its old mode (R47).
    Cancelled,
    /// NOT_PENDING: the lock had nothing pending (R48), typically because the grant won the
    /// race with the cancel. The grant stands and is delivered normally.
    NotPending,
}

/// Maps the answer to a cancel: NOT_PENDING is an outcome, not a fault.
pub(crate) fn cancel_outcome(res: Result<()>) -> Result<CancelOutcome> {
    match res {
        Ok(()) => Ok(CancelOutcome::Cancelled),
        Err(Error::NotPending) => Ok(CancelOutcome::NotPending),
        Err(e) => Err(e),
    }
}

/// Sends a cancel by lock id and waits for its answer.
pub(crate) async fn cancel_lock(
    tx: &mpsc::UnboundedSender<Op>,
    lock: LockId,
) -> Result<CancelOutcome> {
    let (reply, rx) = oneshot::channel();
    tx.send(Op::Cancel {
        lock,
        epoch: None,
        reply,
    })
    .map_err(|_| Error::Closed)?;
    cancel_outcome(rx.await.unwrap_or(Err(Error::Closed)))
}

/// The server's first answer to a lock or conversion request.
pub(crate) enum First<T> {
    /// Queued, with the lock id.
    Queued(LockId),
    /// The final outcome arrived first (granted at once).
    Done(T),
}

/// Waits for "queued" or the final outcome, whichever the background task reports first.
pub(crate) async fn first_answer<T>(
    queued: oneshot::Receiver<LockId>,
    rx: &mut oneshot::Receiver<Result<T>>,
) -> Result<First<T>> {
    tokio::select! {
        biased;
        r = &mut *rx => r.unwrap_or(Err(Error::Closed)).map(First::Done),
        q = queued => match q {
            Ok(lock) => Ok(First::Queued(lock)),
            // No "queued" will come: the final outcome is on its way.
            Err(_) => rx.await.unwrap_or(Err(Error::Closed)).map(First::Done),
        },
    }
}

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
    tx: mpsc::UnboundedSender<Op>,
    lock: LockId,
    /// Behind a (short, never held across an await) lock so that `is_granted(&self)` can
    /// pick up a completion that has arrived.
    state: Mutex<Option<ReqState>>,
}

enum ReqState {
    Granted(LockGuard),
    /// Completed without a grant (cancelled, timed out, ...).
    Failed(Error),
    Waiting {
        key: u64,
        rx: oneshot::Receiver<Result<LockGuard>>,
    },
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
    pub(crate) fn granted_at_once(tx: mpsc::UnboundedSender<Op>, guard: LockGuard) -> Self {
        PendingLock {
            tx,
            lock: guard.lock_id(),
            state: Mutex::new(Some(ReqState::Granted(guard))),
        }
    }

    pub(crate) fn queued(
        tx: mpsc::UnboundedSender<Op>,
        lock: LockId,
        key: u64,
        rx: oneshot::Receiver<Result<LockGuard>>,
    ) -> Self {
        PendingLock {
            tx,
            lock,
            state: Mutex::new(Some(ReqState::Waiting { key, rx })),
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
        matches!(*self.poll_state(), Some(ReqState::Granted(_)))
    }

    /// The state, with a completion that has arrived taken in.
    fn poll_state(&self) -> MutexGuard<'_, Option<ReqState>> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ReqState::Waiting { rx, .. }) = st.as_mut() {
            match rx.try_recv() {
                Ok(Ok(guard)) => *st = Some(ReqState::Granted(guard)),
                Ok(Err(e)) => *st = Some(ReqState::Failed(e)),
                Err(oneshot::error::TryRecvError::Closed) => {
                    *st = Some(ReqState::Failed(Error::Closed));
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
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
        let state = self.poll_state().take();
        match state {
            Some(ReqState::Granted(g)) => Ok(g),
            Some(ReqState::Failed(e)) => Err(e),
            Some(ReqState::Waiting { key, rx }) => {
                let abandon = AbandonOnDrop::new(&self.tx, key);
                let res = rx.await;
                abandon.disarm();
                res.unwrap_or(Err(Error::Closed))
            }
            None => Err(Error::Closed),
        }
    }
}

impl Drop for PendingLock {
    fn drop(&mut self) {
        let state = self
            .state
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(ReqState::Waiting { key, .. }) = state {
            // Cancels it on the server; a grant that raced the cancel is released.
            let _ = self.tx.send(Op::Abandon { key });
        }
        // A guard granted at once is dropped with the state and releases the lock.
    }
}

/// A granted conversion's outcome ([`PendingConvert::wait`]).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Converted {
    /// The mode now held.
    pub mode: Mode,
    /// The fencing token of the grant.
    pub token: FencingToken,
    /// The value block, if the conversion read it (VALBLK on a read path).
    pub value: Option<Vec<u8>>,
    /// `false` if the value block read was marked not valid (R30).
    pub value_valid: bool,
}

impl From<Grant> for Converted {
    fn from(g: Grant) -> Self {
        Converted {
            mode: g.mode,
            token: g.token,
            value: g.value,
            value_valid: g.value_valid,
        }
    }
}

/// A conversion the server has answered, granted at once or queued
/// ([`Client::convert_by_id`](crate::Client::convert_by_id),
/// [`LockGuard::start_convert`]).
///
/// While it is queued the lock is CONVERTING at its old mode and can be observed (queries,
/// and [`LockGuard::blocked`] of its guard, R33). Unlike a `convert` future, dropping it does
/// **not** cancel the conversion: it stays pending on the server until it completes or is
/// cancelled ([`cancel`](Self::cancel), [`Client::cancel_by_id`](crate::Client::cancel_by_id)).
pub struct PendingConvert {
    tx: mpsc::UnboundedSender<Op>,
    lock: LockId,
    /// Behind a short lock, as in [`PendingLock`].
    state: Mutex<ConvState>,
}

enum ConvState {
    Done(Result<Grant>),
    Waiting(oneshot::Receiver<Result<Grant>>),
}

impl std::fmt::Debug for PendingConvert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingConvert")
            .field("lock", &self.lock)
            .field("granted", &self.is_granted())
            .finish()
    }
}

impl PendingConvert {
    /// Sends `op` (a [`Op::Convert`] whose channels are `rx` and `queued`) and waits for the
    /// server's first answer.
    pub(crate) async fn start(
        tx: mpsc::UnboundedSender<Op>,
        lock: LockId,
        op: Op,
        mut rx: oneshot::Receiver<Result<Grant>>,
        queued: oneshot::Receiver<LockId>,
    ) -> Result<PendingConvert> {
        tx.send(op).map_err(|_| Error::Closed)?;
        let state = match first_answer(queued, &mut rx).await? {
            First::Done(g) => ConvState::Done(Ok(g)),
            First::Queued(_) => ConvState::Waiting(rx),
        };
        Ok(PendingConvert {
            tx,
            lock,
            state: Mutex::new(state),
        })
    }

    /// The lock being converted.
    pub fn lock_id(&self) -> LockId {
        self.lock
    }

    /// Whether the conversion is known to be granted: at once, or its grant has reached this
    /// client since. `false` while it is queued (the lock is CONVERTING) and after it
    /// completed without a grant.
    pub fn is_granted(&self) -> bool {
        matches!(*self.poll_state(), ConvState::Done(Ok(_)))
    }

    fn poll_state(&self) -> MutexGuard<'_, ConvState> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let ConvState::Waiting(rx) = &mut *st {
            match rx.try_recv() {
                Ok(res) => *st = ConvState::Done(res),
                Err(oneshot::error::TryRecvError::Closed) => {
                    *st = ConvState::Done(Err(Error::Closed))
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
        }
        st
    }

    /// Cancels the conversion (R47): [`CancelOutcome::Cancelled`] (then
    /// [`wait`](Self::wait) fails with [`Error::Cancelled`] and the lock keeps its old
    /// mode), or [`CancelOutcome::NotPending`] if it was granted first (R48).
    pub async fn cancel(&self) -> Result<CancelOutcome> {
        cancel_lock(&self.tx, self.lock).await
    }

    /// Waits until the conversion completes: its grant, or its outcome
    /// ([`Error::Cancelled`], [`Error::TimedOut`], [`Error::Deadlock`], ...). Dropping the
    /// future leaves the conversion pending.
    pub async fn wait(self) -> Result<Converted> {
        let state = self.state.into_inner().unwrap_or_else(|e| e.into_inner());
        match state {
            ConvState::Done(res) => res.map(Into::into),
            ConvState::Waiting(rx) => rx.await.unwrap_or(Err(Error::Closed)).map(Into::into),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_pending_is_an_outcome_and_other_refusals_stay_errors() {
        assert_eq!(cancel_outcome(Ok(())).ok(), Some(CancelOutcome::Cancelled));
        assert_eq!(
            cancel_outcome(Err(Error::NotPending)).ok(),
            Some(CancelOutcome::NotPending)
        );
        assert!(matches!(
            cancel_outcome(Err(Error::NotFound)),
            Err(Error::NotFound)
        ));
        assert!(matches!(cancel_outcome(Err(Error::Busy)), Err(Error::Busy)));
    }

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn pending_handles_are_send_and_sync() {
        assert_send_sync::<PendingLock>();
        assert_send_sync::<PendingConvert>();
    }
}
