//! Outputs of the engine.

use serde::{Deserialize, Serialize};

use crate::{FencingToken, LockId, Mode, RequestId, SessionId};

/// One output of [`Core::apply`](crate::Core::apply), addressed to a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The session this event is for.
    pub session: SessionId,
    /// The client request this event answers or completes, if any.
    pub request: Option<RequestId>,
    /// The lock this event is about, if any.
    pub lock: Option<LockId>,
    /// What happened.
    pub kind: EventKind,
}

/// What an [`Event`] says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The session was opened with this lease length.
    SessionOpened {
        /// The lease length granted.
        ttl_ms: u64,
    },
    /// The session's lease was renewed.
    Renewed {
        /// The lease length.
        ttl_ms: u64,
    },
    /// The session was closed at its owner's request; all its locks are gone.
    SessionClosed,
    /// The session's lease ran out; all its locks are gone (R50). No completions follow.
    SessionExpired,
    /// GRANTED: the request or conversion was granted (R5).
    Granted {
        /// The mode now held.
        mode: Mode,
        /// The fencing token of this grant.
        token: FencingToken,
        /// With VALBLK on a read path (R26): the resource's value block.
        value: Option<Vec<u8>>,
        /// With VALBLK on a read path: `false` when VALNOTVALID (R30).
        value_valid: bool,
    },
    /// The request could not be granted at once and was queued; a completion follows later.
    Queued,
    /// NOT_QUEUED: a NOQUEUE request that could not be granted at once (R19, R22).
    NotQueued,
    /// DEADLOCK: the request was chosen as a deadlock victim (R20, R41).
    Deadlock,
    /// CANCELLED: the pending request was cancelled (R46, R47).
    Cancelled,
    /// TIMEDOUT: the pending request's timeout expired (R65).
    TimedOut,
    /// UNLOCKED: the lock was released (R44).
    Unlocked,
    /// A blocking notification: another request wants `mode`, which this granted lock blocks
    /// (R32..R37). Advice only; nothing is revoked.
    Blocking {
        /// The mode that is blocked.
        mode: Mode,
    },
    /// The command was refused; nothing changed and no completion follows (R5, R54, R55).
    Rejected {
        /// Why.
        reason: Reject,
    },
}

/// Why a command was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Reject {
    /// INVALID: the arguments are invalid (R54, R56).
    #[error("invalid request: {0}")]
    Invalid(#[from] Invalid),
    /// NOT_FOUND: no such lock in this session (R6, R52).
    #[error("unknown lock id")]
    NotFound,
    /// BUSY: the lock has a request in progress (R15, R45).
    #[error("lock busy: a request on it is still pending")]
    Busy,
    /// NOT_PENDING: cancel of a lock with nothing pending (R48).
    #[error("nothing to cancel: the lock has no pending request")]
    NotPending,
    /// The session does not exist (never opened, closed or expired).
    #[error("unknown session")]
    UnknownSession,
    /// A configured limit would be exceeded.
    #[error("limit reached: {0}")]
    LimitExceeded(Limit),
}

/// The detail of an INVALID rejection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    /// The resource name is empty.
    #[error("empty resource name")]
    EmptyName,
    /// The resource name is longer than the configured maximum.
    #[error("resource name of {len} bytes exceeds the maximum of {max}")]
    NameTooLong {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The value is longer than the value block.
    #[error("value of {len} bytes exceeds the value block length of {max}")]
    ValueTooLong {
        /// Its length.
        len: usize,
        /// The value block length.
        max: usize,
    },
    /// Bits that name no flag.
    #[error("unknown flag bits {0:#x}")]
    UnknownFlags(u32),
    /// A flag of an optional feature dlock does not implement (R56).
    #[error("unsupported flag bits {0:#x}")]
    UnsupportedFlags(u32),
    /// QUECVT on a new request, or on a conversion of a lock still waiting for its first
    /// grant (R21, R54).
    #[error("QUECVT is only valid on a conversion of a granted lock")]
    QuecvtOnNewLock,
    /// QUECVT on a conversion R21 does not allow.
    #[error("QUECVT is not allowed on a {from}->{to} conversion")]
    QuecvtNotAllowed {
        /// The granted mode.
        from: Mode,
        /// The requested mode.
        to: Mode,
    },
    /// VALBLK on a write path without a value (R54).
    #[error("VALBLK on a write without a value")]
    MissingValue,
    /// A flag that has no meaning for this command (for example NOQUEUE on unlock).
    #[error("flag bits {0:#x} do not apply to this command")]
    FlagNotApplicable(u32),
    /// The requested lease length lies outside the configured bounds.
    #[error(
        "a lease of {} is outside the server's range, {} to {}",
        Millis(*ttl_ms),
        Millis(*min_ms),
        Millis(*max_ms)
    )]
    TtlOutOfRange {
        /// Requested.
        ttl_ms: u64,
        /// Minimum.
        min_ms: u64,
        /// Maximum.
        max_ms: u64,
    },
    /// The session name is longer than the configured maximum.
    #[error("session name of {len} bytes exceeds the maximum of {max}")]
    SessionNameTooLong {
        /// Its length.
        len: usize,
        /// The maximum ([`Config::max_session_name_len`](crate::Config::max_session_name_len)).
        max: usize,
    },
}

/// Which configured limit a request hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Limit {
    /// [`Config::max_sessions`](crate::Config::max_sessions).
    #[error("too many sessions")]
    Sessions,
    /// [`Config::max_resources`](crate::Config::max_resources).
    #[error("too many resources")]
    Resources,
    /// [`Config::max_locks_per_session`](crate::Config::max_locks_per_session).
    #[error("too many locks in this session")]
    LocksPerSession,
    /// [`Config::max_waiters_per_resource`](crate::Config::max_waiters_per_resource).
    #[error("too many queued requests on this resource")]
    WaitersPerResource,
    /// [`Config::max_locks`](crate::Config::max_locks).
    #[error("too many locks")]
    Locks,
    /// Too many locks owned by the sessions of one client address (a limit of the server's,
    /// `--max-locks-per-peer`, never decided by the engine).
    #[error("too many locks from this client address")]
    LocksPerPeer,
}

/// A number of milliseconds written in the largest unit that keeps it whole: `100ms`, `30s`,
/// `5m`, `1h`, `1500ms`.
struct Millis(u64);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0;
        match ms {
            0 => write!(f, "0ms"),
            _ if ms % 3_600_000 == 0 => write!(f, "{}h", ms / 3_600_000),
            _ if ms % 60_000 == 0 => write!(f, "{}m", ms / 60_000),
            _ if ms % 1_000 == 0 => write!(f, "{}s", ms / 1_000),
            _ => write!(f, "{ms}ms"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_out_of_range_is_written_in_whole_units() {
        let e = Invalid::TtlOutOfRange {
            ttl_ms: 3_600_000,
            min_ms: 100,
            max_ms: 300_000,
        };
        assert_eq!(
            e.to_string(),
            "a lease of 1h is outside the server's range, 100ms to 5m"
        );
        let e = Invalid::TtlOutOfRange {
            ttl_ms: 1_500,
            min_ms: 0,
            max_ms: 90_000,
        };
        assert_eq!(
            e.to_string(),
            "a lease of 1500ms is outside the server's range, 0ms to 90s"
        );
    }
}
