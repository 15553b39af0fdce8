//! Requests in flight when the leader is SIGKILLed are applied exactly once: the client
//! re-sends what was outstanding to the new leader, which recognises what the log already
//! holds.

use anyhow::{Result, ensure};
use dlock_client::Mode;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};

use crate::{ELECTION, WAIT, client, members_agree, options, res, run};
use dlock_tests::cluster::TestCluster;

/// Lock requests pipelined on one session just before the kill: three quarters of the 64
/// answers a session's exactly-once record remembers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t91_requests_in_flight_at_the_kill_apply_once() -> Result<()> {
    pipelined_requests_apply_once(dlock_core::REMEMBERED_ANSWERS * 3 / 4).await
}

/// 200 pipelined requests: more than a session remembers answers for. The leader may apply
/// them all before it dies while the client saw only a few answers: each re-sent request
/// finds the lock it created (every lock carries its originating request), not "unknown
/// lock".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t91_more_requests_in_flight_than_answers_remembered_apply_once() -> Result<()> {
    pipelined_requests_apply_once(200).await
}

/// Sends `requests` EX lock requests on distinct resources through one client, SIGKILLs the
/// leader as soon as the first grant arrives, and checks that every request was granted
/// exactly once.
async fn pipelined_requests_apply_once(requests: usize) -> Result<()> {
    run(async {
        let mut c = TestCluster::start(options()).await?;
        let first = c.wait_leader(ELECTION).await?;
        let cl = client(&c, "pipeline").await?;

        let names: Vec<String> = (0..requests).map(|i| format!("once/{i:03}")).collect();
        let mut inflight: FuturesUnordered<_> = names
            .iter()
            .map(|n| {
                let cl = cl.clone();
                let n = n.clone();
                async move { (n.clone(), cl.lock(&n, Mode::EX).await) }
            })
            .collect();
        // The first grant shows the batch reached the leader; the rest are somewhere between
        // the client, the leader's log and its answers when the leader dies.
        let mut done = vec![
            tokio::time::timeout(WAIT, inflight.next())
                .await?
                .expect("requests"),
        ];
        c.kill(first).await;
        // Grants that had already arrived when the leader died.
        while let Some(Some(r)) = inflight.next().now_or_never() {
            done.push(r);
        }
        let answered_before = done.len();
        let second = c.wait_leader_except(&[first], ELECTION).await?;
        tokio::time::timeout(WAIT, async {
            while let Some(r) = inflight.next().await {
                done.push(r);
            }
        })
        .await?;
        eprintln!("leader {first} killed after {answered_before} grant(s) of {requests}; node {second} leads");

        // Every request was granted once: one lock per resource, the session's, with the
        // guard's token, and nothing queued behind it.
        ensure!(done.len() == requests);
        let mut guards = Vec::new();
        let mut failed = Vec::new();
        for (name, r) in done {
            match r {
                Ok(g) => guards.push((name, g)),
                Err(e) => failed.push(format!("{name}: {e}")),
            }
        }
        failed.sort();
        ensure!(
            failed.is_empty(),
            "{} of {requests} requests failed after the fail-over: {failed:?}",
            failed.len()
        );
        let checker = client(&c, "checker").await?;
        for (name, g) in &guards {
            let info = res(&checker, name).await?;
            let locks: Vec<_> = info
                .granted
                .iter()
                .chain(&info.converting)
                .chain(&info.waiting)
                .map(|l| (l.session, l.lock, l.token))
                .collect();
            ensure!(
                locks == [(cl.session_id(), g.lock_id(), Some(g.token()))],
                "{name}: expected only lock {:?} of session {:?} (token {:?}), found {info:?}",
                g.lock_id(),
                cl.session_id(),
                g.token()
            );
        }
        let session = tokio::time::timeout(WAIT, checker.query_session(cl.session_id()))
            .await??
            .ok_or_else(|| anyhow::anyhow!("the pipelining session is gone"))?;
        ensure!(
            session.locks.len() == requests,
            "the session owns {} locks, not {requests}",
            session.locks.len()
        );
        members_agree(&c)?;
        Ok(())
    })
    .await
}
