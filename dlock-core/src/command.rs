//! Inputs to the engine.

use serde::{Deserialize, Serialize};

use crate::{ConvertRequest, LockId, LockRequest, RequestId, SessionId, UnlockRequest};

/// One input to [`Core::apply`](crate::Core::apply).
///
/// `index` must grow strictly from one applied input to the next (gaps are allowed); an input
/// whose index is at or below the last applied one is ignored and produces no events.
/// `now_ms` is the driver's clock in milliseconds; the core keeps `max(clock, now_ms)`, so time
/// never runs backwards inside it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    /// Position of this input in the total order of inputs.
    pub index: u64,
    /// The driver's clock, in milliseconds.
    pub now_ms: u64,
    /// What to do.
    pub command: Command,
}

/// A command for the engine. This enum only grows: variants keep their meaning forever, so
/// that a log of inputs can always be replayed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Open a session. Its id is `SessionId(input.index)`; the reply is
    /// [`EventKind::SessionOpened`](crate::EventKind::SessionOpened) or a rejection, addressed
    /// to that id.
    OpenSession {
        /// A human-readable name (`user@host:pid`), shown in queries.
        name: String,
        /// Requested lease length; must lie within the configured bounds.
        ttl_ms: u64,
        /// Secret a reconnecting client must present to resume the session (chosen by the driver).
        secret: u128,
    },
    /// Renew a session's lease (any command of a session also renews it).
    Renew {
        /// The session.
        session: SessionId,
        /// Echoed in the reply.
        request: RequestId,
    },
    /// End a session cleanly: every lock it owns is released as in R50, at once.
    CloseSession {
        /// The session.
        session: SessionId,
        /// Echoed in the reply.
        request: RequestId,
    },
    /// Request a new lock on a resource (R10, R22). The lock's id is `LockId(input.index)`.
    Lock {
        /// The owner.
        session: SessionId,
        /// Echoed in every event about this request.
        request: RequestId,
        /// What to lock, how.
        args: LockRequest,
    },
    /// Convert a granted lock to another mode (R11, R15..R21).
    Convert {
        /// The owner.
        session: SessionId,
        /// Echoed in every event about this conversion.
        request: RequestId,
        /// Which lock, to what.
        args: ConvertRequest,
    },
    /// Release a granted lock (R44, R45, R28, R29a).
    Unlock {
        /// The owner.
        session: SessionId,
        /// Echoed in the reply.
        request: RequestId,
        /// Which lock, with what value.
        args: UnlockRequest,
    },
    /// Cancel a lock's pending request or conversion (R46..R48).
    Cancel {
        /// The owner.
        session: SessionId,
        /// Echoed in the reply.
        request: RequestId,
        /// The lock.
        lock: LockId,
    },
    /// Do time-driven work that is due: lease expiry and request timeouts. Time-driven work
    /// happens only here; a spurious tick does nothing.
    Tick,
    /// Give every live session's lease at least `grace_ms` more from now: each lease ends no
    /// earlier than `clock + grace_ms` (a later end is kept). A replicated cluster applies
    /// it as the first command of each new leader's term, so that a client still retrying
    /// does not lose its locks to the fail-over. Produces no events; applying it again does
    /// nothing more.
    ExtendLeases {
        /// The grace, in milliseconds.
        grace_ms: u64,
    },
    /// Replace the engine's configuration (limits, lease bounds, value block length): every
    /// later input is judged by it, while what exists stays (locks over a lowered limit are
    /// kept; new ones are refused). A replicated cluster applies its leader's configuration
    /// through the log when a term starts, so every replica decides by the same settings.
    /// Produces no events. Keep `lvb_len` once value blocks exist.
    Configure {
        /// The new configuration.
        config: Box<crate::Config>,
    },
    /// Renew many sessions' leases at once, each exactly as [`Command::Renew`] would (one
    /// `Renewed`, or a rejection for a session that is gone, per entry, in order). A
    /// replicated cluster's leader gathers renewals for a few milliseconds into one log
    /// entry instead of one entry each.
    RenewMany {
        /// `(session, request)` pairs, each answered as a `Renew` of that session would be.
        renewals: Vec<(SessionId, RequestId)>,
    },
}
