//! Conformance under a random concurrent workload, end to end through `dlock-client`: several
//! clients lock, convert (with NOQUEUE, QUECVT, timeouts), cancel by dropping futures, unlock
//! and drop guards on a few resources, while a checker takes consistent snapshots of every
//! resource (one prefix query is answered from one state) and checks the rule book's
//! invariants in each:
//!
//! - R7, R9: the granted modes (grant queue and converting locks) are pairwise compatible;
//! - R12: no grant pass left work undone: the convert queue's head is blocked by some other
//!   holder, and with the convert queue empty so is the wait queue's head;
//! - R2, R3: states sit on their queues, a converting lock converts to another mode, locks
//!   that hold a mode have a token, unique on the resource;
//! - R50: sessions that end (a worker closes its client now and then) leave nothing behind;
//! - R39, R40: the wait-for graph over sessions, computed from the snapshot with R39's
//!   definition, has no cycle (detection runs whenever an edge appears).
//!
//! The clients check their own outcomes (R5 results, modes after conversions, tokens that
//! grow with each grant of a lock, notifications only for modes their lock blocks), and at
//! the end every resource is gone (R1).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use dlock_client::{
    Client, ConvertOptions, Error, Invalid, LockGuard, LockOptions, LockState, Mode, ResourceInfo,
    SessionId, UnlockOptions,
};
use dlock_tests::sdk::*;
use futures_util::FutureExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CLIENTS: usize = 5;
const STEPS: usize = 300;
const RESOURCES: [&str; 3] = ["rnd/a", "rnd/b", "rnd/c"];

/// Checks one resource's invariants; returns its wait-for edges (R39).
fn check_resource(r: &ResourceInfo) -> Result<Vec<(SessionId, SessionId)>> {
    let name = String::from_utf8_lossy(&r.name).into_owned();
    // (lock, session, granted mode) of every lock that holds a mode.
    let mut holders = Vec::new();
    for l in &r.granted {
        let LockState::Granted { mode } = l.state else {
            bail!("{name}: {l:?} on the grant queue");
        };
        holders.push((l.lock, l.session, mode));
    }
    let mut queued = Vec::new();
    for l in &r.converting {
        let LockState::Converting { from, to } = l.state else {
            bail!("{name}: {l:?} on the convert queue");
        };
        ensure!(from != to, "{name}: {l:?} converts to its own mode");
        holders.push((l.lock, l.session, from));
        queued.push((l.lock, l.session, to));
    }
    for l in &r.waiting {
        let LockState::Waiting { mode } = l.state else {
            bail!("{name}: {l:?} on the wait queue");
        };
        ensure!(l.token.is_none(), "{name}: waiting {l:?} has a token");
        queued.push((l.lock, l.session, mode));
    }
    // R7, R9.
    for (i, a) in holders.iter().enumerate() {
        for b in &holders[i + 1..] {
            ensure!(
                a.2.is_compatible(b.2),
                "{name}: incompatible holders {a:?} and {b:?}: {r:?}"
            );
        }
    }
    let blocked = |lock, mode: Mode| {
        holders
            .iter()
            .any(|h| h.0 != lock && !h.2.is_compatible(mode))
    };
    // R12.
    if let Some(h) = r.converting.first() {
        let to = queued[0].2;
        ensure!(blocked(h.lock, to), "{name}: grantable convert head: {r:?}");
    } else if let Some(w) = r.waiting.first() {
        ensure!(
            blocked(w.lock, queued[0].2),
            "{name}: grantable wait head: {r:?}"
        );
    }
    // Tokens.
    let tokens: Vec<_> = r
        .granted
        .iter()
        .chain(&r.converting)
        .map(|l| l.token)
        .collect();
    ensure!(
        tokens.iter().all(Option::is_some),
        "{name}: holder without token"
    );
    let unique: BTreeSet<_> = tokens.iter().collect();
    ensure!(
        unique.len() == tokens.len(),
        "{name}: repeated token: {r:?}"
    );
    // R39: queued requests in order (conversions ahead of waiters, FIFO within each).
    let mut waits: Vec<BTreeSet<SessionId>> = Vec::new();
    let mut edges = Vec::new();
    for (i, &(lock, session, mode)) in queued.iter().enumerate() {
        let mut w: BTreeSet<SessionId> = holders
            .iter()
            .filter(|h| h.0 != lock && !h.2.is_compatible(mode))
            .map(|h| h.1)
            .collect();
        for (k, x) in queued[..i].iter().enumerate() {
            if x.2.is_compatible(mode) {
                w.extend(waits[k].iter().copied());
            } else {
                w.insert(x.1);
            }
        }
        edges.extend(w.iter().map(|&t| (session, t)));
        waits.push(w);
    }
    Ok(edges)
}

/// Checks a snapshot of all resources, including that the wait-for graph is acyclic.
fn check_snapshot(snapshot: &[ResourceInfo]) -> Result<()> {
    let mut graph: BTreeMap<SessionId, BTreeSet<SessionId>> = BTreeMap::new();
    for r in snapshot {
        for (a, b) in check_resource(r)? {
            graph.entry(a).or_default().insert(b);
        }
    }
    // Depth-first search with colours; a self-loop is a cycle too.
    let mut state: BTreeMap<SessionId, u8> = BTreeMap::new();
    fn visit(
        s: SessionId,
        graph: &BTreeMap<SessionId, BTreeSet<SessionId>>,
        state: &mut BTreeMap<SessionId, u8>,
        path: &mut Vec<SessionId>,
    ) -> Option<Vec<SessionId>> {
        match state.get(&s) {
            Some(1) => {
                path.push(s);
                return Some(path.clone());
            }
            Some(_) => return None,
            None => {}
        }
        state.insert(s, 1);
        path.push(s);
        for &t in graph.get(&s).into_iter().flatten() {
            if let Some(c) = visit(t, graph, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(s, 2);
        None
    }
    for &s in graph.keys() {
        let mut path = Vec::new();
        if let Some(cycle) = visit(s, &graph, &mut state, &mut path) {
            bail!("wait-for cycle {cycle:?} survived detection: {snapshot:?}");
        }
    }
    Ok(())
}

fn random_mode(rng: &mut StdRng) -> Mode {
    Mode::ALL[rng.random_range(0..6)]
}

/// One client's random walk; returns how many operations it completed.
async fn worker(addr: String, name: String, seed: u64) -> Result<usize> {
    let connect = || {
        let (addr, name) = (addr.clone(), name.clone());
        async move {
            let c = Client::builder(addr).name(name).connect();
            Ok::<_, anyhow::Error>(within("connect", c).await??)
        }
    };
    let mut client = connect().await?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut held: Vec<LockGuard> = Vec::new();
    let mut done = 0;
    for _ in 0..STEPS {
        // R32, R37: a notification a lock holds carries a mode its current mode blocks
        // (older advice is dropped by its own grants).
        for g in &mut held {
            while let Some(m) = g.blocked().now_or_never() {
                let m = m?;
                ensure!(
                    !g.mode().is_compatible(m),
                    "notified of {m:?} while holding the compatible {:?}",
                    g.mode()
                );
            }
        }
        let name = RESOURCES[rng.random_range(0..RESOURCES.len())];
        match rng.random_range(0..100) {
            0..40 if held.len() < 4 => {
                let mode = random_mode(&mut rng);
                let r = match rng.random_range(0..10) {
                    0..3 => client.try_lock(name, mode).await,
                    3..5 => {
                        // Cancel by dropping the future after a short while.
                        let wait = Duration::from_millis(rng.random_range(1..40));
                        match tokio::time::timeout(wait, client.lock(name, mode)).await {
                            Ok(r) => r,
                            Err(_) => Err(Error::Cancelled),
                        }
                    }
                    _ => {
                        let t = Duration::from_millis(rng.random_range(5..150));
                        let opts = LockOptions::new().timeout(t).read_value();
                        within("lock", client.lock_with(name, mode, opts)).await?
                    }
                };
                match r {
                    Ok(g) => {
                        ensure!(g.mode() == mode, "granted {:?} for {mode:?}", g.mode());
                        held.push(g);
                    }
                    Err(
                        Error::NotQueued | Error::TimedOut | Error::Deadlock | Error::Cancelled,
                    ) => {}
                    Err(e) => bail!("lock {name} {mode:?}: {e:?}"),
                }
            }
            0..70 if !held.is_empty() => {
                let i = rng.random_range(0..held.len());
                let g = &mut held[i];
                let (from, token) = (g.mode(), g.token());
                let to = random_mode(&mut rng);
                let mut opts =
                    ConvertOptions::new().timeout(Duration::from_millis(rng.random_range(5..150)));
                if rng.random_bool(0.25) {
                    opts = opts.no_queue();
                }
                if rng.random_bool(0.2) {
                    opts = opts.quecvt();
                }
                if from >= Mode::PW && to <= from && rng.random_bool(0.5) {
                    opts = opts.value(format!("{seed}").into_bytes());
                }
                match within("convert", g.convert_with(to, opts)).await? {
                    Ok(()) => {
                        ensure!(g.mode() == to, "converted to {:?}, asked {to:?}", g.mode());
                        ensure!(g.token() > token, "conversion token did not grow");
                    }
                    Err(
                        Error::NotQueued
                        | Error::TimedOut
                        | Error::Deadlock
                        | Error::Invalid(Invalid::QuecvtNotAllowed { .. }),
                    ) => {
                        ensure!(
                            g.mode() == from && g.token() == token,
                            "refused but changed"
                        );
                    }
                    Err(e) => bail!("convert {from:?}->{to:?}: {e:?}"),
                }
            }
            0..90 if !held.is_empty() => {
                let g = held.swap_remove(rng.random_range(0..held.len()));
                let opts = if g.mode() >= Mode::PW && rng.random_bool(0.5) {
                    UnlockOptions::new().value(b"w".to_vec())
                } else {
                    UnlockOptions::new()
                };
                within("unlock", g.unlock_with(opts)).await??;
            }
            90..93 => {
                // R50: the session ends with its locks; a fresh one carries on.
                within("close", client.close()).await??;
                for g in held.drain(..) {
                    ensure!(g.is_lost(), "a lock outlived its closed session");
                }
                client = connect().await?;
            }
            _ if !held.is_empty() => {
                drop(held.swap_remove(rng.random_range(0..held.len())));
            }
            _ => {}
        }
        done += 1;
    }
    for g in held {
        within("final unlock", g.unlock()).await??;
    }
    within("close", client.close()).await??;
    Ok(done)
}

/// A random concurrent workload with invariant checks on consistent snapshots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_workload_keeps_the_rule_book_invariants() -> Result<()> {
    bounded(async {
        let server = server().await?;
        let checker = client(&server, "checker").await?;
        let seed: u64 = rand::rng().random();
        eprintln!("seed {seed}");
        let mut workers = Vec::new();
        for i in 0..CLIENTS {
            let w = worker(
                server.addr().to_string(),
                format!("w{i}"),
                seed.wrapping_add(i as u64),
            );
            workers.push(tokio::spawn(w));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let check = tokio::spawn({
            let stop = stop.clone();
            let checker = checker.clone();
            async move {
                let mut snapshots = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let snapshot = within("snapshot", checker.query_prefix("rnd/", 100)).await??;
                    check_snapshot(&snapshot)?;
                    snapshots += 1;
                }
                Ok::<_, anyhow::Error>(snapshots)
            }
        });
        let mut ops = 0;
        for w in workers {
            ops += w.await??;
        }
        stop.store(true, Ordering::Relaxed);
        let snapshots = check.await??;
        eprintln!("{ops} operations, {snapshots} snapshots checked");
        ensure!(snapshots > 0);
        let left = within("final snapshot", checker.query_prefix("rnd/", 100)).await??;
        ensure!(
            left.is_empty(),
            "R1: resources outlived their locks: {left:?}"
        );
        Ok(())
    })
    .await
}
