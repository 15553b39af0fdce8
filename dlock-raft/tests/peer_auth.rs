//! Members that share a cluster secret form a cluster; a member with another secret gets
//! nothing, and a connection that does not prove the secret, or does not open with the
//! version greeting of this build's peer protocol, is refused before any Raft request
//! reaches the node (in-process nodes over TCP on 127.0.0.1).

mod common;

use anyhow::{Context, Result, bail, ensure};
use common::*;
use dlock_core::Command;
use dlock_proto::FrameCodec;
use dlock_raft::PeerSecret;
use dlock_raft::network::{MAX_PEER_FRAME, PEER_PROTOCOL, PeerRequest, PeerResponse};
use dlock_raft::openraft::Vote;
use dlock_raft::openraft::raft::VoteRequest;
use dlock_raft::openraft::rt::watch::WatchReceiver;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

type Raw = Framed<TcpStream, FrameCodec<PeerResponse, PeerRequest>>;

/// A connection with nothing sent yet.
async fn raw(addr: &str) -> Result<Raw> {
    Ok(Framed::new(
        TcpStream::connect(addr).await?,
        FrameCodec::new(MAX_PEER_FRAME),
    ))
}

/// A connection to node `to` at `addr`, past the version greeting.
async fn greeted(addr: &str, to: u64) -> Result<Raw> {
    let mut conn = raw(addr).await?;
    conn.send(PeerRequest::Version {
        protocol: PEER_PROTOCOL,
        to,
    })
    .await?;
    let answer = tokio::time::timeout(DEADLINE, conn.next())
        .await?
        .context("closed at the greeting")???;
    let PeerResponse::Version { protocol } = answer else {
        bail!("the greeting was answered {answer:?}");
    };
    assert_eq!(protocol, PEER_PROTOCOL);
    Ok(conn)
}

/// The next answer, and whether the node then closed the connection.
async fn answer_then_closed(conn: &mut Raw) -> Result<(PeerResponse, bool)> {
    let answer = tokio::time::timeout(DEADLINE, conn.next())
        .await?
        .context("closed without an answer")???;
    let closed = tokio::time::timeout(DEADLINE, conn.next()).await?.is_none();
    Ok((answer, closed))
}

/// Sends a vote for `term` on `conn`, which must be refused: why, once the node has closed
/// the connection.
async fn refused_vote(mut conn: Raw, term: u64) -> Result<String> {
    conn.send(PeerRequest::Vote(
        VoteRequest::new(Vote::new(term, 9), None),
        false,
    ))
    .await?;
    let (answer, closed) = answer_then_closed(&mut conn).await?;
    let PeerResponse::Refused(why) = answer else {
        bail!("the vote was answered {answer:?}");
    };
    ensure!(closed, "not closed after the refusal");
    Ok(why)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_members_proving_the_secret_take_part() -> Result<()> {
    let secret = PeerSecret::new(b"the secret of this test's cluster")?;
    let other = PeerSecret::new(b"the secret of some other cluster")?;
    let mut c = cluster(3).await?;
    let nodes = c
        .start_all(|c, id| {
            let mut options = c.defaults(id);
            options.peer_secret = Some(if id == 3 { &other } else { &secret }.clone());
            options
        })
        .await?;
    // Nodes 1 and 2 make a majority of three: they elect a leader and commit.
    let leader = leader_among(&[&nodes[0], &nodes[1]]).await?;
    let open = write(
        &nodes[leader as usize - 1].raft,
        10,
        Command::OpenSession {
            name: "a".into(),
            ttl_ms: 60_000,
            secret: 1,
        },
    )
    .await?;
    wait_applied(&nodes[0].replica, open.index).await?;
    wait_applied(&nodes[1].replica, open.index).await?;
    // Node 3, with another secret, was sent nothing it accepted, and made nobody follow it.
    assert_eq!(nodes[2].replica.last_applied_index(), 0);
    let m3 = nodes[2].raft.metrics().borrow_watched().clone();
    assert!(!m3.state.is_leader(), "{m3:?}");

    // A vote request without the handshake is refused and never reaches the node: its term
    // stays where it was.
    let target = &c.members[&2].raft_addr;
    let term_before = nodes[1].raft.metrics().borrow_watched().current_term;
    let why = refused_vote(greeted(target, 2).await?, term_before + 100).await?;
    assert!(why.contains("--cluster-secret-file"), "{why}");
    assert!(nodes[1].raft.metrics().borrow_watched().current_term < term_before + 100);

    // A wrong proof is refused too.
    let mut conn = greeted(target, 2).await?;
    conn.send(PeerRequest::Hello { nonce: [7; 32] }).await?;
    let challenge = tokio::time::timeout(DEADLINE, conn.next())
        .await?
        .context("closed")???;
    assert!(
        matches!(challenge, PeerResponse::Challenge { .. }),
        "{challenge:?}"
    );
    conn.send(PeerRequest::Proof { mac: [0; 32] }).await?;
    let (answer, closed) = answer_then_closed(&mut conn).await?;
    assert!(
        matches!(&answer, PeerResponse::Refused(why) if why.contains("wrong proof")),
        "{answer:?}"
    );
    assert!(closed);

    for n in &nodes {
        kill(n).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_handshake_to_a_member_without_a_secret_is_refused_with_the_reason() -> Result<()> {
    let mut c = cluster(1).await?;
    let l = c.listeners.remove(&1).context("listener")?;
    let node = start(1, &c.dirs[0], l).await?;
    let mut conn = greeted(&c.members[&1].raft_addr, 1).await?;
    conn.send(PeerRequest::Hello { nonce: [1; 32] }).await?;
    let (answer, closed) = answer_then_closed(&mut conn).await?;
    assert!(
        matches!(&answer, PeerResponse::Refused(why) if why.contains("no cluster secret")),
        "{answer:?}"
    );
    assert!(closed);
    kill(&node).await
}

#[tokio::test]
async fn a_member_of_another_peer_protocol_is_refused_before_its_request_reaches_the_node()
-> Result<()> {
    let mut c = cluster(1).await?;
    let l = c.listeners.remove(&1).context("listener")?;
    let node = start(1, &c.dirs[0], l).await?;
    let addr = c.members[&1].raft_addr.clone();
    let term_before = node.raft.metrics().borrow_watched().current_term;

    // A build from before the greeting opens with a Raft request.
    let why = refused_vote(raw(&addr).await?, term_before + 100).await?;
    assert!(
        why.contains(&format!("speaks peer protocol {PEER_PROTOCOL}")),
        "{why}"
    );
    assert!(node.raft.metrics().borrow_watched().current_term < term_before + 100);

    // Another protocol is refused naming both.
    let mut conn = raw(&addr).await?;
    conn.send(PeerRequest::Version {
        protocol: PEER_PROTOCOL + 1,
        to: 1,
    })
    .await?;
    let (answer, closed) = answer_then_closed(&mut conn).await?;
    let PeerResponse::Refused(why) = answer else {
        bail!("another protocol was answered {answer:?}");
    };
    assert!(
        why.contains(&format!(
            "peer protocol {}, but this member speaks {PEER_PROTOCOL}",
            PEER_PROTOCOL + 1
        )),
        "{why}"
    );
    assert!(closed);
    kill(&node).await
}
