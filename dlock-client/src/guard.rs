//! [`LockGuard`], [`Canceller`] and [`Lost`]: what a caller holds while it holds a lock.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use dlock_core::{FencingToken, LockId, Mode};
use dlock_proto::UnlockRequest;
use tokio::sync::oneshot;

use crate::convert::{PendingConvert, convert_op, convert_request, into_grant};
use crate::error::{Error, Result};
use crate::lock_state::{LockShared, LostReason, LostSignal, lost_error};
use crate::op::{Call, Key, NewLock, Op, OpSender, Origin, Outcome, Waiting, What, plain_unlock};
use crate::options::{ConvertOptions, UnlockOptions};

/// A future that completes when a lock stops being held, with the reason.
///
/// Cheap to clone; every clone completes with the same reason. It is independent of the
/// [`LockGuard`], so another task can watch for loss while the owner works. Like
/// [`LockGuard::is_lost`], it compares the clock with the local lease deadline each time it
/// is polled, so after a pause past the lease it completes at its first poll, even before the
/// client's machine has run.
///
/// ```no_run
/// # async fn f(guard: dlock_client::LockGuard) {
/// let lost = guard.lost();
/// tokio::select! {
///     reason = lost => eprintln!("lock lost ({reason}): stop writing"),
///     _ = async { /* work under the lock */ } => {}
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct Lost {
    lock: Arc<LockShared>,
    signal: LostSignal,
}

impl Future for Lost {
    type Output = LostReason;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<LostReason> {
        // The cell's reason is the one every clone and every guard method reports: the
        // background task records it there before completing the signal, and a lapse seen
        // here first is recorded there too.
        if let Some(reason) = self.lock.lost_reason() {
            return Poll::Ready(reason);
        }
        match Pin::new(&mut self.signal).poll(cx) {
            Poll::Ready(r) => Poll::Ready(self.lock.lost_reason().unwrap_or(r)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl std::fmt::Debug for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Lost")
            .field(&self.lock.lost_reason())
            .finish()
    }
}

/// A held lock. Dropping it releases the lock in the background, so a guard that is not
/// kept (`client.lock(..).await?;` alone) releases its lock at once.
///
/// Returned by [`Client::lock`](crate::Client::lock) and friends once the lock is granted.
/// The guard keeps the client's background task alive, so it stays valid even if every
/// [`Client`](crate::Client) handle is dropped.
#[must_use = "the lock is released when the guard is dropped: keep it while the lock is needed"]
pub struct LockGuard {
    shared: Arc<LockShared>,
    tx: OpSender,
    value: Option<Vec<u8>>,
    value_valid: bool,
    /// Set once an unlock was sent (or the lock is known gone): `Drop` then does nothing.
    done: bool,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("lock", &self.shared.lock)
            .field("resource", &String::from_utf8_lossy(&self.shared.resource))
            .field("mode", &self.mode())
            .field("token", &self.token())
            .field("lost", &self.shared.lost_reason())
            .finish()
    }
}

impl LockGuard {
    /// The guard of a granted new lock.
    pub(crate) fn new(lock: NewLock, tx: OpSender) -> LockGuard {
        LockGuard {
            shared: lock.shared,
            tx,
            value: lock.value,
            value_valid: lock.value_valid,
            done: false,
        }
    }

    /// The guard an answer to a lock call carries.
    pub(crate) fn from_outcome(outcome: Outcome, tx: OpSender) -> Result<LockGuard> {
        match outcome {
            Outcome::Locked(lock) => Ok(LockGuard::new(lock, tx)),
            other => Err(Error::Protocol(format!("expected a grant, got {other:?}"))),
        }
    }

    /// The fencing token of the latest grant (the lock's own or its latest conversion). Pass
    /// it to the protected resource, which should refuse tokens lower than the highest it
    /// has seen.
    pub fn token(&self) -> FencingToken {
        self.shared.token()
    }

    /// The mode currently held.
    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// The resource name.
    pub fn resource(&self) -> &[u8] {
        &self.shared.resource
    }

    /// The server's id of this lock.
    pub fn lock_id(&self) -> LockId {
        self.shared.lock
    }

    /// The value block read by the latest grant that asked for it
    /// ([`LockOptions::read_value`](crate::LockOptions::read_value),
    /// [`ConvertOptions::read_value`]), or `None` if none did.
    pub fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }

    /// `false` if the value block was marked not valid (VALNOTVALID, R30) when it was read:
    /// its last writer died or invalidated it. `true` when no value was read.
    pub fn value_valid(&self) -> bool {
        self.value_valid
    }

    /// Converts the lock to `mode`, waiting if the conversion is queued (R11). On success the
    /// token and mode are updated. Dropping the future cancels a queued conversion (the lock
    /// keeps its old mode, R47), unless the grant is already on its way: then the lock takes
    /// the new mode, and [`mode`](Self::mode) and [`token`](Self::token) show it once the grant
    /// is received (a moment after the drop). Read them, not the mode asked for, after a
    /// dropped conversion.
    pub async fn convert(&mut self, mode: Mode) -> Result<()> {
        self.convert_with(mode, ConvertOptions::default()).await
    }

    /// [`convert`](Self::convert) with NOQUEUE, QUECVT, a timeout or value block options.
    /// `Err(NotQueued | Deadlock | TimedOut | Cancelled)` leave the lock at its old mode, and
    /// so does every other answer of the server. A value longer than
    /// [`Client::value_block_len`](crate::Client::value_block_len) fails with
    /// [`Error::Invalid`] before anything is sent.
    ///
    /// [`Error::RequestTimeout`] and [`Error::Disconnected`] mean no answer came in time. A
    /// conversion not sent yet (no connection since it was asked for) is then dropped, and
    /// the lock keeps its old mode. One already sent is cancelled, but the server may have
    /// granted it before the cancel arrived: the grant then shows in [`mode`](Self::mode)
    /// and [`token`](Self::token) once it is received, so look at them before relying on
    /// the old mode.
    pub async fn convert_with(&mut self, mode: Mode, opts: ConvertOptions) -> Result<()> {
        self.check_alive()?;
        self.shared.check_value(opts.value.as_deref())?;
        let key = Key::next();
        let (reply, rx) = oneshot::channel();
        let what = What::Convert {
            req: convert_request(self.shared.lock, mode, &opts),
            origin: Origin::Guard(self.shared.epoch),
            key,
            queued: None,
        };
        self.tx
            .send(Op::Call(Call::new(what, reply)))
            .map_err(|_| Error::Closed)?;
        let grant = into_grant(Waiting::new(self.tx.clone(), key, rx).await?)?;
        if grant.value.is_some() {
            self.value = grant.value;
            self.value_valid = grant.value_valid;
        }
        Ok(())
    }

    /// Starts a conversion without waiting for it: returns once the server has answered,
    /// granted at once or queued ([`PendingConvert`]). The guard stays usable meanwhile, so
    /// a CONVERTING lock can be observed (for example that [`blocked`](Self::blocked) gets
    /// nothing while it converts, R33). On a grant the guard's mode and token are updated
    /// as with [`convert`](Self::convert); a value read is in
    /// [`Converted::value`](crate::Converted::value), not in [`value`](Self::value).
    /// Dropping the `PendingConvert` leaves the conversion pending; cancel it with
    /// [`PendingConvert::cancel`] or a [`Canceller`].
    pub async fn start_convert(&self, mode: Mode, opts: ConvertOptions) -> Result<PendingConvert> {
        self.check_alive()?;
        self.shared.check_value(opts.value.as_deref())?;
        let origin = Origin::Guard(self.shared.epoch);
        convert_op(&self.tx, self.shared.lock, origin, mode, &opts).await
    }

    /// A handle that cancels a pending conversion of this lock from another task.
    pub fn canceller(&self) -> Canceller {
        Canceller {
            shared: self.shared.clone(),
            tx: self.tx.clone(),
        }
    }

    /// Releases the lock and waits for the server to confirm (UNLOCKED, R44).
    pub async fn unlock(self) -> Result<()> {
        self.unlock_with(UnlockOptions::default()).await
    }

    /// Releases the lock, writing or invalidating the value block (R28, R29a).
    ///
    /// The guard is consumed whatever the outcome. A refused unlock changes nothing (R5,
    /// R54, R45), so after one the lock is still held, with no guard: release it with
    /// [`Client::unlock_by_id`](crate::Client::unlock_by_id) (take
    /// [`lock_id`](Self::lock_id) first), or it goes with the session.
    ///
    /// - A value longer than [`Client::value_block_len`](crate::Client::value_block_len)
    ///   fails with [`Error::Invalid`] before anything is sent (and a request too large for a
    ///   frame with [`Error::TooLarge`]).
    /// - The server's refusals: [`Error::Invalid`] (flags or value), [`Error::Busy`] (a
    ///   conversion of the lock is pending: cancel it first, R45),
    ///   [`Error::PermissionDenied`] (writing a value block needs write access).
    /// - [`Error::Overloaded`]: the server did not take the request (a server of this
    ///   version takes every unlock, whatever its request rate); the client releases the
    ///   lock in the background with a plain unlock, sent again with a doubling delay (10 ms
    ///   up to 1 s) for as long as the server does not take it.
    /// - [`Error::RequestTimeout`] or [`Error::Disconnected`]: no answer in time; the unlock
    ///   stays queued and is delivered once the connection is back.
    /// - [`Error::SessionLost`] or [`Error::Closed`]: the lock was already gone.
    ///
    /// A dropped guard, by contrast, always releases: after a refused plain unlock (BUSY) it
    /// cancels what is pending and unlocks. So does an unlock whose future is dropped before
    /// its answer came: nobody is left to learn of a refusal.
    pub async fn unlock_with(mut self, opts: UnlockOptions) -> Result<()> {
        if let Err(e) = self.check_alive() {
            self.done = true;
            return Err(e);
        }
        // Refused before sending: like a refusal of the server, it changes nothing, so the
        // consumed guard must not release the lock on drop.
        if let Err(e) = self.shared.check_value(opts.value.as_deref()) {
            self.done = true;
            return Err(e);
        }
        let (reply, rx) = oneshot::channel();
        let flags = opts.wire_flags();
        let req = UnlockRequest {
            lock: self.shared.lock,
            flags,
            value: opts.value,
        };
        let origin = Origin::Guard(self.shared.epoch);
        let op = Op::Call(Call::new(What::Unlock { req, origin }, reply));
        self.tx.send(op).map_err(|_| Error::Closed)?;
        // From here on the unlock is the machine's business, even if this future is dropped.
        self.done = true;
        rx.await.unwrap_or(Err(Error::Closed)).map(drop)
    }

    /// Waits for the next blocking notification (R32..R37) and returns the mode another
    /// request wants. Advice only: nothing is revoked; release or down-convert if you agree.
    /// Notifications may be coalesced (R37), and one that came while nobody waited is kept
    /// and returned by the next call, even if the request behind it has since given up.
    /// Once the lock is gone, fails with [`Error::SessionLost`] (the session expired or was
    /// lost), [`Error::Closed`] (the client was closed) or [`Error::NotFound`] (the lock was
    /// released, by its id).
    pub async fn blocked(&mut self) -> Result<Mode> {
        loop {
            let notified = self.shared.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next = self.shared.pop_blocking();
            if let Some(mode) = next {
                return Ok(mode);
            }
            if let Some(reason) = self.shared.lost_reason() {
                return Err(lost_error(reason));
            }
            notified.await;
        }
    }

    /// A future that completes when this lock stops being held (see [`Lost`]).
    pub fn lost(&self) -> Lost {
        Lost {
            lock: self.shared.clone(),
            signal: self.shared.signal(),
        }
    }

    /// Whether the lock has been lost (session expired, local lease lapsed, client closed).
    ///
    /// Correct at the instant of the call: besides what the machine has recorded, it
    /// compares the clock with the local lease deadline (`send instant of the last confirmed
    /// renewal + TTL − safety margin`), so a process that was paused past its lease sees `true`
    /// as soon as it runs again, before any timer of the client has fired. Once `true`, it
    /// stays `true`.
    pub fn is_lost(&self) -> bool {
        self.shared.lost_reason().is_some()
    }

    fn check_alive(&self) -> Result<()> {
        match self.shared.lost_reason() {
            Some(reason) => Err(lost_error(reason)),
            None => Ok(()),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.done || self.shared.lost_reason().is_some() {
            return;
        }
        // Fire and forget: the machine sends the unlock (after any cancel a dropped convert
        // future queued before it, since the channel is FIFO).
        let req = plain_unlock(self.shared.lock);
        let origin = Origin::Guard(self.shared.epoch);
        let _ = self
            .tx
            .send(Op::Call(Call::silent(What::Unlock { req, origin })));
    }
}

/// Cancels a pending conversion of a lock from another task
/// ([`LockGuard::canceller`]).
#[derive(Clone)]
pub struct Canceller {
    shared: Arc<LockShared>,
    tx: OpSender,
}

impl std::fmt::Debug for Canceller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Canceller")
            .field("lock", &self.shared.lock)
            .finish()
    }
}

impl Canceller {
    /// Cancels the lock's pending conversion (R47): the conversion completes with
    /// [`Error::Cancelled`] and the lock keeps its old mode. Returns
    /// [`Error::NotPending`] if nothing was pending (R48), for example because the
    /// conversion was granted first.
    pub async fn cancel(&self) -> Result<()> {
        if let Some(reason) = self.shared.lost_reason() {
            return Err(lost_error(reason));
        }
        let (reply, rx) = oneshot::channel();
        let what = What::Cancel {
            lock: self.shared.lock,
            origin: Origin::Guard(self.shared.epoch),
        };
        self.tx
            .send(Op::Call(Call::new(what, reply)))
            .map_err(|_| Error::Closed)?;
        rx.await.unwrap_or(Err(Error::Closed)).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::FutureExt;
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    use super::*;
    use crate::lease::Lease;

    const TTL: Duration = Duration::from_secs(3);

    /// A guard with no background task behind it: nothing but the guard itself can notice
    /// that its lease lapsed. Also returns the lost signal's sender and the op queue.
    fn guard_with_lease(
        lease: Arc<Lease>,
    ) -> (
        LockGuard,
        oneshot::Sender<LostReason>,
        mpsc::UnboundedReceiver<Op>,
    ) {
        let (lost_tx, lost_rx) = oneshot::channel();
        let shared = Arc::new(LockShared::new(
            LockId(1),
            1,
            b"r".to_vec(),
            Mode::EX,
            FencingToken(5),
            32,
            lease,
            lost_rx,
        ));
        let (tx, rx) = mpsc::unbounded_channel();
        let lock = NewLock {
            shared,
            value: None,
            value_valid: true,
        };
        (LockGuard::new(lock, OpSender::new(tx, None)), lost_tx, rx)
    }

    #[tokio::test(start_paused = true)]
    async fn is_lost_and_lost_judge_the_lease_deadline_without_any_timer() {
        let lease = Arc::new(Lease::new(Instant::now() + TTL));
        let (mut guard, _lost_tx, mut ops) = guard_with_lease(lease);
        let lost = guard.lost();
        assert!(!guard.is_lost());
        assert!(lost.clone().now_or_never().is_none());

        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        assert!(!guard.is_lost());

        // The process "wakes up" past the deadline: the first look already says lost.
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(guard.is_lost());
        assert_eq!(
            lost.clone().now_or_never(),
            Some(LostReason::LocalLeaseLapsed)
        );
        assert_eq!(
            guard.lost().now_or_never(),
            Some(LostReason::LocalLeaseLapsed)
        );
        assert!(matches!(guard.blocked().await, Err(Error::SessionLost)));
        assert!(matches!(
            guard.convert(Mode::NL).await,
            Err(Error::SessionLost)
        ));
        assert!(matches!(
            guard.canceller().cancel().await,
            Err(Error::SessionLost)
        ));
        // Nothing was sent for a lock known lost, not even by the drop.
        drop(guard);
        assert!(ops.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_reason_recorded_is_the_one_every_answer_gives() {
        let lease = Arc::new(Lease::new(Instant::now() + TTL));
        let (guard, lost_tx, _ops) = guard_with_lease(lease);
        let lost = guard.lost();
        tokio::time::advance(TTL).await;
        assert!(guard.is_lost());
        // The background task learns of a session expiry only afterwards.
        guard.shared.set_lost(LostReason::SessionExpired);
        let _ = lost_tx.send(LostReason::SessionExpired);
        assert_eq!(lost.await, LostReason::LocalLeaseLapsed);
        assert_eq!(guard.lost().await, LostReason::LocalLeaseLapsed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_recorded_loss_completes_lost_and_an_extended_lease_keeps_the_lock() {
        let t0 = Instant::now();
        let lease = Arc::new(Lease::new(t0 + TTL));
        let (guard, lost_tx, _ops) = guard_with_lease(lease.clone());
        // A renewal confirmed in time moves the deadline.
        assert!(lease.extend(t0, t0 + TTL * 2));
        tokio::time::advance(TTL).await;
        assert!(!guard.is_lost());
        let lost = guard.lost();
        let waiter = tokio::spawn(lost.clone());
        guard.shared.set_lost(LostReason::SessionExpired);
        let _ = lost_tx.send(LostReason::SessionExpired);
        assert_eq!(waiter.await.ok(), Some(LostReason::SessionExpired));
        assert!(guard.is_lost());
    }
}
