//! [`Client`]: the handle an application locks through (its builder is in `builder.rs`).

use std::sync::Arc;
use std::time::Duration;

use dlock_core::{LockId, Mode, ResourceInfo, SessionId, SessionInfo};
use dlock_proto::{LockRequest, Query, Reply, UnlockRequest};
use tokio::sync::oneshot;

use crate::convert::{CancelOutcome, First, PendingConvert, cancel_lock, convert_op, first_answer};
use crate::error::{Error, Result};
use crate::guard::LockGuard;
use crate::op::{Call, Key, Op, OpSender, Origin, Outcome, Waiting, What};
use crate::options::{ConvertOptions, LockOptions, UnlockOptions};
use crate::pending::PendingLock;
use crate::view::SessionView;

/// The answer to [`Client::ping`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pong {
    /// The server's version string.
    pub server_version: String,
    /// The round trip time measured by this call (including queueing in the client).
    pub rtt: Duration,
}

/// A query's answer with the server's lock-table clock when it answered: the `since_ms` of
/// every lock in `value` is on the same clock, so `now_ms - since_ms` is the lock's age as
/// the server sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerView<T> {
    /// The server's lock-table clock (milliseconds) at the answer.
    pub now_ms: u64,
    /// What the query found.
    pub value: T,
}

/// A page of resources from [`Client::view_prefix_after`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourcePage {
    /// The resources, in name order.
    pub resources: Vec<ResourceInfo>,
    /// More resources match after the last one here.
    pub more: bool,
}

/// A connection to a dlock server: one session, one background task.
///
/// Cheap to clone; clones share the session and the task. The task renews the lease,
/// reconnects and resumes the session after a broken connection, and re-sends outstanding
/// requests, so callers just see their futures complete. It stops when every `Client`,
/// [`LockGuard`], [`Canceller`](crate::Canceller), [`PendingLock`] and [`PendingConvert`] is
/// dropped (ending the session with
/// `Goodbye`), or at [`close`](Client::close).
///
/// It needs a Tokio runtime with IO and time enabled (the background task is spawned on
/// the runtime that connects).
///
/// **One session is one lock owner.** The session, not the task, owns its locks, as a
/// process does in the Linux DLM: two tasks of one `Client` (or of its clones) that want
/// conflicting modes on one resource make the session wait for itself, which the rule book
/// counts as a deadlock (R39) — the second request fails at once with [`Error::Deadlock`]
/// instead of waiting. Contenders that should queue behind each other (worker tasks taking
/// turns on a job, say) each need a `Client` of their own.
///
/// **Exiting.** Call [`close`](Client::close) before the program ends, or before its runtime
/// is dropped: it ends the session and releases every lock at once. A background task that
/// dies with its runtime cannot say `Goodbye`, and the server then keeps the session's locks
/// until its lease runs out (the lease TTL, 10 s by default), as for a crashed client.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    tx: OpSender,
    view: Arc<SessionView>,
    name: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("session", &self.session_id())
            .field("name", &self.inner.name)
            .finish()
    }
}

impl Client {
    /// A client around a started driver (see [`ClientBuilder::connect`](crate::ClientBuilder::connect)).
    pub(crate) fn from_parts(tx: OpSender, view: Arc<SessionView>, name: String) -> Client {
        Client {
            inner: Arc::new(ClientInner { tx, view, name }),
        }
    }

    /// Requests a lock and waits until it is granted (R10). Dropping the future cancels the
    /// request on the server (and releases the lock if the grant raced the cancel).
    ///
    /// A request dropped (or timed out) before its outcome was known is still the server's
    /// business until that outcome arrives and the client has cancelled or released it. A
    /// new lock request of this client on the same resource waits for that (a round trip,
    /// as a rule) before it is sent, so that the server never judges it against the one
    /// given up; its request timeout starts when it is sent.
    ///
    /// # Errors
    ///
    /// The rule book's refusals ([`Error::Invalid`] for an empty or too long name,
    /// [`Error::Deadlock`] when this request was chosen to break a deadlock — also one with
    /// another lock of this session, see [`Client`] —, [`Error::LimitExceeded`],
    /// [`Error::PermissionDenied`]); [`Error::TooLarge`] before sending, for a name that does
    /// not fit in a frame; [`Error::Overloaded`] when the server refuses it for its request
    /// rate (not retried: try again); [`Error::RequestTimeout`] (connected) or
    /// [`Error::Disconnected`] (not) when nothing answers within the request timeout;
    /// [`Error::SessionLost`] when the session
    /// ends before the grant; [`Error::Closed`] after [`close`](Client::close).
    pub async fn lock(&self, resource: impl AsRef<[u8]>, mode: Mode) -> Result<LockGuard> {
        self.lock_with(resource, mode, LockOptions::default()).await
    }

    /// Requests a lock with NOQUEUE: granted at once, or [`Error::NotQueued`] (R22); the other
    /// errors are [`lock`](Client::lock)'s.
    pub async fn try_lock(&self, resource: impl AsRef<[u8]>, mode: Mode) -> Result<LockGuard> {
        self.lock_with(resource, mode, LockOptions::new().no_queue())
            .await
    }

    /// Requests a lock with options (timeout, NOQUEUE, value block read): [`lock`](Client::lock)'s
    /// errors, and [`Error::TimedOut`] when a timeout was given and ran out while queued.
    pub async fn lock_with(
        &self,
        resource: impl AsRef<[u8]>,
        mode: Mode,
        opts: LockOptions,
    ) -> Result<LockGuard> {
        let key = Key::next();
        let (reply, rx) = oneshot::channel();
        let what = What::Lock {
            req: lock_request(resource.as_ref(), mode, &opts),
            key,
            queued: None,
        };
        self.send(Op::Call(Call::new(what, reply)))?;
        let outcome = Waiting::new(self.inner.tx.clone(), key, rx).await?;
        LockGuard::from_outcome(outcome, self.inner.tx.clone())
    }

    /// The cluster as the server answering sees it (members, leader, term, log and applied
    /// index), or `None` from a server that runs alone.
    pub async fn query_cluster(&self) -> Result<Option<dlock_proto::status::ClusterView>> {
        match self.query(Query::Cluster).await? {
            Reply::Cluster(view) => Ok(view),
            other => Err(unexpected(&other)),
        }
    }

    /// One resource with its grant, convert and wait queues (R66), or `None` if no lock on
    /// it exists. A resource with more locks than fit in one answer frame lists the first
    /// ones of the grant queue, then of the convert queue, then of the wait queue, and counts
    /// the others in [`ResourceInfo::omitted`].
    pub async fn query_resource(&self, resource: impl AsRef<[u8]>) -> Result<Option<ResourceInfo>> {
        Ok(self.view_resource(resource).await?.value)
    }

    /// Resources whose names start with `prefix`, in name order, at most `limit`. The server
    /// answers in pages of at most one frame; this asks for as many pages as it takes.
    pub async fn query_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
        limit: u32,
    ) -> Result<Vec<ResourceInfo>> {
        Ok(self.view_prefix(prefix, limit).await?.value)
    }

    /// A session and its locks, or `None` if it does not exist. The server answers in pages
    /// of at most one frame; this asks for as many pages as it takes.
    pub async fn query_session(&self, session: SessionId) -> Result<Option<SessionInfo>> {
        Ok(self.view_session(session).await?.value)
    }

    /// [`query_resource`](Self::query_resource) with the server's clock at the answer, so
    /// that a lock's age (`now_ms - since_ms`) is measured by the server's clock.
    pub async fn view_resource(
        &self,
        resource: impl AsRef<[u8]>,
    ) -> Result<ServerView<Option<ResourceInfo>>> {
        match self
            .query(Query::Resource(resource.as_ref().to_vec()))
            .await?
        {
            Reply::Resources {
                now_ms, resources, ..
            } => Ok(ServerView {
                now_ms,
                value: resources.into_iter().next(),
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// [`query_prefix`](Self::query_prefix) with the server's clock at the answer (of the
    /// last page, when it took several).
    pub async fn view_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
        limit: u32,
    ) -> Result<ServerView<Vec<ResourceInfo>>> {
        let page = self.view_prefix_after(prefix, None, limit).await?;
        Ok(ServerView {
            now_ms: page.now_ms,
            value: page.value.resources,
        })
    }

    /// The resources whose names start with `prefix` and sort after `after` (from the first
    /// with `None`), at most `limit` of them in name order, fetching as many pages as that
    /// takes, and whether more follow: to go on, pass the last name as `after`.
    pub async fn view_prefix_after(
        &self,
        prefix: impl AsRef<[u8]>,
        after: Option<Vec<u8>>,
        limit: u32,
    ) -> Result<ServerView<ResourcePage>> {
        let prefix = prefix.as_ref().to_vec();
        let mut all = ServerView {
            now_ms: 0,
            value: ResourcePage::default(),
        };
        let mut after = after;
        loop {
            let have = u32::try_from(all.value.resources.len()).unwrap_or(u32::MAX);
            let query = Query::Prefix {
                prefix: prefix.clone(),
                limit: limit.saturating_sub(have),
                after,
            };
            let (page, more) = match self.query(query).await? {
                Reply::Resources {
                    now_ms,
                    resources,
                    more,
                } => {
                    all.now_ms = now_ms;
                    (resources, more)
                }
                other => return Err(unexpected(&other)),
            };
            after = page.last().map(|r| r.name.clone());
            all.value.resources.extend(page);
            all.value.more = more && after.is_some();
            if !all.value.more || all.value.resources.len() >= limit as usize {
                return Ok(all);
            }
        }
    }

    /// [`query_session`](Self::query_session) with the server's clock at the answer (of the
    /// last page, when it took several).
    pub async fn view_session(
        &self,
        session: SessionId,
    ) -> Result<ServerView<Option<SessionInfo>>> {
        let mut all: Option<SessionInfo> = None;
        let mut after = None;
        loop {
            let (now_ms, page, more) = match self.query(Query::Session { session, after }).await? {
                Reply::Session {
                    now_ms,
                    session,
                    more,
                } => (now_ms, session, more),
                other => return Err(unexpected(&other)),
            };
            let Some(page) = page else {
                // Gone between pages: it ended.
                return Ok(ServerView {
                    now_ms,
                    value: None,
                });
            };
            after = page.locks.last().map(|l| l.lock);
            match &mut all {
                Some(info) => info.locks.extend(page.locks),
                None => all = Some(page),
            }
            if !more || after.is_none() {
                return Ok(ServerView { now_ms, value: all });
            }
        }
    }

    /// Sends a lock request and returns as soon as the server has answered it, granted at
    /// once or queued, instead of waiting for the grant. The [`PendingLock`] names the lock
    /// while it waits, can cancel it explicitly and learn the outcome
    /// ([`PendingLock::cancel`]), and waits for the grant with [`PendingLock::granted`].
    ///
    /// Refusals and "not granted" outcomes that come as the first answer (NOT_QUEUED,
    /// DEADLOCK, INVALID, ...) are returned as errors here. Dropping this future before the
    /// answer, or the `PendingLock` after it, cancels the request.
    pub async fn lock_request(
        &self,
        resource: impl AsRef<[u8]>,
        mode: Mode,
        opts: LockOptions,
    ) -> Result<PendingLock> {
        let key = Key::next();
        let (reply, rx) = oneshot::channel();
        let (queued, queued_rx) = oneshot::channel();
        let what = What::Lock {
            req: lock_request(resource.as_ref(), mode, &opts),
            key,
            queued: Some(queued),
        };
        self.send(Op::Call(Call::new(what, reply)))?;
        let tx = self.inner.tx.clone();
        // Dropped before the first answer, the waiting cancels the request.
        let mut waiting = Waiting::new(tx.clone(), key, rx);
        Ok(match first_answer(queued_rx, &mut waiting).await? {
            First::Done(outcome) => {
                PendingLock::granted_at_once(tx.clone(), LockGuard::from_outcome(outcome, tx)?)
            }
            First::Queued(lock) => PendingLock::queued(tx, lock, waiting),
        })
    }

    /// **Low level, for tools and conformance tests:** converts the lock with id `lock`,
    /// whatever it is, and returns once the server has answered (granted at once, or
    /// queued: see [`PendingConvert`]). Any id goes to the server, which judges it: an
    /// unknown id or another session's lock gives [`Error::NotFound`] (R6, R52), a lock with
    /// a pending request [`Error::Busy`] (R15), bad arguments [`Error::Invalid`] (R54,
    /// R56). Prefer [`LockGuard::convert`] in applications.
    ///
    /// If the id is a lock of one of this client's guards, a granted conversion updates the
    /// guard's [`mode`](LockGuard::mode) and [`token`](LockGuard::token) (a value read goes
    /// to the [`Converted`](crate::Converted) outcome, not to the guard).
    pub async fn convert_by_id(
        &self,
        lock: LockId,
        mode: Mode,
        opts: ConvertOptions,
    ) -> Result<PendingConvert> {
        convert_op(&self.inner.tx, lock, Origin::ById, mode, &opts).await
    }

    /// **Low level, for tools and conformance tests:** unlocks the lock with id `lock`,
    /// whatever it is, and waits for the server's answer. Unknown or foreign ids give
    /// [`Error::NotFound`], a lock with a pending request [`Error::Busy`] (R45), bad flags
    /// [`Error::Invalid`]; a refusal changes nothing (no plain unlock is sent in its place,
    /// unlike [`LockGuard::unlock_with`]). Prefer [`LockGuard::unlock`] in applications.
    ///
    /// If the id is a lock of one of this client's guards and the unlock succeeds, that
    /// guard's lock is over: its [`lost`](LockGuard::lost) completes with
    /// [`LostReason::Released`](crate::LostReason::Released), its operations fail with
    /// [`Error::NotFound`] and dropping it sends nothing.
    pub async fn unlock_by_id(&self, lock: LockId, opts: UnlockOptions) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        let req = UnlockRequest {
            lock,
            flags: opts.wire_flags(),
            value: opts.value,
        };
        let what = What::Unlock {
            req,
            origin: Origin::ById,
        };
        self.send(Op::Call(Call::new(what, reply)))?;
        rx.await.unwrap_or(Err(Error::Closed)).map(drop)
    }

    /// **Low level, for tools and conformance tests:** cancels the pending request or
    /// conversion of the lock with id `lock` (R46, R47) and waits for the answer.
    /// [`CancelOutcome::NotPending`] if nothing was pending (R48); unknown or foreign ids
    /// give [`Error::NotFound`] (R52). The cancelled request's own caller (a
    /// [`PendingLock`], a `convert` future, ...) sees [`Error::Cancelled`].
    pub async fn cancel_by_id(&self, lock: LockId) -> Result<CancelOutcome> {
        cancel_lock(&self.inner.tx, lock).await
    }

    /// Checks that the server answers; returns its version and the round trip time.
    pub async fn ping(&self) -> Result<Pong> {
        let start = tokio::time::Instant::now();
        let (reply, rx) = oneshot::channel();
        self.send(Op::Call(Call::new(What::Ping, reply)))?;
        let server_version = match rx.await.unwrap_or(Err(Error::Closed))? {
            Outcome::Pong(v) => v,
            other => return Err(Error::Protocol(format!("expected a pong, got {other:?}"))),
        };
        Ok(Pong {
            server_version,
            rtt: start.elapsed(),
        })
    }

    /// The current session (`SessionId(0)` while the client is between sessions, after
    /// losing one).
    pub fn session_id(&self) -> SessionId {
        self.inner.view.session()
    }

    /// The session name sent to the server (shown by queries and `dlock status`).
    pub fn session_name(&self) -> String {
        self.inner.name.clone()
    }

    /// The server's version string, from the latest handshake.
    pub fn server_version(&self) -> String {
        self.inner.view.server_version()
    }

    /// The endpoint (as given to the builder, or a leader's address a follower sent the
    /// client to) of the server that opened or resumed the session last: of a list, the one
    /// this client talks to. Empty before the first session.
    pub fn server_addr(&self) -> String {
        self.inner.view.endpoint()
    }

    /// The server's value block length in bytes (values read are this long).
    pub fn value_block_len(&self) -> usize {
        self.inner.view.lvb_len()
    }

    /// Completes when the session this client has now ends, with why: its lease expired or
    /// the server would not resume it ([`LostReason::SessionExpired`](crate::LostReason)),
    /// the client could not renew in time (`LocalLeaseLapsed`), the server shut down, or the
    /// client was closed. Completes at once between sessions.
    ///
    /// Every lock of the session ends with it, and each guard's [`lost`](LockGuard::lost)
    /// says so; this tells a client that holds no lock. The client opens a new session by
    /// itself afterwards, so a program whose work belongs to one session (a script's
    /// sequence of conversions, say) should stop when this completes rather than carry on in
    /// the next.
    ///
    /// The future does not borrow the client: the session is the one current when this is
    /// called, not when the future is first polled.
    pub fn session_ended(
        &self,
    ) -> impl std::future::Future<Output = crate::LostReason> + Send + 'static {
        let view = self.inner.view.clone();
        let id = view.session();
        async move {
            if id.0 == 0 {
                return crate::LostReason::SessionExpired;
            }
            view.ended(id).await
        }
    }

    /// Ends the session with `Goodbye`: the server releases every lock at once. Every guard's
    /// [`lost`](LockGuard::lost) fires with [`LostReason::Closed`](crate::LostReason::Closed);
    /// later calls on any clone fail with [`Error::Closed`]. If the client is disconnected at
    /// that moment, the server releases the locks when the lease runs out instead. A server
    /// that does not answer the `Goodbye` (gone without the connection saying so) is waited
    /// for 5 s at most.
    ///
    /// Closing an already closed client does nothing and returns `Ok`.
    pub async fn close(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        if self.send(Op::Close(reply)).is_err() {
            return Ok(());
        }
        rx.await.unwrap_or(Ok(Outcome::Closed)).map(drop)
    }

    async fn query(&self, query: Query) -> Result<Reply> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Call(Call::new(What::Query(query), reply)))?;
        match rx.await.unwrap_or(Err(Error::Closed))? {
            Outcome::Answer(reply) => Ok(reply),
            other => Err(Error::Protocol(format!(
                "expected an answer, got {other:?}"
            ))),
        }
    }

    fn send(&self, op: Op) -> Result<()> {
        self.inner.tx.send(op).map_err(|_| Error::Closed)
    }
}

/// The engine's lock request for `opts`.
fn lock_request(resource: &[u8], mode: Mode, opts: &LockOptions) -> LockRequest {
    LockRequest {
        resource: resource.to_vec(),
        mode,
        flags: opts.wire_flags(),
        value: None,
        timeout_ms: opts.timeout_ms(),
    }
}

fn unexpected(reply: &Reply) -> Error {
    Error::Protocol(format!("unexpected reply {reply:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        assert_send_sync::<Client>();
        assert_send_sync::<LockGuard>();
        assert_send_sync::<crate::Canceller>();
        assert_send_sync::<crate::Lost>();
        assert_send_sync::<Error>();
    }
}
