//! The client's error type.

use dlock_core::{Invalid, Limit, Reject};
use dlock_proto::Refusal;

/// Everything a client operation can fail with.
///
/// The first group are the DLM's own outcomes of a lock or conversion request (rule book R5):
/// they are expected answers, not faults. The rest are misuse, limits and transport failures.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone)]
pub enum Error {
    /// NOT_QUEUED: a NOQUEUE request that could not be granted at once (R19, R22).
    #[error("not granted at once and NOQUEUE was set")]
    NotQueued,
    /// DEADLOCK: the request was chosen as a deadlock victim (R20, R41). A session that would
    /// wait for a lock it holds itself counts (R39): tasks sharing one [`Client`](crate::Client)
    /// are one lock owner.
    #[error(
        "deadlock: this request was chosen as the victim (a session waiting for its own lock          counts: give each contender its own Client)"
    )]
    Deadlock,
    /// TIMEDOUT: the request's queue timeout expired (R65).
    #[error("timed out waiting in the queue")]
    TimedOut,
    /// CANCELLED: the pending request or conversion was cancelled (R46, R47).
    #[error("request cancelled")]
    Cancelled,
    /// The session that owned the lock or request is gone (expired, refused on resume, or
    /// declared lost by the local lease); the lock is no longer held.
    #[error("session lost: the lock is no longer held")]
    SessionLost,
    /// No answer within the request timeout, and the connection is down (the client keeps
    /// trying to reconnect).
    #[error("disconnected from the server")]
    Disconnected,
    /// INVALID: the server refused the arguments (R54, R56).
    #[error("invalid request: {0}")]
    Invalid(Invalid),
    /// A configured server limit would be exceeded.
    #[error("limit reached: {0}")]
    LimitExceeded(Limit),
    /// NOT_FOUND: the server does not know the lock (R52).
    #[error("unknown lock")]
    NotFound,
    /// BUSY: a request on the lock is still pending (R15, R45).
    #[error("lock busy: a request on it is still pending")]
    Busy,
    /// NOT_PENDING: nothing to cancel, the lock has no pending request (R48).
    #[error("nothing to cancel")]
    NotPending,
    /// The server refused the handshake.
    #[error("refused by the server: {0}")]
    Refused(Refusal),
    /// Another rejection the engine may add in a later version.
    #[error("rejected: {0}")]
    Rejected(Reject),
    /// The server broke the protocol or sent something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Connecting to the server failed (shared, so that the error can be cloned).
    #[error("connect failed: {0}")]
    Connect(std::sync::Arc<std::io::Error>),
    /// The members of a cluster that answered all said they do not lead
    /// ([`Refusal::NotLeader`]), and no leader was reached, for a whole connect timeout: an
    /// election that takes long, a leader that cannot be reached, or no majority.
    #[error(
        "no leader: members answered NotLeader and no leader could be reached (an election in progress, or no majority?)"
    )]
    NoLeader,
    /// No answer from the server within the request timeout, although connected.
    #[error("no answer within the request timeout")]
    RequestTimeout,
    /// The server is shutting down; its sessions are not kept.
    #[error("server shutting down")]
    ShuttingDown,
    /// The server is overloaded and refused the request; try again.
    #[error("server overloaded")]
    Overloaded,
    /// The request does not fit in one frame of the server's maximum length.
    #[error("request of {len} bytes exceeds the maximum frame of {max}")]
    TooLarge {
        /// The encoded length.
        len: usize,
        /// The server's maximum frame length.
        max: usize,
    },
    /// The client was closed (by [`Client::close`](crate::Client::close)).
    #[error("client closed")]
    Closed,
    /// The server's rules do not let this session's identity do this (take this mode on
    /// this resource, see it, inspect another session).
    #[error("permission denied")]
    PermissionDenied,
    /// The TLS configuration could not be used (a CA, certificate or key file, the server
    /// name).
    #[error("TLS: {0}")]
    Tls(String),
}

/// The result type of the client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Reject> for Error {
    fn from(reason: Reject) -> Self {
        match reason {
            Reject::Invalid(i) => Error::Invalid(i),
            Reject::NotFound => Error::NotFound,
            Reject::Busy => Error::Busy,
            Reject::NotPending => Error::NotPending,
            Reject::UnknownSession => Error::SessionLost,
            Reject::LimitExceeded(l) => Error::LimitExceeded(l),
            other => Error::Rejected(other),
        }
    }
}

impl Error {
    /// Whether this is one of the DLM's expected "not granted" outcomes (NOT_QUEUED,
    /// DEADLOCK, TIMEDOUT, CANCELLED) rather than a fault.
    pub fn is_not_granted(&self) -> bool {
        matches!(
            self,
            Error::NotQueued | Error::Deadlock | Error::TimedOut | Error::Cancelled
        )
    }
}
