//! The scene the JSON API and the status page are checked against: on `app/db` two holders
//! in PR and a waiter for EX; elsewhere a two-session wait cycle whose second request was
//! refused as the deadlock victim, so one waiter remains.

use anyhow::{Result, ensure};
use dlock_proto::{LockFlags, LockId, Mode};
use dlock_tests::{RawClient, TestServer};

/// A session name a page must show as text, never as markup.
pub const HOSTILE_NAME: &str = "<img src=x onerror=alert(1)>&amp;\"'";

/// The clients of the scene, kept connected.
pub struct Scene {
    /// First PR holder on `app/db`.
    pub reader1: RawClient,
    /// Second PR holder on `app/db` (with a hostile name).
    pub reader2: RawClient,
    /// Waits for EX on `app/db`.
    pub writer: RawClient,
    /// Holds `cycle/x`, waits for `cycle/y`.
    pub left: RawClient,
    /// Holds `cycle/y`; its request for `cycle/x` was refused as a deadlock.
    pub right: RawClient,
    /// The readers' locks.
    pub reader_locks: (LockId, LockId),
    /// The writer's request.
    pub writer_request: dlock_proto::RequestId,
}

/// The scene's lease: its raw clients never renew, so their sessions must outlive the
/// slowest test using them (a browser starting on a loaded machine takes many seconds).
const SCENE_TTL_MS: u64 = 5 * 60 * 1000;

/// Builds the scene on `server`.
pub async fn build(server: &TestServer) -> Result<Scene> {
    let addr = server.addr();
    let connect = |name: &'static str| RawClient::connect_with_ttl(addr, name, SCENE_TTL_MS);
    let mut reader1 = connect("reader-1").await?;
    let mut reader2 = connect(HOSTILE_NAME).await?;
    let mut writer = connect("writer").await?;
    let mut left = connect("left").await?;
    let mut right = connect("right").await?;
    let (l1, _) = reader1.acquire("app/db", Mode::PR).await?;
    let (l2, _) = reader2.acquire("app/db", Mode::PR).await?;
    let writer_request = writer.lock("app/db", Mode::EX, LockFlags::empty()).await?;
    let q = writer.event_for(writer_request).await?;
    ensure!(
        matches!(q.kind, dlock_proto::EventKind::Queued),
        "writer: {q:?}"
    );
    left.acquire("cycle/x", Mode::EX).await?;
    right.acquire("cycle/y", Mode::EX).await?;
    let r = left.lock("cycle/y", Mode::EX, LockFlags::empty()).await?;
    let q = left.event_for(r).await?;
    ensure!(
        matches!(q.kind, dlock_proto::EventKind::Queued),
        "left: {q:?}"
    );
    let r = right.lock("cycle/x", Mode::EX, LockFlags::empty()).await?;
    let d = right.event_for(r).await?;
    ensure!(
        matches!(d.kind, dlock_proto::EventKind::Deadlock),
        "right: {d:?}"
    );
    Ok(Scene {
        reader1,
        reader2,
        writer,
        left,
        right,
        reader_locks: (l1, l2),
        writer_request,
    })
}
