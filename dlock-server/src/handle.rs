//! The core task's handle on a connection, and the close protocol that the connection's
//! writer and the core task share.
//!
//! Either side may close a connection; the first close decides what the writer sends last
//! (see [`ConnHandle::close`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use dlock_proto::ServerMessage;
use tokio_util::sync::CancellationToken;

use crate::metrics::NetMetrics;
use crate::outbox::Outbox;

/// Identifies a connection within one server run.
pub(crate) type ConnId = u64;

/// What the writer sends last before it closes the connection.
#[derive(Debug)]
pub(crate) struct Final {
    /// The last message, if any.
    pub(crate) msg: Option<ServerMessage>,
    /// Write the messages still queued in the outbox first.
    pub(crate) flush_first: bool,
}

/// State shared by a connection's reader, writer and the core task.
#[derive(Debug)]
pub(crate) struct ConnShared {
    /// Cancelled when the connection is to close; a child of the server's shutdown token.
    pub(crate) token: CancellationToken,
    /// The server's shutdown token.
    pub(crate) server_shutdown: CancellationToken,
    /// The peer's address.
    pub(crate) peer: SocketAddr,
    /// The connection layer's counters.
    pub(crate) net: Arc<NetMetrics>,
    fin: Mutex<Option<Final>>,
}

impl ConnShared {
    /// The shared state of a new connection from `peer`.
    pub(crate) fn new(
        server_shutdown: CancellationToken,
        peer: SocketAddr,
        net: Arc<NetMetrics>,
    ) -> ConnShared {
        ConnShared {
            token: server_shutdown.child_token(),
            server_shutdown,
            peer,
            net,
            fin: Mutex::new(None),
        }
    }

    /// Closes the connection (see [`ConnHandle::close`]). The first close wins.
    pub(crate) fn close(&self, msg: Option<ServerMessage>, flush_first: bool) {
        {
            let mut fin = self
                .fin
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if fin.is_none() && !self.token.is_cancelled() {
                *fin = Some(Final { msg, flush_first });
            }
        }
        self.token.cancel();
    }

    /// What the first close asked the writer to send last (taken once, by the writer).
    pub(crate) fn take_final(&self) -> Option<Final> {
        self.fin
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

/// The core task's handle on a connection attached to a session.
#[derive(Clone, Debug)]
pub(crate) struct ConnHandle {
    /// The connection's id.
    pub(crate) id: ConnId,
    /// The connection's outbox (bounded in bytes).
    pub(crate) outbox: Arc<Outbox>,
    /// State shared with the connection's task.
    pub(crate) shared: Arc<ConnShared>,
}

impl ConnHandle {
    /// Closes the connection: the writer sends `msg` (after the queued messages when
    /// `flush_first`), then closes. The first close wins.
    pub(crate) fn close(&self, msg: Option<ServerMessage>, flush_first: bool) {
        self.shared.close(msg, flush_first);
    }

    /// The peer's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.shared.peer
    }
}
