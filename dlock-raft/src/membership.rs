//! Where this node stands in the membership it knows, and the warning an operator gets when
//! it is taken out of the cluster.
//!
//! A member removed from the membership (`DELETE /api/cluster?id=N`) stays running: it no
//! longer takes part (it neither votes nor receives the log) and serves no client, but
//! nothing stops its process. A removal goes through a joint configuration (the old voters
//! and the new ones, which lack it) before the new one alone. The leader stops replicating
//! to the removed node as soon as it appends the new configuration, so that node usually
//! never sees it: what it learns of its removal is the joint configuration whose target
//! lacks it. From then on (or when it restarts from a log that holds either), it says so
//! once at WARN, and [`ClusterStatus::standing`](crate::ClusterStatus::standing)
//! (`/api/status`'s `membership`) says `removed`, so that an operator stops it. A member
//! that is down or cut off while it is removed learns nothing, and says nothing.

use dlock_proto::status::Standing;
use openraft::Membership;
use openraft::rt::watch::WatchReceiver;
use tokio_util::sync::CancellationToken;

use crate::rejoin::RejoinGuard;
use crate::types::{Member, NodeId, Raft};

/// Where node `id` stands in `membership`: in a joint configuration, by its target (the
/// last configuration), since dlock's membership changes add voters and remove nodes, never
/// demote a voter to a learner.
pub fn standing_of(membership: &Membership<NodeId, Member>, id: NodeId) -> Standing {
    let configs = membership.get_joint_config();
    let target = configs.last();
    if target.is_some_and(|voters| voters.contains(&id)) {
        Standing::Voter
    } else if configs.len() > 1 && configs.iter().any(|voters| voters.contains(&id)) {
        // A voter of the old configuration that the change under way takes out.
        Standing::Removed
    } else if membership.get_node(&id).is_some() {
        Standing::Learner
    } else if membership.nodes().next().is_none() {
        Standing::Pending
    } else {
        Standing::Removed
    }
}

/// [`standing_of`], for a node that may be catching up after starting empty (`catching_up`,
/// see [`crate::rejoin`]): such a node replays the log from the start, through memberships
/// from before it was added, and one without it is history, not its removal: `Pending`.
pub fn standing_catching_up(
    membership: &Membership<NodeId, Member>,
    id: NodeId,
    catching_up: bool,
) -> Standing {
    match standing_of(membership, id) {
        Standing::Removed if catching_up && membership.get_node(&id).is_none() => Standing::Pending,
        standing => standing,
    }
}

/// What the node says when its standing goes from `before` (`None`: the first it knows of)
/// to `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StandingNotice {
    /// It was removed from the membership (said at WARN).
    Removed,
    /// It was a voter and is now a learner (said at WARN).
    NoLongerVoter,
    /// It became a voter: a node added to the cluster, or one that votes again (said at
    /// INFO).
    Voter,
}

/// The notice for a change of standing from `before` to `now`, if any: each is given once
/// per change; a node that starts as a voter, a learner or in no membership gets none.
pub fn notice(before: Option<Standing>, now: Standing) -> Option<StandingNotice> {
    match (before, now) {
        (Some(b), n) if b == n => None,
        (_, Standing::Removed) => Some(StandingNotice::Removed),
        (Some(Standing::Voter), Standing::Learner) => Some(StandingNotice::NoLongerVoter),
        (Some(_), Standing::Voter) => Some(StandingNotice::Voter),
        _ => None,
    }
}

/// Watches node `id`'s standing in the membership `raft` knows until `shutdown`, and logs
/// each [`StandingNotice`] once, as it happens.
pub async fn watch_standing(
    id: NodeId,
    raft: Raft,
    rejoin: RejoinGuard,
    shutdown: CancellationToken,
) {
    // The server metrics change with the membership (and the vote and the leader only).
    let mut server = raft.server_metrics();
    let mut before = None;
    loop {
        let now = standing_catching_up(
            server.borrow_watched().membership_config.membership(),
            id,
            rejoin.is_on(),
        );
        match notice(before, now) {
            Some(StandingNotice::Removed) => tracing::warn!(
                node = id,
                "this node was removed from the cluster's membership: it takes no part and \
                 serves no client; stop it (to bring it back, add it again under a new id \
                 with an empty data directory)"
            ),
            Some(StandingNotice::NoLongerVoter) => tracing::warn!(
                node = id,
                "this node is no longer a voter of the cluster (a learner now): it does not \
                 count towards a majority"
            ),
            Some(StandingNotice::Voter) => {
                tracing::info!(node = id, "this node is a voter of the cluster");
            }
            None => {}
        }
        before = Some(now);
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = server.changed() => if changed.is_err() { return },
        }
    }
}

/// On a leader's metrics `m`: how long ago each other member last acknowledged a heartbeat
/// or an append (`None`: not in this term); empty on a follower.
pub(crate) fn heard_ago(
    m: &openraft::RaftMetrics<crate::types::TypeConfig>,
) -> std::collections::BTreeMap<NodeId, Option<std::time::Duration>> {
    m.heartbeat
        .iter()
        .flatten()
        .filter(|(id, _)| **id != m.id)
        .map(|(id, at)| (*id, at.as_ref().map(|at| openraft::Instant::elapsed(&**at))))
        .collect()
}

/// If `raft` leads, hands the leadership to the voter that answered it within the last
/// second and holds the most of its log (Raft's leadership transfer) and waits, at most
/// `within`, until another member leads: a leader that stops gracefully then costs its
/// clients no election timeout. The new leader, if one took over in time.
pub async fn hand_over(raft: &Raft, within: std::time::Duration) -> Option<NodeId> {
    let m = raft.metrics().borrow_watched().clone();
    if m.state != openraft::ServerState::Leader {
        return None;
    }
    let me = m.id;
    let heard = heard_ago(&m);
    let answers = |id: &NodeId| {
        heard
            .get(id)
            .copied()
            .flatten()
            .is_some_and(|ago| ago < std::time::Duration::from_secs(1))
    };
    let matched = m.replication.unwrap_or_default();
    let to = m
        .membership_config
        .membership()
        .voter_ids()
        .filter(|id| *id != me && answers(id))
        .max_by_key(|id| matched.get(id).cloned().flatten().map(|l| l.index))?;
    raft.trigger().transfer_leader(to).await.ok()?;
    let mut metrics = raft.metrics();
    let moved = tokio::time::timeout(within, async {
        loop {
            let leader = metrics.borrow_watched().current_leader;
            if let Some(l) = leader.filter(|l| *l != me) {
                return Some(l);
            }
            metrics.changed().await.ok()?;
        }
    })
    .await;
    moved.ok().flatten()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn member(n: u64) -> Member {
        Member {
            client_addr: format!("127.0.0.1:{}", 7000 + n),
            raft_addr: format!("127.0.0.1:{}", 7100 + n),
        }
    }

    /// Voters `voters`, and `learners` besides.
    fn membership(voters: &[u64], learners: &[u64]) -> Membership<NodeId, Member> {
        joint(&[voters], learners)
    }

    /// The joint configuration of `configs` (the last is the target), and `learners`.
    fn joint(configs: &[&[u64]], learners: &[u64]) -> Membership<NodeId, Member> {
        let nodes: BTreeMap<NodeId, Member> = configs
            .iter()
            .flat_map(|c| c.iter())
            .chain(learners)
            .map(|n| (*n, member(*n)))
            .collect();
        let configs = configs
            .iter()
            .map(|c| c.iter().copied().collect::<BTreeSet<_>>())
            .collect();
        Membership::new(configs, nodes).expect("a valid membership")
    }

    #[test]
    fn a_node_catching_up_reads_a_membership_without_it_as_history() {
        let m = membership(&[1, 2, 3], &[]);
        assert_eq!(standing_catching_up(&m, 4, true), Standing::Pending);
        assert_eq!(standing_catching_up(&m, 4, false), Standing::Removed);
        // A joint configuration that takes it out is its removal all the same.
        let leaving = joint(&[&[1, 2, 4], &[1, 2]], &[]);
        assert_eq!(standing_catching_up(&leaving, 4, true), Standing::Removed);
        assert_eq!(standing_catching_up(&m, 1, true), Standing::Voter);
    }

    #[test]
    fn a_node_stands_by_the_membership_it_knows() {
        let m = membership(&[1, 2, 3], &[4]);
        assert_eq!(standing_of(&m, 1), Standing::Voter);
        assert_eq!(standing_of(&m, 4), Standing::Learner);
        assert_eq!(standing_of(&m, 5), Standing::Removed);
        // What an uninitialized node knows (openraft refuses to build an empty one).
        let none = Membership::default();
        assert_eq!(standing_of(&none, 1), Standing::Pending);
        // Node 3 being removed, 4 added: what node 3 is left with when the leader stops
        // replicating to it.
        let removing = joint(&[&[1, 2, 3, 4], &[1, 2, 4]], &[]);
        assert_eq!(standing_of(&removing, 3), Standing::Removed);
        assert_eq!(standing_of(&removing, 4), Standing::Voter);
        // Node 4 being added as a voter: it votes in the target.
        let adding = joint(&[&[1, 2, 3], &[1, 2, 3, 4]], &[]);
        assert_eq!(standing_of(&adding, 4), Standing::Voter);
        assert_eq!(standing_of(&adding, 3), Standing::Voter);
    }

    #[test]
    fn removal_and_demotion_are_told_once_and_joining_is_quiet() {
        use Standing::*;
        use StandingNotice as N;
        // A voter removed: one notice, however often the metrics change afterwards.
        let seen = [Voter, Voter, Removed, Removed, Removed];
        let mut before = None;
        let notices: Vec<_> = seen
            .iter()
            .filter_map(|now| {
                let n = notice(before, *now);
                before = Some(*now);
                n
            })
            .collect();
        assert_eq!(notices, [N::Removed]);
        // A node that restarts from a log that no longer holds it is told at once.
        assert_eq!(notice(None, Removed), Some(N::Removed));
        // A node being added: pending, learner, then a voter, which it is told.
        assert_eq!(notice(None, Pending), None);
        assert_eq!(notice(Some(Pending), Learner), None);
        assert_eq!(notice(Some(Learner), Voter), Some(N::Voter));
        // A voter that starts, or restarts, is told nothing.
        assert_eq!(notice(None, Voter), None);
        // Demoted, then a voter again.
        assert_eq!(notice(Some(Voter), Learner), Some(N::NoLongerVoter));
        assert_eq!(notice(Some(Removed), Voter), Some(N::Voter));
    }
}
