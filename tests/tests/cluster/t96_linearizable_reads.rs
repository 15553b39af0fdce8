//! Queries in a cluster go through a linearizable read: a leader cut off from the majority
//! never answers one from its table (another leader may already have moved past it), and in
//! a healthy cluster every query shows every write completed before it was sent.

use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use dlock_client::Mode;
use dlock_proto::{Query, Reply, Request, RequestError, ServerMessage};
use dlock_tests::cluster::TestCluster;
use dlock_tests::raw::{RawClient, recv_raw_within};

use crate::{ELECTION, LEASE, WAIT, assert_sole_holder, client, done, options, run, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t96_a_cut_off_leader_answers_no_query_from_its_stale_table() -> Result<()> {
    run(async {
        let mut c = TestCluster::start(options().proxied()).await?;
        let old = c.wait_leader(ELECTION).await?;
        let ttl_ms = u64::try_from(LEASE.as_millis())?;
        let mut raw = RawClient::connect_with_ttl(c.client_addr(old), "raw", ttl_ms).await?;
        // Healthy, the leader answers queries.
        ensure!(
            raw.query_resource("p").await?.is_none(),
            "p exists before anything locked it"
        );

        // Cut off, the old leader may already have been replaced: it must not answer from
        // its table (which shows p free) but wait for a majority that never answers, until
        // it stops leading and closes the connection (or gives up and says so).
        c.isolate(old);
        let cut_at = Instant::now();
        let id = raw
            .send(Request::Query(Query::Resource(b"p".to_vec())))
            .await?;
        loop {
            let left = WAIT.saturating_sub(cut_at.elapsed());
            if left.is_zero() {
                bail!("the cut-off leader neither answered nor closed within {WAIT:?}");
            }
            match recv_raw_within(&mut raw.framed, left).await? {
                None => {
                    eprintln!(
                        "the cut-off leader closed the connection {:.2?} after the cut, the query unanswered",
                        cut_at.elapsed()
                    );
                    break;
                }
                Some(ServerMessage::Reply { id: rid, body }) if rid == id => match body {
                    Reply::Error(RequestError::Overloaded) => break,
                    other => bail!(
                        "the cut-off leader answered a query {:.2?} after the cut: {other:?}",
                        cut_at.elapsed()
                    ),
                },
                Some(_) => {}
            }
        }

        // The majority elects a leader; what it grants, a query to it shows, through any
        // client given every endpoint.
        let new = c.wait_leader_except(&[old], ELECTION).await?;
        let majority = client(&c, "majority").await?;
        let g = done("a grant from the majority", majority.lock("p", Mode::EX)).await?;
        let reader = client(&c, "reader").await?;
        assert_sole_holder(&reader, "p", &g).await?;
        eprintln!("node {old} cut off; node {new} leads and its queries show the grant");

        // Healed, the old leader follows; queries still show the grant.
        c.heal(old);
        let after = c.wait_leader(ELECTION).await?;
        ensure!(after != old, "the old leader {old} leads again after healing");
        assert_sole_holder(&reader, "p", &g).await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t96_every_query_shows_every_write_completed_before_it() -> Result<()> {
    run(async {
        let mut c = TestCluster::start(options()).await?;
        c.wait_leader(ELECTION).await?;
        let writer = client(&c, "writer").await?;
        let readers = [client(&c, "reader-1").await?, client(&c, "reader-2").await?];
        for round in 0..20u32 {
            let name = format!("lin.{}", round % 3);
            let g = done("a grant", writer.lock(&name, Mode::PW)).await?;
            // Many queries at once (answered in batches by one read round each): every one
            // sent after the grant shows it.
            let name = name.as_str();
            let queries = readers
                .iter()
                .flat_map(|r| (0..8).map(move |_| r.query_resource(name)));
            let infos = within("the queries", futures_util::future::join_all(queries)).await?;
            for info in infos {
                let info = info?.with_context(|| format!("{name} missing after its grant"))?;
                ensure!(
                    info.granted.iter().any(|l| l.lock == g.lock_id()),
                    "round {round}: a query after the grant shows {info:?}"
                );
            }
            let lock = g.lock_id();
            done("the unlock", g.unlock()).await?;
            for r in &readers {
                let info = within("a query", r.query_resource(name)).await??;
                ensure!(
                    info.is_none_or(|i| i.granted.iter().all(|l| l.lock != lock)),
                    "round {round}: a query after the unlock still shows {lock:?}"
                );
            }
        }
        // Prefix queries too.
        let g = done("a grant", writer.lock("lin.prefix", Mode::EX)).await?;
        let all = within("a prefix query", readers[0].query_prefix("lin.", 100)).await??;
        ensure!(
            all.iter()
                .any(|r| r.granted.iter().any(|l| l.lock == g.lock_id())),
            "a prefix query after the grant shows {all:?}"
        );
        assert_sole_holder(&readers[1], "lin.prefix", &g).await?;
        Ok(())
    })
    .await
}
