//! Delivery to a connection's outbox, and what a full outbox means: a slow reader.

use dlock_proto::{ProtocolError, ServerMessage};
use tokio::sync::mpsc;
use tracing::warn;

use crate::handle::ConnHandle;

/// Queues `msg` on a connection's outbox. A full outbox disconnects a slow reader; its
/// session stays (R51) and the client can resume. `false` if the connection is detached.
pub(super) fn push(handle: &ConnHandle, msg: ServerMessage) -> bool {
    match handle.tx.try_send(msg) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            warn!(peer = %handle.peer(), "client too slow reading; closing connection");
            handle.close(
                Some(ServerMessage::ProtocolError(ProtocolError::SlowReader)),
                false,
            );
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}
