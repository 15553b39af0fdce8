//! Messages from the handles ([`Client`](crate::Client), guards) to the background task.

use std::sync::atomic::{AtomicU64, Ordering};

use dlock_core::{LockFlags, LockId, Mode};
use dlock_proto::{Query, Reply};
use tokio::sync::{mpsc, oneshot};

use crate::error::Result;
use crate::guard::LockGuard;

/// The outcome of a granted conversion (mode and token go to the lock's shared state).
#[derive(Debug)]
pub(crate) struct Grant {
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
    },
    /// A conversion of a held lock.
    Convert {
        key: u64,
        lock: LockId,
        epoch: u64,
        mode: Mode,
        flags: LockFlags,
        value: Option<Vec<u8>>,
        timeout_ms: Option<u64>,
        reply: oneshot::Sender<Result<Grant>>,
    },
    /// An unlock; `reply: None` when a guard is dropped.
    Unlock {
        lock: LockId,
        epoch: u64,
        flags: LockFlags,
        value: Option<Vec<u8>>,
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    /// A cancel of a pending conversion.
    Cancel {
        lock: LockId,
        epoch: u64,
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
