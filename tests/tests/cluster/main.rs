//! The replicated cluster: three `dlock-server` processes on 127.0.0.1 ([`TestCluster`]),
//! SIGKILLed, restarted and partitioned, with `dlock-client` sessions on all three endpoints.
//! One test binary; each numbered module is one topic.
//!
//! Every test runs three server processes whose elections depend on timers, so the tests run
//! one at a time ([`one_at_a_time`]) rather than crowd the machine's cores; every wait polls
//! observable state under a deadline.

mod t90_leader_failover;
mod t91_exactly_once;
mod t92_follower_catch_up;
mod t93_restart_all;
mod t94_partition;
mod t95_peer_secret;
mod t96_linearizable_reads;
mod t97_connect_during_failover;
mod t98_metrics;
mod t99_removed_member;
mod t9a_lost_disk;
mod t9b_graceful_stop;

// The strict reader of the metrics text that the ops tests use.
#[path = "../ops/prom.rs"]
mod prom;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dlock_client::{Client, LockGuard, LockInfo, LockState, Mode, ResourceInfo};
use dlock_proto::status::ClusterView;
use dlock_tests::chaos::cluster::merge_member_logs;
use dlock_tests::cluster::{ClusterOptions, TestCluster};
use tokio::sync::{Mutex, MutexGuard};

/// Held by the test that runs; the others wait for it.
static RUNNING: Mutex<()> = Mutex::const_new(());

/// Waits until no other test of this binary runs; the run lasts while the guard lives.
pub(crate) async fn one_at_a_time() -> MutexGuard<'static, ()> {
    RUNNING.lock().await
}

/// Bound on a whole test (after it got its turn).
pub(crate) const TEST_LIMIT: Duration = Duration::from_secs(90);

/// Bound on an election (a leader killed or cut off, a cluster started or restarted): the
/// default election timeouts are 200..400 ms, and a fail-over measured 0.5 to 2.5 s on
/// loopback; a 2-core machine under a load of 10 or more saw elections churn for 15 s.
pub(crate) const ELECTION: Duration = Duration::from_secs(30);

/// The clients' lease: longer than the default 10 s so that a slow election on a loaded
/// machine does not end a session (every test asserts what survives a fail-over, not how
/// fast it is).
pub(crate) const LEASE: Duration = Duration::from_secs(30);

/// Bound on any other single wait.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// Options for three nodes of the `chaos serve` binary (every server flag), peers direct,
/// each node with its own audit log (see [`members_agree`]).
pub(crate) fn options() -> ClusterOptions {
    ClusterOptions::new(env!("CARGO_BIN_EXE_chaos")).audit_logs()
}

/// Checks that the members agree on every input two of them applied, as the chaos runs'
/// replication check does: each member's audit log records what it applied, and merging
/// them compares the members wherever their logs overlap. Two members that applied
/// different inputs at one index (Raft's log matching broken) fail the test.
pub(crate) fn members_agree(c: &TestCluster) -> Result<()> {
    let logs: Vec<_> = c.ids().into_iter().map(|id| c.audit_log(id)).collect();
    let merged = merge_member_logs(&logs, |_| {})?;
    anyhow::ensure!(
        merged.mismatch_count == 0,
        "the members applied different inputs at {} indices: {:#?}",
        merged.mismatch_count,
        merged.mismatches
    );
    anyhow::ensure!(
        merged.compared > 0,
        "no input was applied by two members: {merged:?}"
    );
    Ok(())
}

/// Runs a test body under [`TEST_LIMIT`], its turn first.
pub(crate) async fn run<F: Future<Output = Result<()>>>(body: F) -> Result<()> {
    let _turn = one_at_a_time().await;
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(TEST_LIMIT, body)
        .await
        .context("the test did not finish in time")?;
    eprintln!("test body took {:.2?}", started.elapsed());
    r
}

/// Awaits `f` for at most [`WAIT`].
pub(crate) async fn within<T>(what: &str, f: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(WAIT, f)
        .await
        .with_context(|| format!("timed out after {WAIT:?} waiting for {what}"))
}

/// Awaits `f`, a client call, for at most [`WAIT`]; its error says what was awaited.
pub(crate) async fn done<T>(
    what: &str,
    f: impl Future<Output = dlock_client::Result<T>>,
) -> Result<T> {
    within(what, f)
        .await?
        .map_err(|e| anyhow::anyhow!("{what}: {e} ({e:?})"))
}

/// How long ago member `id` last answered the leader, in `view` (`None` for the leader, or
/// a member never heard from).
pub(crate) fn heard(view: &ClusterView, id: u64) -> Option<u64> {
    view.members
        .iter()
        .find(|m| m.id == id)
        .and_then(|m| m.heard_ms)
}

/// Asks `via` for the cluster view every 50 ms until `shows` finds in it what is awaited
/// (`Ok(true)`): returns that view. Fails if `shows` fails (the view shows something that
/// must not happen), or after [`WAIT`].
pub(crate) async fn wait_view(
    via: &Client,
    what: &str,
    mut shows: impl FnMut(&ClusterView) -> Result<bool>,
) -> Result<ClusterView> {
    within(what, async {
        loop {
            let view = via.query_cluster().await?.context("not a cluster")?;
            if shows(&view).with_context(|| format!("waiting for {what}"))? {
                return Ok(view);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await?
}

/// A client with every node's endpoint, named `name`.
pub(crate) async fn client(c: &TestCluster, name: &str) -> Result<Client> {
    Ok(within(
        &format!("client {name} to connect"),
        Client::builder(c.endpoints())
            .name(name)
            .lease_ttl(LEASE)
            .backoff(Duration::from_millis(20), Duration::from_millis(200))
            .connect(),
    )
    .await??)
}

/// Resource `name` as the leader shows it now (it must exist).
pub(crate) async fn res(via: &Client, name: &str) -> Result<ResourceInfo> {
    within(&format!("a query of {name}"), via.query_resource(name))
        .await??
        .with_context(|| format!("resource {name} does not exist"))
}

/// The mode a granted lock holds.
pub(crate) fn held_mode(l: &LockInfo) -> Option<Mode> {
    match l.state {
        LockState::Granted { mode } => Some(mode),
        _ => None,
    }
}

/// Asserts that `g`'s lock is the only one on `name`'s grant queue, in its mode, with its
/// token, and that `g` has not reported it lost.
pub(crate) async fn assert_sole_holder(via: &Client, name: &str, g: &LockGuard) -> Result<()> {
    let info = res(via, name).await?;
    let holders: Vec<_> = info
        .granted
        .iter()
        .map(|l| (l.lock, held_mode(l), l.token))
        .collect();
    if holders != [(g.lock_id(), Some(g.mode()), Some(g.token()))] {
        bail!(
            "{name}: expected only {:?} in {:?} with token {:?}, found {info:?}",
            g.lock_id(),
            g.mode(),
            g.token()
        );
    }
    if g.is_lost() {
        bail!("{name}: the guard reports its lock lost");
    }
    Ok(())
}

/// A mode that conflicts with `m` (none conflicts with NL).
pub(crate) fn conflicting(m: Mode) -> Option<Mode> {
    match m {
        Mode::NL => None,
        Mode::CR => Some(Mode::EX),
        Mode::CW => Some(Mode::PR),
        Mode::PR => Some(Mode::CW),
        Mode::PW => Some(Mode::PW),
        Mode::EX => Some(Mode::CR),
    }
}

/// Asserts that `via` cannot take `name` in `mode` at once (NOQUEUE is refused).
pub(crate) async fn assert_refused(via: &Client, name: &str, mode: Mode) -> Result<()> {
    match within(&format!("a try-lock of {name}"), via.try_lock(name, mode)).await? {
        Err(dlock_client::Error::NotQueued) => Ok(()),
        Ok(g) => bail!(
            "{name} in {mode:?} was granted (token {:?}) though it should be held in a conflicting mode",
            g.token()
        ),
        Err(e) => bail!("a try-lock of {name} in {mode:?} failed with {e} instead of NotQueued"),
    }
}

/// Node `id`'s log file as it is now.
pub(crate) fn log_of(c: &TestCluster, id: u64) -> Result<String> {
    let path = c.dir().join(format!("node{id}.log"));
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// Polls node `id`'s log for `needle`, at most `within`.
pub(crate) async fn wait_log(
    c: &TestCluster,
    id: u64,
    needle: &str,
    within: Duration,
) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if log_of(c, id)?.contains(needle) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("node {id} never logged {needle:?} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
