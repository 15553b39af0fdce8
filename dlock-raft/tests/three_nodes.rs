//! Three in-process nodes over real TCP on 127.0.0.1: elect a leader, write, kill the
//! leader, a new leader is elected, the state is intact and tokens keep growing; the old
//! leader restarted from its directory catches up.

mod common;

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use common::*;
use dlock_core::{Command, EventKind, LockRequest, Mode, RequestId, SessionId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_new_leader_keeps_every_lock_and_tokens_grow() -> Result<()> {
    let mut c = cluster(3).await?;
    let nodes = by_id(c.start_all(Cluster::defaults).await?);
    let first = leader_among(&nodes.values().collect::<Vec<_>>()).await?;
    let leader = &nodes[&first].raft;

    let open = write(
        leader,
        10,
        Command::OpenSession {
            name: "a".into(),
            ttl_ms: 60_000,
            secret: 7,
        },
    )
    .await?;
    assert!(matches!(
        open.events[0].kind,
        EventKind::SessionOpened { .. }
    ));
    let session = SessionId(open.index);
    let mut tokens = BTreeMap::new();
    for (i, (name, mode)) in [("db", Mode::EX), ("cfg", Mode::PR), ("log", Mode::CW)]
        .into_iter()
        .enumerate()
    {
        let applied = write(
            leader,
            20 + i as u64,
            Command::Lock {
                session,
                request: RequestId(i as u64 + 1),
                args: LockRequest::new(name, mode),
            },
        )
        .await?;
        let token = granted_token(&applied.events).context("granted")?;
        assert_eq!(token, applied.index, "the token is the entry's log index");
        tokens.insert(name, (mode, token));
    }
    // What the metrics say may lag what `client_write` returned: wait for the last write's own index.
    let last = tokens.values().map(|(_, t)| *t).max().context("written")?;
    for node in nodes.values() {
        wait_applied(&node.replica, last).await?;
    }

    // Kill the leader; the other two elect a new one.
    kill(&nodes[&first]).await?;
    let rest: Vec<&Node> = nodes.values().filter(|n| n.id != first).collect();
    let second = leader_among(&rest).await?;
    assert_ne!(second, first);
    let leader = &nodes[&second].raft;
    for (name, (mode, token)) in &tokens {
        assert_eq!(
            holder(&nodes[&second].replica, name),
            Some((session, *mode, *token)),
            "{name} still held after the fail-over"
        );
    }
    // The next grant on a held resource comes after every earlier token.
    let applied = write(
        leader,
        30,
        Command::Unlock {
            session,
            request: RequestId(10),
            args: dlock_core::UnlockRequest::new(dlock_core::LockId(tokens["db"].1)),
        },
    )
    .await?;
    assert!(matches!(applied.events[0].kind, EventKind::Unlocked));
    let applied = write(
        leader,
        31,
        Command::Lock {
            session,
            request: RequestId(11),
            args: LockRequest::new("db", Mode::EX),
        },
    )
    .await?;
    let token = granted_token(&applied.events).context("granted again")?;
    assert!(
        tokens.values().all(|(_, t)| token > *t),
        "{token} after {tokens:?}"
    );

    // The killed node restarts from its directory and catches up from its log.
    let l = rebind(&c, first).await?;
    let restarted = start(first, &c.dirs[first as usize - 1], l).await?;
    wait_applied(&restarted.replica, applied.index).await?;
    assert_eq!(
        holder(&restarted.replica, "db"),
        Some((session, Mode::EX, token))
    );
    same_engines(rest.iter().copied().chain([&restarted]), applied.index).await?;
    for node in rest.into_iter().chain([&restarted]) {
        kill(node).await?;
    }
    Ok(())
}
