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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
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
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 5] = [
        FaultKind::Cut,
        FaultKind::Blackhole,
        FaultKind::Drop,
        FaultKind::Pause,
        FaultKind::Kill,
    ];

    /// The kind's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Cut => "cut",
            FaultKind::Blackhole => "blackhole",
            FaultKind::Drop => "drop",
            FaultKind::Pause => "pause",
            FaultKind::Kill => "kill",
        }
    }

    /// Parses a kind by name.
    pub fn parse(s: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s)
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

/// Injects faults (on clients, on `resources` hot resources, on the server) until `until`,
/// then heals every client link and waits for the faults in progress to end. Returns the
/// counts.
#[allow(clippy::too_many_arguments)]
pub async fn inject(
    cfg: &FaultConfig,
    slots: &[Arc<Slot>],
    server: &mut ServerProc,
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
                slot.proxy.cut();
                true
            }
            FaultKind::Blackhole => {
                let d = rng.random_range(lease_ttl / 20..=lease_ttl / 2);
                claim(&slot) && {
                    running.spawn(async move {
                        slot.proxy.blackhole(true);
                        tokio::time::sleep(d).await;
                        slot.proxy.blackhole(false);
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
                        slot.proxy.blackhole(true);
                        tokio::time::sleep(d).await;
                        slot.proxy.blackhole(false);
                        slot.paused.store(false, Ordering::SeqCst);
                        slot.busy.store(false, Ordering::SeqCst);
                    });
                    true
                }
            }
            FaultKind::Drop => {
                let addr = server.addr();
                let resource = resource_name(rng.random_range(0..resources.max(1)));
                let mode = [
                    dlock_core::Mode::PR,
                    dlock_core::Mode::PW,
                    dlock_core::Mode::EX,
                ][rng.random_range(0..3)];
                let rec = rec.clone();
                let ttl_ms = u64::try_from(lease_ttl.as_millis()).unwrap_or(u64::MAX);
                running.spawn(async move {
                    let _ = drop_session(addr, resource, mode, ttl_ms, &rec).await;
                });
                true
            }
            FaultKind::Kill => {
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
        s.proxy.blackhole(false);
        s.paused.store(false, Ordering::SeqCst);
    }
    // Faults in progress end by themselves within a lease and a half.
    let _ = tokio::time::timeout(lease_ttl * 4, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    running.abort_all();
    for s in slots {
        s.proxy.blackhole(false);
        s.paused.store(false, Ordering::SeqCst);
    }
    Ok(counts)
}

fn claim(slot: &Slot) -> bool {
    slot.busy
        .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
}

/// Opens a session straight to the server, asks for a lock, and closes the connection
/// without `Goodbye` once the request is answered (granted or queued).
async fn drop_session(
    addr: SocketAddr,
    resource: Vec<u8>,
    mode: dlock_core::Mode,
    ttl_ms: u64,
    rec: &Recorder,
) -> Result<()> {
    let bound = Duration::from_secs(2);
    let mut raw = tokio::time::timeout(
        bound,
        RawClient::connect_with_ttl(addr, "chaos-doomed", ttl_ms),
    )
    .await??;
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
