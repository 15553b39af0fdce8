//! The client's error type.

use dlock_core::{Invalid, Limit, Reject};
use dlock_proto::Refusal;

/// Everything a client operation can fail with.
///
/// The first group are the DLM's own outcomes of a lock or conversion request (rule book R5):
/// they are expected answers, not faults. The rest are misuse, limits and transport failures.
///
/// [`Error::Connect`] and [`Error::TokenFile`] return the [`std::io::Error`] they carry as
/// their [`source`](std::error::Error::source) (downcast it to read its
/// [`kind`](std::io::Error::kind)); every other variant has none: what the server said is in
/// the message and in the variant's own value.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub enum Error {
    /// NOT_QUEUED: a NOQUEUE request that could not be granted at once (R19, R22).
    NotQueued,
    /// DEADLOCK: the request was chosen as a deadlock victim (R20, R41). A session that would
    /// wait for a lock it holds itself counts (R39): tasks sharing one [`Client`](crate::Client)
    /// are one lock owner.
    Deadlock,
    /// TIMEDOUT: the request's queue timeout expired (R65).
    TimedOut,
    /// CANCELLED: the pending request or conversion was cancelled (R46, R47).
    Cancelled,
    /// The session that owned the lock or request is gone (expired, refused on resume, or
    /// declared lost by the local lease); its locks are no longer held, its requests are
    /// dropped. (A new lock, query or ping not sent yet goes in the client's next session
    /// instead of failing.)
    SessionLost,
    /// No answer within the request timeout, and the connection is down (the client keeps
    /// trying to reconnect). A lock or conversion request not sent yet is dropped; one sent
    /// before the connection broke may still take effect (a lock granted then is released by
    /// the client, a conversion shows in the guard's [`mode`](crate::LockGuard::mode)).
    Disconnected,
    /// INVALID: the server refused the arguments (R54, R56).
    Invalid(Invalid),
    /// A configured server limit would be exceeded.
    LimitExceeded(Limit),
    /// NOT_FOUND: the server does not know the lock (R52).
    NotFound,
    /// BUSY: a request on the lock is still pending (R15, R45).
    Busy,
    /// NOT_PENDING: nothing to cancel, the lock has no pending request (R48).
    NotPending,
    /// The server refused the handshake.
    Refused(Refusal),
    /// Another rejection the engine may add in a later version.
    Rejected(Reject),
    /// The server broke the protocol or sent something this client does not understand.
    Protocol(String),
    /// Connecting to the server failed (shared, so that the error can be cloned); the io
    /// error is also the [`source`](std::error::Error::source).
    Connect(std::sync::Arc<std::io::Error>),
    /// The members of a cluster that answered all said they do not lead
    /// ([`Refusal::NotLeader`]), and no leader was reached, for a whole connect timeout: an
    /// election that takes long, a leader that cannot be reached, or no majority.
    NoLeader,
    /// No answer from the server within the request timeout, although connected. The
    /// request may still take effect, as for [`Error::Disconnected`]. (A server in its
    /// restart grace holds lock requests unanswered until the grace ends.)
    RequestTimeout,
    /// The server is shutting down; its sessions are not kept.
    ShuttingDown,
    /// The server is overloaded and refused the request; try again.
    Overloaded,
    /// The request does not fit in one frame of the server's maximum length.
    TooLarge {
        /// The encoded length.
        len: usize,
        /// The server's maximum frame length.
        max: usize,
    },
    /// The client was closed (by [`Client::close`](crate::Client::close)).
    Closed,
    /// The server's rules do not let this session's identity do this (take this mode on
    /// this resource, see it, inspect another session).
    PermissionDenied,
    /// The token file given to [`ClientBuilder::token_file`](crate::ClientBuilder::token_file)
    /// could not be read or holds no token: a local error, before any connection. The io
    /// error (whose message names the file) is also the
    /// [`source`](std::error::Error::source).
    TokenFile(std::sync::Arc<std::io::Error>),
    /// The TLS configuration could not be used (a CA, certificate or key file, the server
    /// name).
    Tls(String),
    /// The server refused this client's TLS certificate (a server that wants mutual TLS):
    /// none was given, or it is expired or signed by a CA the server does not trust. Holds
    /// the TLS alert the server sent (`CertificateRequired`, `UnknownCA`, ...).
    CertificateRefused(String),
}

// Written out rather than derived with thiserror (STYLE 5): thiserror would make the
// source of `Connect` the `Arc` around the io error, which does not downcast to
// `std::io::Error`.
impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotQueued => f.write_str("not granted at once and NOQUEUE was set"),
            Error::Deadlock => f.write_str(
                "deadlock: this request was chosen as the victim (a session waiting for its \
                 own lock counts: give each contender its own Client)",
            ),
            Error::TimedOut => f.write_str("timed out waiting in the queue"),
            Error::Cancelled => f.write_str("request cancelled"),
            Error::SessionLost => f.write_str(
                "session lost (expired, or unknown to the server): its locks and requests are gone",
            ),
            Error::Disconnected => f.write_str(
                "disconnected from the server: no answer within the request timeout (a request \
                 sent before the connection broke may still take effect)",
            ),
            Error::Invalid(x) => write!(f, "invalid request: {x}"),
            Error::LimitExceeded(x) => write!(f, "limit reached: {x}"),
            Error::NotFound => f.write_str("unknown lock"),
            Error::Busy => f.write_str("lock busy: a request on it is still pending"),
            Error::NotPending => f.write_str("nothing to cancel"),
            Error::Refused(x) => write!(f, "refused by the server: {x}"),
            Error::Rejected(x) => write!(f, "rejected: {x}"),
            Error::Protocol(x) => write!(f, "protocol error: {x}"),
            Error::Connect(x) => write!(f, "connect failed: {x}"),
            Error::NoLeader => f.write_str(
                "no leader: members answered NotLeader and no leader could be reached (an \
                 election in progress, or no majority?)",
            ),
            Error::RequestTimeout => f.write_str(
                "no answer within the request timeout (the request may still take effect; a \
                 server in its restart grace answers lock requests when the grace ends)",
            ),
            Error::ShuttingDown => f.write_str("server shutting down"),
            Error::Overloaded => f.write_str("server overloaded: try again"),
            Error::TooLarge { len, max } => {
                write!(
                    f,
                    "request of {len} bytes exceeds the maximum frame of {max}"
                )
            }
            Error::Closed => f.write_str("client closed"),
            Error::PermissionDenied => f.write_str("permission denied"),
            Error::TokenFile(x) => write!(f, "{x}"),
            Error::Tls(x) => write!(f, "TLS: {x}"),
            Error::CertificateRefused(alert) => write!(
                f,
                "the server refused this client's TLS certificate ({alert}): it wants one \
                 signed by a CA it trusts, not expired"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect(e) | Error::TokenFile(e) => Some(&**e),
            _ => None,
        }
    }
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

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::io;
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_connect_error_has_its_io_error_as_source() {
        let io = io::Error::new(io::ErrorKind::ConnectionRefused, "nobody listens");
        let e = Error::Connect(Arc::new(io));
        assert_eq!(e.to_string(), "connect failed: nobody listens");
        let source = e.source().expect("the io error");
        let io = source.downcast_ref::<io::Error>().expect("an io::Error");
        assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(io.to_string(), "nobody listens");
    }

    #[test]
    fn errors_without_an_underlying_error_have_no_source() {
        for e in [
            Error::Deadlock,
            Error::Protocol("bad frame".into()),
            Error::Refused(Refusal::TooManyConnections),
            Error::TooLarge { len: 9, max: 8 },
        ] {
            assert!(e.source().is_none(), "{e:?}");
        }
        assert_eq!(
            Error::Deadlock.to_string(),
            "deadlock: this request was chosen as the victim (a session waiting for its own \
             lock counts: give each contender its own Client)"
        );
    }
}
