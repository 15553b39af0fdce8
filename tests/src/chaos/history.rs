//! The history a chaos run produces: the server's audit log (what the engine decided, in its
//! order) and the workload's own records (what the clients asked for and saw, with wall-clock
//! times). The formats and readers live in the `dlock-history` crate; this module adds what
//! ties them to the client and the server.

pub use dlock_history::{
    AuditLine, AuditStats, ClientRecord, LostKind, LostRecord, OpKind, OpOutcome, OpRecord,
    ReadError, read_audit_log, read_audit_logs,
};

/// Microseconds since the Unix epoch, the clock of every record (see the checker's docs for
/// why one clock is enough).
pub fn now_us() -> u64 {
    dlock_server::audit::now_us()
}

/// How the client's reason for a lost lock is recorded.
pub fn lost_kind(reason: dlock_client::LostReason) -> LostKind {
    use dlock_client::LostReason as R;
    match reason {
        R::SessionExpired => LostKind::SessionExpired,
        R::LocalLeaseLapsed => LostKind::LocalLeaseLapsed,
        R::ServerShutdown => LostKind::ServerShutdown,
        R::Released => LostKind::Released,
        _ => LostKind::Closed,
    }
}
