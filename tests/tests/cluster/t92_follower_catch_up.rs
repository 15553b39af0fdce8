//! A follower killed and restarted catches up: from the leader's log when it was down
//! briefly, by snapshot when the leader has already compacted what it missed. Either way it
//! then holds the whole table: it is made the leader and asked.
//!
//! How it is made the leader: with the third node killed, the leader commits a write only
//! once the restarted follower holds its log up to that write; then the leader is killed and
//! the third node restarted, and the follower, whose log is the longer, is the only one that
//! can win the election.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use dlock_client::{Client, LockGuard, Mode};

use crate::{
    ELECTION, WAIT, assert_sole_holder, client, done, log_of, members_agree, options, run, wait_log,
};
use dlock_tests::cluster::TestCluster;

/// What `dlock-raft` logs (at info) when a node installs a snapshot from the leader.
const INSTALLED: &str = "installed a snapshot sent by the leader";

/// What `dlock-raft` logs (at debug) when a node has dropped log entries a snapshot covers.
const PURGED: &str = "purged the log up to a snapshot";

/// Makes `lagging` the leader as the module docs say; `leader` and `other` are the two
/// other nodes. `cl` writes through whichever leads.
async fn hand_over_to(
    c: &mut TestCluster,
    cl: &Client,
    lagging: u64,
    leader: u64,
    other: u64,
) -> Result<LockGuard> {
    c.kill(other).await;
    // Committed by `leader` and `lagging` alone: `lagging` has the log up to here.
    // Bounded like an election: the restarted follower may first disturb the leader.
    let what = "a grant committed with the restarted follower";
    let proof = tokio::time::timeout(ELECTION, cl.lock("proof", Mode::EX))
        .await
        .with_context(|| format!("timed out after {ELECTION:?} waiting for {what}"))?
        .with_context(|| what.to_owned())?;
    c.kill(leader).await;
    c.restart(other).await?;
    let now = c.wait_leader_except(&[leader], ELECTION).await?;
    ensure!(
        now == lagging,
        "node {now} leads, but only node {lagging} has the whole log"
    );
    Ok(proof)
}

/// The two nodes other than `id`.
fn others(c: &TestCluster, id: u64) -> (u64, u64) {
    let v: Vec<u64> = c.ids().into_iter().filter(|&n| n != id).collect();
    (v[0], v[1])
}

/// Polls for a file, at most `within`.
async fn wait_file(path: &Path, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while !path.exists() {
        if Instant::now() >= deadline {
            bail!("{} did not appear within {within:?}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Takes `n` EX locks named `prefix/NNN`.
async fn take(cl: &Client, prefix: &str, n: usize) -> Result<Vec<(String, LockGuard)>> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("{prefix}/{i:03}");
        let g = done("a grant", cl.lock(&name, Mode::EX)).await?;
        v.push((name, g));
    }
    Ok(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t92_follower_restarted_catches_up_from_the_log() -> Result<()> {
    run(async {
        let mut c =
            TestCluster::start(options().args(["--log-level", "warn,dlock_raft=info"])).await?;
        let leader = c.wait_leader(ELECTION).await?;
        let (lagging, other) = others(&c, leader);
        let cl = client(&c, "writer").await?;
        let mut locks = take(&cl, "before", 3).await?;

        c.kill(lagging).await;
        locks.extend(take(&cl, "while-down", 20).await?);
        c.restart(lagging).await?;
        let proof = hand_over_to(&mut c, &cl, lagging, leader, other).await?;

        // The restarted follower, now the leader, holds every lock, including those taken
        // while it was down, with their tokens.
        let checker = client(&c, "checker").await?;
        for (name, g) in locks.iter().chain([&("proof".to_owned(), proof)]) {
            assert_sole_holder(&checker, name, g).await?;
        }
        ensure!(
            !log_of(&c, lagging)?.contains(INSTALLED),
            "node {lagging} was sent a snapshot, though the leader's log had everything it missed"
        );
        members_agree(&c)?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t92_follower_far_behind_catches_up_by_snapshot() -> Result<()> {
    run(async {
        // A snapshot every 50 entries, keeping 5 in the log: a follower that misses 150
        // writes finds them compacted away.
        let opts = options().args([
            "--snapshot-every",
            "50",
            "--log-level",
            "warn,dlock_raft=info,dlock_raft::log_store=debug",
        ]);
        let mut c = TestCluster::start(opts).await?;
        let leader = c.wait_leader(ELECTION).await?;
        let (lagging, other) = others(&c, leader);
        let cl = client(&c, "writer").await?;
        c.kill(lagging).await;
        let locks = take(&cl, "snap", 150).await?;
        let snapshot = |id: u64| c.data_dir(id).join("raft").join("snapshot.bin");
        wait_file(&snapshot(leader), WAIT).await?;
        ensure!(
            !snapshot(lagging).exists(),
            "node {lagging} had a snapshot before it was killed"
        );
        // The leader purges only once no message to the killed follower is in flight, which
        // may be a retry's back-off (up to a second) after the snapshot. A follower back
        // before that would be sent the entries it missed. Any purge will do: the first
        // covers index 44, beyond everything the follower held.
        wait_log(&c, leader, PURGED, WAIT).await?;

        c.restart(lagging).await?;
        wait_log(&c, lagging, INSTALLED, WAIT).await?;
        let proof = hand_over_to(&mut c, &cl, lagging, leader, other).await?;
        let checker = client(&c, "checker").await?;
        for (name, g) in locks.iter().chain([&("proof".to_owned(), proof)]) {
            assert_sole_holder(&checker, name, g).await?;
        }
        members_agree(&c)?;
        Ok(())
    })
    .await
}
