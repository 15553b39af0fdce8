//! Replacing a member: a fourth node is added (it catches up as a learner, then votes), the
//! third is removed (and knows it), and the cluster of 1, 2 and 4 keeps every lock and
//! survives the loss of its leader.

mod common;

use dlock_raft::openraft::rt::watch::WatchReceiver;
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use dlock_core::{Command, LockRequest, Mode, RequestId, SessionId};
use dlock_proto::status::Standing;
use dlock_raft::{Member, ProposeError, Sequencer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The membership `node` knows.
fn membership_of(node: &Node) -> dlock_raft::openraft::Membership<u64, Member> {
    node.raft
        .metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_is_replaced_and_the_new_cluster_keeps_the_table() -> Result<()> {
    let mut c = cluster(3).await?;
    let duties = CancellationToken::new();
    let grace = Duration::from_secs(5);
    let started = c.start_all(Cluster::defaults).await?;
    let seqs: BTreeMap<u64, Sequencer> = started
        .iter()
        .map(|n| (n.id, sequencer(n, grace, &duties)))
        .collect();
    let mut nodes = by_id(started);
    let leader = leader_among(&nodes.values().collect::<Vec<_>>()).await?;
    let open = write(
        &nodes[&leader].raft,
        10,
        Command::OpenSession {
            name: "a".into(),
            ttl_ms: 300_000,
            secret: 7,
        },
    )
    .await?;
    let session = SessionId(open.index);
    let locked = write(
        &nodes[&leader].raft,
        20,
        Command::Lock {
            session,
            request: RequestId(1),
            args: LockRequest::new("db", Mode::EX),
        },
    )
    .await?;
    let token = granted_token(&locked.events)
        .with_context(|| format!("granted: {locked:?} after {open:?}"))?;

    // Node 4 starts empty, knowing nobody; the leader adds it.
    let dir4 = tempfile::tempdir()?;
    let l4 = TcpListener::bind("127.0.0.1:0").await?;
    let member4 = Member {
        client_addr: "127.0.0.1:7004".into(),
        raft_addr: l4.local_addr()?.to_string(),
    };
    let node4 = start(4, &dir4, l4).await?;
    let seq4 = sequencer(&node4, grace, &duties);
    // A follower cannot change the membership: it names the leader.
    let follower = (1..=3).find(|id| *id != leader).context("a follower")?;
    match seqs[&follower].add_member(4, member4.clone()).await {
        Err(ProposeError::NotLeader { leader: Some(m) }) => {
            assert_eq!(m, c.members[&leader]);
        }
        other => panic!("a follower added a member: {other:?}"),
    }
    seqs[&leader].add_member(4, member4).await?;
    wait_applied(&node4.replica, locked.index).await?;
    assert_eq!(
        holder(&node4.replica, "db"),
        Some((session, Mode::EX, token))
    );

    // Node 3 leaves (the leader may be node 3 itself: then the others elect another). It
    // learns so, and says so (`/api/status`'s `membership`), so that an operator stops it.
    assert_eq!(seqs[&3].status().standing, Standing::Voter);
    seqs[&leader].remove_member(3).await?;
    until("node 3 to know it was removed", || {
        seqs[&3].status().standing == Standing::Removed
    })
    .await?;
    assert_eq!(seq4.status().standing, Standing::Voter);
    kill(&nodes[&3]).await?;
    nodes.remove(&3);
    let voters = |n: &Node| membership_of(n).voter_ids().collect::<Vec<_>>();
    until("the membership to be 1, 2, 4 everywhere", || {
        nodes
            .values()
            .chain([&node4])
            .all(|n| voters(n) == vec![1, 2, 4])
    })
    .await?;

    // The new cluster loses its leader and still has a majority (two of three).
    let mut alive: Vec<&Node> = nodes.values().chain([&node4]).collect();
    let now = leader_among(&alive).await?;
    let dead = alive.iter().position(|n| n.id == now).context("leader")?;
    kill(alive[dead]).await?;
    alive.remove(dead);
    let next = leader_among(&alive).await?;
    let raft = &alive
        .iter()
        .find(|n| n.id == next)
        .context("new leader")?
        .raft;
    let again = write(
        raft,
        30,
        Command::Lock {
            session,
            request: RequestId(2),
            args: LockRequest::new("cfg", Mode::PR),
        },
    )
    .await?;
    let token2 = granted_token(&again.events).context("granted after the fail-over")?;
    assert!(token2 > token, "{token2} after {token}");
    for n in &alive {
        wait_applied(&n.replica, again.index).await?;
        assert_eq!(holder(&n.replica, "db"), Some((session, Mode::EX, token)));
    }
    same_engines(alive.iter().copied(), again.index).await?;
    duties.cancel();
    Ok(())
}

/// A node added at an address where nothing answers stays a learner (it counts for no
/// majority) and the call says so; it can be removed again. A voter's id at other addresses
/// and an id that is not a member are refused; a voter added again at its own addresses is
/// no change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_does_not_answer_is_never_made_a_voter() -> Result<()> {
    let mut c = cluster(3).await?;
    let duties = CancellationToken::new();
    let started = c.start_all(Cluster::defaults).await?;
    let seqs: BTreeMap<u64, Sequencer> = started
        .iter()
        .map(|n| (n.id, sequencer(n, Duration::from_secs(5), &duties)))
        .collect();
    let nodes = by_id(started);
    let leader = leader_among(&nodes.values().collect::<Vec<_>>()).await?;
    let membership = || membership_of(&nodes[&leader]);

    // Nothing listens at node 4's peer address (bound, then closed).
    let gone = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
    let member4 = Member {
        client_addr: "127.0.0.1:7004".into(),
        raft_addr: gone.to_string(),
    };
    match seqs[&leader].add_member(4, member4).await {
        Err(ProposeError::Unfinished(why)) => assert!(why.contains("stays a learner"), "{why}"),
        other => panic!("a node that never answered was added: {other:?}"),
    }
    assert_eq!(membership().voter_ids().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(membership().learner_ids().collect::<Vec<_>>(), vec![4]);
    // What `dlock status --cluster` shows of it.
    let status = seqs[&leader].status();
    assert_eq!(status.learners, std::collections::BTreeSet::from([4]));
    assert_eq!(status.voters, 3);
    seqs[&leader].remove_member(4).await?;
    assert!(membership().get_node(&4).is_none(), "{:?}", membership());

    match seqs[&leader].remove_member(9).await {
        Err(ProposeError::Membership(why)) => assert!(why.contains("not a member"), "{why}"),
        other => panic!("removing a stranger: {other:?}"),
    }
    let voter = c.members[&2].clone();
    seqs[&leader].add_member(2, voter.clone()).await?;
    let moved = Member {
        raft_addr: gone.to_string(),
        ..voter
    };
    match seqs[&leader].add_member(2, moved).await {
        Err(ProposeError::Membership(why)) => assert!(why.contains("already a voter"), "{why}"),
        other => panic!("a voter's addresses changed: {other:?}"),
    }
    assert_eq!(membership().voter_ids().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(membership().get_node(&2), Some(&c.members[&2]));
    duties.cancel();
    Ok(())
}

/// A removal that leaves no live majority of the new configuration answers `Unfinished`
/// within the wait, and completes by itself once the missing member answers again, without
/// another call (it is not left half-way, in a joint configuration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_waiting_for_a_majority_completes_when_it_answers() -> Result<()> {
    let mut c = cluster(3).await?;
    let duties = CancellationToken::new();
    let started = c.start_all(Cluster::defaults).await?;
    let mut nodes = by_id(started);
    let leader = leader_among(&nodes.values().collect::<Vec<_>>()).await?;
    let seq = sequencer(&nodes[&leader], Duration::from_secs(5), &duties);
    let others: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let (down, removed) = (others[0], others[1]);
    // The new configuration is the leader and `down`: it cannot commit while `down` is.
    kill(&nodes[&down]).await?;
    match seq.remove_member(removed).await {
        Err(ProposeError::Unfinished(why)) => assert!(why.contains("not committed"), "{why}"),
        other => panic!("a removal without a majority: {other:?}"),
    }
    let listener = rebind(&c, down).await?;
    nodes.insert(
        down,
        start(down, &c.dirs[down as usize - 1], listener).await?,
    );
    let voters = || membership_of(&nodes[&leader]).get_joint_config().clone();
    until("the removal to finish on its own", || {
        voters() == vec![std::collections::BTreeSet::from([leader, down])]
    })
    .await?;
    duties.cancel();
    Ok(())
}
