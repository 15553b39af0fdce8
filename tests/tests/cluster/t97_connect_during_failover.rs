//! A fresh client that connects right after the leader is SIGKILLed, while the followers
//! still name the dead leader: the first connect waits for the new leader instead of
//! failing with the dead leader's refused connection.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use dlock_client::{Client, Mode};
use dlock_tests::cluster::TestCluster;

use crate::{ELECTION, LEASE, WAIT, client, done, members_agree, options, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t97_a_client_connecting_during_a_fail_over_finds_the_new_leader() -> Result<()> {
    run(async {
        let mut c = TestCluster::start(options()).await?;
        let old = c.wait_leader(ELECTION).await?;
        // A grant is committed by a majority: a follower has heard from the leader and
        // names it.
        let before = client(&c, "before").await?;
        drop(done("a grant before the kill", before.lock("x", Mode::EX)).await?);

        c.kill(old).await;
        // At once: the election has not even started (its timeout is 200..400 ms), so the
        // followers answer NotLeader naming the dead leader, whose port refuses. The connect
        // timeout is the election bound, as a loaded machine may take that long to elect.
        let fresh = tokio::time::timeout(
            ELECTION + WAIT,
            Client::builder(c.endpoints())
                .name("fresh")
                .lease_ttl(LEASE)
                .backoff(Duration::from_millis(20), Duration::from_millis(200))
                .connect_timeout(ELECTION)
                .connect(),
        )
        .await
        .context("the connect did not end in time")?
        .context("the connect during the fail-over")?;
        let at = fresh.server_addr();
        let new = c
            .id_of(&at)
            .with_context(|| format!("connected to {at}, not a member"))?;
        ensure!(new != old, "connected to the killed leader {old}");
        // The new leader serves it.
        drop(done("a grant after the fail-over", fresh.lock("y", Mode::EX)).await?);
        members_agree(&c)?;
        Ok(())
    })
    .await
}
