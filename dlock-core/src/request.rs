//! The arguments of the lock commands, defined once: the engine's [`Command`](crate::Command),
//! the wire's request and the client's operation all carry these same types, so a request is
//! never re-packed on its way from the caller to the engine.

use serde::{Deserialize, Serialize};

use crate::{LockFlags, LockId, Mode};

/// A new lock on a resource (R10, R22).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRequest {
    /// The resource name: opaque bytes, 1..=`max_name_len` long.
    #[serde(with = "serde_bytes")]
    pub resource: Vec<u8>,
    /// Requested mode.
    pub mode: Mode,
    /// Flags; see [`LockFlags`].
    pub flags: LockFlags,
    /// With VALBLK: a value is only meaningful on write paths; ignored on a new lock.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// R65: if still queued after this many milliseconds, complete with TIMEDOUT.
    pub timeout_ms: Option<u64>,
}

impl LockRequest {
    /// A plain request for `mode` on `resource`: no flags, no value, no timeout.
    pub fn new(resource: impl Into<Vec<u8>>, mode: Mode) -> LockRequest {
        LockRequest {
            resource: resource.into(),
            mode,
            flags: LockFlags::empty(),
            value: None,
            timeout_ms: None,
        }
    }
}

/// A conversion of a granted lock to another mode (R11, R15..R21).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvertRequest {
    /// The lock to convert.
    pub lock: LockId,
    /// The new mode.
    pub mode: Mode,
    /// Flags; see [`LockFlags`].
    pub flags: LockFlags,
    /// With VALBLK on a write path (from PW/EX, R26): the value to write.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// R65: if still queued after this many milliseconds, complete with TIMEDOUT.
    pub timeout_ms: Option<u64>,
}

impl ConvertRequest {
    /// A plain conversion of `lock` to `mode`: no flags, no value, no timeout.
    pub fn new(lock: LockId, mode: Mode) -> ConvertRequest {
        ConvertRequest {
            lock,
            mode,
            flags: LockFlags::empty(),
            value: None,
            timeout_ms: None,
        }
    }
}

/// The release of a granted lock (R44, R45, R28, R29a).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockRequest {
    /// The lock.
    pub lock: LockId,
    /// VALBLK (write on unlock from PW/EX) and IVVALBLK.
    pub flags: LockFlags,
    /// With VALBLK: the value to write.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
}

impl UnlockRequest {
    /// A plain unlock of `lock`: no flags, no value.
    pub fn new(lock: LockId) -> UnlockRequest {
        UnlockRequest {
            lock,
            flags: LockFlags::empty(),
            value: None,
        }
    }
}
