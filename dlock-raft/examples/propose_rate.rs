//! How many commands a three-node cluster on 127.0.0.1 applies per second through the
//! leader's [`Sequencer`], with `--proposers N` concurrent proposers each locking and
//! unlocking its own resource for `--seconds S`:
//!
//!     cargo run --release -p dlock-raft --example propose_rate -- --proposers 64 --seconds 5
//!
//! This is the replicated engine alone (log, fsync, peer network, apply), without the
//! server's client connections.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dlock_core::{Command, LockId, LockRequest, Mode, RequestId, SessionId, UnlockRequest};
use dlock_raft::{Member, NodeOptions, Sequencer, open_node, serve_peers};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn arg(name: &str, default: u64) -> Result<u64> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => Ok(args.get(i + 1).context("a value")?.parse()?),
        None => Ok(default),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let proposers = arg("--proposers", 64)?;
    let seconds = arg("--seconds", 5)?;
    let stop = CancellationToken::new();
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let mut members = BTreeMap::new();
    let mut listeners = Vec::new();
    for id in 1..=3u64 {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        members.insert(
            id,
            Member {
                client_addr: String::new(),
                raft_addr: l.local_addr()?.to_string(),
            },
        );
        listeners.push(l);
    }
    let mut seqs = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let (raft, replica) = open_node(NodeOptions::new(id, dirs[i].path())).await?;
        tokio::spawn(serve_peers(l, raft.clone(), stop.clone()));
        let seq = Sequencer::new(id, raft, replica, Duration::from_secs(5));
        tokio::spawn(seq.clone().run(stop.clone(), |_| {}));
        seqs.push(seq);
    }
    seqs[0]
        .raft()
        .initialize(members)
        .await
        .map_err(|e| anyhow::anyhow!("initialize: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let leader = loop {
        if let Some(s) = seqs.iter().find(|s| s.is_ready_leader()) {
            break s.clone();
        }
        if Instant::now() > deadline {
            bail!("no leader");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let open = Command::OpenSession {
        name: "rate".into(),
        ttl_ms: 60_000,
        secret: 1,
    };
    let session = SessionId(leader.propose(open).await?.input);
    let running = Arc::new(AtomicBool::new(true));
    let mut tasks = Vec::new();
    for p in 0..proposers {
        let (leader, running) = (leader.clone(), running.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut request = p * 1_000_000_000;
            while running.load(Ordering::Relaxed) {
                request += 1;
                let lock = Command::Lock {
                    session,
                    request: RequestId(request),
                    args: LockRequest::new(format!("p{p}"), Mode::EX),
                };
                let t = Instant::now();
                let applied = leader.propose(lock).await?;
                latencies.push(t.elapsed());
                request += 1;
                let unlock = Command::Unlock {
                    session,
                    request: RequestId(request),
                    args: UnlockRequest::new(LockId(applied.input)),
                };
                let t = Instant::now();
                leader.propose(unlock).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    running.store(false, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    println!(
        "3 nodes, {proposers} proposers, {:.1} s: {} commands applied, {:.0} commands/s, latency p50 {:?} p99 {:?}",
        elapsed.as_secs_f64(),
        all.len(),
        all.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99)
    );
    stop.cancel();
    Ok(())
}
