//! The messages between a connection task and the core task. Both sides import this module
//! and neither imports the other.

use dlock_core::{RequestId, SessionId};
use dlock_proto::{Hello, Refusal, Request, ServerMessage};
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use crate::handle::{ConnHandle, ConnId};

/// A message from a connection to the core task.
#[derive(Debug)]
pub(crate) enum CoreMsg {
    /// A validated `Hello` (protocol version already checked).
    Hello {
        /// The connection that sent it.
        conn: ConnHandle,
        /// The `Hello`.
        hello: Hello,
        /// The identity the client proved (token or certificate), if the server
        /// authenticates; `None` on an open server.
        identity: Option<std::sync::Arc<str>>,
        /// Where the core task answers.
        reply: oneshot::Sender<HelloOutcome>,
    },
    /// The connection has queued `Welcome` and the replay up to `up_to_seq`; live events may
    /// flow now.
    ReplayDone {
        /// The session.
        session: SessionId,
        /// The connection.
        conn: ConnId,
        /// The last replayed event.
        up_to_seq: u64,
    },
    /// A client request.
    Request {
        /// The session.
        session: SessionId,
        /// The connection.
        conn: ConnId,
        /// The client's request id.
        id: RequestId,
        /// The request.
        body: Request,
        /// One of the connection's in-flight slots, given back when the core task drops the
        /// message after handling it.
        slot: OwnedSemaphorePermit,
    },
    /// The client acknowledged every event up to `seq`.
    Ack {
        /// The session.
        session: SessionId,
        /// The connection.
        conn: ConnId,
        /// The acknowledged event.
        seq: u64,
    },
    /// The connection is gone.
    Disconnected {
        /// The session.
        session: SessionId,
        /// The connection.
        conn: ConnId,
    },
}

/// The core's answer to a `Hello`.
#[derive(Debug)]
pub(crate) enum HelloOutcome {
    /// `messages` = `Welcome` and the replayed events, to be sent in order.
    Welcome {
        /// The session opened or resumed.
        session: SessionId,
        /// `Welcome`, then the replayed events.
        messages: Vec<ServerMessage>,
        /// The `seq` of the last replayed event (0 if none).
        up_to_seq: u64,
    },
    /// The session was not opened or resumed.
    Refused(Refusal),
}
