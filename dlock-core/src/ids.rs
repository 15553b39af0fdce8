//! Identifier newtypes. Bare `u64`s are never passed around for ids.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id_type!(
    /// A client session. Assigned by the core: the index of the input that opened it.
    SessionId,
    "s"
);
id_type!(
    /// A lock (one request and its later conversions, R2). Assigned by the core: the index of
    /// the input that created it.
    LockId,
    "l"
);
id_type!(
    /// A client-chosen request id, echoed in every event about that request.
    RequestId,
    "r"
);

impl RequestId {
    /// The request id reserved for commands a driver makes on a session's behalf rather than
    /// the client's (dlock-server's renewals on pings, acks and resumes, and its close of an
    /// overflowed session, all sent with id 0). With
    /// [`Config::exactly_once`](crate::Config::exactly_once) this id never counts: it is never
    /// a session's highest request id, never a retransmission, and its answers are not
    /// remembered. Every other id, `u64::MAX` included, is the client's.
    pub const DRIVER: RequestId = RequestId(0);
}

/// A fencing token: strictly greater than every token granted before it on the same resource,
/// including across server restarts. The protected resource should refuse writes carrying a
/// token lower than the highest it has seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
