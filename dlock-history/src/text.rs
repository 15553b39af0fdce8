//! How counterexamples name events, requests and lock states: in words, not in the
//! types' `Debug` form, and ids by their numbers (`request 2 of session 1`).

use std::fmt;

use dlock_core::{Event, EventKind, RequestId};

use crate::model::State;
use crate::subject::Subject;

/// `request N`, or `no request`.
pub(crate) fn request(r: Option<RequestId>) -> String {
    match r {
        Some(r) => format!("request {}", r.0),
        None => "no request".to_owned(),
    }
}

/// What an event says, without whom it concerns.
pub(crate) fn kind(kind: &EventKind) -> String {
    match kind {
        EventKind::SessionOpened { ttl_ms } => format!("session opened (lease {ttl_ms} ms)"),
        EventKind::Renewed { ttl_ms } => format!("renewed (lease {ttl_ms} ms)"),
        EventKind::SessionClosed => "session closed".to_owned(),
        EventKind::SessionExpired => "session expired".to_owned(),
        EventKind::Granted { mode, token, .. } => format!("granted {mode} with token {token}"),
        EventKind::Queued => "queued".to_owned(),
        EventKind::NotQueued => "not queued".to_owned(),
        EventKind::Deadlock => "deadlock".to_owned(),
        EventKind::Cancelled => "cancelled".to_owned(),
        EventKind::TimedOut => "timed out".to_owned(),
        EventKind::Unlocked => "unlocked".to_owned(),
        EventKind::Blocking { mode } => format!("blocking a request for {mode}"),
        EventKind::Rejected { reason } => format!("rejected ({reason})"),
    }
}

/// One event: what it says and whom it concerns.
pub(crate) fn event(ev: &Event) -> String {
    let mut out = format!("{} (session {}", kind(&ev.kind), ev.session.0);
    if let Some(r) = ev.request {
        out.push_str(&format!(", request {}", r.0));
    }
    if let Some(l) = ev.lock {
        out.push_str(&format!(", lock {}", l.0));
    }
    out.push(')');
    out
}

/// The events of an input, in order, or `no events`.
pub(crate) fn events(evs: &[Event]) -> String {
    if evs.is_empty() {
        return "no events".to_owned();
    }
    evs.iter().map(event).collect::<Vec<_>>().join("; ")
}

/// Items separated by `; `, or `none`.
pub(crate) fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join("; ")
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Waiting { mode, request } => {
                write!(f, "waiting for {mode} (request {})", request.0)
            }
            State::Granted { mode } => write!(f, "granted {mode}"),
            State::Converting { from, to, request } => {
                write!(f, "converting {from} to {to} (request {})", request.0)
            }
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Open(s) => write!(f, "open session {}", s.0),
            Subject::Simple(_, _, name) => f.write_str(name),
            Subject::Lock { resource, mode, .. } => {
                write!(f, "lock {} {mode}", crate::model::show(resource))
            }
            Subject::Convert {
                lock, mode, quecvt, ..
            } => write!(
                f,
                "convert lock {} to {mode}{}",
                lock.0,
                if *quecvt { " (QUECVT)" } else { "" }
            ),
            Subject::Unlock(..) => write!(f, "unlock"),
            Subject::Cancel(_, _, lock) => write!(f, "cancel lock {}", lock.0),
            Subject::Tick => write!(f, "tick"),
        }
    }
}
