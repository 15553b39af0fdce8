//! [`Outbox`]: the messages queued for one connection's writer, bounded in bytes.
//!
//! The core task and the connection's reader put messages in; the connection's writer takes
//! them all out at once. The bound is in (approximate) bytes, not messages: a client that
//! asks for large answers and does not read them is cut off after `max_bytes`, however few
//! messages that is, so a slow reader costs the server at most its outbox. A single message
//! larger than the bound is still accepted into an empty outbox (a reply is never larger
//! than a frame), so a client that reads keeps working whatever the frame limit.
//!
//! An empty outbox holds no memory: the queue is handed to the writer whole and a new, empty
//! one takes its place.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use dlock_proto::{EventKind, Reply, ServerMessage};
use tokio::sync::Notify;

/// Why a message was not queued.
#[derive(Debug)]
pub(crate) enum PushError {
    /// The outbox is over its byte bound: the reader is too slow.
    Full(ServerMessage),
    /// The writer is gone.
    Closed,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<ServerMessage>,
    bytes: usize,
    /// The part of `bytes` above the reserve, taken from the shared pool.
    pooled: usize,
    closed: bool,
    /// The writer, waiting for a message.
    writer: Option<Waker>,
}

/// Bytes shared by every connection's outbox beyond its own reserve: the memory budget's
/// share for outboxes. A push that needs more than is left fails as if its outbox were full.
#[derive(Debug)]
pub(crate) struct BytePool {
    available: AtomicUsize,
}

impl BytePool {
    /// A pool of `bytes`.
    pub(crate) fn new(bytes: usize) -> BytePool {
        BytePool {
            available: AtomicUsize::new(bytes),
        }
    }

    fn try_take(&self, n: usize) -> bool {
        self.available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| a.checked_sub(n))
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.available.fetch_add(n, Ordering::AcqRel);
    }

    /// Bytes not taken.
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.available.load(Ordering::Acquire)
    }
}

/// Where an outbox's bytes beyond its reserve come from.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Bytes the outbox may always hold.
    pub(crate) reserve: usize,
    /// The pool for the rest.
    pub(crate) pool: Arc<BytePool>,
}

/// A connection's outbox (see the module docs).
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Wakes a pusher waiting for room.
    room: Notify,
    max_bytes: usize,
    /// `None`: every byte up to `max_bytes` is the outbox's own.
    shared: Option<Shared>,
}

impl Outbox {
    /// An empty outbox that holds at most about `max_bytes`.
    #[cfg(test)]
    pub(crate) fn new(max_bytes: usize) -> Outbox {
        Outbox::with_pool(max_bytes, None)
    }

    /// An empty outbox that holds at most about `max_bytes`, of which all but its reserve
    /// come from a pool shared with other outboxes (if `shared` is set).
    pub(crate) fn with_pool(max_bytes: usize, shared: Option<Shared>) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            room: Notify::new(),
            max_bytes,
            shared,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `msg` unless the outbox is over its bound or closed.
    pub(crate) fn try_push(&self, msg: ServerMessage) -> Result<(), PushError> {
        self.push_and_wake(msg, true)
    }

    /// Queues `msg` as [`try_push`](Self::try_push) does, but does not wake the writer: for
    /// the connection's own task, whose writer looks at the outbox again before the task
    /// sleeps (waking a task from itself costs it a trip through the scheduler, and the
    /// scheduler a wake-up of another worker to share it).
    pub(crate) fn try_push_here(&self, msg: ServerMessage) -> Result<(), PushError> {
        self.push_and_wake(msg, false)
    }

    fn push_and_wake(&self, msg: ServerMessage, wake: bool) -> Result<(), PushError> {
        let size = approx_size(&msg);
        let writer = {
            let mut s = self.lock();
            if s.closed {
                return Err(PushError::Closed);
            }
            if !s.queue.is_empty() && s.bytes + size > self.max_bytes {
                return Err(PushError::Full(msg));
            }
            let mut pooled = s.pooled;
            // Into an empty outbox one message always goes (a reply is never larger than
            // a frame), so a client that reads is served even when the pool is used up.
            if let Some(shared) = self.shared.as_ref().filter(|_| !s.queue.is_empty()) {
                let beyond = (s.bytes + size).saturating_sub(shared.reserve);
                let more = beyond.saturating_sub(s.pooled);
                if more > 0 {
                    if !shared.pool.try_take(more) {
                        return Err(PushError::Full(msg));
                    }
                    pooled += more;
                }
            }
            s.pooled = pooled;
            s.bytes += size;
            s.queue.push_back(msg);
            if wake { s.writer.take() } else { None }
        };
        if let Some(writer) = writer {
            writer.wake();
        }
        Ok(())
    }

    /// Queues `msg`, waiting for room if the outbox is full. `Err` if the writer is gone.
    pub(crate) async fn push(&self, mut msg: ServerMessage) -> Result<(), ()> {
        loop {
            match self.try_push(msg) {
                Ok(()) => return Ok(()),
                Err(PushError::Closed) => return Err(()),
                Err(PushError::Full(m)) => msg = m,
            }
            self.room.notified().await;
        }
    }

    /// Takes every queued message (waiting until there is one). Empty when the outbox is
    /// closed and drained. The queue is looked at every time this is polled, so a message
    /// pushed without waking (`try_push_here`) is found at the writer's next poll.
    pub(crate) async fn take(&self) -> VecDeque<ServerMessage> {
        std::future::poll_fn(|cx| self.poll_take(cx)).await
    }

    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<VecDeque<ServerMessage>> {
        let mut s = self.lock();
        if !s.queue.is_empty() || s.closed {
            return Poll::Ready(self.take_locked(&mut s));
        }
        match &mut s.writer {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Takes every queued message without waiting.
    pub(crate) fn try_take(&self) -> VecDeque<ServerMessage> {
        let mut s = self.lock();
        self.take_locked(&mut s)
    }

    fn take_locked(&self, s: &mut State) -> VecDeque<ServerMessage> {
        s.bytes = 0;
        if let Some(shared) = &self.shared {
            shared.pool.give(std::mem::take(&mut s.pooled));
        }
        let taken = std::mem::take(&mut s.queue);
        if !taken.is_empty() {
            self.room.notify_one();
        }
        taken
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().queue.is_empty()
    }

    /// Waits until at most `limit` bytes are queued (or the outbox is closed).
    pub(crate) async fn drained_to(&self, limit: usize) {
        loop {
            {
                let s = self.lock();
                if s.bytes <= limit || s.closed {
                    return;
                }
            }
            self.room.notified().await;
        }
    }

    /// Whether at most `limit` bytes are queued (or the outbox is closed): what
    /// [`drained_to`](Self::drained_to) waits for, checked without waiting.
    pub(crate) fn is_drained_to(&self, limit: usize) -> bool {
        let s = self.lock();
        s.bytes <= limit || s.closed
    }

    /// The writer is gone: later pushes fail, a waiting pusher gives up.
    pub(crate) fn close(&self) {
        let writer = {
            let mut s = self.lock();
            s.closed = true;
            s.writer.take()
        };
        self.room.notify_one();
        if let Some(writer) = writer {
            writer.wake();
        }
    }
}

/// About how many bytes `msg` holds: its own size plus what it owns on the heap.
pub(crate) fn approx_size(msg: &ServerMessage) -> usize {
    let heap = match msg {
        ServerMessage::Event { event, .. } => event_heap_bytes(&event.kind),
        ServerMessage::Reply { body, .. } => reply_payload(body),
        ServerMessage::Welcome(w) => w.server_version.len(),
        _ => 0,
    };
    std::mem::size_of::<ServerMessage>() + heap
}

/// What an event owns on the heap, in bytes.
pub(crate) fn event_heap_bytes(kind: &EventKind) -> usize {
    match kind {
        EventKind::Granted { value, .. } => value.as_ref().map_or(0, Vec::len),
        _ => 0,
    }
}

/// An upper bound of the variable part of a reply, in bytes, both in memory and encoded (the
/// query views' `approx_size` bound their encoding).
pub(crate) fn reply_payload(body: &Reply) -> usize {
    match body {
        Reply::Resources { resources, .. } => resources
            .iter()
            .map(dlock_proto::ResourceInfo::approx_size)
            .sum(),
        Reply::Session { session, .. } => session
            .as_ref()
            .map_or(0, dlock_proto::SessionInfo::approx_size),
        Reply::Pong { server_version } => server_version.len(),
        Reply::Cluster(view) => view.as_ref().map_or(0, |v| {
            v.members
                .iter()
                .map(|m| 32 + m.client_addr.len() + m.raft_addr.len())
                .sum()
        }),
        Reply::Error(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use dlock_proto::RequestId;

    use super::*;

    fn pong(id: u64, version_len: usize) -> ServerMessage {
        ServerMessage::Reply {
            id: RequestId(id),
            body: Reply::Pong {
                server_version: "v".repeat(version_len),
            },
        }
    }

    #[test]
    fn beyond_its_reserve_an_outbox_draws_on_the_shared_pool_and_gives_back() {
        let one = approx_size(&pong(0, 1000));
        let pool = Arc::new(BytePool::new(2 * one));
        let shared = |reserve| Shared {
            reserve,
            pool: pool.clone(),
        };
        let a = Outbox::with_pool(100 * one, Some(shared(2 * one)));
        let b = Outbox::with_pool(100 * one, Some(shared(2 * one)));
        // a: two in its reserve, two from the pool; the pool is then empty.
        for i in 0..4 {
            a.try_push(pong(i, 1000)).unwrap();
        }
        assert_eq!(pool.available(), 0);
        assert!(matches!(a.try_push(pong(4, 1000)), Err(PushError::Full(_))));
        // b still has its own reserve, but nothing beyond it.
        b.try_push(pong(0, 1000)).unwrap();
        b.try_push(pong(1, 1000)).unwrap();
        assert!(matches!(b.try_push(pong(2, 1000)), Err(PushError::Full(_))));
        // a's writer takes its messages: the pool is whole again and b may grow.
        assert_eq!(a.try_take().len(), 4);
        assert_eq!(pool.available(), 2 * one);
        b.try_push(pong(2, 1000)).unwrap();
        assert_eq!(pool.available(), one);
    }

    #[test]
    fn bounded_in_bytes_not_messages() {
        let one = approx_size(&pong(0, 1000));
        let outbox = Outbox::new(3 * one);
        for i in 0..3 {
            outbox.try_push(pong(i, 1000)).unwrap();
        }
        assert!(matches!(
            outbox.try_push(pong(3, 1000)),
            Err(PushError::Full(_))
        ));
        // Small messages are bounded by the same bytes: many more fit in the same outbox.
        let small = Outbox::new(3 * one);
        let n = (0..)
            .take_while(|&i| small.try_push(pong(i, 0)).is_ok())
            .count();
        assert!(n > 10, "{n} small messages");
    }

    #[test]
    fn one_message_larger_than_the_bound_passes_an_empty_outbox() {
        let outbox = Outbox::new(10);
        outbox.try_push(pong(1, 5000)).unwrap();
        assert!(matches!(
            outbox.try_push(pong(2, 0)),
            Err(PushError::Full(_))
        ));
        assert_eq!(outbox.try_take().len(), 1);
        outbox.try_push(pong(2, 0)).unwrap();
    }

    #[test]
    fn taking_empties_the_queue_in_order_and_frees_it() {
        let outbox = Outbox::new(1 << 20);
        for i in 0..5 {
            outbox.try_push(pong(i, 0)).unwrap();
        }
        let taken: Vec<_> = outbox.try_take().into_iter().collect();
        assert_eq!(taken, (0..5).map(|i| pong(i, 0)).collect::<Vec<_>>());
        assert!(outbox.is_empty());
        assert_eq!(
            outbox.lock().queue.capacity(),
            0,
            "an empty outbox holds no memory"
        );
    }

    #[tokio::test]
    async fn a_waiting_push_goes_through_once_the_writer_takes() {
        let one = approx_size(&pong(0, 0));
        let outbox = std::sync::Arc::new(Outbox::new(one));
        outbox.try_push(pong(1, 0)).unwrap();
        let o = outbox.clone();
        let pusher = tokio::spawn(async move { o.push(pong(2, 0)).await });
        tokio::task::yield_now().await;
        assert_eq!(outbox.take().await.len(), 1);
        pusher.await.unwrap().unwrap();
        assert_eq!(
            outbox.take().await.into_iter().collect::<Vec<_>>(),
            vec![pong(2, 0)]
        );
        // Closed: a push fails and a take returns nothing.
        outbox.close();
        assert!(matches!(
            outbox.try_push(pong(3, 0)),
            Err(PushError::Closed)
        ));
        assert!(outbox.take().await.is_empty());
    }

    /// Counts its wake-ups.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_push_here_wakes_no_one_and_the_writer_finds_it_at_its_next_poll() {
        let count = std::sync::Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let wakes = || count.0.load(std::sync::atomic::Ordering::SeqCst);
        let outbox = Outbox::new(1 << 20);
        let mut take = Box::pin(outbox.take());
        assert!(take.as_mut().poll(&mut cx).is_pending());
        outbox.try_push_here(pong(1, 0)).unwrap();
        assert_eq!(
            wakes(),
            0,
            "a push from the writer's own task does not wake it"
        );
        match take.as_mut().poll(&mut cx) {
            Poll::Ready(taken) => {
                assert_eq!(taken.into_iter().collect::<Vec<_>>(), vec![pong(1, 0)])
            }
            Poll::Pending => panic!("the writer's next poll finds what was pushed"),
        }
        // Any other push wakes the waiting writer, once.
        let mut take = Box::pin(outbox.take());
        assert!(take.as_mut().poll(&mut cx).is_pending());
        assert!(take.as_mut().poll(&mut cx).is_pending());
        outbox.try_push(pong(2, 0)).unwrap();
        outbox.try_push(pong(3, 0)).unwrap();
        assert_eq!(wakes(), 1);
        assert!(matches!(take.as_mut().poll(&mut cx), Poll::Ready(t) if t.len() == 2));
        // And so does closing it.
        let mut take = Box::pin(outbox.take());
        assert!(take.as_mut().poll(&mut cx).is_pending());
        outbox.close();
        assert_eq!(wakes(), 2);
        assert!(matches!(take.as_mut().poll(&mut cx), Poll::Ready(t) if t.is_empty()));
    }
}
