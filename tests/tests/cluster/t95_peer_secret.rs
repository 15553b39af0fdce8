//! A cluster whose members share `--cluster-secret-file` elects a leader and serves; a
//! connection to a member's peer port that does not prove the secret is refused with the
//! reason, and its request never reaches Raft (the leader stays the leader).

use anyhow::{Context, Result, bail, ensure};
use dlock_client::Mode;
use dlock_proto::FrameCodec;
use dlock_raft::network::{MAX_PEER_FRAME, PEER_PROTOCOL, PeerRequest, PeerResponse};
use dlock_raft::openraft::Vote;
use dlock_raft::openraft::raft::VoteRequest;
use dlock_tests::cluster::{Probe, TestCluster};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::{ELECTION, client, done, options, run, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t95_members_sharing_a_secret_serve_and_refuse_unproven_peers() -> Result<()> {
    run(async {
        let secret_dir = tempfile::tempdir()?;
        let secret = secret_dir.path().join("cluster.secret");
        std::fs::write(&secret, "a secret only the members know\n")?;
        let mut c = TestCluster::start(
            options().args(["--cluster-secret-file", &secret.display().to_string()]),
        )
        .await?;
        let leader = c.wait_leader(ELECTION).await?;
        let a = client(&c, "a").await?;
        let g = done("a lock", a.lock("secret/r", Mode::EX)).await?;
        ensure!(!g.is_lost());

        // A vote for a far later term, sent after the version greeting but without the
        // handshake: refused, and the leader does not step down for it.
        let stream = TcpStream::connect(c.raft_addr(leader)).await?;
        let mut raw: Framed<_, FrameCodec<PeerResponse, PeerRequest>> =
            Framed::new(stream, FrameCodec::new(MAX_PEER_FRAME));
        raw.send(PeerRequest::Version {
            protocol: PEER_PROTOCOL,
            to: leader,
        })
        .await?;
        let greeting = within("the greeting", raw.next())
            .await?
            .context("closed at the greeting")???;
        ensure!(
            matches!(greeting, PeerResponse::Version { protocol } if protocol == PEER_PROTOCOL),
            "the greeting was answered {greeting:?}"
        );
        raw.send(PeerRequest::Vote(
            VoteRequest::new(Vote::new(1_000_000, 9), None),
            false,
        ))
        .await?;
        let answer = within("the refusal", raw.next())
            .await?
            .context("closed without an answer")???;
        let PeerResponse::Refused(why) = answer else {
            bail!("an unproven vote was answered {answer:?}");
        };
        ensure!(why.contains("--cluster-secret-file"), "{why}");
        ensure!(within("the close", raw.next()).await?.is_none());
        ensure!(c.probe(leader).await == Probe::Leader);
        // The members still replicate: another lock is granted.
        drop(done("a second lock", a.lock("secret/s", Mode::EX)).await?);
        Ok(())
    })
    .await
}
