//! The history a chaos run produces: the server's audit log (what the engine decided, in its
//! order) and the workload's own records (what the clients asked for and saw, with wall-clock
//! times).

use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, Result, bail};
use dlock_core::{FencingToken, LockId, Mode, SessionId};
pub use dlock_server::audit::AuditLine;
use serde::{Deserialize, Serialize};

/// Microseconds since the Unix epoch, the clock of every record (see the checker's docs for
/// why one clock is enough).
pub fn now_us() -> u64 {
    dlock_server::audit::now_us()
}

/// Reads an audit log. A line that does not parse is accepted only where `kill -9` can leave
/// one: as the very last line, or right before a [`AuditLine::Start`] of the next server
/// lifetime; such lines are counted in `torn`. Calls `each` for every parsed line in order,
/// so that a long log never has to be held in memory.
pub fn read_audit_log(path: &Path, mut each: impl FnMut(AuditLine)) -> Result<AuditStats> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("opening audit log {}", path.display()))?;
    let mut stats = AuditStats::default();
    let mut pending_torn: Option<(usize, String)> = None;
    for (n, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.with_context(|| format!("reading audit log {}", path.display()))?;
        match serde_json::from_slice::<AuditLine>(&line) {
            Ok(parsed) => {
                if let Some((at, text)) = pending_torn.take() {
                    if !matches!(parsed, AuditLine::Start { .. }) {
                        bail!("audit log line {} does not parse: {text:?}", at + 1);
                    }
                    stats.torn += 1;
                }
                match parsed {
                    AuditLine::Start { .. } => stats.starts += 1,
                    AuditLine::Apply { .. } => stats.applied += 1,
                    AuditLine::Rotated { .. } | AuditLine::Gap { .. } => {}
                }
                each(parsed);
            }
            Err(_) if line.is_empty() => {}
            Err(_) => {
                if let Some((at, text)) = pending_torn.take() {
                    bail!("audit log line {} does not parse: {text:?}", at + 1);
                }
                let text = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
                pending_torn = Some((n, text));
            }
        }
    }
    if pending_torn.is_some() {
        stats.torn += 1;
    }
    Ok(stats)
}

/// Counts of an audit log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditStats {
    /// Applied inputs.
    pub applied: u64,
    /// Server lifetimes (start lines).
    pub starts: u64,
    /// Lines torn by a crash (skipped).
    pub torn: u64,
}

/// What a workload client did or saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRecord {
    /// One operation, from its start to its completion.
    Op(OpRecord),
    /// A held lock's [`lost`](dlock_client::LockGuard::lost) future completed.
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

impl From<dlock_client::LostReason> for LostKind {
    fn from(r: dlock_client::LostReason) -> LostKind {
        use dlock_client::LostReason as R;
        match r {
            R::SessionExpired => LostKind::SessionExpired,
            R::LocalLeaseLapsed => LostKind::LocalLeaseLapsed,
            R::ServerShutdown => LostKind::ServerShutdown,
            R::Released => LostKind::Released,
            _ => LostKind::Closed,
        }
    }
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
