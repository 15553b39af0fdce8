//! Conversions and cancels a caller does not wait for: [`PendingConvert`], [`Converted`]
//! and [`CancelOutcome`], and the first-answer wait that [`PendingLock`](crate::PendingLock)
//! shares.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};

use dlock_core::{FencingToken, LockId, Mode};
use dlock_proto::ConvertRequest;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::op::{Answer, Call, Grant, Key, Op, OpSender, Origin, Outcome, What};
use crate::options::ConvertOptions;

/// What an explicit cancel achieved ([`PendingLock::cancel`](crate::PendingLock::cancel),
/// [`PendingConvert::cancel`], [`Client::cancel_by_id`](crate::Client::cancel_by_id)).
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
pub(crate) fn cancel_outcome(res: Result<Outcome>) -> Result<CancelOutcome> {
    match res {
        Ok(_) => Ok(CancelOutcome::Cancelled),
        Err(Error::NotPending) => Ok(CancelOutcome::NotPending),
        Err(e) => Err(e),
    }
}

/// Sends a cancel by lock id and waits for its answer.
pub(crate) async fn cancel_lock(tx: &OpSender, lock: LockId) -> Result<CancelOutcome> {
    let (reply, rx) = oneshot::channel();
    let what = What::Cancel {
        lock,
        origin: Origin::ById,
    };
    tx.send(Op::Call(Call::new(what, reply)))
        .map_err(|_| Error::Closed)?;
    cancel_outcome(rx.await.unwrap_or(Err(Error::Closed)))
}

/// The server's first answer to a lock or conversion request.
pub(crate) enum First {
    /// Queued, with the lock id.
    Queued(LockId),
    /// The final outcome arrived first (granted at once).
    Done(Outcome),
}

/// Waits for "queued" or the final outcome, whichever the machine reports first.
pub(crate) async fn first_answer<F>(queued: oneshot::Receiver<LockId>, rx: &mut F) -> Result<First>
where
    F: Future<Output = Result<Outcome>> + Unpin,
{
    tokio::select! {
        biased;
        r = Pin::new(&mut *rx) => r.map(First::Done),
        q = queued => match q {
            Ok(lock) => Ok(First::Queued(lock)),
            // No "queued" will come: the final outcome is on its way.
            Err(_) => Pin::new(rx).await.map(First::Done),
        },
    }
}

/// The engine's conversion request for `opts`.
pub(crate) fn convert_request(lock: LockId, mode: Mode, opts: &ConvertOptions) -> ConvertRequest {
    ConvertRequest {
        lock,
        mode,
        flags: opts.wire_flags(),
        value: opts.value.clone(),
        timeout_ms: opts.timeout_ms(),
    }
}

/// The grant an answer to a conversion carries.
pub(crate) fn into_grant(outcome: Outcome) -> Result<Grant> {
    match outcome {
        Outcome::Converted(g) => Ok(g),
        other => Err(Error::Protocol(format!(
            "expected a conversion grant, got {other:?}"
        ))),
    }
}

/// Answers from the machine, mapped to the conversion's outcome.
struct AnswerFuture(Answer);

impl Future for AnswerFuture {
    type Output = Result<Outcome>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed)))
    }
}

/// Sends a conversion and waits for the server's first answer. Dropping the future leaves
/// the conversion to the server, like dropping the [`PendingConvert`].
pub(crate) async fn convert_op(
    tx: &OpSender,
    lock: LockId,
    origin: Origin,
    mode: Mode,
    opts: &ConvertOptions,
) -> Result<PendingConvert> {
    let (reply, rx) = oneshot::channel();
    let (queued, queued_rx) = oneshot::channel();
    let what = What::Convert {
        req: convert_request(lock, mode, opts),
        origin,
        key: Key::next(),
        queued: Some(queued),
    };
    tx.send(Op::Call(Call::new(what, reply)))
        .map_err(|_| Error::Closed)?;
    let mut answer = AnswerFuture(rx);
    let state = match first_answer(queued_rx, &mut answer).await? {
        First::Done(outcome) => ConvState::Done(into_grant(outcome)),
        First::Queued(_) => ConvState::Waiting(answer.0),
    };
    Ok(PendingConvert {
        tx: tx.clone(),
        lock,
        state: Mutex::new(state),
    })
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
/// [`LockGuard::start_convert`](crate::LockGuard::start_convert)).
///
/// While it is queued the lock is CONVERTING at its old mode and can be observed (queries,
/// and [`LockGuard::blocked`](crate::LockGuard::blocked) of its guard, R33). Unlike a
/// `convert` future, dropping it does **not** cancel the conversion: it stays pending on the
/// server until it completes or is cancelled ([`cancel`](Self::cancel),
/// [`Client::cancel_by_id`](crate::Client::cancel_by_id)).
pub struct PendingConvert {
    tx: OpSender,
    lock: LockId,
    /// Behind a short lock (never held across an await) so that `is_granted(&self)` can pick
    /// up a completion that has arrived.
    state: Mutex<ConvState>,
}

enum ConvState {
    Done(Result<Grant>),
    Waiting(Answer),
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
                Ok(res) => *st = ConvState::Done(res.and_then(into_grant)),
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
            ConvState::Waiting(rx) => rx
                .await
                .unwrap_or(Err(Error::Closed))
                .and_then(into_grant)
                .map(Into::into),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_pending_is_an_outcome_and_other_refusals_stay_errors() {
        assert_eq!(
            cancel_outcome(Ok(Outcome::Cancelled)).ok(),
            Some(CancelOutcome::Cancelled)
        );
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
    fn pending_convert_is_send_and_sync() {
        assert_send_sync::<PendingConvert>();
    }
}
