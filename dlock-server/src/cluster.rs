//! Cluster mode: the engine replicated through `dlock-raft` on three (or five) servers.
//!
//! Each server is a member with two addresses, the one clients connect to and the one its
//! peers do (`--peers 1=CLIENT/RAFT,2=…,3=…`, `--node-id`). The leader proposes every command
//! through the Raft log and routes what each applied entry produces to its clients;
//! followers refuse `Hello` with `NotLeader` naming the leader. A new leader gives every
//! session the fail-over grace before anything else, so a client that finds it within its
//! lease keeps its locks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use dlock_raft::{Member, NodeId};

/// Cluster settings ([`Config::cluster`](crate::Config::cluster)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This server's id among the members.
    pub node_id: NodeId,
    /// Every member: its client and peer addresses.
    pub members: BTreeMap<NodeId, Member>,
    /// Form the cluster from `members` if this node's log is empty (once, on one node; a
    /// node that already belongs to a cluster ignores it).
    pub init: bool,
    /// How long every session's lease is extended when a new leader takes over.
    pub failover_grace: Duration,
    /// The address the peer listener binds (`--raft-listen`); `None`: this node's raft
    /// address in `members`. Peers always reach it at that raft address, which may lead
    /// here through a proxy or a NAT.
    pub raft_bind: Option<SocketAddr>,
    /// Take a Raft snapshot every this many applied entries (`--snapshot-every`); `None`:
    /// [`dlock_raft::DEFAULT_SNAPSHOT_EVERY`].
    pub snapshot_every: Option<u64>,
    /// The file holding the secret every member proves to its peers
    /// (`--cluster-secret-file`, see [`dlock_raft::peer_auth`]); `None`: the peer port
    /// answers anyone who reaches it.
    pub secret_file: Option<std::path::PathBuf>,
}

/// The default [`ClusterConfig::failover_grace`].
pub const DEFAULT_FAILOVER_GRACE: Duration = Duration::from_secs(5);

impl ClusterConfig {
    /// This node's member entry.
    pub fn me(&self) -> Option<&Member> {
        self.members.get(&self.node_id)
    }

    /// The address this node's peer listener binds: [`raft_bind`](Self::raft_bind), or
    /// else its own raft address in `members`.
    pub fn raft_listen(&self) -> Result<SocketAddr, String> {
        if let Some(addr) = self.raft_bind {
            return Ok(addr);
        }
        let me = self
            .me()
            .ok_or_else(|| format!("--node-id {} is not among --peers", self.node_id))?;
        me.raft_addr.parse().map_err(|e| {
            format!(
                "peer address {:?} of node {}: {e}",
                me.raft_addr, self.node_id
            )
        })
    }
}

/// This node's address book: the raft address of every other member, as this node's own
/// `--peers` gives it (the membership stored in the log holds the addresses of the node
/// that formed the cluster, which may reach its peers differently).
pub fn peer_addresses(cc: &ClusterConfig) -> BTreeMap<NodeId, String> {
    cc.members
        .iter()
        .filter(|(id, _)| **id != cc.node_id)
        .map(|(id, m)| (*id, m.raft_addr.clone()))
        .collect()
}

/// Parses `--peers`: `ID=CLIENT_ADDR/RAFT_ADDR` entries separated by commas, e.g.
/// `1=127.0.0.1:7420/127.0.0.1:7520,2=…`.
pub fn parse_peers(s: &str) -> Result<BTreeMap<NodeId, Member>, String> {
    let mut members: BTreeMap<NodeId, Member> = BTreeMap::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addrs) = entry
            .split_once('=')
            .ok_or_else(|| format!("{entry:?}: expected ID=CLIENT_ADDR/RAFT_ADDR"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| format!("{entry:?}: the node id must be a number"))?;
        let (client, raft) = addrs
            .split_once('/')
            .ok_or_else(|| format!("{entry:?}: expected ID=CLIENT_ADDR/RAFT_ADDR"))?;
        for addr in [client, raft] {
            if addr
                .rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
            {
                return Err(format!("{entry:?}: {addr:?} is not HOST:PORT"));
            }
        }
        let member = Member {
            client_addr: client.trim().to_owned(),
            raft_addr: raft.trim().to_owned(),
        };
        // One address for two members would send one member's requests to the other: a
        // member given its own address for another's would vote for itself twice.
        if member.client_addr == member.raft_addr {
            return Err(format!(
                "{entry:?}: node {id}'s client and peer addresses are the same"
            ));
        }
        for (other, m) in &members {
            let taken: [&String; 2] = [&m.client_addr, &m.raft_addr];
            for (addr, kind) in [(&member.client_addr, "client"), (&member.raft_addr, "peer")] {
                if taken.contains(&addr) {
                    return Err(format!(
                        "nodes {other} and {id} share the address {addr} ({kind} address of \
                         node {id}): each member needs addresses of its own"
                    ));
                }
            }
        }
        if members.insert(id, member).is_some() {
            return Err(format!("node {id} is listed twice"));
        }
    }
    if members.is_empty() {
        return Err("no members".to_owned());
    }
    Ok(members)
}

/// The cluster as `sequencer`'s node sees it (`Query::Cluster`, `/api/cluster`).
pub(crate) fn view(sequencer: &dlock_raft::Sequencer) -> dlock_proto::status::ClusterView {
    let status = sequencer.status();
    dlock_proto::status::ClusterView {
        node_id: status.id,
        leader: status.leader,
        term: status.term,
        last_log_index: status.last_log_index,
        applied_index: status.applied_index,
        serving: status.leading,
        members: status
            .members
            .iter()
            .map(|(id, m)| dlock_proto::status::MemberView {
                id: *id,
                client_addr: m.client_addr.clone(),
                raft_addr: m.raft_addr.clone(),
                matched: status.matched.get(id).copied().flatten(),
                heard_ms: status
                    .heard
                    .get(id)
                    .copied()
                    .flatten()
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                voter: !status.learners.contains(id),
            })
            .collect(),
    }
}

/// How many entries the proposer keeps submitted and not yet applied before it gathers:
/// a command that finds fewer in flight goes at once, so a lone request never waits for
/// company. Measured on a 3-member loopback cluster (64 clients, uncontended, four paired
/// runs): 4 gave 1-9 % more cycles/s than 2 and 1 gave 5-15 % fewer; contended handoffs
/// were the same with 4 and fewer with 1 (a renewal or tick entry then holds up the next
/// handoff).
pub(crate) const MAX_IN_FLIGHT: usize = 4;

/// How long, at most, the proposer gathers commands while [`MAX_IN_FLIGHT`] entries are in
/// flight, before it submits what it has anyway: the added latency under load is bounded,
/// and an entry that takes long to commit (a slow disk, a leader change) never stops the
/// queue.
pub(crate) const GATHER_WINDOW: std::time::Duration = std::time::Duration::from_millis(1);

/// How long the proposer waits before it submits again the entries the leader refused
/// because its lease had lapsed.
pub(crate) const LEASE_RETRY: std::time::Duration = std::time::Duration::from_millis(10);

/// What the proposer submits entries to: the node's [`dlock_raft::Sequencer`].
pub(crate) trait Submit {
    /// Proposes `commands` as one entry; the answer completes once it is applied or refused.
    fn submit(
        &self,
        commands: Vec<dlock_core::Command>,
    ) -> impl Future<Output = Result<dlock_raft::Answer, dlock_raft::ProposeError>> + Send;
}

impl Submit for dlock_raft::Sequencer {
    fn submit(
        &self,
        commands: Vec<dlock_core::Command>,
    ) -> impl Future<Output = Result<dlock_raft::Answer, dlock_raft::ProposeError>> + Send {
        self.submit_batch(commands)
    }
}

/// How a submitted entry ended, with its submission number and its commands.
type Ended = (
    u64,
    Vec<dlock_core::Command>,
    <dlock_raft::Answer as std::future::IntoFuture>::Output,
);

/// Entries submitted and not yet answered.
type InFlight =
    futures_util::stream::FuturesUnordered<std::pin::Pin<Box<dyn Future<Output = Ended> + Send>>>;

/// Whether the leader refused an entry because its lease had lapsed: it heard from no
/// majority within the longest election timeout (a slow disk or network on the followers),
/// and takes no write until it does, though it still leads.
fn lease_lapsed(ended: &<dlock_raft::Answer as std::future::IntoFuture>::Output) -> bool {
    use dlock_raft::openraft::error::{ClientWriteError, ForwardReason};
    matches!(ended, Ok(Err(ClientWriteError::ForwardToLeader(f))) if f.reason == ForwardReason::LeaseExpired)
}

/// Submits `commands` as entry number `seq` and keeps its answer, with a copy of the
/// commands, in `in_flight`; false if the node refused to take it (it does not lead).
async fn submit(
    sequencer: &impl Submit,
    in_flight: &mut InFlight,
    seq: u64,
    commands: Vec<dlock_core::Command>,
) -> bool {
    let kept = commands.clone();
    let n = commands.len();
    match sequencer.submit(commands).await {
        Ok(answer) => {
            in_flight.push(Box::pin(async move { (seq, kept, answer.await) }));
            true
        }
        // Their clients re-send them to the leader, which recognises them by id.
        Err(e) => {
            tracing::debug!(error = %e, commands = n, "proposal not submitted");
            false
        }
    }
}

/// Drains the proposal queue into the Raft log in order, keeping each answer until it
/// completes (what an entry produces goes to the feed; an answer only says whether it was
/// applied). While [`MAX_IN_FLIGHT`] entries are in flight, the commands that arrive
/// gather, until one of them is applied or for [`GATHER_WINDOW`] at most, and then go
/// together as one entry of consecutive engine inputs (at most [`dlock_raft::MAX_BATCH`]):
/// under load the log, and every replica's work per entry (append, fsync, replication,
/// apply), grows by one entry per batch rather than per command. An entry the leader
/// refused because its lease had lapsed ([`lease_lapsed`]) is submitted again, oldest
/// first and before anything newer, once every entry in flight has answered and
/// [`LEASE_RETRY`] has passed, for as long as this node leads (its clients would otherwise
/// wait for an answer that never comes). Ends when the core task drops the queue or
/// `shutdown` fires.
pub(crate) async fn propose(
    sequencer: impl Submit,
    mut proposals: tokio::sync::mpsc::Receiver<dlock_core::Command>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use futures_util::StreamExt;
    let mut in_flight = InFlight::new();
    let mut refused = BTreeMap::new();
    let mut seq = 0u64;
    let mut batch = Vec::with_capacity(dlock_raft::MAX_BATCH);
    loop {
        if !refused.is_empty() && in_flight.is_empty() {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(LEASE_RETRY) => {}
            }
            for (_, commands) in std::mem::take(&mut refused) {
                seq += 1;
                if !submit(&sequencer, &mut in_flight, seq, commands).await {
                    // Not leading any more: what is left goes the same way.
                    refused.clear();
                    break;
                }
            }
            continue;
        }
        let gather = in_flight.len() >= MAX_IN_FLIGHT;
        let next = async {
            if gather {
                tokio::time::sleep(GATHER_WINDOW).await;
            }
            proposals.recv_many(&mut batch, dlock_raft::MAX_BATCH).await
        };
        tokio::select! {
            // Shutdown first; then answers, which end the gathering.
            biased;
            () = shutdown.cancelled() => return,
            Some((n, commands, ended)) = in_flight.next(), if !in_flight.is_empty() => {
                if lease_lapsed(&ended) {
                    refused.insert(n, commands);
                } else if let Ok(Err(e)) = ended {
                    tracing::debug!(error = %e, "proposal not applied");
                }
            }
            // Nothing newer goes before the refused entries.
            n = next, if refused.is_empty() => {
                if n == 0 {
                    return;
                }
                seq += 1;
                submit(&sequencer, &mut in_flight, seq, std::mem::take(&mut batch)).await;
                batch.reserve(dlock_raft::MAX_BATCH);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use dlock_core::Command;
    use dlock_raft::openraft::error::{ClientWriteError, ForwardReason, ForwardToLeader};
    use dlock_raft::openraft::impls::ProgressResponder;
    use dlock_raft::openraft::raft::responder::Responder;
    use dlock_raft::{Answer, ProposeError, TypeConfig};
    use tokio::sync::mpsc;

    use super::*;

    type Responding = ProgressResponder<
        TypeConfig,
        Result<
            dlock_raft::openraft::raft::ClientWriteResponse<TypeConfig>,
            ClientWriteError<TypeConfig>,
        >,
    >;

    /// A leader that hands every submitted entry, with the means to answer it, to the test;
    /// it refuses to take any once `leading` is false.
    struct Fake {
        entries: mpsc::UnboundedSender<(Vec<Command>, Responding)>,
        leading: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl Submit for Fake {
        async fn submit(&self, commands: Vec<Command>) -> Result<Answer, ProposeError> {
            if !self.leading.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(ProposeError::NotLeader { leader: None });
            }
            let (responder, answer) = ProgressResponder::complete_only();
            self.entries.send((commands, responder)).unwrap();
            Ok(answer)
        }
    }

    fn tick(n: u64) -> Command {
        Command::RenewMany {
            renewals: vec![(dlock_core::SessionId(n), dlock_core::RequestId(n))],
        }
    }

    /// The next entry submitted (within a few seconds of paused time).
    async fn next(
        entries: &mut mpsc::UnboundedReceiver<(Vec<Command>, Responding)>,
    ) -> (Vec<Command>, Responding) {
        tokio::time::timeout(std::time::Duration::from_secs(5), entries.recv())
            .await
            .expect("an entry within 5 s")
            .expect("the proposer runs")
    }

    fn lapsed() -> ClientWriteError<TypeConfig> {
        ClientWriteError::ForwardToLeader(
            ForwardToLeader::empty().with_reason(ForwardReason::LeaseExpired),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn entries_refused_for_a_lapsed_lease_go_again_in_order_before_anything_newer() {
        let (tx, mut entries) = mpsc::unbounded_channel();
        let leading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let fake = Fake {
            entries: tx,
            leading: leading.clone(),
        };
        let (proposals, rx) = mpsc::channel(16);
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(propose(fake, rx, stop.clone()));

        proposals.send(tick(1)).await.unwrap();
        let (a, ra) = next(&mut entries).await;
        proposals.send(tick(2)).await.unwrap();
        let (b, rb) = next(&mut entries).await;
        assert_eq!((a.clone(), b.clone()), (vec![tick(1)], vec![tick(2)]));
        // The first is refused while the second is in flight; something newer arrives: it
        // waits.
        ra.on_complete(Err(lapsed()));
        proposals.send(tick(3)).await.unwrap();
        let early = tokio::time::timeout(LEASE_RETRY * 10, entries.recv()).await;
        assert!(
            early.is_err(),
            "nothing goes before the refused entry: {:?}",
            early.map(|e| e.map(|(commands, _)| commands))
        );
        rb.on_complete(Err(lapsed()));
        // The refused ones go again, oldest first, and only then the newer one.
        let (again_a, ra) = next(&mut entries).await;
        let (again_b, rb) = next(&mut entries).await;
        assert_eq!((again_a, again_b), (a, b));
        let (c, rc) = next(&mut entries).await;
        assert_eq!(c, vec![tick(3)]);
        // Any other ending is not retried: an answer dropped, another refusal.
        drop(ra);
        rb.on_complete(Err(ClientWriteError::ForwardToLeader(
            ForwardToLeader::empty(),
        )));
        drop(rc);
        proposals.send(tick(4)).await.unwrap();
        assert_eq!(next(&mut entries).await.0, vec![tick(4)]);

        // Refused, then no longer leading: the entry is dropped (its client re-sends it to
        // the next leader) and what comes later is not held back.
        proposals.send(tick(5)).await.unwrap();
        let (_, r5) = next(&mut entries).await;
        leading.store(false, std::sync::atomic::Ordering::SeqCst);
        r5.on_complete(Err(lapsed()));
        tokio::time::sleep(LEASE_RETRY * 3).await;
        leading.store(true, std::sync::atomic::Ordering::SeqCst);
        proposals.send(tick(6)).await.unwrap();
        assert_eq!(next(&mut entries).await.0, vec![tick(6)]);
        assert!(entries.try_recv().is_err(), "entry 5 was not sent again");
        stop.cancel();
        task.await.unwrap();
    }

    #[test]
    fn peers_parse_and_bad_ones_say_why() {
        let m = parse_peers("1=127.0.0.1:7420/127.0.0.1:7520, 2=h:1/h:2").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[&1].client_addr, "127.0.0.1:7420");
        assert_eq!(m[&2].raft_addr, "h:2");
        for (bad, why) in [
            ("", "no members"),
            ("1=a:1", "expected ID=CLIENT_ADDR/RAFT_ADDR"),
            ("x=a:1/b:2", "must be a number"),
            ("1=a/b:2", "is not HOST:PORT"),
            ("1=a:1/b:2,1=c:1/d:2", "listed twice"),
            ("1=a:1/b:2,2=c:1/b:2", "nodes 1 and 2 share the address b:2"),
            (
                "1=a:1/b:2,2=c:1/d:2,3=e:1/a:1",
                "nodes 1 and 3 share the address a:1",
            ),
            ("1=a:1/a:1", "client and peer addresses are the same"),
        ] {
            let e = parse_peers(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
