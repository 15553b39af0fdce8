//! Read-only views of the engine's state (R66).

use serde::{Deserialize, Serialize};

use crate::{FencingToken, LockId, Mode, SessionId};

/// Where a lock stands. A lock is in exactly one of these states (R2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockState {
    /// On the wait queue, holding nothing.
    Waiting {
        /// The requested mode.
        mode: Mode,
    },
    /// On the convert queue, still holding `from`.
    Converting {
        /// The granted mode, still held.
        from: Mode,
        /// The requested mode.
        to: Mode,
    },
    /// On the grant queue.
    Granted {
        /// The granted mode.
        mode: Mode,
    },
}

impl LockState {
    /// The mode this lock currently holds, if any.
    pub fn granted_mode(&self) -> Option<Mode> {
        match *self {
            LockState::Waiting { .. } => None,
            LockState::Converting { from, .. } => Some(from),
            LockState::Granted { mode } => Some(mode),
        }
    }

    /// The mode this lock is waiting for, if any.
    pub fn requested_mode(&self) -> Option<Mode> {
        match *self {
            LockState::Waiting { mode } => Some(mode),
            LockState::Converting { to, .. } => Some(to),
            LockState::Granted { .. } => None,
        }
    }
}

/// A session's lease, as [`Core::session_lease`](crate::Core::session_lease) reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLease {
    /// The lease length in milliseconds.
    pub ttl_ms: u64,
    /// When the lease runs out unless renewed (core clock, ms).
    pub expires_at_ms: u64,
}

/// One lock on a resource, as a query sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The lock.
    pub lock: LockId,
    /// Its owner.
    pub session: SessionId,
    /// The owner's session name; empty once the session has ended and its locks are being
    /// removed ([`STEP_WORK`](crate::STEP_WORK)).
    pub session_name: String,
    /// Its state.
    pub state: LockState,
    /// The token of its latest grant, if it holds a mode.
    pub token: Option<FencingToken>,
    /// Core clock (ms) when it entered its current state: granted, or queued.
    pub since_ms: u64,
}

/// A resource and its three queues (R3, R66).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceInfo {
    /// The resource name.
    pub name: Vec<u8>,
    /// The value block contents (always `lvb_len` bytes).
    pub value: Vec<u8>,
    /// `false` while the value block is marked not valid (R29, R30).
    pub value_valid: bool,
    /// The grant queue (order has no meaning, R3; listed by lock id).
    pub granted: Vec<LockInfo>,
    /// The convert queue, head first.
    pub converting: Vec<LockInfo>,
    /// The wait queue, head first.
    pub waiting: Vec<LockInfo>,
    /// How many of its locks are not listed above. 0 from the engine; a server whose reply
    /// frame cannot hold every lock of the resource lists the first ones of the grant queue,
    /// then of the convert queue, then of the wait queue, as many as fit, and counts the
    /// rest here.
    pub omitted: u64,
}

/// One lock of a session, as a query sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionLockInfo {
    /// The lock.
    pub lock: LockId,
    /// Its resource.
    pub resource: Vec<u8>,
    /// Its state.
    pub state: LockState,
    /// The token of its latest grant, if it holds a mode.
    pub token: Option<FencingToken>,
}

/// A session, as a query sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The session.
    pub session: SessionId,
    /// Its name.
    pub name: String,
    /// Its lease length.
    pub ttl_ms: u64,
    /// Core clock (ms) at which the lease runs out unless renewed.
    pub expires_at_ms: u64,
    /// Its locks, by lock id.
    pub locks: Vec<SessionLockInfo>,
}

/// A wait-for edge between sessions (R39): `waiter` has a queued request blocked by `holder`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WaitsFor {
    /// The waiting session.
    pub waiter: SessionId,
    /// The session it waits for.
    pub holder: SessionId,
}

// Upper bounds of the fixed parts of each view in the wire encoding (bincode with variable
// length integers: at most 10 bytes per integer, 1 per enum tag or bool), so a page built
// within a budget fits a frame of that size.
const INT: usize = 10;

impl LockInfo {
    /// An upper bound of this lock's size in an encoded answer, in bytes.
    pub fn approx_size(&self) -> usize {
        // lock, session, name length, state (tag + two modes), token (tag + value), since.
        INT * 3 + self.session_name.len() + 3 + 1 + INT + INT
    }
}

impl ResourceInfo {
    /// An upper bound of this resource's size in an encoded answer, in bytes.
    pub fn approx_size(&self) -> usize {
        let locks = |v: &[LockInfo]| INT + v.iter().map(LockInfo::approx_size).sum::<usize>();
        INT + self.name.len()
            + INT
            + self.value.len()
            + 1
            + locks(&self.granted)
            + locks(&self.converting)
            + locks(&self.waiting)
    }
}

impl SessionLockInfo {
    /// An upper bound of this lock's size in an encoded answer, in bytes.
    pub fn approx_size(&self) -> usize {
        INT + INT + self.resource.len() + 3 + 1 + INT
    }
}

impl SessionInfo {
    /// An upper bound of this session's size in an encoded answer, in bytes.
    pub fn approx_size(&self) -> usize {
        INT + INT
            + self.name.len()
            + INT * 2
            + INT
            + self
                .locks
                .iter()
                .map(SessionLockInfo::approx_size)
                .sum::<usize>()
    }
}
