//! A leader cut off from both peers (its four links black-holed through the test proxies)
//! grants nothing to a client that reaches only it; the majority elects a new leader and
//! serves; once the links heal, the old leader follows the new one.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use dlock_client::{Client, Mode};
use dlock_tests::cluster::{Probe, TestCluster};

use crate::{ELECTION, client, done, heard, members_agree, options, run, wait_view, within};

/// How long the isolated leader is watched for a grant it must not make.
const NO_GRANT_FOR: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t94_minority_partition_grants_nothing() -> Result<()> {
    run(async {
        let mut c = TestCluster::start(options().proxied()).await?;
        let old = c.wait_leader(ELECTION).await?;
        // This client knows only the leader's address.
        let lone = within(
            "a client of the leader alone",
            Client::builder(c.client_addr(old).to_string())
                .name("lone")
                .lease_ttl(crate::LEASE)
                .connect(),
        )
        .await??;
        let lone_before = done(
            "a grant before the partition",
            lone.lock("before", Mode::EX),
        )
        .await?;

        c.isolate(old);
        let cut_at = Instant::now();
        // Nothing is granted on the isolated side, neither a queued request nor a try-lock.
        match tokio::time::timeout(NO_GRANT_FOR, lone.lock("p", Mode::EX)).await {
            Err(_) => {}
            Ok(Ok(g)) => bail!(
                "the isolated leader granted p (token {:?}) without a majority",
                g.token()
            ),
            Ok(Err(e)) => eprintln!("the isolated side refused: {e}"),
        }
        if let Ok(Ok(g)) =
            tokio::time::timeout(Duration::from_secs(1), lone.try_lock("p2", Mode::EX)).await
        {
            bail!(
                "the isolated leader granted a try-lock (token {:?})",
                g.token()
            );
        }

        // The majority elects a leader among itself and serves.
        let new = c.wait_leader_except(&[old], ELECTION).await?;
        eprintln!(
            "node {old} isolated; node {new} leads {:.2?} after the cut",
            cut_at.elapsed()
        );
        let majority = client(&c, "majority").await?;
        let g = done("a grant from the majority", majority.lock("p", Mode::EX)).await?;
        ensure!(
            g.token() > lone_before.token(),
            "the majority's token {:?} is not above {:?}",
            g.token(),
            lone_before.token()
        );

        // Healed, the old leader follows: it refuses sessions and names another node as the
        // leader (the links' return may cause one more election, never won by the old
        // leader, whose log lacks the majority's newer entries).
        c.heal(old);
        let deadline = Instant::now() + ELECTION;
        loop {
            let p = c.probe(old).await;
            if let Probe::NotLeader(Some(addr)) = &p
                && c.id_of(addr).is_some_and(|id| id != old)
            {
                break;
            }
            if Instant::now() >= deadline {
                bail!("after healing, node {old} answers {p:?}, not NotLeader naming another node");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after = c.wait_leader(ELECTION).await?;
        ensure!(
            after != old,
            "the old leader {old} leads again after healing"
        );
        drop(done("a grant after healing", majority.lock("after", Mode::EX)).await?);
        members_agree(&c)?;
        Ok(())
    })
    .await
}

/// A follower cut off for several election timeouts, then healed, rejoins under the same
/// leader in the same term: it asked first whether it would win (pre-vote), and the others,
/// still hearing from the leader, said no, so it never raised the term and deposed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t94_a_follower_back_from_a_partition_does_not_depose_the_leader() -> Result<()> {
    run(async {
        let mut c = TestCluster::start(options().proxied()).await?;
        let leader = c.wait_leader(ELECTION).await?;
        let viewer = client(&c, "viewer").await?;
        let view = viewer.query_cluster().await?.expect("a cluster");
        ensure!(view.leader == Some(leader), "{view:?}");
        let term = view.term;
        let follower = c
            .ids()
            .into_iter()
            .find(|&id| id != leader)
            .expect("a follower");

        // Cut off for 1.5 s: three to seven of its election timeouts.
        c.isolate(follower);
        wait_view(&viewer, "the follower to fall silent", |view| {
            Ok(heard(view, follower).is_some_and(|ms| ms >= 1_500))
        })
        .await?;
        c.heal(follower);
        wait_view(
            &viewer,
            "the follower to answer the same leader again",
            |view| {
                ensure!(
                    view.leader == Some(leader) && view.term == term,
                    "the leader changed (term {term} -> {}, leader {:?}): {view:?}",
                    view.term,
                    view.leader
                );
                Ok(heard(view, follower).is_some_and(|ms| ms < 500))
            },
        )
        .await?;
        // Some time after, still the same leader and term.
        let after = done("a grant", viewer.lock("after", Mode::EX)).await?;
        done("a release", after.unlock()).await?;
        let view = viewer.query_cluster().await?.expect("a cluster");
        ensure!(view.leader == Some(leader) && view.term == term, "{view:?}");
        Ok(())
    })
    .await
}

/// A leader that hears from no majority for longer than its lease (one follower down, the
/// other cut off) stops serving at once, as openraft stops taking its writes: it does not
/// let its clock run on and stamp, once writes pass again, expiries that fell in the gap
/// ahead of the renewals it refused meanwhile. When a majority answers, it serves again
/// after the grace, and the holder keeps its lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t94_a_leader_whose_lease_lapses_stops_serving_then_serves_after_the_grace() -> Result<()> {
    run(async {
        let mut c = TestCluster::start(options().proxied()).await?;
        let leader = c.wait_leader(ELECTION).await?;
        let holder = client(&c, "holder").await?;
        let g = done("a grant", holder.lock("held", Mode::EX)).await?;
        let mut followers = c.ids().into_iter().filter(|&id| id != leader);
        let (down, cut) = (
            followers.next().expect("two"),
            followers.next().expect("two"),
        );

        c.kill(down).await;
        c.isolate(cut);
        crate::wait_log(
            &c,
            leader,
            "heard from no majority within the leader lease",
            crate::WAIT,
        )
        .await?;
        c.heal(cut);
        crate::wait_log(
            &c,
            leader,
            "a majority answers again; serving after the grace",
            crate::WAIT,
        )
        .await?;
        // The holder resumed (at the same leader, or at `cut` if it won an election
        // meanwhile) and kept its lock.
        done("a ping through the holder", holder.ping()).await?;
        ensure!(!g.is_lost(), "the holder's lock was reported lost");
        let other = client(&c, "other").await?;
        crate::assert_sole_holder(&other, "held", &g).await?;
        done("unlocking", g.unlock()).await?;
        Ok(())
    })
    .await
}
