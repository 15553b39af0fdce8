//! The workload: many clients doing random lock / try-lock / convert / unlock / cancel with
//! random modes on a few hot resources, with random hold times, each through its own
//! [`Proxy`] so that faults can hit one client at a time. Every operation and every `lost()`
//! is recorded with wall-clock times for the checker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dlock_client::{Client, ConvertOptions, Error, LockGuard, LockOptions, Mode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use super::history::{ClientRecord, LostRecord, OpKind, OpOutcome, OpRecord, lost_kind, now_us};
use crate::proxy::Proxy;

/// Settings of the workload.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Number of clients.
    pub clients: usize,
    /// Number of hot resources (`chaos-0` ..).
    pub resources: usize,
    /// Lease TTL every client asks for.
    pub lease_ttl: Duration,
    /// Longest think / hold time between two operations of a client.
    pub max_hold: Duration,
    /// Longest server-side timeout of a queued lock or conversion.
    pub max_wait: Duration,
    /// An operation without an answer after this long is recorded as hung.
    pub hang_bound: Duration,
    /// Most locks one client holds at once.
    pub max_held: usize,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            clients: 16,
            resources: 4,
            lease_ttl: Duration::from_secs(1),
            max_hold: Duration::from_millis(30),
            max_wait: Duration::from_millis(600),
            hang_bound: Duration::from_secs(20),
            max_held: 2,
        }
    }
}

/// Where every client appends its records.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<ClientRecord>>>);

impl Recorder {
    /// Appends a record.
    pub fn push(&self, r: ClientRecord) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(r);
    }

    /// Takes every record so far.
    pub fn take(&self) -> Vec<ClientRecord> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// One workload client's fault controls.
pub struct Slot {
    /// Its proxies, one per server it may connect to (cut, black hole): one for a single
    /// server, one per member of a cluster.
    pub proxies: Vec<Proxy>,
    /// While set, the client issues no operation and keeps the locks it holds (a paused
    /// process).
    pub paused: AtomicBool,
    /// Set while a fault targets this client, so that faults do not overlap on one client.
    pub busy: AtomicBool,
}

impl Slot {
    /// Closes every connection of the client (it reconnects and resumes).
    pub fn cut(&self) {
        for p in &self.proxies {
            p.cut();
        }
    }

    /// Holds back (or lets through again) every byte of the client's traffic.
    pub fn blackhole(&self, on: bool) {
        for p in &self.proxies {
            p.blackhole(on);
        }
    }

    /// The endpoint list the client connects with: its proxies' addresses.
    ///
    /// A cluster member that is not the leader refuses the client with the leader's own
    /// address, which the client follows: such a connection bypasses the proxy, so faults
    /// of this slot only reach the client while it is connected through one.
    pub fn endpoints(&self) -> String {
        self.proxies
            .iter()
            .map(|p| p.addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A held lock and what its `lost()` watcher needs to know about it.
struct Held {
    guard: LockGuard,
    mode: Arc<Mutex<Mode>>,
}

/// The resource name of hot resource `i`.
pub fn resource_name(i: usize) -> Vec<u8> {
    format!("chaos-{i}").into_bytes()
}

/// A random mode, weighted towards the conflicting ones so that queues form.
fn random_mode(rng: &mut StdRng) -> Mode {
    match rng.random_range(0..100) {
        0..5 => Mode::NL,
        5..15 => Mode::CR,
        15..25 => Mode::CW,
        25..50 => Mode::PR,
        50..65 => Mode::PW,
        _ => Mode::EX,
    }
}

fn outcome_of(e: &Error) -> OpOutcome {
    match e {
        Error::NotQueued => OpOutcome::NotQueued,
        Error::Deadlock => OpOutcome::Deadlock,
        Error::TimedOut => OpOutcome::TimedOut,
        Error::Cancelled => OpOutcome::Cancelled,
        Error::SessionLost | Error::NotFound => OpOutcome::Lost,
        other => OpOutcome::Error(format!("{other:?}")),
    }
}

/// Runs workload client `id` until `stop` turns true; then releases everything and closes.
pub async fn run_client(
    id: usize,
    cfg: WorkloadConfig,
    slot: Arc<Slot>,
    seed: u64,
    rec: Recorder,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let addr = slot.endpoints();
    let client = loop {
        let c = Client::builder(addr.clone())
            .name(format!("chaos-client-{id}"))
            .lease_ttl(cfg.lease_ttl)
            .backoff(Duration::from_millis(10), Duration::from_millis(200))
            .request_timeout(cfg.hang_bound / 2)
            .connect()
            .await;
        match c {
            Ok(c) => break c,
            Err(_) => {
                if *stop.borrow() {
                    return;
                }
                // The server may be restarting: try again after a short pause.
                let _ = tokio::time::timeout(Duration::from_millis(50), stop.changed()).await;
            }
        }
    };
    let mut held: Vec<Held> = Vec::new();
    while !*stop.borrow() {
        if slot.paused.load(Ordering::SeqCst) {
            // Paused: hold what we hold, do nothing, until resumed or stopped.
            let _ = tokio::time::timeout(Duration::from_millis(20), stop.changed()).await;
            continue;
        }
        held.retain(|h| !h.guard.is_lost());
        let step = rng.random_range(0..100);
        let res_i = rng.random_range(0..cfg.resources);
        let mode = random_mode(&mut rng);
        if held.len() >= cfg.max_held || (step >= 75 && !held.is_empty()) {
            let i = rng.random_range(0..held.len());
            let h = held.swap_remove(i);
            unlock(id, &client, h, &cfg, &rec).await;
        } else if step >= 55 && !held.is_empty() {
            let i = rng.random_range(0..held.len());
            let wait = rng.random_range(0..cfg.max_wait.as_millis() as u64);
            let opts = if rng.random_bool(0.2) {
                ConvertOptions::new().no_queue()
            } else {
                ConvertOptions::new().timeout(Duration::from_millis(wait.max(1)))
            };
            convert(id, &client, &mut held[i], mode, opts, &cfg, &rec).await;
        } else {
            let kind = match step {
                0..30 => OpKind::Lock,
                30..45 => OpKind::TryLock,
                _ => OpKind::LockThenCancel,
            };
            let wait = Duration::from_millis(rng.random_range(1..cfg.max_wait.as_millis() as u64));
            let abandon = Duration::from_millis(rng.random_range(1..30));
            if let Some(h) = lock(id, &client, kind, res_i, mode, wait, abandon, &cfg, &rec).await {
                held.push(h);
            }
        }
        let hold = rng.random_range(0..=cfg.max_hold.as_millis() as u64);
        let _ = tokio::time::timeout(Duration::from_millis(hold), stop.changed()).await;
    }
    for h in held.drain(..) {
        unlock(id, &client, h, &cfg, &rec).await;
    }
    let _ = tokio::time::timeout(cfg.hang_bound, client.close()).await;
}

#[allow(clippy::too_many_arguments)]
async fn lock(
    id: usize,
    client: &Client,
    kind: OpKind,
    res_i: usize,
    mode: Mode,
    wait: Duration,
    abandon: Duration,
    cfg: &WorkloadConfig,
    rec: &Recorder,
) -> Option<Held> {
    let resource = resource_name(res_i);
    let session = client.session_id();
    let start_us = now_us();
    let fut = async {
        match kind {
            OpKind::TryLock => client.try_lock(&resource, mode).await,
            OpKind::LockThenCancel => {
                // Dropping the lock future cancels the request on the server.
                let opts = LockOptions::new().timeout(cfg.max_wait);
                match tokio::time::timeout(abandon, client.lock_with(&resource, mode, opts)).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::Cancelled),
                }
            }
            _ => {
                client
                    .lock_with(&resource, mode, LockOptions::new().timeout(wait))
                    .await
            }
        }
    };
    let res = tokio::time::timeout(cfg.hang_bound, fut).await;
    let end_us = now_us();
    let (outcome, held) = match res {
        Err(_) => (OpOutcome::Hung, None),
        Ok(Err(e)) => (outcome_of(&e), None),
        Ok(Ok(guard)) => {
            let outcome = OpOutcome::Granted {
                lock: guard.lock_id(),
                token: guard.token(),
            };
            let mode = Arc::new(Mutex::new(guard.mode()));
            watch_lost(id, &guard, mode.clone(), rec.clone());
            (outcome, Some(Held { guard, mode }))
        }
    };
    rec.push(ClientRecord::Op(OpRecord {
        client: id,
        session,
        kind,
        resource,
        mode,
        start_us,
        end_us,
        outcome,
    }));
    held
}

/// Records when the lock's `lost()` completes, with the mode held at that time.
fn watch_lost(id: usize, guard: &LockGuard, mode: Arc<Mutex<Mode>>, rec: Recorder) {
    let lost = guard.lost();
    let lock = guard.lock_id();
    let resource = guard.resource().to_vec();
    tokio::spawn(async move {
        let reason = lost.await;
        let ts_us = now_us();
        let mode = *mode.lock().unwrap_or_else(|e| e.into_inner());
        rec.push(ClientRecord::Lost(LostRecord {
            client: id,
            lock,
            resource,
            mode,
            reason: lost_kind(reason),
            ts_us,
        }));
    });
}

async fn convert(
    id: usize,
    client: &Client,
    h: &mut Held,
    mode: Mode,
    opts: ConvertOptions,
    cfg: &WorkloadConfig,
    rec: &Recorder,
) {
    let session = client.session_id();
    let start_us = now_us();
    let res = tokio::time::timeout(cfg.hang_bound, h.guard.convert_with(mode, opts)).await;
    let end_us = now_us();
    let outcome = match res {
        Err(_) => OpOutcome::Hung,
        Ok(Err(e)) => outcome_of(&e),
        Ok(Ok(())) => {
            *h.mode.lock().unwrap_or_else(|e| e.into_inner()) = h.guard.mode();
            OpOutcome::Granted {
                lock: h.guard.lock_id(),
                token: h.guard.token(),
            }
        }
    };
    rec.push(ClientRecord::Op(OpRecord {
        client: id,
        session,
        kind: OpKind::Convert,
        resource: h.guard.resource().to_vec(),
        mode,
        start_us,
        end_us,
        outcome,
    }));
}

async fn unlock(id: usize, client: &Client, h: Held, cfg: &WorkloadConfig, rec: &Recorder) {
    let session = client.session_id();
    let start_us = now_us();
    let resource = h.guard.resource().to_vec();
    let mode = h.guard.mode();
    let res = tokio::time::timeout(cfg.hang_bound, h.guard.unlock()).await;
    let outcome = match res {
        Err(_) => OpOutcome::Hung,
        Ok(Err(e)) => outcome_of(&e),
        Ok(Ok(())) => OpOutcome::Unlocked,
    };
    rec.push(ClientRecord::Op(OpRecord {
        client: id,
        session,
        kind: OpKind::Unlock,
        resource,
        mode,
        start_us,
        end_us: now_us(),
        outcome,
    }));
}
