//! What a member tells Prometheus and `/api/status` about the cluster: every member's
//! `/metrics` agrees on the term and the leader once one is elected, exactly one says it
//! leads, a grant's entry shows in the leader's applied index and then in every follower's,
//! the leader alone reports each follower's lag, `/api/status` names each member's role,
//! and a member counts the peer connections it answers and those it refuses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use dlock_client::Mode;
use dlock_tests::cluster::TestCluster;
use dlock_tests::http::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::prom::{Samples, parse};
use crate::{ELECTION, WAIT, client, done, options, run};

/// The pause between two rounds of scrapes while waiting for a condition.
const POLL: Duration = Duration::from_millis(20);

/// The gauges every member has.
const GAUGES: [&str; 6] = [
    "dlock_cluster_term",
    "dlock_cluster_leader",
    "dlock_cluster_leader_id",
    "dlock_cluster_members",
    "dlock_cluster_last_log_index",
    "dlock_cluster_applied_index",
];

const LAG: &str = "dlock_cluster_follower_lag_entries";

const PEER_CONNECTIONS: &str = "dlock_cluster_peer_connections";
const PEER_CLOSED: &str = "dlock_cluster_peer_connections_closed_total";

async fn scrape(http: SocketAddr) -> Result<Samples> {
    let a = get(http, "/metrics").await?;
    ensure!(a.status == 200, "/metrics answered {}", a.status);
    parse(&a.body)
}

/// Every member's scrape, by node id.
async fn scrape_all(c: &TestCluster) -> Result<BTreeMap<u64, Samples>> {
    let mut all = BTreeMap::new();
    for id in c.ids() {
        let http = c
            .http_addr(id)
            .context("the cluster has no HTTP listeners")?;
        all.insert(id, scrape(http).await?);
    }
    Ok(all)
}

/// The nodes `s` reports a follower lag for, and the lags.
fn lags(s: &Samples) -> BTreeMap<String, f64> {
    s.0.iter()
        .filter(|((name, _), _)| name == LAG)
        .flat_map(|((_, labels), v)| {
            labels
                .iter()
                .filter(|(k, _)| k == "node")
                .map(move |(_, node)| (node.clone(), *v))
        })
        .collect()
}

/// Scrapes every member until `done` holds of the scrapes (at most [`WAIT`]), and returns
/// them; the error shows the last ones.
async fn scrape_until(
    c: &TestCluster,
    what: &str,
    done: impl Fn(&BTreeMap<u64, Samples>) -> bool,
) -> Result<BTreeMap<u64, Samples>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let all = scrape_all(c).await?;
        if done(&all) {
            return Ok(all);
        }
        if Instant::now() >= deadline {
            let cluster: BTreeMap<u64, Vec<_>> = all
                .iter()
                .map(|(id, s)| {
                    let series =
                        s.0.iter()
                            .filter(|((n, _), _)| n.starts_with("dlock_cluster"));
                    (*id, series.collect())
                })
                .collect();
            bail!("{what}: not within {WAIT:?}; the last scrapes' cluster series: {cluster:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `/api/status`'s `role` on node `id`.
async fn role(c: &TestCluster, id: u64) -> Result<serde_json::Value> {
    let a = get(c.http_addr(id).context("no HTTP listener")?, "/api/status").await?;
    ensure!(a.status == 200, "/api/status answered {}", a.status);
    let v: serde_json::Value = serde_json::from_str(&a.body)?;
    Ok(v.get("role").cloned().unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t98_members_report_role_term_leader_and_replication() -> Result<()> {
    run(async {
        let mut c = TestCluster::start(options().http()).await?;
        let leader = c.wait_leader(ELECTION).await?;
        let lid = leader as f64;
        let followers: Vec<u64> = c.ids().into_iter().filter(|&id| id != leader).collect();

        // Once the others have heard from the leader, all agree on it and on the term, and
        // know the three members (a scrape is polled again while a member has not, or while
        // an election churns: a member that voted for the leader names it before the entry
        // with the membership has reached it).
        let all = scrape_until(
            &c,
            "every member naming the leader in one term, of three members",
            |all| {
                let term = all[&leader].get("dlock_cluster_term", &[]);
                all.values().all(|s| {
                    s.get("dlock_cluster_leader_id", &[]) == lid
                        && s.get("dlock_cluster_term", &[]) == term
                        && s.get("dlock_cluster_members", &[]) == 3.0
                })
            },
        )
        .await?;
        for (id, s) in &all {
            for name in GAUGES {
                ensure!(s.has(name), "node {id}: {name} missing");
            }
            ensure!(
                s.get("dlock_cluster_members", &[]) == 3.0,
                "node {id}: members"
            );
            ensure!(
                s.get("dlock_cluster_last_log_index", &[])
                    >= s.get("dlock_cluster_applied_index", &[]),
                "node {id}: applied past its log"
            );
        }
        let says_leader: Vec<u64> = all
            .iter()
            .filter(|(_, s)| s.get("dlock_cluster_leader", &[]) == 1.0)
            .map(|(id, _)| *id)
            .collect();
        ensure!(
            says_leader == [leader],
            "members saying they lead: {says_leader:?}, the leader is {leader}"
        );
        let term = all[&leader].get("dlock_cluster_term", &[]);
        ensure!(term >= 1.0, "term {term}");
        for (id, s) in &all {
            let t = s.get("dlock_cluster_term", &[]);
            ensure!(t == term, "node {id} is in term {t}, the leader in {term}");
        }
        for id in &followers {
            ensure!(!all[id].has(LAG), "follower {id} reports a follower lag");
        }
        let want: Vec<String> = followers.iter().map(u64::to_string).collect();
        let reported: Vec<String> = lags(&all[&leader]).into_keys().collect();
        ensure!(reported == want, "lag reported for {reported:?}");

        ensure!(role(&c, leader).await? == "leader", "the leader's role");
        for &id in &followers {
            ensure!(role(&c, id).await? == "follower", "node {id}'s role");
        }

        // A grant is an entry: applied on the leader before the client hears of it.
        let holder = client(&c, "holder").await?;
        let http = c.http_addr(leader).context("no HTTP listener")?;
        let before = scrape(http).await?.get("dlock_cluster_applied_index", &[]);
        let _g = done("a grant", holder.lock("metrics/a", Mode::EX)).await?;
        let after = scrape(http).await?;
        let granted_at = after.get("dlock_cluster_applied_index", &[]);
        ensure!(
            granted_at > before,
            "the leader's applied index did not move with a grant: {before} then {granted_at}"
        );
        ensure!(after.get("dlock_cluster_last_log_index", &[]) >= granted_at);

        // The followers apply it too, and the leader sees them hold all its log.
        scrape_until(&c, "the followers applying the grant", |all| {
            followers
                .iter()
                .all(|id| all[id].get("dlock_cluster_applied_index", &[]) >= granted_at)
                && lags(&all[&leader]).values().all(|lag| *lag == 0.0)
        })
        .await?;

        // Each follower answers the leader's replication on its peer port.
        let all = scrape_until(&c, "every follower answering a peer connection", |all| {
            followers
                .iter()
                .all(|id| all[id].get(PEER_CONNECTIONS, &[]) >= 1.0)
        })
        .await?;
        let target = followers[0];
        let refused = [("reason", "refused")];
        ensure!(
            all[&target].get(PEER_CLOSED, &refused) == 0.0,
            "refusals before any stranger came"
        );
        // A connection that does not greet as a member is refused, and counted.
        let mut stranger = TcpStream::connect(c.raft_addr(target)).await?;
        stranger.write_all(b"\0\0\0\x04junk").await?;
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, stranger.read_to_end(&mut answer))
            .await
            .context("the member kept the stranger's connection open")??;
        scrape_until(&c, "the stranger counted as refused", |all| {
            all[&target].get(PEER_CLOSED, &refused) == 1.0
        })
        .await?;
        Ok(())
    })
    .await
}
