//! The peer network: openraft's RPCs over TCP, framed like the client protocol (a `u32`
//! length, then a bincode body, through `dlock-proto`'s frame codec).
//!
//! About 1,100 lines on purpose, 340 of them its tests: both ends of one wire protocol
//! (the calling side, openraft's `RaftNetworkV2`, and the answering side, [`serve_peers`]),
//! with the greeting and the secret's challenge that each end must mirror exactly, read
//! best side by side.
//!
//! Each openraft network client keeps one connection to its target, opened on first use
//! and dropped on any error or timeout (so a late answer never pairs with a later
//! request). openraft makes a new client for every heartbeat round of a read index or a
//! leadership check; a client dropped after a completed call leaves its connection to the
//! next one (a few idle connections per peer, for a few seconds), so such a round opens no
//! connection and repeats no handshake. A target that cannot be reached is reported `Unreachable`, which makes
//! openraft back off. A node may have its own address book for its peers
//! ([`PeerNetwork::with_addresses`]), consulted before the membership's addresses.
//! [`serve_peers`] answers a listener's connections, one request at a
//! time per connection.
//!
//! Every connection opens with a greeting that names the peer protocol
//! ([`PEER_PROTOCOL`]): members of different builds would otherwise decode each other's
//! entries by the wrong layout. A member answers a connection with another protocol, or
//! none (a build from before the greeting), with a refusal naming both, and closes it; a
//! build from before the greeting cannot decode the greeting and closes the connection,
//! which the connecting member reports as such. Members that share a [`PeerSecret`] prove it to each other when a
//! connection opens ([`PeerNetwork::with_secret`], [`serve_peers_authenticated`]; see
//! [`crate::peer_auth`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dlock_proto::FrameCodec;
use futures_util::{FutureExt, SinkExt, StreamExt};
use openraft::alias::{SnapshotMetaOf, SnapshotOf};
use openraft::error::{
    NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::accept::{
    MAX_PEER_CONNECTIONS, PeerClose, PeerPortStats, Throttle, WARN_EVERY, accept_bounded,
    report_held_back,
};
use crate::peer_auth::{self, Bytes32, HANDSHAKE_FRAME, HANDSHAKE_WAIT, PeerSecret};
use crate::reach::{Reach, Said};
use crate::rejoin::RejoinGuard;
use crate::types::{Member, NodeId, Raft, SnapshotData, TypeConfig, Vote};

/// The largest peer frame: an append batch or one snapshot chunk ([`SNAPSHOT_CHUNK`]).
pub const MAX_PEER_FRAME: usize = 16 * 1024 * 1024;

/// How much of a snapshot one frame carries.
pub const SNAPSHOT_CHUNK: usize = 1024 * 1024;

/// How long an answered peer connection may send nothing before it is closed. A member's
/// connections carry heartbeats many times a second, and the idle ones kept for heartbeat
/// rounds are closed by their own side after a few seconds; one silent this long was left
/// behind by a peer that can no longer say so (a network that drops everything, a machine
/// gone), and would otherwise hold one of the [`MAX_PEER_CONNECTIONS`] places for good.
pub const PEER_IDLE_LIMIT: Duration = Duration::from_secs(60);

/// The largest snapshot a member receives: a connection sending more is closed.
pub const MAX_SNAPSHOT_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// The peer protocol this build speaks: the layout of [`PeerRequest`], [`PeerResponse`]
/// and of everything they carry (entries, commands, snapshots). Builds from before the
/// greeting spoke 1 without saying so; 2 was openraft 0.9's messages, 3 openraft 0.10's, and
/// 4 adds the node the connecting member means to reach to the greeting.
pub const PEER_PROTOCOL: u32 = 6;

/// How long a peer connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Most idle connections kept per peer for the next client.
const MAX_IDLE_PER_PEER: usize = 4;

/// How long an idle connection is kept: a peer that restarted meanwhile costs the call that
/// finds its connection closed, so keep them briefly (rounds come every 250 ms or faster).
const MAX_IDLE_FOR: Duration = Duration::from_secs(5);

/// A request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Replicate entries (or a heartbeat).
    Append(AppendEntriesRequest<TypeConfig>),
    /// Ask for a vote; `true` when the candidate itself started with an empty directory
    /// and has not caught up (see [`crate::rejoin`]).
    Vote(VoteRequest<TypeConfig>, bool),
    /// A part of a snapshot sent to a member behind the leader.
    Snapshot(SnapshotPart),
    /// The first frame of a connection to a member with a [`PeerSecret`]: the connecting
    /// node's nonce.
    Hello {
        /// Fresh random bytes.
        nonce: Bytes32,
    },
    /// The connecting node's proof that it holds the secret (after `Challenge`).
    Proof {
        /// HMAC-SHA256 over both nonces (see [`crate::peer_auth`]).
        mac: Bytes32,
    },
    /// The first frame of every connection: the peer protocol the connecting member speaks.
    /// (Last of the variants, so that a build from before it fails to decode it rather
    /// than reading it as something else.)
    Version {
        /// Its [`PEER_PROTOCOL`].
        protocol: u32,
        /// The node it means to reach (by its list of members): a member listening where
        /// the list puts another refuses the connection, so that a mistaken address (a
        /// member's own, or two swapped) never counts one member's vote twice.
        to: NodeId,
    },
    /// Ask whether the member would vote for the candidate, without changing its term (Raft's
    /// pre-vote): a member back from a pause or a partition does not depose a leader the
    /// others still follow. `true` as in `Vote`. (After `Version`, which keeps its place for
    /// builds of older peer protocols to read and answer.)
    PreVote(VoteRequest<TypeConfig>, bool),
    /// The leader hands its leadership to this member, which stands for election at once
    /// (a leader stopping gracefully).
    TransferLeader(TransferLeaderRequest<TypeConfig>),
}

/// A part of a snapshot: its bytes in chunks, in order, then what it is.
#[derive(Debug, Serialize, Deserialize)]
pub enum SnapshotPart {
    /// The bytes from `offset` on; a chunk at offset 0 starts a new snapshot.
    Chunk {
        /// Where these bytes go in the snapshot.
        offset: u64,
        /// At most [`SNAPSHOT_CHUNK`] bytes.
        data: Vec<u8>,
    },
    /// Every byte was sent: install the snapshot, sent by the leader of `vote`.
    Done {
        /// The sender's vote.
        vote: Vote,
        /// The last log id and membership the snapshot holds.
        meta: SnapshotMetaOf<TypeConfig>,
    },
}

/// The answer to a [`PeerRequest`], of the same variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// The answer to `Append`.
    Append(Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>>),
    /// The answer to `Vote`.
    Vote(Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>>),
    /// The answer to `Snapshot`: nothing for a chunk taken, the receiver's vote once the
    /// snapshot is installed, or why it was not.
    Snapshot(Result<Option<SnapshotResponse<TypeConfig>>, String>),
    /// The answer to `Hello`: the answering node's nonce and its proof that it holds the
    /// secret.
    Challenge {
        /// Fresh random bytes.
        nonce: Bytes32,
        /// HMAC-SHA256 over both nonces (see [`crate::peer_auth`]).
        mac: Bytes32,
    },
    /// The connection is refused, and why (no or a wrong proof, a secret on one side
    /// only, another peer protocol); the answering node closes it.
    Refused(String),
    /// The answer to `Version` when the protocols match: the answering member's.
    Version {
        /// Its [`PEER_PROTOCOL`].
        protocol: u32,
    },
    /// The answer to `PreVote`.
    PreVote(Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>>),
    /// The answer to `TransferLeader` (an error: the node stopped).
    TransferLeader(Result<TransferLeaderResponse<TypeConfig>, String>),
}

type ClientConn = Framed<TcpStream, FrameCodec<PeerResponse, PeerRequest>>;
type ServerConn = Framed<TcpStream, FrameCodec<PeerRequest, PeerResponse>>;

/// Why a peer call failed before an answer came.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connect to {0}: timed out")]
    ConnectTimeout(String),
    #[error("connect to {0}: held back, the last connections failed to open")]
    HeldBack(String),
    #[error("{0}")]
    Codec(#[from] dlock_proto::CodecError),
    #[error("malformed answer: {0}")]
    Malformed(#[from] dlock_proto::MalformedFrame),
    #[error("the peer closed the connection")]
    Closed,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("an answer of another kind")]
    Mismatch,
    #[error("{0}")]
    Remote(String),
    #[error("refused by the peer: {0}")]
    Refused(String),
    #[error(
        "the peer did not prove it holds the cluster secret: a member with another \
         --cluster-secret-file, or not a member"
    )]
    Unproven,
    #[error(
        "the peer closed the connection at the version greeting: it runs a dlock-server build \
         older than the peer protocol greeting (this member speaks peer protocol \
         {PEER_PROTOCOL}; run the same build on every member), or it had as many peer \
         connections open as it takes ({MAX_PEER_CONNECTIONS}; the call is retried)"
    )]
    NoGreeting,
}

/// openraft's network factory: one [`PeerClient`] per target.
///
/// A peer is reached at the address this node's own address book gives for it, if it has
/// one, else at the raft address the cluster membership records. The membership holds the
/// addresses of whoever formed the cluster, which need not be how every node reaches every
/// other (a proxy, a NAT, a test that controls each link).
#[derive(Clone, Debug, Default)]
pub struct PeerNetwork {
    addresses: Arc<BTreeMap<NodeId, String>>,
    secret: Option<PeerSecret>,
    idle: Arc<IdleConns>,
    /// This node's rejoin guard, which its vote requests report.
    guard: RejoinGuard,
    /// Which peers do not answer (for the log).
    reach: Arc<Reach>,
}

/// Connections whose last call completed, by peer and address, newest last, with when each
/// was left.
#[derive(Debug, Default)]
struct IdleConns(Mutex<BTreeMap<NodeId, ByAddress>>);

/// One peer's idle connections by the address they go to, each with when it was left.
type ByAddress = BTreeMap<String, Vec<(Instant, ClientConn)>>;

impl IdleConns {
    /// The newest connection left for `target` at `addr` within [`MAX_IDLE_FOR`]; older
    /// ones are dropped.
    fn take(&self, target: NodeId, addr: &str) -> Option<ClientConn> {
        let mut idle = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Looked up by `&str`: no key is built for a lookup.
        let conns = idle.get_mut(&target)?.get_mut(addr)?;
        conns.retain(|(left, _)| left.elapsed() < MAX_IDLE_FOR);
        conns.pop().map(|(_, conn)| conn)
    }

    /// Keeps `conn` for the next client of `target` at `addr` (the oldest goes when
    /// [`MAX_IDLE_PER_PEER`] are kept).
    fn put(&self, target: NodeId, addr: String, conn: ClientConn) {
        let mut idle = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let conns = idle.entry(target).or_default().entry(addr).or_default();
        if conns.len() >= MAX_IDLE_PER_PEER {
            conns.remove(0);
        }
        conns.push((Instant::now(), conn));
    }
}

impl PeerNetwork {
    /// A network that reaches node `id` at `addresses[id]` where given, and elsewhere at the
    /// membership's raft address.
    pub fn with_addresses(addresses: BTreeMap<NodeId, String>) -> PeerNetwork {
        PeerNetwork {
            addresses: Arc::new(addresses),
            secret: None,
            idle: Arc::default(),
            guard: RejoinGuard::off(),
            reach: Arc::default(),
        }
    }

    /// This network, telling the peers it asks for votes whether `guard` is on.
    pub fn with_rejoin_guard(mut self, guard: RejoinGuard) -> PeerNetwork {
        self.guard = guard;
        self
    }

    /// This network, proving `secret` to every peer it connects to (and asking the peer to
    /// prove it too) before any Raft request; `None`: no proof either way.
    pub fn with_secret(mut self, secret: Option<PeerSecret>) -> PeerNetwork {
        self.secret = secret;
        self
    }

    /// The address used for `target`, whose membership entry is `node`.
    pub fn address_of(&self, target: NodeId, node: &Member) -> String {
        self.addresses
            .get(&target)
            .cloned()
            .unwrap_or_else(|| node.raft_addr.clone())
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        PeerClient {
            target,
            addr: self.address_of(target, node),
            secret: self.secret.clone(),
            conn: None,
            in_call: false,
            idle: self.idle.clone(),
            guard: self.guard.clone(),
            reach: self.reach.clone(),
        }
    }
}

/// A connection to one peer.
#[derive(Debug)]
pub struct PeerClient {
    target: NodeId,
    addr: String,
    secret: Option<PeerSecret>,
    conn: Option<ClientConn>,
    /// Set while a call waits for its answer: still set when the next call starts means
    /// the last one was cancelled from outside (openraft wraps every append in a timeout of
    /// its own) after its request went out, so its answer may still come on the
    /// connection, which is then dropped rather than read.
    in_call: bool,
    /// Where a connection goes when this client is dropped, and comes from when it has none.
    idle: Arc<IdleConns>,
    /// This node's rejoin guard, which its vote requests report.
    guard: RejoinGuard,
    /// Which peers do not answer (shared by the node's clients).
    reach: Arc<Reach>,
}

impl Drop for PeerClient {
    fn drop(&mut self) {
        // Only a connection whose last call completed: no answer is on its way on it.
        if !self.in_call
            && let Some(conn) = self.conn.take()
        {
            self.idle
                .put(self.target, std::mem::take(&mut self.addr), conn);
        }
    }
}

impl PeerClient {
    async fn connect(&mut self) -> Result<&mut ClientConn, CallError> {
        if self.conn.is_none() {
            // One that the peer closed meanwhile (it restarted) or that holds anything
            // unread is of no use: a fresh connection is opened instead of a call failed.
            self.conn = self
                .idle
                .take(self.target, &self.addr)
                .and_then(|mut conn| conn.next().now_or_never().is_none().then_some(conn));
        }
        if self.conn.is_none() {
            if !self.reach.may_connect(self.target, Instant::now()) {
                return Err(CallError::HeldBack(self.addr.clone()));
            }
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
                .await
                .map_err(|_| CallError::ConnectTimeout(self.addr.clone()))?
                .map_err(|source| CallError::Connect {
                    addr: self.addr.clone(),
                    source,
                })?;
            stream.set_nodelay(true).ok();
            let mut conn = Framed::new(stream, FrameCodec::new(MAX_PEER_FRAME));
            greet(&mut conn, self.target).await?;
            if let Some(secret) = &self.secret {
                prove(&mut conn, secret).await?;
            }
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("set above"))
    }

    /// Sends one request and waits for its answer within `ttl`. Any failure drops the
    /// connection.
    /// Asks the peer for its vote (`pre`: whether it would vote, Raft's pre-vote), saying
    /// whether this node's rejoin guard is on.
    async fn ask_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
        pre: bool,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let guarded = self.guard.is_on();
        let req = if pre {
            PeerRequest::PreVote(rpc, guarded)
        } else {
            PeerRequest::Vote(rpc, guarded)
        };
        let called = self.call(req, option.hard_ttl()).await;
        answer_of(self.target, called, |r| match r {
            PeerResponse::PreVote(r) if pre => Some(r),
            PeerResponse::Vote(r) if !pre => Some(r),
            _ => None,
        })
    }

    async fn call(&mut self, req: PeerRequest, ttl: Duration) -> Result<PeerResponse, CallError> {
        if std::mem::replace(&mut self.in_call, true) {
            // The last call was dropped before its answer: never pair that answer with this
            // request.
            self.conn = None;
        }
        let mut result = tokio::time::timeout(ttl, async {
            let conn = self.connect().await?;
            conn.send(req).await?;
            match answer(conn).await? {
                PeerResponse::Refused(why) => Err(CallError::Refused(why)),
                resp => Ok(resp),
            }
        })
        .await
        .unwrap_or(Err(CallError::Timeout(ttl)));
        // No connection set means the failure came while one was being opened (connected,
        // greeted, proven): a peer that does not take connections, not a slow answer.
        let opening = self.conn.is_none();
        if opening && matches!(result, Err(CallError::Timeout(_))) {
            result = Err(CallError::ConnectTimeout(self.addr.clone()));
        }
        let (target, addr) = (self.target, &self.addr);
        match &result {
            Err(CallError::HeldBack(_)) => {}
            Err(e) => {
                if matches!(
                    e,
                    CallError::Refused(_) | CallError::Unproven | CallError::NoGreeting
                ) {
                    tracing::warn!(target, %addr, error = %e, "peer connection refused");
                }
                // A refused connect costs neither side anything (and a restarted member is
                // to be found at once); one taken and not answered is held back.
                let hold = opening && !matches!(e, CallError::Connect { .. });
                match self.reach.failed(target, Instant::now(), hold) {
                    Said::Silent => tracing::warn!(
                        target, %addr, error = %e,
                        "a member does not answer (said again every minute while it does not)"
                    ),
                    Said::StillSilent(for_, failed) => tracing::warn!(
                        target, %addr, error = %e, silent_s = for_.as_secs(), failed,
                        "a member still does not answer"
                    ),
                    Said::Nothing | Said::Back(_) => {}
                }
                self.conn = None;
            }
            Ok(_) => {
                if let Said::Back(after) = self.reach.answered(target, Instant::now()) {
                    tracing::info!(target, %addr, silent_ms = after.as_millis() as u64, "a member answers again");
                }
            }
        }
        self.in_call = false;
        result
    }
}

/// The next answer on `conn`.
async fn answer(conn: &mut ClientConn) -> Result<PeerResponse, CallError> {
    match conn.next().await {
        Some(Ok(Ok(resp))) => Ok(resp),
        Some(Ok(Err(malformed))) => Err(CallError::Malformed(malformed)),
        Some(Err(e)) => Err(CallError::Codec(e)),
        None => Err(CallError::Closed),
    }
}

/// The connecting side of the version greeting: the peer must answer with the same
/// [`PEER_PROTOCOL`]. A build from before the greeting cannot decode it and closes.
async fn greet(conn: &mut ClientConn, to: NodeId) -> Result<(), CallError> {
    conn.send(PeerRequest::Version {
        protocol: PEER_PROTOCOL,
        to,
    })
    .await?;
    match answer(conn).await {
        Ok(PeerResponse::Version { protocol }) if protocol == PEER_PROTOCOL => Ok(()),
        Ok(PeerResponse::Refused(why)) => Err(CallError::Refused(why)),
        Ok(_) => Err(CallError::Mismatch),
        Err(CallError::Closed) => Err(CallError::NoGreeting),
        Err(e) => Err(e),
    }
}

/// The connecting side of the handshake (see [`crate::peer_auth`]): the peer proves it holds
/// `secret`, then this node does.
async fn prove(conn: &mut ClientConn, secret: &PeerSecret) -> Result<(), CallError> {
    let a = peer_auth::nonce();
    conn.send(PeerRequest::Hello { nonce: a }).await?;
    match answer(conn).await? {
        PeerResponse::Challenge { nonce: b, mac } if secret.verify_server(&a, &b, &mac) => {
            conn.send(PeerRequest::Proof {
                mac: secret.client_mac(&a, &b),
            })
            .await?;
            Ok(())
        }
        PeerResponse::Challenge { .. } => Err(CallError::Unproven),
        PeerResponse::Refused(why) => Err(CallError::Refused(why)),
        _ => Err(CallError::Mismatch),
    }
}

fn rpc_err(e: CallError) -> RPCError<TypeConfig> {
    match e {
        CallError::Connect { .. } | CallError::ConnectTimeout(_) | CallError::HeldBack(_) => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        // A refused or unproven peer stays so until an operator acts: back off as from an
        // unreachable one.
        CallError::Refused(_) | CallError::Unproven | CallError::NoGreeting => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        other => RPCError::Network(NetworkError::new(&other)),
    }
}

/// A peer's own failure (its Raft node stopped, its snapshot not installed), as a network
/// error: the call is tried again.
fn remote_err(target: NodeId, e: impl std::fmt::Display) -> RPCError<TypeConfig> {
    rpc_err(CallError::Remote(format!("member {target}: {e}")))
}

/// What `pick` takes out of the answer `target` gave; an answer of another kind, a failed
/// call or the peer's own failure, as the error openraft is given.
fn answer_of<T, E: std::fmt::Display>(
    target: NodeId,
    called: Result<PeerResponse, CallError>,
    pick: impl FnOnce(PeerResponse) -> Option<Result<T, E>>,
) -> Result<T, RPCError<TypeConfig>> {
    pick(called.map_err(rpc_err)?)
        .ok_or_else(|| rpc_err(CallError::Mismatch))?
        .map_err(|e| remote_err(target, e))
}

impl PeerClient {
    /// Sends `snapshot` in chunks and has the peer install it.
    async fn send_snapshot(
        &mut self,
        vote: Vote,
        snapshot: SnapshotOf<TypeConfig, SnapshotData>,
        ttl: Duration,
    ) -> Result<SnapshotResponse<TypeConfig>, RPCError<TypeConfig>> {
        let data = snapshot.snapshot.into_inner();
        let mut offset = 0;
        // At least one chunk, which starts the snapshot afresh on the peer.
        loop {
            let end = (offset + SNAPSHOT_CHUNK).min(data.len());
            let part = SnapshotPart::Chunk {
                offset: offset as u64,
                data: data[offset..end].to_vec(),
            };
            let taken = self.snapshot_call(part, ttl).await?;
            if taken.is_some() {
                return Err(rpc_err(CallError::Mismatch));
            }
            offset = end;
            if offset == data.len() {
                break;
            }
        }
        let done = SnapshotPart::Done {
            vote,
            meta: snapshot.meta,
        };
        self.snapshot_call(done, ttl)
            .await?
            .ok_or_else(|| rpc_err(CallError::Mismatch))
    }

    /// Sends one part of a snapshot; the peer's vote once it installed the snapshot.
    async fn snapshot_call(
        &mut self,
        part: SnapshotPart,
        ttl: Duration,
    ) -> Result<Option<SnapshotResponse<TypeConfig>>, RPCError<TypeConfig>> {
        let called = self.call(PeerRequest::Snapshot(part), ttl).await;
        answer_of(self.target, called, |r| match r {
            PeerResponse::Snapshot(r) => Some(r),
            _ => None,
        })
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let called = self.call(PeerRequest::Append(rpc), option.hard_ttl()).await;
        answer_of(self.target, called, |r| match r {
            PeerResponse::Append(r) => Some(r),
            _ => None,
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.ask_vote(rpc, option, false).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.ask_vote(rpc, option, true).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let called = self
            .call(PeerRequest::TransferLeader(req), option.hard_ttl())
            .await;
        answer_of(self.target, called, |r| match r {
            PeerResponse::TransferLeader(r) => Some(r),
            _ => None,
        })
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: SnapshotOf<TypeConfig, SnapshotData>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = self.send_snapshot(vote, snapshot, option.hard_ttl()) => Ok(r?),
        }
    }
}

/// Answers peer connections on `listener` for `raft` until `shutdown` is cancelled, from
/// anyone who reaches it (see [`serve_peers_authenticated`]), at most
/// [`MAX_PEER_CONNECTIONS`] at once (see [`crate::accept`]).
pub async fn serve_peers(listener: TcpListener, raft: Raft, shutdown: CancellationToken) {
    let guard = RejoinGuard::off();
    serve_peers_counted(listener, raft, guard, None, Arc::default(), shutdown).await;
}

/// Answers peer connections on `listener` for `raft` until `shutdown` is cancelled, each
/// only once its node has proven it holds `secret` (see [`crate::peer_auth`]), at most
/// [`MAX_PEER_CONNECTIONS`] at once (see [`crate::accept`]).
pub async fn serve_peers_authenticated(
    listener: TcpListener,
    raft: Raft,
    secret: PeerSecret,
    shutdown: CancellationToken,
) {
    let guard = RejoinGuard::off();
    serve_peers_counted(
        listener,
        raft,
        guard,
        Some(secret),
        Arc::default(),
        shutdown,
    )
    .await;
}

/// [`serve_peers_authenticated`] with `Some(secret)`, [`serve_peers`] with `None`, counting
/// in `stats` the connections answered and those closed (over the limit, refused, idle), and
/// answering votes as `guard` allows (see [`crate::rejoin`]; the two others serve with
/// [`RejoinGuard::off`]).
pub async fn serve_peers_counted(
    listener: TcpListener,
    raft: Raft,
    guard: RejoinGuard,
    secret: Option<PeerSecret>,
    stats: Arc<PeerPortStats>,
    shutdown: CancellationToken,
) {
    // One throttle for the warnings of every connection of this listener.
    let watch = Arc::new(Watch {
        warnings: Arc::new(Throttle::new(WARN_EVERY)),
        stats: Arc::clone(&stats),
        guard,
    });
    let over = Arc::new(Throttle::new(WARN_EVERY));
    tokio::spawn(report_held_back(
        vec![
            (
                Arc::clone(&over),
                "peer connections closed at once, at their limit",
            ),
            (Arc::clone(&watch.warnings), "peer connections refused"),
        ],
        shutdown.clone(),
    ));
    accept_bounded(
        listener,
        MAX_PEER_CONNECTIONS,
        stats,
        over,
        shutdown,
        move |stream, peer| {
            serve_conn(
                stream,
                peer,
                secret.clone(),
                raft.clone(),
                Arc::clone(&watch),
                PEER_IDLE_LIMIT,
            )
        },
    )
    .await;
}

/// What the connections of one peer listener share: the throttle of their warnings and the
/// listener's counters.
#[derive(Debug)]
struct Watch {
    warnings: Arc<Throttle>,
    stats: Arc<PeerPortStats>,
    /// Whether this node may vote yet.
    guard: RejoinGuard,
}

impl Watch {
    /// Counts the connection from `peer` as refused, and logs why it is being closed unless
    /// the throttle holds the warning back (a flood of bad connections must not flood the
    /// log).
    fn refuse(&self, peer: std::net::SocketAddr, why: &str, what: &str) {
        self.stats.count_close(PeerClose::Refused);
        if let Some(not_logged) = self.warnings.admit(Instant::now()) {
            tracing::warn!(%peer, reason = why, not_logged, "{what}");
        }
    }
}

/// The answering side of the version greeting, on a connection that may send only small
/// frames meanwhile. `Err` carries why the connection is refused.
async fn answer_greeting(conn: &mut ServerConn, own: NodeId) -> Result<(), String> {
    match conn.next().await {
        Some(Ok(Ok(PeerRequest::Version { protocol, to }))) if protocol == PEER_PROTOCOL => {
            if to != own {
                return Err(format!(
                    "this member is node {own}, but the connecting member takes its address for \
                     node {to}'s: correct the connecting member's --peers"
                ));
            }
            conn.send(PeerResponse::Version {
                protocol: PEER_PROTOCOL,
            })
            .await
            .map_err(|e| e.to_string())
        }
        Some(Ok(Ok(PeerRequest::Version { protocol, .. }))) => Err(format!(
            "peer protocol {protocol}, but this member speaks {PEER_PROTOCOL}: run the same \
             dlock-server build on every member"
        )),
        // A build from before the greeting starts with a Raft request (possibly larger than
        // a handshake frame), or the vote of a build this one cannot decode.
        Some(Ok(_) | Err(dlock_proto::CodecError::FrameTooLarge { .. })) => Err(format!(
            "no peer protocol greeting this member understands: the connecting member runs \
             another dlock-server build (this member speaks peer protocol {PEER_PROTOCOL}); \
             run the same build on every member"
        )),
        // An HTTP request: the lock port's words would point to it, not to this port.
        Some(Err(dlock_proto::CodecError::ForeignProtocol { len, .. }))
            if u32::try_from(len)
                .is_ok_and(|l| dlock_proto::codec::is_http_request(l.to_be_bytes())) =>
        {
            Err(
                "the other end does not speak the dlock protocol: it sent an HTTP request \
                 (this is a cluster member's peer port, for Raft between members; HTTP is on \
                 --http-listen)"
                    .to_owned(),
            )
        }
        Some(Err(e)) => Err(e.to_string()),
        None => Err("closed before the version greeting".to_owned()),
    }
}

/// The answering side of the handshake (see [`crate::peer_auth`]), on a connection that
/// may send only small frames meanwhile. `Err` carries why the connection is refused.
async fn challenge(conn: &mut ServerConn, secret: &PeerSecret) -> Result<(), String> {
    let first = match conn.next().await {
        Some(Ok(Ok(req))) => req,
        Some(Ok(Err(malformed))) => return Err(format!("malformed frame: {malformed}")),
        Some(Err(e)) => return Err(format!("{e}")),
        None => return Err("closed before the handshake".to_owned()),
    };
    let PeerRequest::Hello { nonce: a } = first else {
        return Err(
            "this member requires the cluster secret (--cluster-secret-file) before any Raft \
             request"
                .to_owned(),
        );
    };
    let b = peer_auth::nonce();
    let mac = secret.server_mac(&a, &b);
    conn.send(PeerResponse::Challenge { nonce: b, mac })
        .await
        .map_err(|e| e.to_string())?;
    match conn.next().await {
        Some(Ok(Ok(PeerRequest::Proof { mac }))) if secret.verify_client(&a, &b, &mac) => Ok(()),
        Some(Ok(Ok(PeerRequest::Proof { .. }))) => Err(
            "wrong proof of the cluster secret: this member has another --cluster-secret-file"
                .to_owned(),
        ),
        Some(Ok(Ok(_))) => Err("a request before the proof of the cluster secret".to_owned()),
        Some(Ok(Err(malformed))) => Err(format!("malformed frame: {malformed}")),
        Some(Err(e)) => Err(format!("{e}")),
        None => Err("closed during the handshake".to_owned()),
    }
}

/// The snapshot being received on one peer connection.
#[derive(Debug, Default)]
struct Received {
    bytes: Vec<u8>,
}

impl Received {
    /// Takes a chunk at `offset`: 0 starts a new snapshot, any other must follow the bytes
    /// taken so far, and the whole stays within [`MAX_SNAPSHOT_BYTES`].
    fn take(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
        if offset == 0 {
            self.bytes = Vec::new();
        }
        let have = self.bytes.len() as u64;
        if offset != have {
            return Err(format!("a chunk at {offset}, expected one at {have}"));
        }
        if have + data.len() as u64 > MAX_SNAPSHOT_BYTES {
            return Err(format!("more than {MAX_SNAPSHOT_BYTES} bytes"));
        }
        self.bytes.extend_from_slice(data);
        Ok(())
    }
}

async fn serve_conn(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    secret: Option<PeerSecret>,
    raft: Raft,
    watch: Arc<Watch>,
    idle_limit: Duration,
) {
    let mut conn: ServerConn = Framed::new(stream, FrameCodec::new(HANDSHAKE_FRAME));
    let verdict = tokio::time::timeout(HANDSHAKE_WAIT, async {
        let own = openraft::rt::watch::WatchReceiver::borrow_watched(&raft.metrics()).id;
        answer_greeting(&mut conn, own).await?;
        match &secret {
            Some(secret) => challenge(&mut conn, secret).await,
            None => Ok(()),
        }
    })
    .await
    .unwrap_or_else(|_| Err(format!("no greeting or proof within {HANDSHAKE_WAIT:?}")));
    if let Err(why) = verdict {
        watch.refuse(peer, &why, "peer connection refused");
        let _ = conn.send(PeerResponse::Refused(why)).await;
        return;
    }
    // Greeted (and proven): Raft's frames may now be as large as an append batch. Nothing
    // is half-read at this point (the peer waits for no answer to its proof, but its next
    // frame starts afresh), so the codec can be swapped.
    *conn.codec_mut() = FrameCodec::new(MAX_PEER_FRAME);
    // The snapshot being received on this connection, if any.
    let mut receiving = Received::default();
    loop {
        let Ok(frame) = tokio::time::timeout(idle_limit, conn.next()).await else {
            tracing::debug!(%peer, ?idle_limit, "peer connection silent too long; closing");
            watch.stats.count_close(PeerClose::Idle);
            return;
        };
        let Some(frame) = frame else { return };
        let req = match frame {
            Ok(Ok(req)) => req,
            Ok(Err(malformed)) => {
                let why = malformed.to_string();
                watch.refuse(peer, &why, "malformed peer frame; closing");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "peer connection failed");
                return;
            }
        };
        let resp = match req {
            PeerRequest::Append(r) => {
                watch.guard.saw_append(&r);
                PeerResponse::Append(raft.append_entries(r).await)
            }
            PeerRequest::Vote(r, candidate_guarded)
                if !watch.guard.admits(&r, candidate_guarded) =>
            {
                PeerResponse::Vote(Ok(watch.guard.refuse(&raft, &r)))
            }
            PeerRequest::Vote(r, _) => PeerResponse::Vote(raft.vote(r).await),
            PeerRequest::PreVote(r, candidate_guarded)
                if !watch.guard.admits(&r, candidate_guarded) =>
            {
                PeerResponse::PreVote(Ok(watch.guard.refuse(&raft, &r)))
            }
            PeerRequest::PreVote(r, _) => PeerResponse::PreVote(raft.pre_vote(r).await),
            PeerRequest::TransferLeader(r) => PeerResponse::TransferLeader(
                raft.handle_transfer_leader(r)
                    .await
                    .map_err(|e| e.to_string()),
            ),
            PeerRequest::Snapshot(SnapshotPart::Chunk { offset, data }) => {
                if let Err(why) = receiving.take(offset, &data) {
                    watch.refuse(peer, &why, "snapshot chunk refused; closing");
                    return;
                }
                PeerResponse::Snapshot(Ok(None))
            }
            PeerRequest::Snapshot(SnapshotPart::Done { vote, meta }) => {
                let snapshot = SnapshotOf::<TypeConfig, SnapshotData> {
                    meta,
                    snapshot: std::io::Cursor::new(std::mem::take(&mut receiving.bytes)),
                };
                let installed = raft.install_full_snapshot(vote, snapshot).await;
                PeerResponse::Snapshot(installed.map(Some).map_err(|e| e.to_string()))
            }
            PeerRequest::Hello { .. } | PeerRequest::Proof { .. } | PeerRequest::Version { .. } => {
                let why = if secret.is_some() || matches!(req, PeerRequest::Version { .. }) {
                    "the handshake is over on this connection"
                } else {
                    "this member has no cluster secret: give every member the same \
                     --cluster-secret-file"
                };
                watch.refuse(peer, why, "peer connection refused");
                let _ = conn.send(PeerResponse::Refused(why.to_owned())).await;
                return;
            }
        };
        if conn.send(resp).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::Vote;

    use super::*;

    /// A peer that answers each vote request with a vote of the request's term, the first
    /// one after `first_delay`; it counts the connections it accepted.
    async fn slow_first_peer(
        first_delay: Duration,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let mut delay = Some(first_delay);
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut conn: ServerConn = Framed::new(stream, FrameCodec::new(MAX_PEER_FRAME));
                let wait = delay.take();
                tokio::spawn(async move {
                    let mut wait = wait;
                    if answer_greeting(&mut conn, 2).await.is_err() {
                        return;
                    }
                    while let Some(Ok(Ok(PeerRequest::Vote(req, _)))) = conn.next().await {
                        if let Some(d) = wait.take() {
                            tokio::time::sleep(d).await;
                        }
                        let resp = VoteResponse::new(req.vote, None, false);
                        if conn.send(PeerResponse::Vote(Ok(resp))).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn an_answer_to_a_cancelled_call_never_pairs_with_the_next_request() {
        let (addr, accepted) = slow_first_peer(Duration::from_millis(300)).await;
        let mut client = client_to(addr).await;
        let option = || RPCOption::new(Duration::from_secs(5));
        // Cancelled from outside after its request went out, as openraft's own timeout
        // around an append does.
        let first = tokio::time::timeout(
            Duration::from_millis(50),
            client.vote(VoteRequest::new(Vote::new(1, 1), None), option()),
        )
        .await;
        assert!(first.is_err(), "the first call is cancelled: {first:?}");
        // The next call gets the answer to its own request (term 2), not the late one.
        let second = client
            .vote(VoteRequest::new(Vote::new(2, 1), None), option())
            .await
            .unwrap();
        assert_eq!(second.vote, Vote::new(2, 1));
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
        // A call that completed keeps its connection for the next one.
        let third = client
            .vote(VoteRequest::new(Vote::new(3, 1), None), option())
            .await
            .unwrap();
        assert_eq!(third.vote, Vote::new(3, 1));
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_new_client_takes_the_connection_a_dropped_one_left_after_a_completed_call() {
        let (addr, accepted) = slow_first_peer(Duration::from_millis(300)).await;
        let mut network = PeerNetwork::default();
        let member = Member {
            client_addr: "127.0.0.1:1".to_owned(),
            raft_addr: addr,
        };
        let option = || RPCOption::new(Duration::from_secs(5));
        let count = || accepted.load(std::sync::atomic::Ordering::SeqCst);
        // A client dropped while its call waits (openraft's timeout around a heartbeat)
        // leaves nothing: the late answer is still on its way on that connection.
        let mut cancelled = network.new_client(2, &member).await;
        let first = tokio::time::timeout(
            Duration::from_millis(50),
            cancelled.vote(VoteRequest::new(Vote::new(1, 1), None), option()),
        )
        .await;
        assert!(first.is_err(), "the first call is cancelled: {first:?}");
        drop(cancelled);
        // Each later client (one per heartbeat round in openraft) gets the answer to its own
        // request on the one connection the first completed call left.
        for term in 2..=5 {
            let mut client = network.new_client(2, &member).await;
            let resp = client
                .vote(VoteRequest::new(Vote::new(term, 1), None), option())
                .await
                .unwrap();
            assert_eq!(resp.vote, Vote::new(term, 1));
            assert_eq!(count(), 2, "round {term} opened a connection");
        }
    }

    #[tokio::test]
    async fn an_idle_connection_the_peer_closed_is_not_used_for_the_next_call() {
        // A peer that answers one vote on each connection, then closes it (as a member
        // that restarted between two heartbeat rounds has), saying when it did.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let mut conn: ServerConn = Framed::new(stream, FrameCodec::new(MAX_PEER_FRAME));
                let closed_tx = closed_tx.clone();
                tokio::spawn(async move {
                    answer_greeting(&mut conn, 2).await.unwrap();
                    if let Some(Ok(Ok(PeerRequest::Vote(req, _)))) = conn.next().await {
                        let resp = VoteResponse::new(req.vote, None, false);
                        conn.send(PeerResponse::Vote(Ok(resp))).await.unwrap();
                    }
                    drop(conn);
                    closed_tx.send(()).unwrap();
                });
            }
        });
        let mut network = PeerNetwork::default();
        let member = Member {
            client_addr: "127.0.0.1:1".to_owned(),
            raft_addr: addr,
        };
        for term in 1..=3 {
            // Each round's client finds the last one's connection, closed by the peer.
            let mut client = network.new_client(2, &member).await;
            let resp = client
                .vote(
                    VoteRequest::new(Vote::new(term, 1), None),
                    RPCOption::new(Duration::from_secs(5)),
                )
                .await
                .unwrap_or_else(|e| panic!("round {term}: {e}"));
            assert_eq!(resp.vote, Vote::new(term, 1));
            drop(client);
            closed.recv().await.unwrap();
        }
    }

    /// A peer that hands each connection and its first frame to `then`.
    async fn peer_that<F, Fut>(then: F) -> String
    where
        F: Fn(ServerConn, PeerRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let then = Arc::new(then);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let mut conn: ServerConn = Framed::new(stream, FrameCodec::new(MAX_PEER_FRAME));
                let then = then.clone();
                tokio::spawn(async move {
                    if let Some(Ok(Ok(first))) = conn.next().await {
                        then(conn, first).await;
                    }
                });
            }
        });
        addr
    }

    /// A client of a fresh network for node 2 at `addr`.
    async fn client_to(addr: String) -> PeerClient {
        PeerNetwork::default()
            .new_client(
                2,
                &Member {
                    client_addr: "127.0.0.1:1".to_owned(),
                    raft_addr: addr,
                },
            )
            .await
    }

    /// The error of a vote sent to `addr`, which must be an unreachable peer.
    async fn vote_to(addr: String) -> String {
        let err = client_to(addr)
            .await
            .vote(
                VoteRequest::new(Vote::new(1, 1), None),
                RPCOption::new(Duration::from_secs(5)),
            )
            .await
            .expect_err("the call must fail");
        assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
        err.to_string()
    }

    #[tokio::test]
    async fn a_peer_that_takes_connections_and_never_greets_is_not_sent_one_per_call() {
        // A stopped process: its kernel completes the TCP handshakes, nothing reads.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, from)) = listener.accept().await {
                let _ = tx.send((stream, from));
            }
        });
        let mut network = PeerNetwork::default();
        let member = Member {
            client_addr: "127.0.0.1:1".to_owned(),
            raft_addr: addr.clone(),
        };
        // Heartbeat-like calls, from one client and from a new client each (as openraft's
        // rounds make them), back to back.
        let mut one = network.new_client(2, &member).await;
        for i in 0..20 {
            let option = RPCOption::new(Duration::from_millis(50));
            let err = if i % 2 == 0 {
                one.vote(VoteRequest::new(Vote::new(1, 1), None), option)
                    .await
            } else {
                let mut fresh = network.new_client(2, &member).await;
                fresh
                    .vote(VoteRequest::new(Vote::new(1, 1), None), option)
                    .await
            }
            .expect_err("nobody answers");
            // Unreachable, so that openraft backs off.
            assert!(matches!(err, RPCError::Unreachable(_)), "call {i}: {err:?}");
        }
        // Connections are accepted in the order they came: count those before a marker.
        let marker = TcpStream::connect(&addr).await.unwrap();
        let marker = marker.local_addr().unwrap();
        let mut opened = 0;
        while let Some((_, from)) = accepted.recv().await {
            if from == marker {
                break;
            }
            opened += 1;
        }
        // One, then none while the wait after it lasts (it doubles: 50, 100, 200, 400 ms; the
        // calls held back return at once).
        assert!(
            (1..=5).contains(&opened),
            "{opened} connections for 20 calls to a peer that never greets"
        );
        assert!(!network.reach.may_connect(2, Instant::now()));

        // A refused connect (nothing listens: a member being restarted) holds nothing back.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        let network = PeerNetwork::default();
        let member = Member {
            client_addr: "127.0.0.1:1".to_owned(),
            raft_addr: addr,
        };
        let err = network
            .clone()
            .new_client(2, &member)
            .await
            .vote(
                VoteRequest::new(Vote::new(1, 1), None),
                RPCOption::new(Duration::from_millis(50)),
            )
            .await
            .expect_err("nothing listens");
        assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
        assert!(network.reach.may_connect(2, Instant::now()));
    }

    #[tokio::test]
    async fn a_peer_of_another_protocol_is_unreachable_with_the_reason() {
        // A later build: it refuses this protocol, naming both.
        let addr = peer_that(|mut conn, first| async move {
            let PeerRequest::Version { protocol, to } = first else {
                panic!("the first frame is not the greeting: {first:?}");
            };
            assert_eq!((protocol, to), (PEER_PROTOCOL, 2));
            let why = format!("peer protocol {protocol}, but this member speaks 4");
            conn.send(PeerResponse::Refused(why)).await.unwrap();
        })
        .await;
        let err = vote_to(addr).await;
        assert!(err.contains("but this member speaks 4"), "{err}");

        // A build from before the greeting: it cannot decode it and closes.
        let addr = peer_that(|conn, _| async move { drop(conn) }).await;
        let err = vote_to(addr).await;
        assert!(
            err.contains("older than the peer protocol greeting"),
            "{err}"
        );
        // Or one with its peer connections at their limit, which closes a new one unread.
        assert!(
            err.contains("as many peer connections open as it takes (64"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_snapshot_goes_in_chunks_at_their_offsets_then_is_installed() {
        // A peer that records each part and answers as a member does.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, mut parts) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut conn: ServerConn = Framed::new(stream, FrameCodec::new(MAX_PEER_FRAME));
            answer_greeting(&mut conn, 2).await.unwrap();
            *conn.codec_mut() = FrameCodec::new(MAX_PEER_FRAME);
            while let Some(Ok(Ok(PeerRequest::Snapshot(part)))) = conn.next().await {
                let answer = match &part {
                    SnapshotPart::Chunk { .. } => None,
                    SnapshotPart::Done { vote, .. } => Some(SnapshotResponse::new(*vote)),
                };
                tx.send(part).unwrap();
                conn.send(PeerResponse::Snapshot(Ok(answer))).await.unwrap();
            }
        });
        let data: Vec<u8> = (0..SNAPSHOT_CHUNK * 5 / 2).map(|i| i as u8).collect();
        let meta = SnapshotMetaOf::<TypeConfig>::default();
        let snapshot = SnapshotOf::<TypeConfig, SnapshotData> {
            meta: meta.clone(),
            snapshot: std::io::Cursor::new(data.clone()),
        };
        let never = std::future::pending::<ReplicationClosed>();
        let resp = client_to(addr)
            .await
            .full_snapshot(
                Vote::new(4, 1),
                snapshot,
                never,
                RPCOption::new(Duration::from_secs(5)),
            )
            .await
            .unwrap();
        assert_eq!(resp.vote, Vote::new(4, 1));
        let mut received = Vec::new();
        let mut offsets = Vec::new();
        while let Ok(part) = parts.try_recv() {
            match part {
                SnapshotPart::Chunk { offset, data } => {
                    offsets.push(offset);
                    received.extend_from_slice(&data);
                }
                SnapshotPart::Done { vote, meta: m } => {
                    assert_eq!((vote, m), (Vote::new(4, 1), meta.clone()));
                    offsets.push(u64::MAX);
                }
            }
        }
        let chunk = SNAPSHOT_CHUNK as u64;
        assert_eq!(offsets, [0, chunk, 2 * chunk, u64::MAX]);
        assert!(received == data, "the bytes arrive whole and in order");
    }

    /// A node's answering side serving one connection (closing it once silent for
    /// `idle_limit`), and that connection: the client's end, the listener's counters, the
    /// serving task, and the directory the node lives in (kept until the test ends).
    async fn one_connection(
        idle_limit: Duration,
    ) -> (
        ClientConn,
        Arc<PeerPortStats>,
        tokio::task::JoinHandle<()>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (raft, _replica) = crate::open_node(crate::NodeOptions::new(1, dir.path()))
            .await
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let watch = Arc::new(Watch {
            warnings: Arc::new(Throttle::new(WARN_EVERY)),
            stats: Arc::default(),
            guard: RejoinGuard::off(),
        });
        let stats = Arc::clone(&watch.stats);
        let server = tokio::spawn(async move {
            let (stream, peer) = listener.accept().await.unwrap();
            serve_conn(stream, peer, None, raft, watch, idle_limit).await;
        });
        let conn: ClientConn = Framed::new(
            TcpStream::connect(addr).await.unwrap(),
            FrameCodec::new(MAX_PEER_FRAME),
        );
        (conn, stats, server, dir)
    }

    #[tokio::test]
    async fn an_answered_peer_connection_that_stays_silent_is_closed() {
        let (mut conn, stats, server, _dir) = one_connection(Duration::from_millis(200)).await;
        conn.send(PeerRequest::Version {
            protocol: PEER_PROTOCOL,
            to: 1,
        })
        .await
        .unwrap();
        let answer = conn.next().await.unwrap().unwrap().unwrap();
        assert!(matches!(answer, PeerResponse::Version { .. }), "{answer:?}");
        // Answered, then silent: the member closes it (the bound only keeps a member that
        // never does from hanging the test).
        let closed = tokio::time::timeout(Duration::from_secs(30), conn.next()).await;
        assert!(matches!(closed, Ok(None | Some(Err(_)))), "{closed:?}");
        server.await.unwrap();
        let counts = stats.counts();
        assert_eq!(counts.closed, [0, 0, 1], "closed as idle only: {counts:?}");
    }

    #[tokio::test]
    async fn a_peer_connection_refused_at_its_greeting_is_counted_as_refused() {
        // Another protocol, or this protocol meant for another member (node 1 answers).
        for (protocol, to, why) in [
            (PEER_PROTOCOL + 1, 1, "but this member speaks"),
            (
                PEER_PROTOCOL,
                2,
                "this member is node 1, but the connecting member takes its address for node 2's",
            ),
        ] {
            let (mut conn, stats, server, _dir) = one_connection(PEER_IDLE_LIMIT).await;
            conn.send(PeerRequest::Version { protocol, to })
                .await
                .unwrap();
            let answer = conn.next().await.unwrap().unwrap().unwrap();
            assert!(
                matches!(&answer, PeerResponse::Refused(r) if r.contains(why)),
                "{answer:?}"
            );
            server.await.unwrap();
            let counts = stats.counts();
            assert_eq!(counts.closed, [0, 1, 0], "refused only: {counts:?}");
            assert_eq!(counts.closed(PeerClose::Refused), 1);
        }
    }

    #[tokio::test]
    async fn an_http_request_to_the_peer_port_is_told_it_is_the_peer_port() {
        use tokio::io::AsyncWriteExt;
        let (mut conn, stats, server, _dir) = one_connection(PEER_IDLE_LIMIT).await;
        conn.get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = conn.next().await.unwrap().unwrap().unwrap();
        let PeerResponse::Refused(why) = &answer else {
            panic!("{answer:?}");
        };
        assert!(
            why.contains("it sent an HTTP request (this is a cluster member's peer port"),
            "{why}"
        );
        assert!(!why.contains("lock port"), "{why}");
        server.await.unwrap();
        assert_eq!(stats.counts().closed(PeerClose::Refused), 1);
    }

    #[test]
    fn snapshot_chunks_must_follow_each_other_and_offset_0_starts_afresh() {
        let mut r = Received::default();
        r.take(0, b"abc").unwrap();
        r.take(3, b"de").unwrap();
        assert_eq!(r.bytes, b"abcde");
        // A gap or an overlap is refused, and what was taken stays.
        assert!(r.take(7, b"x").unwrap_err().contains("expected one at 5"));
        assert!(r.take(4, b"x").is_err());
        assert_eq!(r.bytes, b"abcde");
        // A new snapshot (a retried send) starts over.
        r.take(0, b"z").unwrap();
        assert_eq!(r.bytes, b"z");
    }

    #[test]
    fn the_address_book_comes_before_the_membership() {
        let member = |raft: &str| Member {
            client_addr: "127.0.0.1:7420".to_owned(),
            raft_addr: raft.to_owned(),
        };
        let net = PeerNetwork::with_addresses(BTreeMap::from([(2, "10.0.0.9:9002".to_owned())]));
        assert_eq!(net.address_of(2, &member("10.0.0.2:7520")), "10.0.0.9:9002");
        assert_eq!(net.address_of(3, &member("10.0.0.3:7520")), "10.0.0.3:7520");
        let plain = PeerNetwork::default();
        assert_eq!(
            plain.address_of(2, &member("10.0.0.2:7520")),
            "10.0.0.2:7520"
        );
    }
}
