//! The subject of an input: who asked for what, and which events answer it.

use dlock_core::{
    Command, ConvertRequest, Event, EventKind, Input, LockFlags, LockId, LockRequest, Mode,
    RequestId, SessionId,
};

/// Who asked for what in one input.
#[derive(Clone, Debug)]
pub(crate) enum Subject {
    Open(SessionId),
    /// Renew, close: one answer to `(session, request)`; the command's name.
    Simple(SessionId, RequestId, &'static str),
    Lock {
        session: SessionId,
        request: RequestId,
        lock: LockId,
        resource: Vec<u8>,
        mode: Mode,
    },
    Convert {
        session: SessionId,
        request: RequestId,
        lock: LockId,
        mode: Mode,
        quecvt: bool,
    },
    Unlock(SessionId, RequestId),
    Cancel(SessionId, RequestId, LockId),
    Tick,
}

impl Subject {
    /// The subject of `input`: a new session's id and a new lock's id are the input's index.
    pub(crate) fn of(input: &Input) -> Subject {
        match &input.command {
            Command::OpenSession { .. } => Subject::Open(SessionId(input.index)),
            Command::Renew { session, request } => Subject::Simple(*session, *request, "renew"),
            Command::CloseSession { session, request } => {
                Subject::Simple(*session, *request, "close session")
            }
            Command::Lock {
                session,
                request,
                args: LockRequest { resource, mode, .. },
                ..
            } => Subject::Lock {
                session: *session,
                request: *request,
                lock: LockId(input.index),
                resource: resource.clone(),
                mode: *mode,
            },
            Command::Convert {
                session,
                request,
                args: ConvertRequest {
                    lock, mode, flags, ..
                },
                ..
            } => Subject::Convert {
                session: *session,
                request: *request,
                lock: *lock,
                mode: *mode,
                quecvt: flags.contains(LockFlags::QUECVT),
            },
            Command::Unlock {
                session, request, ..
            } => Subject::Unlock(*session, *request),
            Command::Cancel {
                session,
                request,
                lock,
            } => Subject::Cancel(*session, *request, *lock),
            // Like a tick, a lease extension answers nobody; a batch of renewals answers
            // many (the checker touches each of their sessions).
            Command::Tick
            | Command::ExtendLeases { .. }
            | Command::Configure { .. }
            | Command::RenewMany { .. } => Subject::Tick,
        }
    }

    pub(crate) fn session(&self) -> Option<SessionId> {
        match self {
            Subject::Open(_) | Subject::Tick => None,
            Subject::Simple(s, _, _) | Subject::Unlock(s, _) | Subject::Cancel(s, _, _) => Some(*s),
            Subject::Lock { session, .. } | Subject::Convert { session, .. } => Some(*session),
        }
    }

    pub(crate) fn request(&self) -> Option<RequestId> {
        match self {
            Subject::Open(_) | Subject::Tick => None,
            Subject::Simple(_, r, _) | Subject::Unlock(_, r) | Subject::Cancel(_, r, _) => Some(*r),
            Subject::Lock { request, .. } | Subject::Convert { request, .. } => Some(*request),
        }
    }

    /// Whether `ev` is the immediate answer to this input's own request.
    pub(crate) fn is_answered_by(&self, ev: &Event) -> bool {
        let (Some(s), Some(r)) = (self.session(), self.request()) else {
            return false;
        };
        if ev.session != s || ev.request != Some(r) {
            return false;
        }
        match self {
            Subject::Lock { .. } | Subject::Convert { .. } => matches!(
                ev.kind,
                EventKind::Granted { .. }
                    | EventKind::Queued
                    | EventKind::NotQueued
                    | EventKind::Deadlock
                    | EventKind::Rejected { .. }
            ),
            Subject::Unlock(..) => {
                matches!(ev.kind, EventKind::Unlocked | EventKind::Rejected { .. })
            }
            Subject::Cancel(..) => matches!(ev.kind, EventKind::Rejected { .. }),
            Subject::Simple(..) => matches!(
                ev.kind,
                EventKind::Renewed { .. } | EventKind::SessionClosed | EventKind::Rejected { .. }
            ),
            Subject::Open(_) | Subject::Tick => false,
        }
    }
}
