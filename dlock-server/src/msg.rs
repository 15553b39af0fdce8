//! The messages between a connection task and the core task. Both sides import this module
//! and neither imports the other.

use dlock_core::{RequestId, SessionId};
use dlock_proto::{Hello, Refusal, Request, ServerMessage};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::time::Instant;

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
        /// When the connection read it (for the request service time).
        received: Instant,
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
    /// The client closed its sending half (EOF) after the requests already sent: the
    /// connection is detached from the session as for [`CoreMsg::Disconnected`], but closed by
    /// the core task, after the answers to those requests, so that a client that still reads
    /// gets them all before the connection ends.
    InputEnded {
        /// The session.
        session: SessionId,
        /// The connection.
        conn: ConnHandle,
    },
    /// A question of the HTTP listener (metrics, status page, JSON API), answered from the
    /// core's state without changing it.
    Status {
        /// The question.
        query: StatusQuery,
        /// Where the core task answers.
        reply: oneshot::Sender<StatusAnswer>,
    },
}

impl CoreMsg {
    /// When the connection read it, for a request (the start of its service time).
    pub(crate) fn received(&self) -> Option<Instant> {
        match self {
            CoreMsg::Request { received, .. } => Some(*received),
            _ => None,
        }
    }
}

/// A question of the HTTP listener. Every answer is bounded, whatever the table's size.
#[derive(Debug)]
pub(crate) enum StatusQuery {
    /// Counters, the census of the table and readiness, for `/metrics` and `/readyz`.
    Metrics,
    /// `/api/status`.
    Status,
    /// `/api/resources`: resources starting with `prefix` after `after`, at most `limit`.
    Resources {
        /// The name prefix.
        prefix: Vec<u8>,
        /// The last name of the previous page.
        after: Option<Vec<u8>>,
        /// Most resources.
        limit: usize,
    },
    /// `/api/sessions`: sessions after `after`, at most `limit`.
    Sessions {
        /// The last session of the previous page.
        after: Option<SessionId>,
        /// Most sessions.
        limit: usize,
    },
    /// `/api/waits`.
    Waits,
    /// The cluster as this member sees it, for a client's probe (`None`: a server alone).
    Cluster,
}

/// The core's answer to a [`StatusQuery`].
#[derive(Debug)]
pub(crate) enum StatusAnswer {
    /// For [`StatusQuery::Metrics`].
    Metrics(Box<CoreSnapshot>),
    /// For [`StatusQuery::Status`] (the connection count is the HTTP side's to fill in).
    Status(Box<dlock_proto::status::ServerStatus>),
    /// For [`StatusQuery::Resources`].
    Resources(dlock_proto::status::ResourcesView),
    /// For [`StatusQuery::Sessions`].
    Sessions(dlock_proto::status::SessionsView),
    /// For [`StatusQuery::Waits`].
    Waits(dlock_proto::status::WaitsView),
    /// For [`StatusQuery::Cluster`].
    Cluster(Option<dlock_proto::status::ClusterView>),
}

/// The core task's counters and the census of its table at one moment.
#[derive(Debug)]
pub(crate) struct CoreSnapshot {
    /// The counters.
    pub(crate) stats: crate::core_task::stats::CoreStats,
    /// Sessions, resources and locks by state and mode.
    pub(crate) census: dlock_core::Census,
    /// Why no locks are granted (the restart grace, or a cluster member that does not
    /// lead); `None` when they are.
    pub(crate) unready: Option<&'static str>,
    /// Failed writes of the fencing-token floor since the start.
    pub(crate) floor_write_failures: u64,
    /// Lock entries deadlock detection examined ([`dlock_core::Core::deadlock_search_steps`]).
    pub(crate) deadlock_search_steps: u64,
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
