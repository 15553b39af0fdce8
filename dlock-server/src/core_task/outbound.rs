//! Delivery to connections: what the core task produces for a connection during one wake-up
//! is queued here and put into the connection's outbox at the end of the wake-up, in the
//! order it was produced.
//!
//! Why not at once: the connection's task would wake for the first message of a batch,
//! write it, sleep, and wake again for the next, while the core task is still applying the
//! batch. Delivered together, the messages of one wake-up reach the outbox in one burst and
//! the connection writes them with one write.
//!
//! A full outbox means a slow reader: the connection is closed with `SlowReader`; its
//! session stays (R51), its events stay in the replay buffer, and the client can resume.

use crate::complaints::{Complaint, complain};
use crate::outbox::{Outbox, PushError};
use dlock_core::SessionId;
use dlock_proto::{ProtocolError, ServerMessage};

use crate::handle::{ConnHandle, ConnId};

/// The largest item list kept for reuse.
const SPARE_KEEP: usize = 256;

/// One thing for a connection.
#[derive(Debug)]
enum Out {
    /// A message for the outbox.
    Message(ServerMessage),
    /// Close the connection (see [`ConnHandle::close`]).
    Close {
        last: Option<ServerMessage>,
        flush_first: bool,
    },
}

/// What one connection gets this wake-up.
#[derive(Debug)]
struct Pending {
    session: SessionId,
    handle: ConnHandle,
    items: Vec<Out>,
}

/// Everything queued for connections during one wake-up of the core task.
#[derive(Debug, Default)]
pub(super) struct Outbound {
    pending: Vec<Pending>,
    /// Where each connection's entry is in `pending`.
    index: super::FastMap<ConnId, usize>,
    /// Emptied item lists, reused so that a wake-up normally allocates none.
    spare: Vec<Vec<Out>>,
}

impl Outbound {
    fn items(&mut self, session: SessionId, handle: &ConnHandle) -> &mut Vec<Out> {
        let i = match self.index.get(&handle.id) {
            Some(&i) => i,
            None => {
                let i = self.pending.len();
                self.pending.push(Pending {
                    session,
                    handle: handle.clone(),
                    items: self.spare.pop().unwrap_or_default(),
                });
                self.index.insert(handle.id, i);
                i
            }
        };
        &mut self.pending[i].items
    }

    /// Queues `msg` for `session`'s connection `handle`.
    pub(super) fn send(&mut self, session: SessionId, handle: &ConnHandle, msg: ServerMessage) {
        self.items(session, handle).push(Out::Message(msg));
    }

    /// Queues the close of `handle` after what is queued for it so far: the writer sends
    /// `last` (after the outbox when `flush_first`), then closes.
    pub(super) fn close(
        &mut self,
        session: SessionId,
        handle: &ConnHandle,
        last: Option<ServerMessage>,
        flush_first: bool,
    ) {
        self.items(session, handle)
            .push(Out::Close { last, flush_first });
    }

    /// Puts everything queued into the outboxes, connection by connection, in order. Adds to
    /// `lost` the connections that could not take it all (a slow reader, closed here, or a
    /// connection already gone), with their sessions. Connection `here`, if any, is the one
    /// whose task is delivering: its writer is not woken (it looks before the task sleeps).
    pub(super) fn deliver(&mut self, lost: &mut Vec<(SessionId, ConnId)>, here: Option<ConnId>) {
        self.index.clear();
        for mut p in self.pending.drain(..) {
            let push = if here == Some(p.handle.id) {
                Outbox::try_push_here
            } else {
                Outbox::try_push
            };
            for item in p.items.drain(..) {
                match item {
                    Out::Message(msg) => match push(&p.handle.outbox, msg) {
                        Ok(()) => continue,
                        Err(PushError::Full(_)) => {
                            complain!(Complaint::SlowReader, peer = %p.handle.peer(), "client too slow reading; closing connection");
                            p.handle.close(
                                Some(ServerMessage::ProtocolError(ProtocolError::SlowReader)),
                                false,
                            );
                        }
                        Err(PushError::Closed) => {}
                    },
                    Out::Close { last, flush_first } => {
                        p.handle.close(last, flush_first);
                        continue;
                    }
                }
                // The rest would only follow a gap; the replay buffer has it all.
                lost.push((p.session, p.handle.id));
                break;
            }
            p.items.clear();
            if p.items.capacity() <= SPARE_KEEP {
                self.spare.push(p.items);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dlock_proto::{Reply, RequestId};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::handle::ConnShared;

    /// A connection whose outbox holds `capacity` pongs.
    fn conn(id: ConnId, capacity: usize) -> (ConnHandle, Arc<Outbox>) {
        let outbox = Arc::new(Outbox::new(capacity * crate::outbox::approx_size(&pong(0))));
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        let shared = Arc::new(ConnShared::new(
            CancellationToken::new(),
            peer,
            Default::default(),
        ));
        let handle = ConnHandle {
            id,
            outbox: outbox.clone(),
            shared,
        };
        (handle, outbox)
    }

    fn pong(id: u64) -> ServerMessage {
        ServerMessage::Reply {
            id: RequestId(id),
            body: Reply::Pong {
                server_version: String::new(),
            },
        }
    }

    fn drain(outbox: &mut Arc<Outbox>) -> Vec<ServerMessage> {
        outbox.try_take().into_iter().collect()
    }

    #[test]
    fn nothing_reaches_an_outbox_before_delivery_then_each_keeps_its_order() {
        let (a, mut rx_a) = conn(1, 8);
        let (b, mut rx_b) = conn(2, 8);
        let mut out = Outbound::default();
        out.send(SessionId(10), &a, pong(1));
        out.send(SessionId(20), &b, pong(2));
        out.send(SessionId(10), &a, pong(3));
        out.close(SessionId(10), &a, Some(pong(4)), true);
        assert!(drain(&mut rx_a).is_empty() && drain(&mut rx_b).is_empty());
        assert!(!a.shared.token.is_cancelled());

        let mut lost = Vec::new();
        out.deliver(&mut lost, None);
        assert!(lost.is_empty());
        assert_eq!(drain(&mut rx_a), vec![pong(1), pong(3)]);
        assert_eq!(drain(&mut rx_b), vec![pong(2)]);
        // The close came after a's messages: they are in the outbox, the last one is kept
        // for the writer.
        assert!(a.shared.token.is_cancelled());
        let last = a.shared.take_final().expect("a close");
        assert_eq!((last.msg, last.flush_first), (Some(pong(4)), true));
        assert!(!b.shared.token.is_cancelled());

        // A second wake-up starts empty.
        out.deliver(&mut lost, None);
        assert!(lost.is_empty() && drain(&mut rx_b).is_empty());
    }

    #[test]
    fn a_full_outbox_closes_the_slow_reader_and_reports_it_lost() {
        let (a, mut rx_a) = conn(1, 2);
        let (b, mut rx_b) = conn(2, 2);
        let mut out = Outbound::default();
        for i in 0..4 {
            out.send(SessionId(10), &a, pong(i));
        }
        out.send(SessionId(20), &b, pong(9));
        let mut lost = Vec::new();
        out.deliver(&mut lost, None);
        assert_eq!(lost, vec![(SessionId(10), 1)]);
        assert_eq!(drain(&mut rx_a), vec![pong(0), pong(1)]);
        let last = a.shared.take_final().expect("a close");
        assert_eq!(
            (last.msg, last.flush_first),
            (
                Some(ServerMessage::ProtocolError(ProtocolError::SlowReader)),
                false
            )
        );
        // Another connection is not affected.
        assert_eq!(drain(&mut rx_b), vec![pong(9)]);
        assert!(!b.shared.token.is_cancelled());
    }

    #[test]
    fn a_connection_that_is_gone_is_reported_lost() {
        let (a, outbox_a) = conn(1, 2);
        // The writer has ended.
        outbox_a.close();
        let mut out = Outbound::default();
        out.send(SessionId(10), &a, pong(1));
        let mut lost = Vec::new();
        out.deliver(&mut lost, None);
        assert_eq!(lost, vec![(SessionId(10), 1)]);
    }
}
