//! A member removed from the membership (`DELETE /api/cluster?id=N` on the leader) keeps
//! running, but knows it: its `/api/status` says `"membership": "removed"` and its log has
//! one WARN saying so, so that an operator stops it; the others stay voters.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use dlock_tests::cluster::TestCluster;
use dlock_tests::http::{get, request};

use crate::{ELECTION, WAIT, options, run};

/// The pause between two looks while waiting for a condition.
const POLL: Duration = Duration::from_millis(20);

/// What the removed member's log says, once.
const WARNING: &str = "this node was removed from the cluster's membership";

/// `/api/status`'s `membership` on node `id`.
async fn membership(c: &TestCluster, id: u64) -> Result<serde_json::Value> {
    let a = get(c.http_addr(id).context("no HTTP listener")?, "/api/status").await?;
    ensure!(a.status == 200, "/api/status answered {}", a.status);
    let v: serde_json::Value = serde_json::from_str(&a.body)?;
    Ok(v.get("membership")
        .cloned()
        .unwrap_or(serde_json::Value::Null))
}

/// How many lines of node `id`'s log say [`WARNING`].
fn warnings(c: &TestCluster, id: u64) -> usize {
    std::fs::read_to_string(c.dir().join(format!("node{id}.log")))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(WARNING))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t99_a_removed_member_says_so_once() -> Result<()> {
    run(async {
        let mut c = TestCluster::start(options().http()).await?;
        let leader = c.wait_leader(ELECTION).await?;
        // A member that voted for the leader knows it before the membership entry reaches
        // it (and says "pending" until then): wait for all three to be voters.
        let deadline = Instant::now() + WAIT;
        for id in c.ids() {
            while membership(&c, id).await? != "voter" {
                ensure!(Instant::now() < deadline, "node {id} is not a voter");
                tokio::time::sleep(POLL).await;
            }
        }
        let gone = c
            .ids()
            .into_iter()
            .find(|&id| id != leader)
            .context("a follower")?;
        let http = c.http_addr(leader).context("no HTTP listener")?;
        let a = request(http, "DELETE", &format!("/api/cluster?id={gone}"), &[]).await?;
        ensure!(a.status == 200, "DELETE answered {} {:?}", a.status, a.body);

        let deadline = Instant::now() + WAIT;
        while membership(&c, gone).await? != "removed" || warnings(&c, gone) == 0 {
            if Instant::now() > deadline {
                bail!(
                    "node {gone} did not say it was removed within {WAIT:?}\n{}",
                    c.log_tails(30)
                );
            }
            tokio::time::sleep(POLL).await;
        }
        ensure!(warnings(&c, gone) == 1, "{}", c.log_tails(30));
        for id in c.ids().into_iter().filter(|&id| id != gone) {
            ensure!(membership(&c, id).await? == "voter", "node {id}");
            ensure!(warnings(&c, id) == 0, "node {id} warned");
        }
        Ok(())
    })
    .await
}
