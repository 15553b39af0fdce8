//! What clients did and saw, recorded by a test workload next to the server's audit log: the
//! records that the client-side properties (a lost lock seen before another grant, the tokens
//! clients saw, operations that hung, dropped sessions) are judged on.
//!
//! Every timestamp is microseconds since the Unix epoch, read from the same wall clock the
//! server stamps its audit lines with (see the [crate docs](crate) for why one clock is
//! enough).

use dlock_core::{FencingToken, LockId, Mode, SessionId};
use serde::{Deserialize, Serialize};

/// What a workload client did or saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRecord {
    /// One operation, from its start to its completion.
    Op(OpRecord),
    /// A held lock's `lost()` future completed.
    Lost(LostRecord),
    /// A session was dropped abruptly (connection closed without `Goodbye`): the server must
    /// release its locks within its lease.
    Dropped {
        /// The session.
        session: SessionId,
        /// Its lease in milliseconds.
        ttl_ms: u64,
        /// When it was dropped.
        ts_us: u64,
    },
}

/// Which operation a workload client ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum OpKind {
    /// A queued lock request (with a server-side timeout).
    Lock,
    /// A NOQUEUE lock request.
    TryLock,
    /// A lock request abandoned (cancelled) after a short wait.
    LockThenCancel,
    /// A conversion of a held lock.
    Convert,
    /// A release of a held lock.
    Unlock,
}

/// How an operation ended, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpOutcome {
    /// Granted (a lock or conversion), with the lock and the grant's token.
    Granted {
        /// The lock.
        lock: LockId,
        /// Its fencing token.
        token: FencingToken,
    },
    /// Released.
    Unlocked,
    /// NOT_QUEUED.
    NotQueued,
    /// DEADLOCK.
    Deadlock,
    /// TIMEDOUT.
    TimedOut,
    /// CANCELLED (also: abandoned by the workload before an answer).
    Cancelled,
    /// The session or lock was lost meanwhile.
    Lost,
    /// Any other error, by name.
    Error(String),
    /// No answer within the workload's hang bound: a violation.
    Hung,
}

/// One workload operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRecord {
    /// Workload client number.
    pub client: usize,
    /// The client's session when the operation started.
    pub session: SessionId,
    /// What it was.
    pub kind: OpKind,
    /// The resource.
    pub resource: Vec<u8>,
    /// The requested mode.
    pub mode: Mode,
    /// When it started.
    pub start_us: u64,
    /// When it completed.
    pub end_us: u64,
    /// How it ended.
    pub outcome: OpOutcome,
}

/// Why a lock was reported lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LostKind {
    /// The server said the session expired (or refused to resume it).
    SessionExpired,
    /// The client's own lease ran out before a renewal was confirmed.
    LocalLeaseLapsed,
    /// The server announced shutdown.
    ServerShutdown,
    /// The client was closed by its owner.
    Closed,
    /// Released by its owner: not a loss.
    Released,
}

/// A lock's `lost()` completed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostRecord {
    /// Workload client number.
    pub client: usize,
    /// The lock.
    pub lock: LockId,
    /// The resource.
    pub resource: Vec<u8>,
    /// The mode the client held.
    pub mode: Mode,
    /// Why.
    pub reason: LostKind,
    /// When the workload saw it.
    pub ts_us: u64,
}
