//! Fail-over time of a 3-node cluster: the `failover` binary.
//!
//! For each of `kills` rounds: find the leader; start a *holder* (a client that takes a lock
//! and keeps it) and a *cycler* (a client that locks and unlocks a key of its own without
//! pause), both given every member's address; SIGKILL the leader's process; then measure
//!
//! - **first grant**: from the kill to the first lock granted on a fresh resource through a
//!   fresh client given every member's address. Fresh clients are started every
//!   [`ATTEMPT_EVERY`] (each gives up after [`ATTEMPT_LIFETIME`]) until one is granted, so
//!   the figure is when the cluster grants again, not when one client's retry happened to
//!   fire, nor how long a request sent to a member that lost its leader stays stuck;
//! - **cycler**: from the kill to the end of the cycler's first lock + unlock begun after the
//!   kill: what an application already connected sees, with the client's default settings;
//! - **holder kept**: whether the holder's lock survived (for dlock: its guard not lost once
//!   its client works again; for etcd: the lock's key still there);
//!
//! then restart the killed member from its data directory and wait until it has caught up
//! with the leader before the next round. Every wait is bounded ([`ROUND_LIMIT`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::backend::{Access, Backend, Conn};

pub mod dlock;
#[cfg(feature = "peers")]
pub mod etcd;
pub mod members;
pub mod stats;

pub use members::Member;
pub use stats::{KillResult, Summary};

/// A fresh client is started this often while no grant has come back.
pub const ATTEMPT_EVERY: Duration = Duration::from_millis(20);
/// A fresh client that has not been granted its lock after this long gives up (a request
/// stuck at a member that lost its leader can wait out a long timeout: etcd's is 7 s), so
/// that later clients find the new leader.
pub const ATTEMPT_LIFETIME: Duration = Duration::from_secs(2);
/// At most this many fresh clients try at once (more than [`ATTEMPT_LIFETIME`] /
/// [`ATTEMPT_EVERY`], so a new one always starts on time).
pub const ATTEMPTS_IN_FLIGHT: usize = 128;
/// The longest any step of a round (election, grant, catch-up) may take before the round,
/// and the benchmark, fails.
pub const ROUND_LIMIT: Duration = Duration::from_secs(60);
/// How often a condition (a leader, a caught-up member) is asked for again.
pub const POLL: Duration = Duration::from_millis(20);
/// Cycles the cycler completes before the kill, so it is known to work.
const WARM_CYCLES: u64 = 3;

/// A cluster whose members this process runs, and what the benchmark needs to know of it.
pub trait Cluster {
    /// A client of the whole cluster (every member's address).
    type Backend: Backend + Clone;

    /// The cluster's name in reports.
    fn name(&self) -> &'static str;

    /// The client backend, given every member's address.
    fn backend(&self) -> &Self::Backend;

    /// The members.
    fn members(&mut self) -> &mut [Member];

    /// Starts member `idx`; `first` when the cluster is being formed.
    fn start_member(&mut self, idx: usize, first: bool) -> Result<()>;

    /// The index of the current leader, once one is known to every running member asked
    /// (an error while there is none).
    fn leader(&mut self) -> impl Future<Output = Result<usize>> + Send;

    /// Whether member `idx` holds everything the leader has (`leader` is its index).
    fn caught_up(&mut self, idx: usize, leader: usize)
    -> impl Future<Output = Result<bool>> + Send;
}

/// A bounded wait for a condition asked again every [`POLL`], for at most [`ROUND_LIMIT`].
#[derive(Debug)]
pub struct Poll {
    what: String,
    deadline: Instant,
    last_err: Option<anyhow::Error>,
}

impl Poll {
    /// A wait for `what` (named in the error when it times out), starting now.
    pub fn new(what: impl Into<String>) -> Poll {
        Poll {
            what: what.into(),
            deadline: Instant::now() + ROUND_LIMIT,
            last_err: None,
        }
    }

    /// The condition did not hold (`err`: why, if asking failed): an error once the time is
    /// up, else a pause of [`POLL`] before the next try.
    pub async fn again(&mut self, err: Option<anyhow::Error>) -> Result<()> {
        if let Some(e) = err {
            self.last_err = Some(e);
        }
        if Instant::now() >= self.deadline {
            let what = &self.what;
            match self.last_err.take() {
                Some(e) => bail!("{what}: not within {ROUND_LIMIT:?}: last error: {e:#}"),
                None => bail!("{what}: not within {ROUND_LIMIT:?}"),
            }
        }
        tokio::time::sleep(POLL).await;
        Ok(())
    }
}

/// Starts every member, waits for a leader and for every member to catch up.
pub async fn form<C: Cluster>(cluster: &mut C) -> Result<usize> {
    for idx in 0..cluster.members().len() {
        cluster.start_member(idx, true)?;
    }
    let leader = wait_leader(cluster).await?;
    for idx in 0..cluster.members().len() {
        wait_caught_up(cluster, idx).await?;
    }
    Ok(leader)
}

/// Waits until the cluster has a leader; its index.
async fn wait_leader<C: Cluster>(cluster: &mut C) -> Result<usize> {
    let name = cluster.name();
    let mut poll = Poll::new(format!("{name}: a leader"));
    loop {
        let err = match cluster.leader().await {
            Ok(leader) => return Ok(leader),
            Err(e) => e,
        };
        if let Err(e) = poll.again(Some(err)).await {
            let dead: Vec<String> = cluster
                .members()
                .iter_mut()
                .filter_map(|m| {
                    (!m.running()).then(|| format!("member {}: {}", m.id, m.log_tail()))
                })
                .collect();
            return Err(e.context(format!("{name}: stopped members and their logs: {dead:?}")));
        }
    }
}

/// Waits until member `idx` has caught up with the leader; how long that took.
async fn wait_caught_up<C: Cluster>(cluster: &mut C, idx: usize) -> Result<Duration> {
    let t0 = Instant::now();
    let mut poll = Poll::new(format!("{}: member index {idx} caught up", cluster.name()));
    loop {
        // Each try asks who leads now (it may change while the member rejoins).
        let err = match cluster.leader().await {
            Ok(leader) => match cluster.caught_up(idx, leader).await {
                Ok(true) => return Ok(t0.elapsed()),
                Ok(false) => None,
                Err(e) => Some(e),
            },
            Err(e) => Some(e),
        };
        poll.again(err).await?;
    }
}

/// Runs `kills` rounds against a formed cluster; `on_round` is told of each result as it
/// comes (for progress output) and of every change of the member processes (pid file).
/// What a run measured: the rounds completed, and why it stopped early, if it did.
#[derive(Debug)]
pub struct RunOutcome {
    /// The completed rounds.
    pub results: Vec<KillResult>,
    /// The error that stopped the run before its last round.
    pub error: Option<anyhow::Error>,
}

/// Runs `kills` rounds against a formed cluster (as described above); a round that fails ends
/// the run, and the rounds completed before it are kept.
pub async fn run<C: Cluster>(
    cluster: &mut C,
    kills: usize,
    prefix: &str,
    on_change: impl FnMut(&[Member], Option<&KillResult>),
) -> RunOutcome {
    let mut results = Vec::with_capacity(kills);
    let error = run_rounds(cluster, kills, prefix, on_change, &mut results)
        .await
        .err();
    RunOutcome { results, error }
}

/// The rounds of [`run`], each pushed to `results` as it completes.
async fn run_rounds<C: Cluster>(
    cluster: &mut C,
    kills: usize,
    prefix: &str,
    mut on_change: impl FnMut(&[Member], Option<&KillResult>),
    results: &mut Vec<KillResult>,
) -> Result<()> {
    for round in 0..kills {
        let leader = wait_leader(cluster).await?;
        let load = Load::start(cluster.backend(), &format!("{prefix}r{round}/")).await?;

        let killed_at = Instant::now();
        cluster.members()[leader].kill().await?;
        on_change(cluster.members(), None);

        let first_grant = first_grant(
            cluster.backend(),
            &format!("{prefix}r{round}/fresh"),
            killed_at,
        )
        .await
        .with_context(|| format!("{}: round {round}: first grant", cluster.name()))?;
        let (cycler, holder_kept) = load
            .finish(killed_at)
            .await
            .with_context(|| format!("{}: round {round}: the connected clients", cluster.name()))?;

        cluster.start_member(leader, false)?;
        on_change(cluster.members(), None);
        let catch_up = wait_caught_up(cluster, leader).await?;
        let result = KillResult {
            round,
            first_grant,
            cycler,
            holder_kept,
            catch_up,
        };
        on_change(cluster.members(), Some(&result));
        results.push(result);
    }
    Ok(())
}

/// Races fresh clients, one started every [`ATTEMPT_EVERY`], until one is granted a lock on a
/// resource of its own; the time from `killed_at` to that grant.
async fn first_grant<B: Backend + Clone>(
    backend: &B,
    prefix: &str,
    killed_at: Instant,
) -> Result<Duration> {
    let deadline = killed_at + ROUND_LIMIT;
    let mut attempts = JoinSet::new();
    let mut next_attempt = Instant::now();
    let mut started = 0usize;
    let mut last_err: Option<anyhow::Error> = None;
    loop {
        if Instant::now() >= deadline {
            let e = last_err.map(|e| format!("{e:#}")).unwrap_or_default();
            bail!(
                "no grant within {ROUND_LIMIT:?} of the kill ({started} clients tried; last error: {e})"
            );
        }
        if attempts.len() < ATTEMPTS_IN_FLIGHT && Instant::now() >= next_attempt {
            let key = format!("{prefix}{started}");
            let backend = backend.clone();
            let id = started;
            attempts.spawn(async move {
                let (conn, held) = tokio::time::timeout(ATTEMPT_LIFETIME, async {
                    let conn = backend.connect(id).await?;
                    let held = conn.acquire(&key, Access::Exclusive).await?;
                    anyhow::Ok((conn, held))
                })
                .await
                .context("gave up")??;
                let granted = Instant::now();
                // Cleaning up is not timed.
                let _ = conn.release(held).await;
                let _ = conn.close(Vec::new()).await;
                anyhow::Ok(granted)
            });
            started += 1;
            next_attempt = Instant::now() + ATTEMPT_EVERY;
        }
        let wake = next_attempt.min(deadline);
        tokio::select! {
            Some(res) = attempts.join_next(), if !attempts.is_empty() => match res {
                Ok(Ok(granted)) => {
                    attempts.abort_all();
                    return Ok(granted.saturating_duration_since(killed_at));
                }
                Ok(Err(e)) => last_err = Some(e),
                Err(e) => last_err = Some(e.into()),
            },
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// The connected clients of one round: the holder and the cycler.
struct Load<C: Conn> {
    holder: C,
    held: C::Held,
    /// The cycler's (start, end) of its latest completed cycle.
    cycles: watch::Receiver<(u64, Option<(Instant, Instant)>)>,
    stop: Arc<AtomicBool>,
    cycler: tokio::task::JoinHandle<Result<C>>,
    prefix: String,
}

impl<C: Conn> Load<C> {
    async fn start<B: Backend<Conn = C>>(backend: &B, prefix: &str) -> Result<Load<C>> {
        let holder = backend
            .connect(1_000_000)
            .await
            .context("the holder connects")?;
        let held = holder
            .acquire(&format!("{prefix}held"), Access::Exclusive)
            .await
            .context("the holder's lock")?;
        let cycler_conn = backend
            .connect(1_000_001)
            .await
            .context("the cycler connects")?;
        let (tx, cycles) = watch::channel((0, None));
        let (err_tx, err_rx) = watch::channel(String::new());
        let stop = Arc::new(AtomicBool::new(false));
        let key = format!("{prefix}cycle");
        let stop2 = stop.clone();
        let cycler = tokio::spawn(async move {
            let conn = cycler_conn;
            let mut done = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                // A failed request (the leader died under it) is simply tried again.
                let ok =
                    match tokio::time::timeout(ROUND_LIMIT, conn.acquire(&key, Access::Exclusive))
                        .await
                    {
                        Ok(Ok(held)) => conn.release(held).await.is_ok(),
                        Ok(Err(e)) => {
                            err_tx.send_replace(format!("{e:#}"));
                            false
                        }
                        Err(_) => bail!("a lock of the cycler took longer than {ROUND_LIMIT:?}"),
                    };
                if ok {
                    done += 1;
                    tx.send_replace((done, Some((t0, Instant::now()))));
                } else {
                    tokio::time::sleep(POLL).await;
                }
            }
            Ok(conn)
        });
        let mut load = Load {
            holder,
            held,
            cycles,
            stop,
            cycler,
            prefix: prefix.to_owned(),
        };
        tokio::time::timeout(
            ROUND_LIMIT,
            load.cycles.wait_for(|(n, _)| *n >= WARM_CYCLES),
        )
        .await
        .with_context(|| {
            format!(
                "the cycler did not get going (last error: {})",
                err_rx.borrow().as_str()
            )
        })?
        .context("the cycler stopped")?;
        Ok(load)
    }

    /// Waits for the cycler's first cycle begun after `killed_at`, then checks the holder's
    /// lock, and ends both clients. Gives the cycler's time and whether the lock was kept.
    async fn finish(mut self, killed_at: Instant) -> Result<(Duration, bool)> {
        let cycled = tokio::time::timeout(
            ROUND_LIMIT,
            self.cycles
                .wait_for(|(_, last)| last.is_some_and(|(start, _)| start >= killed_at)),
        )
        .await
        .context("no cycle of the cycler completed after the kill")?
        .context("the cycler stopped")?
        .1;
        let cycler_time = cycled
            .map(|(_, end)| end.saturating_duration_since(killed_at))
            .context("a cycle without times")?;
        self.stop.store(true, Ordering::Relaxed);

        // The holder's client works again once it is granted something new; only then can
        // it tell whether its session, and so its lock, survived. A request that fails (it
        // went to the dead member) is tried again.
        let probe_key = format!("{}probe", self.prefix);
        let mut poll = Poll::new("the holder's client works again");
        let probe = loop {
            match self.holder.acquire(&probe_key, Access::Exclusive).await {
                Ok(p) => break p,
                Err(e) => poll.again(Some(e)).await?,
            }
        };
        let mut poll = Poll::new("the holder's lock checked");
        let kept = loop {
            match self.holder.still_held(&self.held).await {
                Ok(k) => break k,
                Err(e) => poll.again(Some(e)).await?,
            }
        };
        // Cleaning up is best effort: closing the clients ends whatever is left.
        let _ = self.holder.release(probe).await;
        if kept {
            let _ = self.holder.release(self.held).await;
        }
        let _ = self.holder.close(Vec::new()).await;
        let cycler = self.cycler.await.context("the cycler task")??;
        let _ = cycler.close(Vec::new()).await;
        Ok((cycler_time, kept))
    }
}
