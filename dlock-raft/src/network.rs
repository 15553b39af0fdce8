//! The peer network: openraft's RPCs over TCP, framed like the client protocol (a `u32`
//! length, then a bincode body, through `dlock-proto`'s frame codec).
//!
//! Each openraft network client keeps one connection to its target, opened on first use
//! and dropped on any error or timeout (so a late answer never pairs with a later
//! request); a target that cannot be reached is reported `Unreachable`, which makes
//! openraft back off. A node may have its own address book for its peers
//! ([`PeerNetwork::with_addresses`]), consulted before the membership's addresses.
//! [`serve_peers`] answers a listener's connections, one request at a
//! time per connection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dlock_proto::FrameCodec;
use futures_util::{SinkExt, StreamExt};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::types::{Member, NodeId, Raft, TypeConfig};

/// The largest peer frame: an append batch or one snapshot chunk (openraft's
/// `snapshot_max_chunk_size` must stay well below it).
pub const MAX_PEER_FRAME: usize = 16 * 1024 * 1024;

/// How long a peer connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Replicate entries (or a heartbeat).
    Append(AppendEntriesRequest<TypeConfig>),
    /// Ask for a vote.
    Vote(VoteRequest<NodeId>),
    /// One chunk of a snapshot.
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The answer to a [`PeerRequest`], of the same variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// The answer to `Append`.
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// The answer to `Vote`.
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// The answer to `Snapshot`.
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
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
}

impl PeerNetwork {
    /// A network that reaches node `id` at `addresses[id]` where given, and elsewhere at the
    /// membership's raft address.
    pub fn with_addresses(addresses: BTreeMap<NodeId, String>) -> PeerNetwork {
        PeerNetwork {
            addresses: Arc::new(addresses),
        }
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
            conn: None,
        }
    }
}

/// A connection to one peer.
#[derive(Debug)]
pub struct PeerClient {
    target: NodeId,
    addr: String,
    conn: Option<ClientConn>,
}

impl PeerClient {
    async fn connect(&mut self) -> Result<&mut ClientConn, CallError> {
        if self.conn.is_none() {
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
                .await
                .map_err(|_| CallError::ConnectTimeout(self.addr.clone()))?
                .map_err(|source| CallError::Connect {
                    addr: self.addr.clone(),
                    source,
                })?;
            stream.set_nodelay(true).ok();
            self.conn = Some(Framed::new(stream, FrameCodec::new(MAX_PEER_FRAME)));
        }
        Ok(self.conn.as_mut().expect("set above"))
    }

    /// Sends one request and waits for its answer within `ttl`. Any failure drops the
    /// connection.
    async fn call(&mut self, req: PeerRequest, ttl: Duration) -> Result<PeerResponse, CallError> {
        let result = tokio::time::timeout(ttl, async {
            let conn = self.connect().await?;
            conn.send(req).await?;
            match conn.next().await {
                Some(Ok(Ok(resp))) => Ok(resp),
                Some(Ok(Err(malformed))) => Err(CallError::Malformed(malformed)),
                Some(Err(e)) => Err(CallError::Codec(e)),
                None => Err(CallError::Closed),
            }
        })
        .await
        .unwrap_or(Err(CallError::Timeout(ttl)));
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}

fn rpc_err<E: std::error::Error>(e: CallError) -> RPCError<NodeId, Member, E> {
    match e {
        CallError::Connect { .. } | CallError::ConnectTimeout(_) => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        other => RPCError::Network(NetworkError::new(&other)),
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        match self.call(PeerRequest::Append(rpc), option.hard_ttl()).await {
            Ok(PeerResponse::Append(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(rpc_err(CallError::Mismatch)),
            Err(e) => Err(rpc_err(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .call(PeerRequest::Snapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(PeerResponse::Snapshot(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(rpc_err(CallError::Mismatch)),
            Err(e) => Err(rpc_err(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        match self.call(PeerRequest::Vote(rpc), option.hard_ttl()).await {
            Ok(PeerResponse::Vote(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(rpc_err(CallError::Mismatch)),
            Err(e) => Err(rpc_err(e)),
        }
    }
}

/// Answers peer connections on `listener` for `raft` until `shutdown` is cancelled.
pub async fn serve_peers(listener: TcpListener, raft: Raft, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                stream.set_nodelay(true).ok();
                let conn = Framed::new(stream, FrameCodec::new(MAX_PEER_FRAME));
                let raft = raft.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = serve_conn(conn, raft) => {}
                    }
                    tracing::debug!(%peer, "peer connection closed");
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a peer connection failed");
                // Out of file descriptors and the like: let the condition pass.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_conn(mut conn: ServerConn, raft: Raft) {
    while let Some(frame) = conn.next().await {
        let req = match frame {
            Ok(Ok(req)) => req,
            Ok(Err(malformed)) => {
                tracing::warn!(error = %malformed, "malformed peer frame; closing");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "peer connection failed");
                return;
            }
        };
        let resp = match req {
            PeerRequest::Append(r) => PeerResponse::Append(raft.append_entries(r).await),
            PeerRequest::Vote(r) => PeerResponse::Vote(raft.vote(r).await),
            PeerRequest::Snapshot(r) => PeerResponse::Snapshot(raft.install_snapshot(r).await),
        };
        if conn.send(resp).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
