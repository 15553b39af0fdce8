//! SIGKILL of the leader: every lock of every mode is still held by its holder (who never
//! sees `lost()`), the wait queue keeps its FIFO order, and every token granted afterwards is
//! above every token granted before.

use anyhow::{Result, ensure};
use dlock_client::{LockGuard, Mode};
use futures_util::FutureExt;

use crate::{
    ELECTION, assert_refused, assert_sole_holder, client, conflicting, done, members_agree,
    options, res, run, within,
};
use dlock_tests::cluster::TestCluster;

const MODES: [Mode; 6] = [Mode::NL, Mode::CR, Mode::CW, Mode::PR, Mode::PW, Mode::EX];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t90_leader_kill_keeps_locks_queue_order_and_tokens() -> Result<()> {
    run(async {
        let mut c = TestCluster::start(options()).await?;
        let first = c.wait_leader(ELECTION).await?;
        let holder = client(&c, "holder").await?;

        // One lock of every mode, each on its own resource, and an EX on `q` with three
        // clients queued behind it in a known order.
        let mut guards: Vec<(String, LockGuard)> = Vec::new();
        for m in MODES {
            let name = format!("mode/{m:?}");
            let g = done("a grant", holder.lock(&name, m)).await?;
            guards.push((name, g));
        }
        let q_holder = done("a grant of q", holder.lock("q", Mode::EX)).await?;
        let waiters = [
            client(&c, "w1").await?,
            client(&c, "w2").await?,
            client(&c, "w3").await?,
        ];
        let mut pending = Vec::new();
        for (i, w) in waiters.iter().enumerate() {
            let mut p = w.lock("q", Mode::EX).boxed();
            // Queued in this order: the next waiter is sent only once this one shows.
            within("the waiter to queue", async {
                loop {
                    if let Some(r) = (&mut p).now_or_never() {
                        anyhow::bail!("waiter {} completed instead of queueing: {r:?}", i + 1);
                    }
                    if res(&holder, "q").await?.waiting.len() == i + 1 {
                        return Ok(());
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            })
            .await??;
            pending.push(p);
        }
        let order: Vec<_> = waiters.iter().map(|w| w.session_id()).collect();
        let before_max = guards
            .iter()
            .map(|(_, g)| g.token())
            .chain([q_holder.token()])
            .max()
            .expect("tokens");

        let killed_at = std::time::Instant::now();
        c.kill(first).await;
        let second = c.wait_leader_except(&[first], ELECTION).await?;
        eprintln!(
            "leader {first} killed; node {second} leads after {:.2?}",
            killed_at.elapsed()
        );

        // Every lock is still held, by the same lock with the same token, and refuses a
        // conflicting try-lock from another client.
        let other = client(&c, "other").await?;
        for (name, g) in &guards {
            assert_sole_holder(&other, name, g).await?;
            if let Some(m) = conflicting(g.mode()) {
                assert_refused(&other, name, m).await?;
            }
        }
        // The queue is intact, in its order, behind the same holder.
        let q = res(&other, "q").await?;
        ensure!(
            q.granted.iter().map(|l| l.lock).collect::<Vec<_>>() == [q_holder.lock_id()],
            "q's holder changed: {q:?}"
        );
        ensure!(
            q.waiting.iter().map(|l| l.session).collect::<Vec<_>>() == order,
            "q's wait queue is not w1, w2, w3 ({order:?}): {q:?}"
        );
        // The holder's own connection moved to the new leader and works.
        done("a ping through the holder", holder.ping()).await?;

        // Released one by one, the waiters are granted in their queue order, each with a
        // token above every token granted before the kill.
        done("unlocking q", q_holder.unlock()).await?;
        let mut tokens = Vec::new();
        let mut rest = pending;
        for i in 0..waiters.len() {
            let g = match within("a waiter's grant", rest.remove(0)).await? {
                Ok(g) => g,
                Err(e) => anyhow::bail!(
                    "w{} was not granted: {e}; q is now {:?}",
                    i + 1,
                    res(&other, "q").await
                ),
            };
            for (j, p) in rest.iter_mut().enumerate() {
                ensure!(
                    p.now_or_never().is_none(),
                    "w{} was granted before w{}",
                    i + j + 2,
                    i + 1
                );
            }
            let q = res(&other, "q").await?;
            ensure!(
                q.waiting.iter().map(|l| l.session).collect::<Vec<_>>() == order[i + 1..],
                "after w{}'s grant the queue should be {:?}: {q:?}",
                i + 1,
                &order[i + 1..]
            );
            tokens.push(g.token());
            done("unlocking", g.unlock()).await?;
        }
        ensure!(
            tokens.iter().all(|t| *t > before_max) && tokens.windows(2).all(|w| w[0] < w[1]),
            "tokens after the fail-over {tokens:?} must grow past {before_max:?}"
        );

        // No guard saw a loss; the next grant on every resource is above every earlier token.
        for (name, g) in guards {
            ensure!(!g.is_lost(), "{name}: lost after the fail-over");
            done("unlocking", g.unlock()).await?;
            let next = done("a grant after the fail-over", other.lock(&name, Mode::EX)).await?;
            ensure!(
                next.token() > before_max,
                "{name}: token {:?} after the fail-over, not above {before_max:?}",
                next.token()
            );
        }
        eprintln!(
            "tokens: before the kill at most {before_max:?}; the waiters then got {tokens:?}"
        );
        members_agree(&c)?;
        Ok(())
    })
    .await
}
