//! The state of one granted lock that its guard and the session machine share: mode and
//! token (a conversion's grant updates them), pending blocking notifications, and whether and
//! why the lock was lost.
//!
//! The machine writes it (grants, blocking notifications, loss) and the guard reads it; the
//! guard also judges the local lease itself (see [`Lease`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use dlock_core::{FencingToken, LockId, Mode};
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::lease::Lease;

/// Why a lock is no longer held, as [`LockGuard::lost`](crate::LockGuard::lost) reports it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LostReason {
    /// The server ended the session (its lease ran out), or refused to resume it after a
    /// reconnect (lease expired or server restarted). The server has released the lock.
    SessionExpired,
    /// The client could not confirm a lease renewal in time (`last confirmed renewal + TTL −
    /// safety margin`), so it gave the lock up *before* the server could hand it to anyone
    /// else. Stop touching the protected resource.
    LocalLeaseLapsed,
    /// The client was closed ([`Client::close`](crate::Client::close)), or its background
    /// task ended.
    Closed,
    /// The server is shutting down and does not keep sessions.
    ServerShutdown,
    /// Not a loss: the lock was released by its owner (unlock or drop of the guard).
    Released,
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LostReason::SessionExpired => "session expired",
            LostReason::LocalLeaseLapsed => "local lease lapsed",
            LostReason::Closed => "client closed",
            LostReason::ServerShutdown => "server shut down",
            LostReason::Released => "released",
        })
    }
}

/// Completed by the machine once it has recorded the loss in the lock's cell.
pub(crate) type LostSignal = Shared<BoxFuture<'static, LostReason>>;

fn lost_signal(rx: oneshot::Receiver<LostReason>) -> LostSignal {
    rx.map(|r| r.unwrap_or(LostReason::Closed)).boxed().shared()
}

/// State of one granted lock shared between its guard and the session machine.
pub(crate) struct LockShared {
    pub(crate) lock: LockId,
    /// Which session of this client the lock belongs to (lock ids are only unique per
    /// server lifetime, so a lock of an old session must never be mistaken for a new one).
    pub(crate) epoch: u64,
    pub(crate) resource: Vec<u8>,
    /// The server's value block length when the lock was granted (values to write are
    /// checked against it before they are sent).
    value_block_len: usize,
    /// The local lease of the lock's session.
    lease: Arc<Lease>,
    cell: Mutex<LockCell>,
    notify: Notify,
    signal: LostSignal,
}

struct LockCell {
    mode: Mode,
    token: FencingToken,
    /// Blocked modes not yet taken by [`LockGuard::blocked`], oldest first, without
    /// duplicates (R37 allows coalescing), so at most six.
    blocking: VecDeque<Mode>,
    lost: Option<LostReason>,
}

impl LockShared {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        lock: LockId,
        epoch: u64,
        resource: Vec<u8>,
        mode: Mode,
        token: FencingToken,
        value_block_len: usize,
        lease: Arc<Lease>,
        lost_rx: oneshot::Receiver<LostReason>,
    ) -> LockShared {
        LockShared {
            lock,
            epoch,
            resource,
            value_block_len,
            lease,
            cell: Mutex::new(LockCell {
                mode,
                token,
                blocking: VecDeque::new(),
                lost: None,
            }),
            notify: Notify::new(),
            signal: lost_signal(lost_rx),
        }
    }

    /// The mode currently held.
    pub(crate) fn mode(&self) -> Mode {
        self.cell().mode
    }

    /// The fencing token of the latest grant.
    pub(crate) fn token(&self) -> FencingToken {
        self.cell().token
    }

    /// The oldest blocking notification not yet taken.
    pub(crate) fn pop_blocking(&self) -> Option<Mode> {
        self.cell().blocking.pop_front()
    }

    /// Woken by every blocking notification and by the loss.
    pub(crate) fn notify(&self) -> &Notify {
        &self.notify
    }

    /// Completes once the machine has recorded the loss.
    pub(crate) fn signal(&self) -> LostSignal {
        self.signal.clone()
    }

    fn cell(&self) -> MutexGuard<'_, LockCell> {
        // A panic while holding this short lock cannot leave the cell inconsistent.
        self.cell.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a grant of a conversion.
    pub(crate) fn set_granted(&self, mode: Mode, token: FencingToken) {
        let mut c = self.cell();
        c.mode = mode;
        c.token = token;
        // R35: a lock is notified afresh after its own grant; older advice is stale.
        c.blocking.clear();
    }

    /// Records a blocking notification.
    pub(crate) fn push_blocking(&self, mode: Mode) {
        {
            let mut c = self.cell();
            if !c.blocking.contains(&mode) {
                c.blocking.push_back(mode);
            }
        }
        self.notify.notify_waiters();
    }

    /// Records that the lock is gone (the `Lost` future is completed by the driver).
    pub(crate) fn set_lost(&self, reason: LostReason) {
        {
            let mut c = self.cell();
            if c.lost.is_none() {
                c.lost = Some(reason);
            }
        }
        self.notify.notify_waiters();
    }

    /// Why the lock is no longer held, or `None` while it is, judged now: besides what the
    /// background task recorded, a local lease whose deadline has passed counts as lost even if
    /// the task has not run since (a paused process).
    pub(crate) fn lost_reason(&self) -> Option<LostReason> {
        self.lost_reason_at(Instant::now())
    }

    fn lost_reason_at(&self, now: Instant) -> Option<LostReason> {
        let mut c = self.cell();
        // Recorded in the cell so that every later answer gives the same reason; the lease
        // latches the lapse, so the background task declares it too (its timer is due).
        if c.lost.is_none() && self.lease.lapsed_at(now) {
            c.lost = Some(LostReason::LocalLeaseLapsed);
        }
        c.lost
    }

    /// Refuses a value the server would refuse as longer than the value block (R54), before
    /// it is sent.
    pub(crate) fn check_value(&self, value: Option<&[u8]>) -> Result<()> {
        match value {
            Some(v) if v.len() > self.value_block_len => {
                Err(Error::Invalid(dlock_core::Invalid::ValueTooLong {
                    len: v.len(),
                    max: self.value_block_len,
                }))
            }
            _ => Ok(()),
        }
    }
}

/// The error an operation on a lost lock fails with.
pub(crate) fn lost_error(reason: LostReason) -> Error {
    match reason {
        LostReason::Closed => Error::Closed,
        LostReason::Released => Error::NotFound,
        _ => Error::SessionLost,
    }
}
