//! A client that half-closes its connection (`shutdown(Write)` right after its requests, as
//! `printf ... | nc -N` does) still reads every answer to what it sent, then EOF; its session
//! outlives the connection as after any disconnection (R51), so nothing granted is lost.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};
use dlock_proto::{
    ClientMessage, EventKind, LockFlags, LockRequest, Mode, Query, Reply, Request, RequestId,
    ServerMessage,
};
use dlock_tests::{RawClient, TestServer};
use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;

/// Locks granted at once in the pipelined batch: several times what one connection may have
/// waiting for the core task, so that the last of them are still there when the server reads
/// the EOF.
const GRANTED: usize = 256;

fn lock(resource: &str, flags: LockFlags) -> Request {
    Request::Lock(LockRequest {
        resource: resource.as_bytes().to_vec(),
        mode: Mode::EX,
        flags,
        value: None,
        timeout_ms: None,
    })
}

/// What the half-closed client expects as the answer to each of its requests.
#[derive(Debug, PartialEq)]
enum Expect {
    Granted,
    Queued,
    NotQueued,
    Pong,
    Resources,
}

// Two workers: the core task and the connection run side by side, as in a real server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_client_reads_every_answer_before_eof() -> Result<()> {
    let server = TestServer::start().await?;
    let mut witness = RawClient::connect(server.addr(), "witness").await?;
    let (held, _) = witness.acquire("t44/held", Mode::EX).await?;

    let mut c = RawClient::connect(server.addr(), "half-closed").await?;
    let mut expected = BTreeMap::new();
    let mut batch = Vec::new();
    for i in 0..GRANTED {
        batch.push((
            lock(&format!("t44/{i}"), LockFlags::empty()),
            Expect::Granted,
        ));
    }
    batch.push((lock("t44/0", LockFlags::NOQUEUE), Expect::NotQueued));
    batch.push((lock("t44/held", LockFlags::empty()), Expect::Queued));
    batch.push((Request::Ping, Expect::Pong));
    batch.push((
        Request::Query(Query::Resource(b"t44/0".to_vec())),
        Expect::Resources,
    ));
    for (body, expect) in batch {
        let id = c.next_id();
        c.framed.feed(ClientMessage::Request { id, body }).await?;
        expected.insert(id, expect);
    }
    c.framed.flush().await?;
    // Nothing more to say: the write half is closed at once, before any answer is read.
    c.framed.get_mut().shutdown().await?;

    let mut answered: BTreeMap<RequestId, Expect> = BTreeMap::new();
    let mut queued_lock = None;
    while let Some(msg) = c.recv().await? {
        let (id, got) = match msg {
            ServerMessage::Event { event, .. } => {
                let id = event.request.context("an event for no request")?;
                let got = match event.kind {
                    EventKind::Granted { .. } => Expect::Granted,
                    EventKind::Queued => {
                        queued_lock = event.lock;
                        Expect::Queued
                    }
                    EventKind::NotQueued => Expect::NotQueued,
                    other => bail!("unexpected event {other:?} for {id}"),
                };
                (id, got)
            }
            ServerMessage::Reply {
                id,
                body: Reply::Pong { .. },
            } => (id, Expect::Pong),
            ServerMessage::Reply {
                id,
                body: Reply::Resources { resources, .. },
            } => {
                ensure!(resources.len() == 1, "query answered {resources:?}");
                (id, Expect::Resources)
            }
            other => bail!("unexpected message {other:?}"),
        };
        ensure!(
            answered.insert(id, got).is_none(),
            "request {id} answered twice"
        );
    }
    let missing: Vec<_> = expected
        .iter()
        .filter(|(id, want)| answered.get(id) != Some(want))
        .map(|(id, want)| (*id, want))
        .collect();
    ensure!(
        missing.is_empty() && answered.len() == expected.len(),
        "{} of {} requests sent before the half-close not answered as expected before EOF: {:?}",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(4)]
    );

    // The session outlives its connection (R51): its locks still block others, and the
    // queued request is granted into the replay once the witness lets go.
    let info = witness
        .query_resource("t44/0")
        .await?
        .context("t44/0 is gone")?;
    ensure!(
        info.granted.len() == 1 && info.granted[0].session == c.session,
        "t44/0 granted to {:?}",
        info.granted
    );
    witness.release(held).await?;
    c.resume().await?;
    let granted = c
        .event_where("the queued lock's grant", |e| {
            e.lock == queued_lock && matches!(e.kind, EventKind::Granted { .. })
        })
        .await?;
    ensure!(granted.lock.is_some(), "{granted:?}");
    Ok(())
}
