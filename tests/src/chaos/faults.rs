//! Fault injection while the workload runs. Each kind can be switched on or off:
//!
//! - [`FaultKind::Cut`]: every connection of one client is closed (it reconnects and resumes).
//! - [`FaultKind::Blackhole`]: one client's traffic is held back for less than half a lease
//!   (a partition that heals; usually the session survives).
//! - [`FaultKind::Drop`]: a session takes a lock and its connection is closed without
//!   `Goodbye`: its locks must come free within its lease.
//! - [`FaultKind::Pause`]: one client stops and is cut off for 1.5 leases while holding its
//!   locks: it must see `lost()` before anyone else gets them.
//! - [`FaultKind::Kill`]: the server is killed with SIGKILL and restarted on the same data
//!   directory: tokens must keep growing; every client must learn its session is gone.
//!
//! Against a cluster ([`Servers::Cluster`]), three more (and `Kill` does not apply):
//!
//! - [`FaultKind::LeaderKill`]: the leader is killed with SIGKILL and restarted from its data
//!   directory: half the time once the others have elected a new leader, which gives every
//!   session the fail-over grace (clients resume there; no lock is lost to a client that
//!   keeps retrying), else after up to `max_down` (back that soon, it stands for election
//!   with the others, in a new term, and may win it).
//! - [`FaultKind::FollowerKill`]: a follower is killed and restarted: it catches up.
//! - [`FaultKind::Partition`]: one member (the leader half the time) is cut off from the
//!   others for 0.5 to 2 s (its peer links black-holed through their proxies, see
//!   [`TestCluster::isolate`]); its clients still reach it. An isolated leader stops serving
//!   and the majority elects another.
//!
//! Each of these runs to its end (the member back, a leader serving) before the next fault.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dlock_core::LockFlags;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::history::{ClientRecord, now_us};
use super::server_proc::ServerProc;
use super::workload::{Recorder, Slot, resource_name};
use crate::cluster::TestCluster;
use crate::raw::RawClient;

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FaultKind {
    /// Cut one client's connections.
    Cut,
    /// Black-hole one client's traffic briefly.
    Blackhole,
    /// Drop a session abruptly, without `Goodbye`.
    Drop,
    /// Pause one client past its lease (cut off while holding its locks).
    Pause,
    /// Kill the server with SIGKILL and restart it.
    Kill,
    /// Kill a cluster's leader with SIGKILL and restart it.
    LeaderKill,
    /// Kill a cluster's follower with SIGKILL and restart it.
    FollowerKill,
    /// Cut one member of a cluster off from the others for a while.
    Partition,
}

impl FaultKind {
    /// Every kind that applies to a single server (the default).
    pub const ALL: [FaultKind; 5] = [
        FaultKind::Cut,
        FaultKind::Blackhole,
        FaultKind::Drop,
        FaultKind::Pause,
        FaultKind::Kill,
    ];

    /// The default kinds against a cluster: the client faults and the member faults.
    pub const CLUSTER: [FaultKind; 7] = [
        FaultKind::Cut,
        FaultKind::Blackhole,
        FaultKind::Drop,
        FaultKind::Pause,
        FaultKind::LeaderKill,
        FaultKind::FollowerKill,
        FaultKind::Partition,
    ];

    /// The kind's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Cut => "cut",
            FaultKind::Blackhole => "blackhole",
            FaultKind::Drop => "drop",
            FaultKind::Pause => "pause",
            FaultKind::Kill => "kill",
            FaultKind::LeaderKill => "leader-kill",
            FaultKind::FollowerKill => "follower-kill",
            FaultKind::Partition => "partition",
        }
    }

    /// Parses a kind by name.
    pub fn parse(s: &str) -> Option<FaultKind> {
        FaultKind::ALL
            .into_iter()
            .chain(FaultKind::CLUSTER)
            .find(|k| k.name() == s)
    }
}

/// How many faults of each kind were injected.
pub type FaultCounts = BTreeMap<FaultKind, u64>;

/// Settings of the fault injector.
#[derive(Clone, Debug)]
pub struct FaultConfig {
    /// The kinds to inject (none: a fault-free run).
    pub kinds: Vec<FaultKind>,
    /// Shortest gap between two faults.
    pub min_gap: Duration,
    /// Longest gap between two faults.
    pub max_gap: Duration,
    /// Longest time the server stays down after a kill.
    pub max_down: Duration,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            kinds: FaultKind::ALL.to_vec(),
            min_gap: Duration::from_millis(100),
            max_gap: Duration::from_millis(800),
            max_down: Duration::from_millis(300),
        }
    }
}

/// What the server faults hit: one server, or the members of a cluster.
pub enum Servers<'a> {
    /// A single server.
    One(&'a mut ServerProc),
    /// A cluster (started with proxied peer links and audit logs).
    Cluster(&'a mut TestCluster),
}

impl Servers<'_> {
    /// Where a client connects: the server, or every member.
    fn addrs(&self) -> Vec<SocketAddr> {
        match self {
            Servers::One(s) => vec![s.addr()],
            Servers::Cluster(c) => c.ids().into_iter().map(|id| c.client_addr(id)).collect(),
        }
    }
}

/// How long a cluster gets to elect a leader after a member fault before the run fails.
const ELECTION_BOUND: Duration = Duration::from_secs(30);

/// Injects faults (on clients, on `resources` hot resources, on the servers) until `until`,
/// then heals every client link and waits for the faults in progress to end. Returns the
/// counts.
#[allow(clippy::too_many_arguments)]
pub async fn inject(
    cfg: &FaultConfig,
    slots: &[Arc<Slot>],
    servers: &mut Servers<'_>,
    lease_ttl: Duration,
    resources: usize,
    seed: u64,
    rec: &Recorder,
    until: Instant,
) -> Result<FaultCounts> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut counts = FaultCounts::new();
    let mut running = JoinSet::new();
    let mut bag: Vec<FaultKind> = Vec::new();
    if cfg.kinds.is_empty() || slots.is_empty() {
        tokio::time::sleep_until(until).await;
        return Ok(counts);
    }
    loop {
        let gap = rng.random_range(cfg.min_gap..=cfg.max_gap.max(cfg.min_gap));
        if Instant::now() + gap >= until {
            tokio::time::sleep_until(until).await;
            break;
        }
        tokio::time::sleep(gap).await;
        while running.try_join_next().is_some() {}
        // Kinds come from a shuffled bag, so every enabled kind is injected once per round.
        if bag.is_empty() {
            bag = cfg.kinds.clone();
            bag.shuffle(&mut rng);
        }
        let Some(kind) = bag.pop() else {
            break;
        };
        let slot = slots[rng.random_range(0..slots.len())].clone();
        let injected = match kind {
            FaultKind::Cut => {
                slot.cut();
                true
            }
            FaultKind::Blackhole => {
                let d = rng.random_range(lease_ttl / 20..=lease_ttl / 2);
                claim(&slot) && {
                    running.spawn(async move {
                        slot.blackhole(true);
                        tokio::time::sleep(d).await;
                        slot.blackhole(false);
                        slot.busy.store(false, Ordering::SeqCst);
                    });
                    true
                }
            }
            FaultKind::Pause => {
                let d = lease_ttl * 3 / 2 + Duration::from_millis(rng.random_range(0..200));
                claim(&slot) && {
                    running.spawn(async move {
                        slot.paused.store(true, Ordering::SeqCst);
                        slot.blackhole(true);
                        tokio::time::sleep(d).await;
                        slot.blackhole(false);
                        slot.paused.store(false, Ordering::SeqCst);
                        slot.busy.store(false, Ordering::SeqCst);
                    });
                    true
                }
            }
            FaultKind::Drop => {
                let addrs = servers.addrs();
                let resource = resource_name(rng.random_range(0..resources.max(1)));
                let mode = [
                    dlock_core::Mode::PR,
                    dlock_core::Mode::PW,
                    dlock_core::Mode::EX,
                ][rng.random_range(0..3)];
                let rec = rec.clone();
                let ttl_ms = u64::try_from(lease_ttl.as_millis()).unwrap_or(u64::MAX);
                running.spawn(async move {
                    let _ = drop_session(&addrs, resource, mode, ttl_ms, &rec).await;
                });
                true
            }
            FaultKind::LeaderKill | FaultKind::FollowerKill | FaultKind::Partition => {
                let Servers::Cluster(cluster) = servers else {
                    bail!("the {} fault needs a cluster", kind.name());
                };
                member_fault(kind, cluster, cfg, &mut rng).await?;
                // Let the workload get going on the leader before the next fault.
                let recover = lease_ttl;
                if Instant::now() + recover < until {
                    tokio::time::sleep(recover).await;
                }
                true
            }
            FaultKind::Kill => {
                let Servers::One(server) = servers else {
                    bail!("the kill fault needs a single server (a cluster has leader-kill)");
                };
                server.kill().await;
                let down = rng.random_range(Duration::ZERO..=cfg.max_down);
                tokio::time::sleep(down).await;
                server.restart().await?;
                // The restarted server grants nothing until the old leases are over (its
                // recovery grace): let the workload get going again before the next fault.
                let recover = lease_ttl * 3 / 2;
                if Instant::now() + recover < until {
                    tokio::time::sleep(recover).await;
                }
                true
            }
        };
        if injected {
            *counts.entry(kind).or_default() += 1;
        } else {
            // The client picked was busy with another fault: try this kind again next time.
            bag.push(kind);
        }
    }
    for s in slots {
        s.blackhole(false);
        s.paused.store(false, Ordering::SeqCst);
    }
    // Faults in progress end by themselves within a lease and a half.
    let _ = tokio::time::timeout(lease_ttl * 4, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    running.abort_all();
    for s in slots {
        s.blackhole(false);
        s.paused.store(false, Ordering::SeqCst);
    }
    Ok(counts)
}

/// One fault on a member of `cluster`, run to its end: the member is back and a leader
/// serves.
async fn member_fault(
    kind: FaultKind,
    cluster: &mut TestCluster,
    cfg: &FaultConfig,
    rng: &mut StdRng,
) -> Result<()> {
    let leader = cluster
        .wait_leader(ELECTION_BOUND)
        .await
        .with_context(|| format!("before a {} fault", kind.name()))?;
    let others: Vec<u64> = cluster.ids().into_iter().filter(|&i| i != leader).collect();
    let follower = others[rng.random_range(0..others.len())];
    let what = match kind {
        FaultKind::LeaderKill | FaultKind::FollowerKill => {
            let id = if kind == FaultKind::LeaderKill {
                leader
            } else {
                follower
            };
            // A leader back within the others' election timeout may win the next election
            // itself: half the leader kills wait for another member to lead first, a
            // fail-over.
            let fail_over = kind == FaultKind::LeaderKill && rng.random_bool(0.5);
            let down = rng.random_range(Duration::ZERO..=cfg.max_down);
            let mut what = format!(
                "{} of node {id} (leader {leader}), down {}",
                kind.name(),
                if fail_over {
                    "until another leads".to_owned()
                } else {
                    format!("{down:?}")
                }
            );
            tracing::info!("{what}");
            cluster.kill(id).await;
            if fail_over {
                let next = cluster
                    .wait_leader_except(&[id], ELECTION_BOUND)
                    .await
                    .with_context(|| format!("during the {what}"))?;
                what = format!("{what} (node {next})");
            } else {
                tokio::time::sleep(down).await;
            }
            cluster
                .restart(id)
                .await
                .with_context(|| format!("restarting after the {what}"))?;
            what
        }
        _ => {
            let id = if rng.random_bool(0.5) {
                leader
            } else {
                follower
            };
            let apart = Duration::from_millis(rng.random_range(500..=2000));
            let what = format!("partition of node {id} (leader {leader}) for {apart:?}");
            tracing::info!("{what}");
            cluster.isolate(id);
            tokio::time::sleep(apart).await;
            cluster.heal(id);
            what
        }
    };
    let now = cluster
        .wait_leader(ELECTION_BOUND)
        .await
        .with_context(|| format!("after the {what}"))?;
    tracing::info!("leader after the {what}: node {now}");
    Ok(())
}

fn claim(slot: &Slot) -> bool {
    slot.busy
        .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
}

/// Opens a session straight to the server (the first of `addrs` that accepts it: a
/// cluster's leader), asks for a lock, and closes the connection without `Goodbye` once the
/// request is answered (granted or queued).
async fn drop_session(
    addrs: &[SocketAddr],
    resource: Vec<u8>,
    mode: dlock_core::Mode,
    ttl_ms: u64,
    rec: &Recorder,
) -> Result<()> {
    let bound = Duration::from_secs(2);
    let mut opened = None;
    for addr in addrs {
        let attempt = tokio::time::timeout(
            bound,
            RawClient::connect_with_ttl(*addr, "chaos-doomed", ttl_ms),
        )
        .await;
        if let Ok(Ok(raw)) = attempt {
            opened = Some(raw);
            break;
        }
    }
    let mut raw = opened.context("no server accepted the doomed session")?;
    let name = String::from_utf8_lossy(&resource).into_owned();
    let id = raw.lock(&name, mode, LockFlags::empty()).await?;
    let answer = tokio::time::timeout(bound, raw.event_for(id)).await;
    let session = raw.session;
    // Recorded just before the connection goes: the lease runs from the last message.
    rec.push(ClientRecord::Dropped {
        session,
        ttl_ms,
        ts_us: now_us(),
    });
    drop(raw);
    answer??;
    Ok(())
}
