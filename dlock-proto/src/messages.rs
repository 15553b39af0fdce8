//! Every message of the protocol.

use serde::{Deserialize, Serialize};

pub use dlock_core::{
    ConvertRequest, Event, EventKind, FencingToken, Invalid, Limit, LockFlags, LockId, LockInfo,
    LockRequest, LockState, Mode, Reject, RequestId, ResourceInfo, SessionId, SessionInfo,
    SessionLockInfo, UnlockRequest,
};

/// The protocol version this crate speaks. A peer of another version is refused at `Hello`.
pub const PROTOCOL_VERSION: u32 = 7;

/// A frame sent by a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// The first frame of every connection.
    Hello(Hello),
    /// The client has received every event up to and including `seq`; the server may forget
    /// them. Clients ack regularly (at least with every renewal) to bound the replay buffer.
    Ack {
        /// The highest event sequence number received.
        seq: u64,
    },
    /// A request; its id comes back on every reply and event about it.
    ///
    /// Request ids must increase within a session. After a resume the client re-sends every
    /// request still outstanding; an engine request (lock, convert, unlock, cancel, renew,
    /// goodbye) whose id is at or below the highest id the server has seen in this session is
    /// a retransmission and is not applied again: its events come from the replay of events
    /// after `Resume::last_seq`. On one connection ids must increase too: an engine request
    /// whose id is at or below one the same connection already sent is not applied and is
    /// answered [`RequestError::DuplicateRequestId`]. Queries and pings are always answered.
    Request {
        /// Client-chosen id, unique within the session.
        id: RequestId,
        /// What to do.
        body: Request,
    },
    /// Instead of `Hello`, as the first and only frame: asks for the cluster as this server
    /// sees it, without opening a session (so a member answers while the cluster has no
    /// leader). Answered with [`ServerMessage::Probed`] (or `Refused`, as a `Hello` would be
    /// for its version or token), then the server closes the connection.
    Probe(Probe),
}

/// A question for the server's view of the cluster, without a session
/// ([`ClientMessage::Probe`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Must equal the server's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// A bearer token, as in [`Hello::token`], for a server that authenticates clients.
    pub token: Option<String>,
}

/// Opens or resumes a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Must equal the server's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// A human-readable name for the session (`user@host:pid`).
    pub client_name: String,
    /// Requested lease length in milliseconds; 0 asks for the server's default.
    pub lease_ttl_ms: u64,
    /// Resume this session instead of opening a new one.
    pub resume: Option<Resume>,
    /// A bearer token proving the client's identity, for a server that authenticates clients
    /// (`--auth-file`); `None` otherwise. Send it only over TLS: in clear text anyone on the
    /// path can read and replay it.
    pub token: Option<String>,
}

/// Credentials to resume a session after a lost connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The session to resume.
    pub session: SessionId,
    /// The secret from its `Welcome`.
    pub secret: u128,
    /// The highest event sequence number the client received; the server replays every
    /// later event of the session after `Welcome`.
    pub last_seq: u64,
}

/// A client request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Renew the lease (any request renews it; this one does nothing else).
    Renew,
    /// Request a new lock (the engine's [`LockRequest`], unchanged).
    Lock(LockRequest),
    /// Convert a granted lock.
    Convert(ConvertRequest),
    /// Release a granted lock.
    Unlock(UnlockRequest),
    /// Cancel a pending request or conversion.
    Cancel {
        /// The lock.
        lock: LockId,
    },
    /// Read the lock table.
    Query(Query),
    /// Liveness and version check.
    Ping,
    /// End the session cleanly: every lock is released at once.
    Goodbye,
}

/// What a [`Request::Query`] asks for.
///
/// Answers come in pages: the server never builds an answer larger than one frame, and the
/// work one query costs it is proportional to the page. A reply says whether there is
/// `more`; the next page is asked for with `after` set to the last item of this one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// One resource.
    Resource(Vec<u8>),
    /// Resources whose names start with a prefix, in name order.
    Prefix {
        /// The prefix (empty: all).
        prefix: Vec<u8>,
        /// At most this many (the server caps it further); 0 asks for the server's cap.
        limit: u32,
        /// Only names after this one (the last name of the previous page).
        after: Option<Vec<u8>>,
    },
    /// A session's locks, in lock id order.
    Session {
        /// The session.
        session: SessionId,
        /// Only locks with ids above this one (the last lock of the previous page).
        after: Option<LockId>,
    },
    /// The cluster as the answering server sees it: members, leader, term, log and applied
    /// index ([`Reply::Cluster`]); `None` from a server that runs alone.
    Cluster,
}

/// A frame sent by the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// The handshake succeeded.
    Welcome(Welcome),
    /// The handshake failed; the server closes the connection after this.
    Refused(Refusal),
    /// An engine event for this session: a reply to a request, a completion of a queued
    /// request, a blocking notification, or the session's expiry.
    Event {
        /// Per-session sequence number: 1 for the session's first event, then +1 each. Events
        /// are replayed after a resume (see [`Resume::last_seq`]), so a client drops an event
        /// whose `seq` it has already seen.
        seq: u64,
        /// The event.
        event: Event,
    },
    /// The reply to a request the engine does not see (query, ping), or a request-level error.
    Reply {
        /// The request's id.
        id: RequestId,
        /// The reply.
        body: Reply,
    },
    /// The server is shutting down; sessions are not kept. (A cluster member that stops does
    /// not send it: the sessions stay with the cluster, and its clients resume at the new
    /// leader.)
    ShuttingDown,
    /// The connection broke the protocol; the server closes it after this.
    ProtocolError(ProtocolError),
    /// The answer to [`ClientMessage::Probe`]: the cluster as this server sees it (`None`:
    /// it runs alone). The server closes the connection after this.
    Probed(Option<crate::status::ClusterView>),
}

/// A successful handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The session.
    pub session: SessionId,
    /// The secret needed to resume it.
    pub secret: u128,
    /// The lease length granted.
    pub lease_ttl_ms: u64,
    /// The server's version string.
    pub server_version: String,
    /// The protocol version.
    pub protocol_version: u32,
    /// Whether an existing session was resumed.
    pub resumed: bool,
    /// The server's value block length.
    pub lvb_len: u32,
    /// The server's maximum frame length.
    pub max_frame_len: u32,
    /// The server's lock-table clock (milliseconds) when it sent this; the `since_ms` of
    /// locks in query replies are on this clock.
    pub now_ms: u64,
}

/// Why a handshake was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The protocol versions differ.
    #[error("protocol version mismatch: server speaks {server}, client speaks {client}")]
    VersionMismatch {
        /// The server's version.
        server: u32,
        /// The client's version.
        client: u32,
    },
    /// The session to resume does not exist (expired, closed, or the server restarted), or
    /// the secret is wrong.
    #[error("unknown or expired session")]
    UnknownSession,
    /// The session could not be opened.
    #[error("session refused: {0}")]
    Rejected(Reject),
    /// Too many connections.
    #[error("too many connections")]
    TooManyConnections,
    /// The first frame was not a `Hello`.
    #[error("expected Hello as the first frame")]
    ExpectedHello,
    /// The server is shutting down.
    #[error("server shutting down")]
    ShuttingDown,
    /// This client address already holds the most sessions one address may (sessions of
    /// dropped connections count until their leases run out).
    #[error("too many sessions from this address (at most {limit})")]
    TooManySessionsFromPeer {
        /// The per-address limit.
        limit: u32,
    },
    /// This client address already holds the most connections one address may.
    #[error("too many connections from this address (at most {limit})")]
    TooManyConnectionsFromPeer {
        /// The per-address limit.
        limit: u32,
    },
    /// The server authenticates its clients and this one has no valid credential (no token,
    /// a wrong token, or no client certificate where one is required).
    #[error("not authenticated: missing or invalid credential")]
    Unauthenticated,
    /// This server is a follower of a cluster and opens or resumes no session: the client
    /// should connect to the leader instead.
    #[error("not the leader{}", leader.as_deref().map(|l| format!(" (the leader is {l})")).unwrap_or_default())]
    NotLeader {
        /// The leader's client address (`host:port`), when this server knows it.
        leader: Option<String>,
    },
    /// The server could not record the new session's lease in its data directory (full or
    /// unwritable disk), which it must do before it confirms a session. Sessions already open
    /// are not affected; trying again later may succeed.
    #[error(
        "server cannot record the session's lease on disk (data directory full or unwritable); try again later"
    )]
    StorageUnavailable,
}

/// A reply the server makes itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Answer to [`Query::Resource`] and [`Query::Prefix`].
    Resources {
        /// The server's lock-table clock when it answered: `now_ms - since_ms` is a lock's
        /// age by the server's clock.
        now_ms: u64,
        /// The resources, in name order.
        resources: Vec<ResourceInfo>,
        /// More resources match: ask again with `after` set to the last name here.
        more: bool,
    },
    /// Answer to [`Query::Session`].
    Session {
        /// The server's lock-table clock when it answered.
        now_ms: u64,
        /// The session, if it exists.
        session: Option<SessionInfo>,
        /// The session has more locks: ask again with `after` set to the last lock here.
        more: bool,
    },
    /// Answer to [`Request::Ping`].
    Pong {
        /// The server's version string.
        server_version: String,
    },
    /// The request could not be served.
    Error(RequestError),
    /// The answer to [`Query::Cluster`]: `None` from a server that runs alone.
    Cluster(Option<crate::status::ClusterView>),
}

/// A request-level error that does not come from the engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The id of a lock, convert, unlock, cancel, renew or goodbye is not above one this
    /// connection already sent in its session: an id used twice, or going backwards, on one
    /// connection. The request is not applied; whatever answers the earlier request with this
    /// id still comes. (A retransmission is not this: it comes on a new connection after a
    /// resume, and is answered from the replay.)
    #[error("request id {0} is already in use")]
    DuplicateRequestId(RequestId),
    /// The server is overloaded; try again.
    #[error("server busy")]
    Overloaded,
    /// A second `Hello` on an established connection.
    #[error("unexpected Hello")]
    UnexpectedHello,
    /// The reply would not fit in one frame (for example a session with very many locks);
    /// ask for less.
    #[error("reply too large for one frame")]
    ReplyTooLarge,
    /// The session's identity may not do this (the server's `--auth-rules`): take this mode
    /// on this resource, see it, or inspect another session.
    #[error("permission denied")]
    PermissionDenied,
}

/// A violation of the protocol that closes the connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame's length prefix exceeds the maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The announced length.
        len: u64,
        /// The maximum.
        max: u64,
    },
    /// A frame's body is not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// No `Hello` within the handshake timeout.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The client did not read its events fast enough; its session lives on until its lease
    /// runs out, so it may reconnect and resume.
    #[error("client too slow reading replies")]
    SlowReader,
    /// Another connection resumed this session.
    #[error("session resumed by another connection")]
    Superseded,
    /// A frame was started and not finished within the server's frame timeout.
    #[error("frame not completed in time")]
    FrameTimeout,
}
