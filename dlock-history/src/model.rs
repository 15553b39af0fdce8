//! The checker's own model of the lock table, rebuilt from the audit log: every lock's
//! state, every resource's holders and queues, every live session's lease, and what is kept
//! of past grants for the checks that look back.

use std::collections::{BTreeSet, VecDeque};

use dlock_core::{FencingToken, LockId, Mode, RequestId, SessionId};

/// Where an audit line was replayed: `seq` orders every line fed to the checker; `file`
/// (an index into the checker's file names) and `line` say where it came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pos {
    pub(crate) seq: u64,
    pub(crate) file: usize,
    pub(crate) line: u64,
}

/// A lock as the model sees it.
#[derive(Clone, Debug)]
pub(crate) struct LockModel {
    pub(crate) session: SessionId,
    pub(crate) resource: Vec<u8>,
    pub(crate) state: State,
    /// Where it entered its current state (for counterexamples).
    pub(crate) since: Pos,
}

/// The state of a lock: what it waits for, or what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Waiting {
        mode: Mode,
        request: RequestId,
    },
    Granted {
        mode: Mode,
    },
    Converting {
        from: Mode,
        to: Mode,
        request: RequestId,
    },
}

impl State {
    /// The mode held: a converting lock still holds its old mode (R9, R18).
    pub(crate) fn held(self) -> Option<Mode> {
        match self {
            State::Waiting { .. } => None,
            State::Granted { mode } => Some(mode),
            State::Converting { from, .. } => Some(from),
        }
    }

    /// The request waiting for an answer, if any.
    pub(crate) fn pending(self) -> Option<RequestId> {
        match self {
            State::Waiting { request, .. } | State::Converting { request, .. } => Some(request),
            State::Granted { .. } => None,
        }
    }
}

/// A resource: its holders and its two queues (R10–R13).
#[derive(Clone, Debug, Default)]
pub(crate) struct ResModel {
    /// Locks holding a mode (granted or converting).
    pub(crate) holders: BTreeSet<LockId>,
    pub(crate) convert: VecDeque<LockId>,
    pub(crate) wait: VecDeque<LockId>,
}

impl ResModel {
    pub(crate) fn is_empty(&self) -> bool {
        self.holders.is_empty() && self.convert.is_empty() && self.wait.is_empty()
    }
}

/// A live session's lease.
#[derive(Clone, Debug)]
pub(crate) struct SessionModel {
    pub(crate) ttl_ms: u64,
    pub(crate) last_touch_us: u64,
    /// When the lease ends in engine time (core clock milliseconds): what a cluster's
    /// leases are judged by.
    pub(crate) expires_ms: u64,
    /// The highest id of a `Lock`, `Convert`, `Unlock` or `Cancel` applied for the session
    /// (a cluster's engine answers one at or below it again, changing nothing: exactly once
    /// across fail-over).
    pub(crate) max_request: u64,
    /// A lateness violation was already reported for the current lease.
    pub(crate) late_reported: bool,
}

/// A grant, kept for property 5.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GrantRec {
    pub(crate) at: Pos,
    pub(crate) ts_us: u64,
    pub(crate) lifetime: u64,
    pub(crate) lock: LockId,
    pub(crate) session: SessionId,
    pub(crate) mode: Mode,
}

/// What is remembered of every lock ever granted, for the client-record cross-checks.
#[derive(Clone, Debug)]
pub(crate) struct LockHistory {
    pub(crate) resource: Vec<u8>,
    pub(crate) session: SessionId,
    pub(crate) last_grant: Pos,
    pub(crate) lifetime: u64,
    pub(crate) tokens: Vec<FencingToken>,
    /// The mode of its latest grant (what the server last gave it).
    pub(crate) mode: Mode,
    /// Its owner released it (UNLOCKED, or a Goodbye ending its session): from then on its
    /// owner asked not to hold it.
    pub(crate) released_by_owner: bool,
}

/// A resource name for messages.
pub(crate) fn show(name: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(name))
}
