//! A member whose data directory was lost and that comes back under its old id (against the
//! README's advice) does not vote until it has caught up, so it cannot help a member that
//! lacks committed entries to lead.
//!
//! The worst order: a follower (`lagging`) is down while locks are granted with the leader
//! and the other follower (`wiped`); then `wiped` loses its directory, the leader dies, and
//! `wiped` (empty) and `lagging` come back. Were `wiped` to vote, `lagging` would lead
//! without the grants, and hand out the locks they hold with lower tokens. Instead there is
//! no leader until the old leader returns, and then every grant is still there.
//!
//! Under a leader that stays, such a member is caught up from the start and then counts
//! again: the cluster survives the loss of another member.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use dlock_client::Mode;

use crate::{ELECTION, WAIT, assert_sole_holder, client, done, log_of, options, run, wait_log};
use dlock_tests::cluster::TestCluster;

/// What the guarded member logs (at warn) when it refuses a vote.
const REFUSED: &str = "refused a vote: this member started with an empty data directory";

/// What it logs (at info) once it has caught up.
const CAUGHT_UP: &str = "caught up with the cluster's log: this member votes again";

/// How long the two members are watched for a leader they must not elect: several election
/// rounds (200..400 ms each).
const NO_LEADER_FOR: Duration = Duration::from_secs(3);

/// Kills member `id` and empties its data directory, as a lost disk leaves it.
async fn lose_disk(c: &mut TestCluster, id: u64) -> Result<()> {
    c.kill(id).await;
    let dir = c.data_dir(id).to_owned();
    std::fs::remove_dir_all(&dir).with_context(|| format!("wiping {}", dir.display()))?;
    std::fs::create_dir_all(&dir)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t9a_a_member_back_with_an_empty_directory_elects_no_leader_that_lacks_grants() -> Result<()>
{
    run(async {
        let mut c =
            TestCluster::start(options().args(["--log-level", "warn,dlock_raft=info"])).await?;
        let leader = c.wait_leader(ELECTION).await?;
        let followers: Vec<u64> = c.ids().into_iter().filter(|&n| n != leader).collect();
        let (lagging, wiped) = (followers[0], followers[1]);
        let holder = client(&c, "holder").await?;

        c.kill(lagging).await;
        // Committed by the leader and `wiped` alone.
        let mut held = Vec::new();
        for i in 0..5 {
            let name = format!("held/{i}");
            held.push((
                name.clone(),
                done("a grant", holder.lock(&name, Mode::EX)).await?,
            ));
        }

        lose_disk(&mut c, wiped).await?;
        c.kill(leader).await;
        c.restart(wiped).await?;
        c.restart(lagging).await?;

        if let Ok(id) = c.wait_leader_except(&[leader], NO_LEADER_FOR).await {
            bail!(
                "node {id} leads without the leader's log: node {wiped}, back with an empty \
                 directory, voted"
            );
        }
        // No leader because the member refused, not because nobody asked.
        wait_log(&c, wiped, REFUSED, ELECTION).await?;

        c.restart(leader).await?;
        let now = c.wait_leader(ELECTION).await?;
        ensure!(
            now == leader,
            "node {now} leads, but only node {leader} has every grant"
        );
        let checker = client(&c, "checker").await?;
        for (name, g) in &held {
            assert_sole_holder(&checker, name, g).await?;
        }
        let top = held
            .iter()
            .map(|(_, g)| g.token())
            .max()
            .context("no grant")?;
        let after = done("a grant after", checker.lock("after", Mode::EX)).await?;
        ensure!(
            after.token() > top,
            "token {:?} after the outage is not above {top:?}",
            after.token()
        );
        // Every member started empty once (the cluster was formed from empty directories),
        // and each has caught up since, the leaders of their own terms included.
        for id in c.ids() {
            wait_log(&c, id, CAUGHT_UP, ELECTION).await?;
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t9a_a_member_back_with_an_empty_directory_catches_up_and_counts_again() -> Result<()> {
    run(async {
        let mut c =
            TestCluster::start(options().args(["--log-level", "warn,dlock_raft=info"])).await?;
        let leader = c.wait_leader(ELECTION).await?;
        let followers: Vec<u64> = c.ids().into_iter().filter(|&n| n != leader).collect();
        let (wiped, other) = (followers[0], followers[1]);
        let holder = client(&c, "holder").await?;
        let before = done("a grant", holder.lock("before", Mode::EX)).await?;
        // Bootstrapped: every member has caught up once (the guard of a new cluster).
        for id in c.ids() {
            wait_log(&c, id, CAUGHT_UP, ELECTION).await?;
        }

        lose_disk(&mut c, wiped).await?;
        c.restart(wiped).await?;
        // Caught up from the leader's log, from its first entry: it says so a second time.
        let deadline = std::time::Instant::now() + WAIT;
        while log_of(&c, wiped)?.matches(CAUGHT_UP).count() < 2 {
            ensure!(
                std::time::Instant::now() < deadline,
                "node {wiped} did not catch up within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // It counts for a majority again: with the other follower gone, the leader and it
        // still grant, above every token before.
        c.kill(other).await;
        let after = tokio::time::timeout(ELECTION, holder.lock("after", Mode::EX))
            .await
            .context("no grant with the caught-up member and the leader")??;
        ensure!(
            after.token() > before.token(),
            "token {:?} is not above {:?}",
            after.token(),
            before.token()
        );
        assert_sole_holder(&holder, "before", &before).await?;
        Ok(())
    })
    .await
}

/// Members killed while the cluster was being formed, none of them caught up yet, all come
/// back guarded (each started empty): they vote for each other, since none can have lost
/// anything another has, and elect a leader. The state is made by putting the `rejoining`
/// marker back on every member of a formed cluster, as a kill at the wrong moment leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t9a_members_all_killed_while_forming_elect_a_leader() -> Result<()> {
    run(async {
        let mut c =
            TestCluster::start(options().args(["--log-level", "warn,dlock_raft=info"])).await?;
        c.wait_leader(ELECTION).await?;
        let holder = client(&c, "holder").await?;
        let held = done("a grant", holder.lock("held", Mode::EX)).await?;
        for id in c.ids() {
            c.kill(id).await;
            std::fs::write(c.data_dir(id).join("raft").join("rejoining"), "")?;
        }
        for id in c.ids() {
            c.restart(id).await?;
        }
        c.wait_leader(ELECTION).await?;
        let checker = client(&c, "checker").await?;
        assert_sole_holder(&checker, "held", &held).await?;
        Ok(())
    })
    .await
}
