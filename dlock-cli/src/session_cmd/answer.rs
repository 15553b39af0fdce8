//! The output side of `dlock session`: one JSON object per line, each naming its event, and
//! the stable machine-readable names of failures.

use dlock_client::{Error, Mode, Refusal, Reject, ResourceInfo};
use dlock_proto::status::LockView;
use serde::Serialize;

use super::line::{Tag, show_name, to_hex};

/// One answer line: the tag it is about (none for a line without a valid tag) and the event.
#[derive(Debug, Serialize)]
pub struct Answer {
    /// The tag of the command or lock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

impl Answer {
    /// An answer about `tag`.
    pub fn about(tag: &Tag, event: Event) -> Answer {
        Answer {
            tag: Some(tag.to_string()),
            event,
        }
    }

    /// The JSON line, without its line break.
    pub fn to_line(&self) -> String {
        // Only strings, numbers, booleans and lists of them: serializing cannot fail.
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!(r#"{{"event":"error","error":"failed","message":"{e}"}}"#))
    }
}

/// Which request a refusal answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A new lock: no lock is left behind.
    Lock,
    /// A conversion: the lock stays at its old mode (`held`).
    Convert,
}

/// The events of a session, tagged `"event"` in the JSON.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A new request is queued.
    Waiting {
        /// The resource, in the form a line accepts.
        resource: String,
        /// The mode waited for.
        mode: String,
    },
    /// A new request was granted.
    Granted {
        /// The resource, in the form a line accepts.
        resource: String,
        /// The mode granted.
        mode: String,
        /// The fencing token of the grant.
        token: u64,
        /// The value block in hexadecimal, when the request asked to read it.
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<String>,
        /// Whether that value block was valid (R30), when it was read.
        #[serde(skip_serializing_if = "Option::is_none")]
        value_valid: Option<bool>,
    },
    /// A conversion is queued; the lock is still held in `held`.
    Converting {
        /// The mode asked for.
        mode: String,
        /// The mode still held meanwhile.
        held: String,
    },
    /// A conversion was granted.
    Converted {
        /// The mode now held.
        mode: String,
        /// The fencing token of the grant.
        token: u64,
        /// The value block in hexadecimal, when the conversion read it.
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<String>,
        /// Whether that value block was valid, when it was read.
        #[serde(skip_serializing_if = "Option::is_none")]
        value_valid: Option<bool>,
    },
    /// A lock or conversion was not granted.
    Refused {
        /// Which request.
        op: Op,
        /// The stable name of the outcome ([`error_name`]).
        error: &'static str,
        /// The client's words for it.
        message: String,
        /// For a conversion: the mode the lock keeps.
        #[serde(skip_serializing_if = "Option::is_none")]
        held: Option<String>,
    },
    /// The lock was released.
    Unlocked,
    /// A blocking notification: another request waits for `mode`, which this lock blocks.
    Blocking {
        /// The mode waited for.
        mode: String,
    },
    /// The lock was lost with the session.
    Lost {
        /// Why (session expired, local lease lapsed, ...).
        reason: String,
    },
    /// The answer to `query`.
    Resource {
        /// The resource, in the form a line accepts.
        resource: String,
        /// The value block in hexadecimal (absent when no lock on the resource exists).
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<String>,
        /// Whether the value block is valid.
        value_valid: bool,
        /// Granted locks.
        holders: Vec<LockView>,
        /// Converting locks, head first.
        converting: Vec<LockView>,
        /// Waiting locks, head first.
        waiting: Vec<LockView>,
        /// Locks not listed, present only when some are not: more than fit in one reply
        /// (the first of the grant queue, then of the convert queue, then of the wait
        /// queue are listed).
        #[serde(skip_serializing_if = "Option::is_none")]
        omitted: Option<u64>,
        /// The server clock of the answer; `for_ms` of each lock is measured against it.
        now_ms: u64,
    },
    /// The answer to `ping`.
    Pong {
        /// The server's version.
        server_version: String,
        /// The round trip in milliseconds.
        rtt_ms: f64,
    },
    /// A line that could not be carried out.
    Error {
        /// The line number (from 1).
        line: u64,
        /// The stable name of the failure.
        error: &'static str,
        /// What went wrong.
        message: String,
    },
}

impl Event {
    /// A granted new lock; `value` when it was read.
    pub fn granted(resource: &[u8], mode: Mode, token: u64, value: Option<(&[u8], bool)>) -> Event {
        Event::Granted {
            resource: show_name(resource),
            mode: mode.to_string(),
            token,
            value: value.map(|(v, _)| to_hex(v)),
            value_valid: value.map(|(_, valid)| valid),
        }
    }

    /// A granted conversion; `value` when it was read.
    pub fn converted(mode: Mode, token: u64, value: Option<(&[u8], bool)>) -> Event {
        Event::Converted {
            mode: mode.to_string(),
            token,
            value: value.map(|(v, _)| to_hex(v)),
            value_valid: value.map(|(_, valid)| valid),
        }
    }

    /// A request not granted, with `held` the mode a refused conversion leaves.
    pub fn refused(op: Op, e: &Error, held: Option<Mode>) -> Event {
        let message = match (op, e) {
            // A lock request is refused only before its grant: there was nothing to lose.
            (Op::Lock, Error::SessionLost) => {
                "session lost before the request was granted".to_owned()
            }
            _ => message(e),
        };
        Event::Refused {
            op,
            error: error_name(e),
            message,
            held: held.map(|m| m.to_string()),
        }
    }

    /// A line that failed with a client error.
    pub fn failed(line: u64, e: &Error) -> Event {
        Event::Error {
            line,
            error: error_name(e),
            message: message(e),
        }
    }

    /// A line that could not be carried out for a reason of the session itself.
    pub fn error(line: u64, error: &'static str, message: impl Into<String>) -> Event {
        Event::Error {
            line,
            error,
            message: message.into(),
        }
    }

    /// The answer to `query` for `name`: `info` as of the server clock `now_ms`.
    pub fn resource(name: &[u8], info: Option<&ResourceInfo>, now_ms: u64) -> Event {
        let locks = |ls: &[dlock_client::LockInfo]| -> Vec<LockView> {
            ls.iter().map(|l| LockView::new(l, now_ms)).collect()
        };
        Event::Resource {
            resource: show_name(name),
            value: info.map(|r| to_hex(&r.value)),
            value_valid: info.is_none_or(|r| r.value_valid),
            holders: info.map(|r| locks(&r.granted)).unwrap_or_default(),
            converting: info.map(|r| locks(&r.converting)).unwrap_or_default(),
            waiting: info.map(|r| locks(&r.waiting)).unwrap_or_default(),
            omitted: info.map(|r| r.omitted).filter(|&n| n > 0),
            now_ms,
        }
    }
}

/// The message of a client error in answers, in this command's terms where the SDK's would
/// name its own types.
fn message(e: &Error) -> String {
    match e {
        Error::Deadlock => "deadlock: this request was chosen as the victim (this session waiting \
                            for a lock it holds itself counts: give each contender a session of \
                            its own)"
            .to_owned(),
        e => e.to_string(),
    }
}

/// The stable name of a client error in answers: the DLM's outcomes (`not_queued`,
/// `timed_out`, `deadlock`, `cancelled`), a session that is gone (`lost`), the server's
/// refusals (`not_found`, `busy`, `not_pending`, `invalid`, `limit`, `not_permitted`,
/// `overloaded`, `too_large`), a server that cannot be reached or served nobody
/// (`unavailable`), and `failed` for anything else.
pub fn error_name(e: &Error) -> &'static str {
    match e {
        Error::NotQueued => "not_queued",
        Error::TimedOut => "timed_out",
        Error::Deadlock => "deadlock",
        Error::Cancelled => "cancelled",
        Error::SessionLost | Error::Closed => "lost",
        Error::NotFound => "not_found",
        Error::Busy => "busy",
        Error::NotPending => "not_pending",
        Error::Invalid(_) | Error::Refused(Refusal::Rejected(Reject::Invalid(_))) => "invalid",
        Error::LimitExceeded(_) => "limit",
        Error::PermissionDenied | Error::Refused(Refusal::Unauthenticated) => "not_permitted",
        Error::Overloaded => "overloaded",
        Error::TooLarge { .. } => "too_large",
        e if crate::error::is_unreachable(e) => "unavailable",
        _ => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(tag: Option<&str>, event: Event) -> String {
        Answer {
            tag: tag.map(str::to_owned),
            event,
        }
        .to_line()
    }

    #[test]
    fn answers_are_one_line_of_json_with_the_tag_first() {
        assert_eq!(
            json(Some("a"), Event::granted(b"deploy", Mode::EX, 12, None)),
            r#"{"tag":"a","event":"granted","resource":"deploy","mode":"EX","token":12}"#
        );
        assert_eq!(
            json(
                Some("a"),
                Event::granted(b"a b", Mode::PR, 3, Some((b"hi", false)))
            ),
            r#"{"tag":"a","event":"granted","resource":"hex:612062","mode":"PR","token":3,"value":"6869","value_valid":false}"#
        );
        assert_eq!(
            json(Some("b"), Event::refused(Op::Lock, &Error::NotQueued, None)),
            r#"{"tag":"b","event":"refused","op":"lock","error":"not_queued","message":"not granted at once and NOQUEUE was set"}"#
        );
        let convert = json(
            Some("a"),
            Event::refused(Op::Convert, &Error::Deadlock, Some(Mode::PR)),
        );
        assert!(
            convert
                .starts_with(r#"{"tag":"a","event":"refused","op":"convert","error":"deadlock","#),
            "{convert}"
        );
        assert!(convert.ends_with(r#","held":"PR"}"#), "{convert}");
        let lost = json(
            Some("a"),
            Event::refused(Op::Lock, &Error::SessionLost, None),
        );
        assert!(
            lost.contains(
                r#""error":"lost","message":"session lost before the request was granted""#
            ),
            "{lost}"
        );
        // In this command's terms: a session, not the SDK's `Client`.
        assert!(
            convert.contains("give each contender a session of its own")
                && !convert.contains("Client"),
            "{convert}"
        );
        assert_eq!(
            json(Some("a"), Event::Unlocked),
            r#"{"tag":"a","event":"unlocked"}"#
        );
        assert_eq!(
            json(None, Event::error(7, "syntax", "bad \"x\"\n")),
            r#"{"event":"error","line":7,"error":"syntax","message":"bad \"x\"\n"}"#
        );
        assert_eq!(
            json(Some("q"), Event::resource(b"gone", None, 5)),
            r#"{"tag":"q","event":"resource","resource":"gone","value_valid":true,"holders":[],"converting":[],"waiting":[],"now_ms":5}"#
        );
        // Locks too many for one reply are counted.
        let crowded = ResourceInfo {
            name: b"hot".to_vec(),
            value: vec![0xab],
            value_valid: true,
            granted: Vec::new(),
            converting: Vec::new(),
            waiting: Vec::new(),
            omitted: 9,
        };
        assert_eq!(
            json(Some("q"), Event::resource(b"hot", Some(&crowded), 5)),
            r#"{"tag":"q","event":"resource","resource":"hot","value":"ab","value_valid":true,"holders":[],"converting":[],"waiting":[],"omitted":9,"now_ms":5}"#
        );
    }

    #[test]
    fn error_names_are_stable() {
        use dlock_client::{Invalid, Limit};
        let cases = [
            (Error::NotQueued, "not_queued"),
            (Error::TimedOut, "timed_out"),
            (Error::Deadlock, "deadlock"),
            (Error::Cancelled, "cancelled"),
            (Error::SessionLost, "lost"),
            (Error::NotFound, "not_found"),
            (Error::Busy, "busy"),
            (Error::NotPending, "not_pending"),
            (Error::Invalid(Invalid::EmptyName), "invalid"),
            (Error::LimitExceeded(Limit::LocksPerSession), "limit"),
            (Error::PermissionDenied, "not_permitted"),
            (Error::Refused(Refusal::Unauthenticated), "not_permitted"),
            (Error::Disconnected, "unavailable"),
            (Error::RequestTimeout, "unavailable"),
            (Error::Overloaded, "overloaded"),
            (Error::Protocol("x".into()), "failed"),
        ];
        for (e, name) in cases {
            assert_eq!(error_name(&e), name, "{e:?}");
        }
    }
}
