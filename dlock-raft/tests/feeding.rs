//! A node's feed carries what entries produce only while the replica says so
//! (`Replica::set_feeding`): a server that does not lead turns it off, and its state machine
//! then applies entries without sending them anywhere.

mod common;

use anyhow::{Context, Result};
use common::*;
use dlock_core::{Command, LockRequest, Mode, RequestId, SessionId};
use dlock_raft::NodeOptions;
use tokio::sync::mpsc;

fn lock(session: SessionId, request: u64, name: &str) -> Command {
    Command::Lock {
        session,
        request: RequestId(request),
        args: LockRequest::new(name, Mode::EX),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_reach_the_feed_only_while_feeding() -> Result<()> {
    let mut c = cluster(1).await?;
    let listener = c.listeners.remove(&1).context("listener")?;
    let (tx, mut rx) = mpsc::channel(64);
    let mut options = NodeOptions::new(1, c.dirs[0].path());
    options.feed = Some(tx);
    let node = start_with(options, listener).await?;
    c.form(&node).await?;
    leader_among(&[&node]).await?;
    assert!(node.replica.feeding(), "a node feeds until told otherwise");
    let open = Command::OpenSession {
        name: "s".into(),
        ttl_ms: 60_000,
        secret: 7,
    };
    let s = SessionId(write(&node.raft, 1, open).await?.index);
    while rx.try_recv().is_ok() {}

    // Not feeding: the entry is applied (the lock is held), and nothing reaches the feed;
    // what applying it produced is sent nowhere, the answer included.
    node.replica.set_feeding(false);
    let quiet = write(&node.raft, 2, lock(s, 1, "quiet")).await?;
    assert!(quiet.events.is_empty(), "{:?}", quiet.events);
    assert_eq!(
        holder(&node.replica, "quiet").map(|(session, mode, _)| (session, mode)),
        Some((s, Mode::EX))
    );
    assert!(
        rx.try_recv().is_err(),
        "an entry applied while not feeding was fed"
    );

    // Feeding again: the next entry's grant reaches the feed (applying sends it before the
    // answer comes back).
    node.replica.set_feeding(true);
    let loud = write(&node.raft, 3, lock(s, 2, "loud")).await?;
    let fed = rx
        .try_recv()
        .context("an entry applied while feeding was not fed")?;
    assert_eq!(fed.index, loud.index);
    assert!(granted_token(&fed.events).is_some(), "{:?}", fed.events);
    kill(&node).await?;
    Ok(())
}
