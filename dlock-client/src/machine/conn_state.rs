//! The connection state of the session machine: one enum of the states it can really be in.

use tokio::time::Instant;

use crate::op::Responder;

/// Where the machine stands with its connection to the server.
///
/// A session (if any) lives beside this state: it survives `Backoff`, `Connecting` and
/// `Handshaking` (to be resumed) and is only used to send in `Connected` and `Closing`.
#[derive(Debug)]
pub(crate) enum ConnState {
    /// No connection; the next attempt starts at `retry_at`.
    Backoff { retry_at: Instant },
    /// The driver is opening a TCP connection; the attempt is given up at `deadline`.
    Connecting { deadline: Instant },
    /// Connected, `Hello` sent at `sent_at` (the server opens or resumes the session after
    /// that); waiting for `Welcome` until `deadline`.
    Handshaking { sent_at: Instant, deadline: Instant },
    /// Connected with a session: requests flow.
    Connected,
    /// [`Client::close`](crate::Client::close): `Goodbye` is out, the connection stays up
    /// until its answer or `deadline`; then `reply` is answered.
    Closing { reply: Responder, deadline: Instant },
    /// Done: the driver stops.
    Closed,
}

impl ConnState {
    /// Whether the driver holds a connection or a connection attempt for this state.
    pub(crate) fn has_connection(&self) -> bool {
        matches!(
            self,
            ConnState::Connecting { .. }
                | ConnState::Handshaking { .. }
                | ConnState::Connected
                | ConnState::Closing { .. }
        )
    }

    /// Whether requests of the session can be sent.
    pub(crate) fn can_send(&self) -> bool {
        matches!(self, ConnState::Connected | ConnState::Closing { .. })
    }

    /// Whether the machine is closing or closed (new work is refused).
    pub(crate) fn is_closing(&self) -> bool {
        matches!(self, ConnState::Closing { .. } | ConnState::Closed)
    }

    /// The instant at which this state times out by itself, if any.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self {
            ConnState::Backoff { retry_at } => Some(*retry_at),
            ConnState::Connecting { deadline }
            | ConnState::Handshaking { deadline, .. }
            | ConnState::Closing { deadline, .. } => Some(*deadline),
            ConnState::Connected | ConnState::Closed => None,
        }
    }
}
