//! Helpers for tests that go through `dlock-client` against a [`TestServer`]: the conformance
//! binary and the SDK tests of the end-to-end binary.
//!
//! Synchronisation is always on observable state: a request is known to be queued once a
//! query sent *after* it on the same client's connection shows it (the server handles one
//! connection's requests in order, and queries run on the same task as lock commands), and a
//! notification that was generated has arrived once a ping sent later by its receiver is
//! answered (one session's events and replies share one ordered stream). Every wait is
//! bounded by [`WAIT`], so a bug fails a test instead of hanging it.

use std::fmt::Debug;
use std::time::Duration;

use crate::TestServer;
use anyhow::{Context, Result, bail};
use dlock_client::{
    Client, ConvertOptions, LockGuard, LockInfo, LockState, Mode, ResourceInfo, SessionId,
};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

/// Bound on any single wait for an expected outcome.
pub const WAIT: Duration = Duration::from_secs(10);

/// Bound on a whole test.
pub const TEST_LIMIT: Duration = Duration::from_secs(60);

/// A request (lock or convert) sent but not yet completed.
pub type Pending<'a, T> = BoxFuture<'a, dlock_client::Result<T>>;

/// Runs a whole test under [`TEST_LIMIT`].
pub async fn bounded<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .context("test did not finish in time")?
}

/// Awaits `f` for at most [`WAIT`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(WAIT, f)
        .await
        .with_context(|| format!("timed out after {WAIT:?} waiting for {what}"))
}

/// A server with the default configuration.
pub async fn server() -> Result<TestServer> {
    TestServer::start().await
}

/// A client (one session) named `name`.
pub async fn client(server: &TestServer, name: &str) -> Result<Client> {
    Ok(within(
        "connect",
        Client::builder(server.addr().to_string())
            .name(name)
            .connect(),
    )
    .await??)
}

/// `n` clients named `c0`, `c1`, ...
pub async fn clients(server: &TestServer, n: usize) -> Result<Vec<Client>> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        v.push(client(server, &format!("c{i}")).await?);
    }
    Ok(v)
}

/// The resource `name` as the server shows it now (it must exist).
pub async fn res(via: &Client, name: &str) -> Result<ResourceInfo> {
    within("query", via.query_resource(name))
        .await??
        .with_context(|| format!("resource {name} does not exist"))
}

/// Whether resource `name` exists.
pub async fn exists(via: &Client, name: &str) -> Result<bool> {
    Ok(within("query", via.query_resource(name)).await??.is_some())
}

/// Polls (once) the request in `pending`, which sends it, then queries `name` through `via`,
/// the client that made the request: the query travels after the request, so its answer
/// shows the request's effect. Fails if the request completes first.
pub async fn send_then_query<T: Debug>(
    pending: &mut Pending<'_, T>,
    via: &Client,
    name: &str,
) -> Result<ResourceInfo> {
    tokio::select! {
        biased;
        r = pending => bail!("request on {name} completed instead of staying queued: {r:?}"),
        q = res(via, name) => q,
    }
}

/// Like [`send_then_query`] with a ping instead of a query: afterwards the request has been
/// applied by the server.
pub async fn send_then_sync<T: Debug>(pending: &mut Pending<'_, T>, via: &Client) -> Result<()> {
    tokio::select! {
        biased;
        r = pending => bail!("request completed instead of staying queued: {r:?}"),
        p = within("ping", via.ping()) => { p??; Ok(()) }
    }
}

/// Asserts that `pending` is still pending after a ping of `via` (its owner).
pub async fn still_pending<T: Debug>(pending: &mut Pending<'_, T>, via: &Client) -> Result<()> {
    send_then_sync(pending, via).await
}

/// Awaits a pending request's completion for at most [`WAIT`].
pub async fn outcome<T>(what: &str, pending: Pending<'_, T>) -> Result<dlock_client::Result<T>> {
    within(what, pending).await
}

/// Starts a lock request without awaiting it.
pub fn start_lock<'a>(c: &'a Client, name: &'a str, mode: Mode) -> Pending<'a, LockGuard> {
    c.lock(name, mode).boxed()
}

/// Starts a conversion without awaiting it.
pub fn start_convert(g: &mut LockGuard, mode: Mode) -> Pending<'_, ()> {
    g.convert(mode).boxed()
}

/// Granted locks as (session, mode), sorted (the grant queue's order has no meaning, R3).
pub fn granted(info: &ResourceInfo) -> Vec<(SessionId, Mode)> {
    let mut v: Vec<_> = info
        .granted
        .iter()
        .map(|l| (l.session, granted_mode(l)))
        .collect();
    v.sort();
    v
}

/// The convert queue, head first, as (session, from, to).
pub fn converting(info: &ResourceInfo) -> Vec<(SessionId, Mode, Mode)> {
    info.converting
        .iter()
        .map(|l| match l.state {
            LockState::Converting { from, to } => (l.session, from, to),
            other => panic!("lock {:?} on the convert queue is {other:?}", l.lock),
        })
        .collect()
}

/// The wait queue, head first, as (session, mode).
pub fn waiting(info: &ResourceInfo) -> Vec<(SessionId, Mode)> {
    info.waiting
        .iter()
        .map(|l| match l.state {
            LockState::Waiting { mode } => (l.session, mode),
            other => panic!("lock {:?} on the wait queue is {other:?}", l.lock),
        })
        .collect()
}

fn granted_mode(l: &LockInfo) -> Mode {
    match l.state {
        LockState::Granted { mode } => mode,
        other => panic!("lock {:?} on the grant queue is {other:?}", l.lock),
    }
}

/// (session, mode) pairs, sorted, for comparison with [`granted`].
pub fn holders(v: &[(&Client, Mode)]) -> Vec<(SessionId, Mode)> {
    let mut v: Vec<_> = v.iter().map(|(c, m)| (c.session_id(), *m)).collect();
    v.sort();
    v
}

/// Waits until `g` has received a blocking notification carrying `mode` (R32, R35);
/// notifications for other modes are skipped (R37: only "at least one with mode M").
pub async fn expect_blocked(g: &mut LockGuard, mode: Mode) -> Result<()> {
    within(&format!("a blocking notification for {mode:?}"), async {
        loop {
            let m = g.blocked().await?;
            if m == mode {
                return Ok::<_, dlock_client::Error>(());
            }
        }
    })
    .await??;
    Ok(())
}

/// The blocking notifications `g` has received and not yet taken, after a ping of its owner
/// `via` (so every notification generated before the ping has arrived).
pub async fn drain_blocked(g: &mut LockGuard, via: &Client) -> Result<Vec<Mode>> {
    within("ping", via.ping()).await??;
    let mut v = Vec::new();
    while let Some(r) = g.blocked().now_or_never() {
        v.push(r?);
    }
    Ok(v)
}

/// Asserts that `g` has received no blocking notification (R34, R37: "none").
pub async fn expect_no_blocking(g: &mut LockGuard, via: &Client) -> Result<()> {
    let got = drain_blocked(g, via).await?;
    if !got.is_empty() {
        bail!(
            "unexpected blocking notifications {got:?} for {:?}",
            g.lock_id()
        );
    }
    Ok(())
}

/// Unlocks and waits for UNLOCKED.
pub async fn unlock(g: LockGuard) -> Result<()> {
    within("unlock", g.unlock()).await??;
    Ok(())
}

/// Starts a conversion with options without awaiting it.
pub fn start_convert_with(g: &mut LockGuard, mode: Mode, opts: ConvertOptions) -> Pending<'_, ()> {
    g.convert_with(mode, opts).boxed()
}

/// Polls `name` until `pred` holds (bounded by [`WAIT`]); returns the last answer. For state
/// changed by another session, where no ordering on one connection applies.
pub async fn wait_for_state(
    via: &Client,
    name: &str,
    what: &str,
    mut pred: impl FnMut(Option<&ResourceInfo>) -> bool,
) -> Result<Option<ResourceInfo>> {
    within(what, async {
        loop {
            let info = via.query_resource(name).await?;
            if pred(info.as_ref()) {
                return Ok::<_, anyhow::Error>(info);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await?
}
