//! A node that opens from disk applies again every entry committed since its last snapshot
//! before `open_node` returns, while nobody reads its feed yet: however many there are, it
//! opens, and what it applies afterwards reaches the feed as before.

mod common;

use anyhow::{Context, Result};
use common::*;
use dlock_core::{Command, LockRequest, Mode, RequestId, SessionId};
use dlock_raft::openraft::rt::watch::WatchReceiver;
use dlock_raft::{Applied, NodeOptions};
use tokio::sync::mpsc;

/// The feed's capacity: far fewer than the entries applied again on opening.
const FEED: usize = 4;

fn lock(session: SessionId, request: u64, name: &str) -> Command {
    Command::Lock {
        session,
        request: RequestId(request),
        args: LockRequest::new(name, Mode::EX),
    }
}

fn with_feed(c: &Cluster, feed: mpsc::Sender<Applied>) -> NodeOptions {
    let mut options = NodeOptions::new(1, c.dirs[0].path());
    options.feed = Some(feed);
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reopens_with_more_committed_entries_than_its_feed_holds() -> Result<()> {
    let mut c = cluster(1).await?;
    let listener = c.listeners.remove(&1).context("listener")?;
    let (tx, mut rx) = mpsc::channel(FEED);
    // While the node first runs, its feed is read as a server reads it.
    let reader = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let node = start_with(with_feed(&c, tx), listener).await?;
    c.form(&node).await?;
    leader_among(&[&node]).await?;
    let open = Command::OpenSession {
        name: "s".into(),
        ttl_ms: 60_000,
        secret: 7,
    };
    let s = SessionId(write(&node.raft, 1, open).await?.index);
    let mut last = 0;
    for i in 0..(FEED as u64 * 10) {
        let applied = write(&node.raft, 2 + i, lock(s, i + 1, &format!("r{i}"))).await?;
        assert!(
            granted_token(&applied.events).is_none(),
            "events go to the feed"
        );
        last = applied.index;
    }
    kill(&node).await?;
    drop(node);
    reader.abort();

    // Opened again with a feed of the same size that nobody reads while it opens: every
    // entry up to `last` is applied again inside `open_node`.
    let (tx, mut rx) = mpsc::channel(FEED);
    let listener = rebind(&c, 1).await?;
    let node = tokio::time::timeout(DEADLINE, start_with(with_feed(&c, tx), listener))
        .await
        .context("the node did not open: applying again what it had committed filled its feed")??;
    wait_applied(&node.replica, last).await?;
    for i in 0..(FEED as u64 * 10) {
        assert_eq!(
            holder(&node.replica, &format!("r{i}")).map(|(session, mode, _)| (session, mode)),
            Some((s, Mode::EX))
        );
    }
    leader_among(&[&node]).await?;

    // What it applies from now on is fed.
    let after = write(&node.raft, 1_000, lock(s, 1_000, "after")).await?;
    let fed = tokio::time::timeout(DEADLINE, async {
        loop {
            match rx.recv().await {
                Some(applied) if applied.index == after.index => return Some(applied),
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await
    .context("the new entry never reached the feed")?
    .context("the feed closed")?;
    assert!(
        granted_token(&fed.events).is_some_and(|t| t >= after.index),
        "{:?}",
        fed.events
    );
    kill(&node).await?;
    Ok(())
}

/// Copies the files under `from` into `to` (which exists), directories included.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// `tests/fixtures/openraft-0.9` is the raft directory of a one-member cluster written by the
/// build before openraft 0.10 (openraft 0.9.25, peer protocol 2), killed while session 23
/// ("holder") held `fixture-held` in EX with token 24, after five PR locks taken and
/// released, with a snapshot every 4 entries: a snapshot and a log written by 0.9's
/// types. This build opens it, leads again and goes on from there: the lock is still held,
/// and the next grant's token is above it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_and_snapshot_written_with_openraft_0_9_open_and_go_on() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openraft-0.9");
    copy_dir(&fixture, dir.path())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let node = start_with(NodeOptions::new(1, dir.path()), listener).await?;
    until("the node leads again", || {
        node.raft.metrics().borrow_watched().state.is_leader()
    })
    .await?;
    let (session, mode, token) = holder(&node.replica, "fixture-held").context("the held lock")?;
    assert_eq!((session, mode, token), (SessionId(23), Mode::EX, 24));
    assert!(
        holder(&node.replica, "fixture-1").is_none(),
        "released before the kill"
    );
    let last = node.replica.read(|core| core.last_index());
    assert!(last >= 24, "the engine's inputs survive: {last}");

    // A new session's lock on a free name: granted above everything before.
    let opened = write(
        &node.raft,
        10_000_000,
        Command::OpenSession {
            name: "after".into(),
            ttl_ms: 60_000,
            secret: 99,
        },
    )
    .await?;
    let (_, s) = opened.opened.first().copied().context("session opened")?;
    let applied = write(&node.raft, 10_000_001, lock(s, 1, "fixture-new")).await?;
    let new_token = granted_token(&applied.events).context("granted")?;
    assert!(
        new_token > last && new_token > 24,
        "{new_token} after {last}"
    );
    kill(&node).await
}
