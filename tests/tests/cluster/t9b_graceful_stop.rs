//! A leader stopped gracefully (SIGTERM or SIGINT, as an operator restarting it does) leaves
//! its sessions to the others: its clients resume at the new leader with every lock, and a
//! waiter's request stays queued; none of them hears that its session ended.

use anyhow::{Result, ensure};
use dlock_client::Mode;
use futures_util::FutureExt;

use crate::{
    ELECTION, WAIT, assert_refused, assert_sole_holder, client, done, heard, log_of, options, res,
    run, wait_log, wait_view, within,
};
use dlock_tests::cluster::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t9b_a_leader_stopped_gracefully_leaves_every_session_to_the_others() -> Result<()> {
    run(async {
        let mut c = TestCluster::start(options()).await?;
        let first = c.wait_leader(ELECTION).await?;
        let holder = client(&c, "holder").await?;
        let waiter = client(&c, "waiter").await?;
        let g = done("a grant", holder.lock("g", Mode::EX)).await?;
        let mut queued = waiter.lock("g", Mode::EX).boxed();
        within("the waiter to queue", async {
            while res(&holder, "g").await?.waiting.len() != 1 {
                ensure!(
                    (&mut queued).now_or_never().is_none(),
                    "the waiter was answered"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Ok(())
        })
        .await??;

        c.stop(first, WAIT).await?;
        let second = c.wait_leader_except(&[first], ELECTION).await?;
        eprintln!("leader {first} stopped gracefully; node {second} leads");
        // It handed the leadership over rather than leave the others to an election.
        let said = log_of(&c, first)?;
        ensure!(
            said.contains("handed the leadership over before stopping"),
            "no hand-over in node {first}'s log:\n{said}"
        );
        ensure!(
            !said.contains("transfer_leader not implemented"),
            "the hand-over did not reach the new leader:\n{said}"
        );

        // Both sessions moved to the new leader: the holder's lock is its own and kept, the
        // waiter still waits, and neither client was told its session ended.
        done("a ping through the holder", holder.ping()).await?;
        done("a ping through the waiter", waiter.ping()).await?;
        ensure!(!g.is_lost(), "the holder's guard reports the lock lost");
        let other = client(&c, "other").await?;
        assert_sole_holder(&other, "g", &g).await?;
        assert_refused(&other, "g", Mode::PR).await?;
        ensure!(
            (&mut queued).now_or_never().is_none(),
            "the waiter's request ended at the stop"
        );
        let waiting = res(&other, "g").await?.waiting;
        ensure!(
            waiting.iter().map(|l| l.session).collect::<Vec<_>>() == [waiter.session_id()],
            "the waiter is not queued: {waiting:?}"
        );

        // Released, the lock goes to the waiter, with a greater token.
        let held = g.token();
        done("unlocking g", g.unlock()).await?;
        let next = within("the waiter's grant", queued).await??;
        ensure!(
            next.token() > held,
            "token {} is not above {held}",
            next.token()
        );
        Ok(())
    })
    .await
}

/// The leader's view of the cluster tells a member that is down from one that is up: the
/// dead one's last answer ages while its matched index stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t9b_the_cluster_view_shows_how_long_ago_each_member_answered() -> Result<()> {
    run(async {
        let mut c = TestCluster::start(options()).await?;
        let leader = c.wait_leader(ELECTION).await?;
        let ids = c.ids();
        let mut followers = ids.iter().copied().filter(|&id| id != leader);
        let (dead, live) = (
            followers.next().expect("two"),
            followers.next().expect("two"),
        );
        let client = client(&c, "viewer").await?;

        c.kill(dead).await;
        let view = wait_view(&client, "the dead member to show as silent", |view| {
            ensure!(view.leader == Some(leader), "the leader changed: {view:?}");
            Ok(heard(view, dead).is_some_and(|ms| ms >= 1_500))
        })
        .await?;
        // In the same view, the live follower answered recently.
        let live_ms = heard(&view, live);
        ensure!(
            live_ms.is_some_and(|ms| ms < 1_000),
            "live {live}: {live_ms:?}"
        );
        ensure!(heard(&view, leader).is_none(), "the leader hears itself");

        // The leader said so once in its log (not once per failed heartbeat).
        wait_log(&c, leader, "a member does not answer", WAIT).await?;
        let said = log_of(&c, leader)?
            .lines()
            .filter(|l| {
                l.contains("a member does not answer") && l.contains(&format!("target={dead}"))
            })
            .count();
        ensure!(said == 1, "said {said} times");

        c.restart(dead).await?;
        within("the restarted member to answer again", async {
            loop {
                let view = client.query_cluster().await?.expect("a cluster");
                if heard(&view, dead).is_some_and(|ms| ms < 1_000) {
                    return Ok::<_, anyhow::Error>(());
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await??;
        wait_log(&c, leader, "a member answers again", WAIT).await?;
        Ok(())
    })
    .await
}

/// After a fail-over, the new leader shows the old one, which never answered it, as silent
/// for as long as it has served (not as a member it knows nothing of), so the dead old
/// leader is seen as down without any write to the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t9b_the_new_leader_shows_the_dead_old_one_as_silent() -> Result<()> {
    run(async {
        let mut c = TestCluster::start(options()).await?;
        let old = c.wait_leader(ELECTION).await?;
        let client = client(&c, "viewer").await?;
        c.kill(old).await;
        let new = c.wait_leader_except(&[old], ELECTION).await?;
        wait_view(&client, "the old leader to show as silent", |view| {
            Ok(view.leader == Some(new) && heard(view, old).is_some_and(|ms| ms >= 1_500))
        })
        .await?;
        Ok(())
    })
    .await
}
