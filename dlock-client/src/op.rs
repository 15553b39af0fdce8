//! Messages from the handles ([`Client`](crate::Client), guards) to the background task.

use std::sync::atomic::{AtomicU64, Ordering};

use dlock_core::{FencingToken, LockFlags, LockId, Mode};
use dlock_proto::{Query, Reply};
use tokio::sync::{mpsc, oneshot};

use crate::error::Result;
use crate::guard::LockGuard;

/// The outcome of a granted conversion (mode and token also go to the lock's shared state
/// when the lock is a guard's).
#[derive(Debug)]
pub(crate) struct Grant {
    pub(crate) mode: Mode,
    pub(crate) token: FencingToken,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) value_valid: bool,
}

/// One operation for the background task. The channel is FIFO: an op sent after another by
/// the same task is handled after it (a dropped convert's cancel precedes the guard's
/// unlock).
pub(crate) enum Op {
    /// A new lock request.
    Lock {
        key: u64,
        resource: Vec<u8>,
        mode: Mode,
        flags: LockFlags,
        timeout_ms: Option<u64>,
        reply: oneshot::Sender<Result<LockGuard>>,
        /// Told the lock id when the server answers "queued" (for a [`PendingLock`](crate::PendingLock)).
        queued: Option<oneshot::Sender<LockId>>,
    },
    /// A conversion of a held lock; `epoch: None` for a conversion by id, which is not
    /// checked against this client's guards.
    Convert {
        key: u64,
        lock: LockId,
        epoch: Option<u64>,
        mode: Mode,
        flags: LockFlags,
        value: Option<Vec<u8>>,
        timeout_ms: Option<u64>,
        reply: oneshot::Sender<Result<Grant>>,
        /// Told the lock id when the server answers "queued".
        queued: Option<oneshot::Sender<LockId>>,
    },
    /// An unlock; `reply: None` when a guard is dropped; `epoch: None` for an unlock by id
    /// (no check against the guards, and no plain unlock after a refusal).
    Unlock {
        lock: LockId,
        epoch: Option<u64>,
        flags: LockFlags,
        value: Option<Vec<u8>>,
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    /// A cancel of a pending request or conversion; `epoch: None` for a cancel by id.
    Cancel {
        lock: LockId,
        epoch: Option<u64>,
        reply: oneshot::Sender<Result<()>>,
    },
    /// A query.
    Query {
        query: Query,
        reply: oneshot::Sender<Result<Reply>>,
    },
    /// A ping.
    Ping {
        reply: oneshot::Sender<Result<String>>,
    },
    /// The caller of the lock or convert with this key stopped waiting: cancel it on the
    /// server, and release it if the grant raced the cancel.
    Abandon { key: u64 },
    /// End the session (Goodbye) and stop.
    Close { reply: oneshot::Sender<Result<()>> },
}

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// A process-wide unique key naming one lock or convert call, so that its future can abandon
/// it before the call knows the request id the background task chose.
pub(crate) fn next_key() -> u64 {
    NEXT_KEY.fetch_add(1, Ordering::Relaxed)
}

/// Sends [`Op::Abandon`] when dropped unless disarmed: a dropped `lock`/`convert` future
/// cancels its request.
pub(crate) struct AbandonOnDrop<'a> {
    tx: &'a mpsc::UnboundedSender<Op>,
    key: u64,
    armed: bool,
}

impl<'a> AbandonOnDrop<'a> {
    pub(crate) fn new(tx: &'a mpsc::UnboundedSender<Op>, key: u64) -> Self {
        AbandonOnDrop {
            tx,
            key,
            armed: true,
        }
    }

    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for AbandonOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.tx.send(Op::Abandon { key: self.key });
        }
    }
}
