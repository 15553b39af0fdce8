//! Operations: what the handles ([`Client`](crate::Client), guards, pending requests) ask the
//! session machine for, and how the machine answers.
//!
//! A [`Call`] is one request for the server together with its [`Responder`]; the machine
//! keeps the same `Call` in its outstanding table until the final answer, so there is one
//! notion of "an operation" from the handle to the wire and back, and one way to fail it
//! ([`Call::fail`]). Requests travel as the engine's own [`LockRequest`], [`ConvertRequest`]
//! and [`UnlockRequest`], unchanged.
//!
//! Answers carry data, never handles: a granted lock comes back as a [`NewLock`] and the
//! handle side builds the [`LockGuard`](crate::LockGuard) from it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use dlock_core::{FencingToken, LockFlags, LockId, Mode};
use dlock_proto::{ConvertRequest, LockRequest, Query, Request, UnlockRequest};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::lock_state::LockShared;

/// Where the handles' ops go: straight into the session machine when it is free (the
/// caller's task handles the op and writes its frame, see [`InlineOps`]), else through a
/// channel to the machine's task. FIFO either way: an op sent after another by the same task
/// is handled after it (a dropped convert's cancel precedes the guard's unlock), because an
/// op handled in place first takes every op still waiting in the channel.
#[derive(Clone)]
pub(crate) struct OpSender {
    tx: mpsc::UnboundedSender<Op>,
    inline: Option<Arc<dyn InlineOps>>,
}

/// A session machine that a handle may use in place, from its own task.
pub(crate) trait InlineOps: Send + Sync {
    /// Handles `op` now, after every op waiting in the channel, if the machine is free and
    /// running; gives it back otherwise (it then goes through the channel).
    fn try_handle(&self, op: Op) -> std::result::Result<(), Op>;
}

impl OpSender {
    /// Ops through `tx`, or in place through `inline` when it takes them.
    pub(crate) fn new(tx: mpsc::UnboundedSender<Op>, inline: Option<Arc<dyn InlineOps>>) -> Self {
        OpSender { tx, inline }
    }

    /// Hands `op` to the machine; fails once the machine has stopped.
    pub(crate) fn send(&self, op: Op) -> std::result::Result<(), mpsc::error::SendError<Op>> {
        let op = match &self.inline {
            Some(inline) => match inline.try_handle(op) {
                Ok(()) => return Ok(()),
                Err(op) => op,
            },
            None => op,
        };
        self.tx.send(op)
    }
}

/// Where the answer to a [`Call`] goes.
pub(crate) type Responder = oneshot::Sender<Result<Outcome>>;

/// The waiting end of a [`Responder`].
pub(crate) type Answer = oneshot::Receiver<Result<Outcome>>;

/// Told the lock id when the server answers "queued" (for [`PendingLock`](crate::PendingLock)
/// and [`PendingConvert`](crate::PendingConvert)).
pub(crate) type QueuedTx = oneshot::Sender<LockId>;

/// A process-wide unique name of one lock or convert call, so that its future can abandon
/// it before the call knows the request id the machine chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key(u64);

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

impl Key {
    /// A fresh key.
    pub(crate) fn next() -> Key {
        Key(NEXT_KEY.fetch_add(1, Ordering::Relaxed))
    }
}

/// One operation for the session machine.
pub(crate) enum Op {
    /// A request for the server.
    Call(Call),
    /// The caller of the lock or convert with this key stopped waiting: cancel it on the
    /// server, and release it if the grant raced the cancel.
    Abandon(Key),
    /// End the session (Goodbye) and stop; answered with [`Outcome::Closed`].
    Close(Responder),
}

/// Who sent an operation on a lock, which decides how the machine checks it and what it
/// does after a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A guard of the session with this epoch: refused locally if the lock is not a lock
    /// of the current session; a refused unlock of a dropped guard is followed by a plain
    /// unlock (an explicit unlock the server refuses changes nothing).
    Guard(u64),
    /// By id ([`Client::unlock_by_id`](crate::Client::unlock_by_id) and friends): any id goes
    /// to the server, and a refusal is only reported.
    ById,
    /// The machine releasing a lock nobody holds a guard for (an abandoned grant, a refused
    /// unlock).
    Release,
    /// The one plain unlock after a refused one: if it is refused too, nothing more is tried.
    Fallback,
}

/// What a [`Call`] asks the server for.
pub(crate) enum What {
    /// A new lock.
    Lock {
        req: LockRequest,
        key: Key,
        queued: Option<QueuedTx>,
    },
    /// A conversion.
    Convert {
        req: ConvertRequest,
        origin: Origin,
        key: Key,
        queued: Option<QueuedTx>,
    },
    /// An unlock.
    Unlock { req: UnlockRequest, origin: Origin },
    /// A cancel of a pending request or conversion.
    Cancel { lock: LockId, origin: Origin },
    /// A query.
    Query(Query),
    /// A ping.
    Ping,
    /// A lease renewal (the machine's own).
    Renew,
    /// The end of the session (the machine's own).
    Goodbye,
}

/// One request and the place its answer goes (`None`: nobody waits for it).
pub(crate) struct Call {
    pub(crate) what: What,
    pub(crate) reply: Option<Responder>,
}

/// A successful answer.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// A new lock was granted.
    Locked(NewLock),
    /// A conversion was granted.
    Converted(Grant),
    /// The lock was released.
    Unlocked,
    /// The cancel succeeded (the cancelled request completes with [`Error::Cancelled`]).
    Cancelled,
    /// The answer to a query.
    Answer(dlock_proto::Reply),
    /// The answer to a ping: the server's version.
    Pong(String),
    /// The client is closed.
    Closed,
}

/// A granted new lock, from which the handle side builds its guard.
pub(crate) struct NewLock {
    pub(crate) shared: Arc<LockShared>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) value_valid: bool,
}

impl std::fmt::Debug for NewLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewLock")
            .field("lock", &self.shared.lock)
            .field("value", &self.value)
            .field("value_valid", &self.value_valid)
            .finish()
    }
}

/// The outcome of a granted conversion (mode and token also go to the lock's shared state
/// when the lock is a guard's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) mode: Mode,
    pub(crate) token: FencingToken,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) value_valid: bool,
}

impl Call {
    /// A call with a responder.
    pub(crate) fn new(what: What, reply: Responder) -> Call {
        Call {
            what,
            reply: Some(reply),
        }
    }

    /// A call nobody waits for.
    pub(crate) fn silent(what: What) -> Call {
        Call { what, reply: None }
    }

    /// The wire request.
    pub(crate) fn body(&self) -> Request {
        match &self.what {
            What::Lock { req, .. } => Request::Lock(req.clone()),
            What::Convert { req, .. } => Request::Convert(req.clone()),
            What::Unlock { req, .. } => Request::Unlock(req.clone()),
            What::Cancel { lock, .. } => Request::Cancel { lock: *lock },
            What::Query(q) => Request::Query(q.clone()),
            What::Ping => Request::Ping,
            What::Renew => Request::Renew,
            What::Goodbye => Request::Goodbye,
        }
    }

    /// The key of a lock or convert call.
    pub(crate) fn key(&self) -> Option<Key> {
        match &self.what {
            What::Lock { key, .. } | What::Convert { key, .. } => Some(*key),
            _ => None,
        }
    }

    /// Answers the caller, if one still waits. A granted lock the caller no longer takes is
    /// handed back, so that the machine can release it.
    pub(crate) fn answer(&mut self, res: Result<Outcome>) -> Option<NewLock> {
        let reply = self.reply.take()?;
        match reply.send(res) {
            Ok(()) => None,
            Err(Ok(Outcome::Locked(lock))) => Some(lock),
            Err(_) => None,
        }
    }

    /// Fails the caller, if one still waits. The single fan-out for every kind of call.
    pub(crate) fn fail(mut self, err: Error) {
        // A failure carries no grant, so nothing can come back.
        let _ = self.answer(Err(err));
    }
}

/// A plain unlock: no flags, no value (what a dropped guard sends).
pub(crate) fn plain_unlock(lock: LockId) -> UnlockRequest {
    UnlockRequest {
        lock,
        flags: LockFlags::empty(),
        value: None,
    }
}

/// Waits for the answer to a lock or convert call. Dropped before the answer, it abandons
/// the call (the machine cancels it on the server); a grant that arrived meanwhile is
/// released.
pub(crate) struct Waiting {
    tx: OpSender,
    key: Key,
    rx: Option<Answer>,
}

impl Waiting {
    pub(crate) fn new(tx: OpSender, key: Key, rx: Answer) -> Waiting {
        Waiting {
            tx,
            key,
            rx: Some(rx),
        }
    }

    /// The answer if it has arrived; `None` while the call is pending.
    pub(crate) fn try_take(&mut self) -> Option<Result<Outcome>> {
        let rx = self.rx.as_mut()?;
        let res = match rx.try_recv() {
            Ok(res) => res,
            Err(oneshot::error::TryRecvError::Empty) => return None,
            Err(oneshot::error::TryRecvError::Closed) => Err(Error::Closed),
        };
        self.rx = None;
        Some(res)
    }
}

impl Future for Waiting {
    type Output = Result<Outcome>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(Err(Error::Closed));
        };
        match Pin::new(rx).poll(cx) {
            Poll::Ready(res) => {
                self.rx = None;
                Poll::Ready(res.unwrap_or(Err(Error::Closed)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        // Closed first, so that the machine cannot deliver after the look below: a grant it
        // tries to deliver later comes back to it, and it releases the lock itself.
        rx.close();
        match rx.try_recv() {
            Ok(Ok(Outcome::Locked(lock))) => {
                // Granted just now, and nobody will take it: release it.
                let req = plain_unlock(lock.shared.lock);
                let origin = Origin::Guard(lock.shared.epoch);
                let _ = self
                    .tx
                    .send(Op::Call(Call::silent(What::Unlock { req, origin })));
            }
            // Answered: nothing is pending any more.
            Ok(_) => {}
            Err(_) => {
                let _ = self.tx.send(Op::Abandon(self.key));
            }
        }
    }
}
