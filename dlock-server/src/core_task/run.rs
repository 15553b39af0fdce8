//! The core task's run loop, and the way connections reach it ([`CoreInbox`]).
//!
//! The task's state sits behind a mutex that no one holds across an `await`. The run loop
//! takes it for each wake-up: what the inbox holds, a due timer, what the log applied. On a
//! single server a connection's task may also take it, to handle its own message in place,
//! when handling it there changes nothing about the order of anything: no message is on its
//! way through the inbox (counted from before it is sent until it is in the turns, which the
//! run loop fills under the lock), the turns hold nothing, and no one else holds the state
//! ([`CoreInbox::try_handle_here`]). A request then costs the server one task's wake-up (the
//! connection's, by its socket) instead of three (the connection's, the core task's, and the
//! connection's again for the answer): the answer is in the connection's outbox before its
//! task next looks there. Anything else, and everything in a cluster (whose commands go
//! through the log; tried in place too, it was no faster), goes through the inbox.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::gather::{Gather, yield_once};
use super::{CoreTask, next_applied, next_clock, reads};
use crate::ServerError;
use crate::handle::ConnId;
use crate::msg::CoreMsg;

/// The core task's state and the run loop's doorbell, shared with the connections.
struct Shared {
    state: Mutex<CoreTask>,
    /// Rung by a connection's task that handled a message in place and left the run loop
    /// something to do sooner than its timer is set for (or failed).
    poke: Notify,
    /// Whether connections may handle messages in place (a single server).
    in_place: bool,
    /// Messages on their way through the inbox: counted before they are sent, and no longer
    /// once the run loop has put them in the turns (under the lock).
    queued: AtomicUsize,
}

impl Shared {
    /// The state; an error if a task panicked while holding it.
    fn lock(&self) -> Result<MutexGuard<'_, CoreTask>, ServerError> {
        self.state
            .lock()
            .map_err(|_| ServerError::CoreTask("a task failed while handling a message".into()))
    }
}

/// Where connections send their messages to the core task: its inbox, and the state for
/// handling one in place.
#[derive(Clone)]
pub(crate) struct CoreInbox {
    tx: mpsc::Sender<CoreMsg>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CoreInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreInbox")
            .field("queued", &self.shared.queued.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A message counted in [`Shared::queued`] until it is sent (then the run loop uncounts it)
/// or given up (then this does, when dropped).
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(queued: &'a AtomicUsize) -> Counted<'a> {
        queued.fetch_add(1, Ordering::SeqCst);
        Counted(queued)
    }

    /// Sent: counted until the run loop takes it.
    fn sent(self) {
        std::mem::forget(self);
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl CoreInbox {
    /// Queues `msg` in the inbox if it has room.
    #[allow(
        clippy::result_large_err,
        reason = "the message comes back to be sent again; boxing it would cost every request an allocation"
    )]
    pub(crate) fn try_send(&self, msg: CoreMsg) -> Result<(), mpsc::error::TrySendError<CoreMsg>> {
        let counted = Counted::new(&self.shared.queued);
        self.tx.try_send(msg)?;
        counted.sent();
        Ok(())
    }

    /// Queues `msg` in the inbox, waiting for room.
    pub(crate) async fn send(&self, msg: CoreMsg) -> Result<(), mpsc::error::SendError<CoreMsg>> {
        let counted = Counted::new(&self.shared.queued);
        self.tx.send(msg).await?;
        counted.sent();
        Ok(())
    }

    /// Handles `msg` in the caller's task, as the run loop would have, if the server is a
    /// single server, no message is on its way through the inbox, the run loop has no turns
    /// left and no one holds the state; otherwise gives it back, to go through the inbox. So
    /// whatever the caller sent before is handled before it, and so is whatever any other
    /// connection sent before. The caller must be the task of connection `here`, whose writer
    /// it polls before it sleeps: what is delivered to that connection does not wake it.
    #[allow(
        clippy::result_large_err,
        reason = "the message comes back to go through the inbox; boxing it would cost every request an allocation"
    )]
    pub(crate) fn try_handle_here(
        &self,
        msg: CoreMsg,
        here: ConnId,
        start: Option<Instant>,
    ) -> Result<(), CoreMsg> {
        // Read before the lock: a message sent before this one is counted until it is in
        // the turns, and the turns are looked at under the lock.
        if !self.shared.in_place || self.shared.queued.load(Ordering::SeqCst) > 0 {
            return Err(msg);
        }
        // A poisoned state is left to the run loop, which ends with it.
        let Ok(mut core) = self.shared.state.try_lock() else {
            return Err(msg);
        };
        if !core.turns.is_empty() || core.failed.is_some() || core.stopped {
            return Err(msg);
        }
        match core.handle_in_place(msg, here, start) {
            Ok(false) => {}
            Ok(true) => self.shared.poke.notify_one(),
            Err(e) => {
                core.failed = Some(e);
                self.shared.poke.notify_one();
            }
        }
        Ok(())
    }
}

/// The inbox (of `capacity` messages) for `core`, and its run loop, which runs until
/// `shutdown` is cancelled or every sender is gone.
pub(crate) fn start(
    core: CoreTask,
    capacity: usize,
    shutdown: CancellationToken,
) -> (
    CoreInbox,
    impl Future<Output = Result<(), ServerError>> + Send + 'static,
) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let shared = Arc::new(Shared {
        in_place: core.config.cluster.is_none(),
        queued: AtomicUsize::new(0),
        state: Mutex::new(core),
        poke: Notify::new(),
    });
    let inbox = CoreInbox {
        tx,
        shared: shared.clone(),
    };
    (inbox, run(shared, rx, shutdown))
}

/// What the run loop waits for next, read from the state after each wake-up.
struct Next {
    /// Room for messages in the turns.
    room: usize,
    /// Whether turns are left from this wake-up.
    backlog: bool,
    /// When the timer must wake the loop.
    wake_at: Option<Instant>,
}

impl CoreTask {
    /// Ends a wake-up of the run loop (`end_batch`), unless this is the first, and says what
    /// the loop waits for next; the error a message handled in place ended with, if one did.
    fn next(&mut self, first: bool, inbox_capacity: usize) -> Result<Next, ServerError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if !first {
            let after = Instant::now();
            let ended = self.end_batch(None, after);
            self.count_busy(after);
            self.end_wakeup();
            ended?;
        }
        let wake_at = self.wake_at();
        self.armed = wake_at;
        Ok(Next {
            room: inbox_capacity.saturating_sub(self.turns.len()),
            backlog: !self.turns.is_empty(),
            wake_at,
        })
    }
}

/// Marks the state stopped when the run loop ends, however it ends (an error, a panic, or
/// its task aborted with the server's): a connection no longer handles anything in place
/// once the engine's own task is gone, as nothing it sent to the inbox is handled then.
struct Stopped(Arc<Shared>);

impl Drop for Stopped {
    fn drop(&mut self) {
        let mut core = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        core.stopped = true;
    }
}

async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<CoreMsg>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let _stopped = Stopped(shared.clone());
    let (max_batch, inbox_capacity, mut feed, mut clock, mut read_ends) = {
        let mut core = shared.lock()?;
        // In a cluster the state machine writes the audit log of what it applies.
        if let Some(audit) = &core.config.audit_log
            && core.config.cluster.is_none()
        {
            let audit = audit.clone();
            core.engine.open_audit(audit)?;
        }
        let mut clock = core.engine.cluster().map(|r| r.clock.clone());
        if let Some(clock) = &mut clock {
            let now = *clock.borrow_and_update();
            core.on_clock(now);
        }
        (
            core.config.max_batch.max(1),
            core.config.inbox_capacity.max(1),
            core.feed.take(),
            clock,
            core.read_ends.take(),
        )
    };
    let mut batch = Vec::with_capacity(max_batch);
    let mut gather = Gather::default();
    // One timer for the whole run, moved only when the wake-up time changes: a fresh
    // `sleep_until` per batch would register and clear a timer entry every time.
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);
    let mut timer_at: Option<Instant> = None;
    let mut next = shared.lock()?.next(true, inbox_capacity)?;
    loop {
        if next.wake_at != timer_at {
            if let Some(at) = next.wake_at {
                timer.as_mut().reset(at);
            }
            timer_at = next.wake_at;
        }
        // Shutdown is checked first so that a busy inbox cannot delay it; the inbox comes
        // before the timers because the grace's end and a due Tick are also checked after
        // every batch. A wake-up takes what the inbox holds into the turns and handles up
        // to `max_batch` messages of them, or `SLICE` of work, before anything is
        // delivered.
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            // What the inbox holds goes into the turns (at most the inbox's capacity in
            // all), and the addresses take turns (see `turns`).
            n = rx.recv_many(&mut batch, next.room), if next.room > 0 => {
                if n == 0 {
                    break;
                }
                // Under load, let the connections that are ready put their requests
                // in first, so that this wake-up handles them too (see `gather`).
                if gather.should_yield() {
                    yield_once().await;
                    let before = batch.len();
                    while batch.len() < next.room {
                        let Ok(msg) = rx.try_recv() else { break };
                        batch.push(msg);
                    }
                    gather.yielded(batch.len() > before);
                }
                let mut core = shared.lock()?;
                let taken = batch.len();
                core.take_turns(&mut batch, max_batch)?;
                shared.queued.fetch_sub(taken, Ordering::SeqCst);
            }
            // The engine's next deadline or the grace's end, whichever comes first.
            () = &mut timer, if timer_at.is_some() => {
                // Elapsed: armed again below even if the wake-up time stays the same.
                timer_at = None;
            }
            // In a cluster: what the log applied, and changes of leadership.
            Some(applied) = next_applied(&mut feed) => {
                let mut core = shared.lock()?;
                let busy = Instant::now();
                core.on_applied(applied)?;
                // Take what else is there, up to a batch, before delivering.
                for _ in 1..max_batch {
                    let Some(applied) = feed.as_mut().and_then(|f| f.try_recv().ok()) else {
                        break;
                    };
                    core.on_applied(applied)?;
                }
                core.count_busy(busy);
            }
            // In a cluster: a read round for waiting queries ended.
            (number, outcome) = reads::next_outcome(&mut read_ends) => {
                let mut core = shared.lock()?;
                let busy = Instant::now();
                core.on_read(number, outcome)?;
                core.count_busy(busy);
            }
            changed = next_clock(&mut clock) => {
                if changed {
                    let now = clock.as_mut().and_then(|c| *c.borrow_and_update());
                    shared.lock()?.on_clock(now);
                } else {
                    // The sequencer is gone: the node is stopping.
                    break;
                }
            }
            // A message handled in a connection's task needs an earlier wake-up, or failed.
            () = shared.poke.notified() => {}
            // Turns left from an earlier wake-up: taken without waiting, but after
            // everything else that is ready.
            () = std::future::ready(()), if next.backlog => {
                shared.lock()?.take_turns(&mut batch, max_batch)?;
            }
        }
        next = shared.lock()?.next(false, inbox_capacity)?;
    }
    debug!(
        sessions = shared.lock()?.sessions.map.len(),
        "core task stopped"
    );
    Ok(())
}

/// What tests of the core task and of its callers set up.
#[cfg(test)]
pub(crate) mod test_support {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use dlock_proto::{Hello, PROTOCOL_VERSION, SessionId};
    use tokio::sync::oneshot;
    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;

    use super::{CoreInbox, start};
    use crate::Config;
    use crate::core_task::CoreTask;
    use crate::error::ServerError;
    use crate::floor::Floor;
    use crate::grace::LeaseRecord;
    use crate::handle::{ConnHandle, ConnShared};
    use crate::msg::{CoreMsg, HelloOutcome};
    use crate::outbox::Outbox;
    use crate::security::Security;

    /// A single server's inbox in `dir`, with its run loop (not running), and a connection.
    pub(crate) fn single_server(
        dir: &std::path::Path,
    ) -> (
        CoreInbox,
        impl Future<Output = Result<(), ServerError>> + Send + use<>,
        ConnHandle,
    ) {
        let config = Config {
            data_dir: dir.to_owned(),
            ..Config::default()
        };
        let floor = Floor::open(dir).unwrap();
        let (lease_record, _) = LeaseRecord::open(dir, false, 60_000).unwrap();
        let security = Security::load(&config).unwrap();
        let token = CancellationToken::new();
        let core = CoreTask::new(
            Arc::new(config),
            floor,
            lease_record,
            Instant::now(),
            None,
            security,
            None,
        );
        let (inbox, run) = start(core, 16, token.clone());
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let conn = ConnHandle {
            id: 1,
            outbox: Arc::new(Outbox::new(1 << 20)),
            shared: Arc::new(ConnShared::new(token, peer, Default::default())),
        };
        (inbox, run, conn)
    }

    /// A `Hello` from `conn` for a session named `name`, and where its outcome comes.
    pub(crate) fn hello(
        conn: &ConnHandle,
        name: &str,
    ) -> (CoreMsg, oneshot::Receiver<HelloOutcome>) {
        let (reply, answer) = oneshot::channel();
        let hello = CoreMsg::Hello {
            conn: conn.clone(),
            hello: Hello {
                protocol_version: PROTOCOL_VERSION,
                client_name: name.into(),
                lease_ttl_ms: 0,
                resume: None,
                token: None,
            },
            identity: None,
            reply,
        };
        (hello, answer)
    }

    /// The session a `Hello`'s outcome opened, and the `ReplayDone` that lets `conn` go on
    /// with it.
    pub(crate) fn welcomed<E: std::fmt::Debug>(
        conn: &ConnHandle,
        outcome: Result<HelloOutcome, E>,
    ) -> (SessionId, CoreMsg) {
        let Ok(HelloOutcome::Welcome {
            session, up_to_seq, ..
        }) = outcome
        else {
            panic!("no Welcome: {outcome:?}");
        };
        let done = CoreMsg::ReplayDone {
            session,
            conn: conn.id,
            up_to_seq,
        };
        (session, done)
    }
}

#[cfg(test)]
mod tests {
    use dlock_proto::{LockRequest, Mode, Request, RequestId, ServerMessage};
    use tokio::sync::Semaphore;

    use super::test_support::{hello, single_server, welcomed};
    use super::*;
    use crate::handle::ConnHandle;

    fn slot() -> tokio::sync::OwnedSemaphorePermit {
        Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap()
    }

    fn request(session: dlock_proto::SessionId, conn: ConnId, id: u64, body: Request) -> CoreMsg {
        CoreMsg::Request {
            session,
            conn,
            id: RequestId(id),
            body,
            slot: slot(),
            received: Instant::now(),
        }
    }

    fn lock(session: dlock_proto::SessionId, conn: ConnId, id: u64, name: &str) -> CoreMsg {
        request(
            session,
            conn,
            id,
            Request::Lock(LockRequest::new(name, Mode::EX)),
        )
    }

    /// Everything in `conn`'s outbox now.
    fn outbox(conn: &ConnHandle) -> Vec<ServerMessage> {
        conn.outbox.try_take().into_iter().collect()
    }

    #[tokio::test]
    async fn an_idle_single_server_answers_in_the_callers_task_and_a_queued_message_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        // The run loop is never polled: whatever is answered was handled in place.
        let (inbox, _run, conn) = single_server(dir.path());
        let (hello, mut welcome) = hello(&conn, "here");
        assert!(inbox.try_handle_here(hello, conn.id, None).is_ok());
        let (session, done) = welcomed(&conn, welcome.try_recv());
        assert!(inbox.try_handle_here(done, conn.id, None).is_ok());
        assert!(
            inbox
                .try_handle_here(lock(session, conn.id, 1, "a"), conn.id, None)
                .is_ok()
        );
        let answered = outbox(&conn);
        assert!(
            matches!(&answered[..], [ServerMessage::Event { event, .. }]
                if event.request == Some(RequestId(1))
                    && matches!(event.kind, dlock_proto::EventKind::Granted { .. })),
            "{answered:?}"
        );

        // With a message in the inbox, the next one waits behind it: given back, unhandled.
        inbox.try_send(lock(session, conn.id, 2, "b")).unwrap();
        let Err(back) = inbox.try_handle_here(lock(session, conn.id, 3, "c"), conn.id, None) else {
            panic!("handled ahead of the inbox");
        };
        assert!(matches!(
            back,
            CoreMsg::Request {
                id: RequestId(3),
                ..
            }
        ));
        assert!(outbox(&conn).is_empty());
    }

    #[tokio::test]
    async fn turns_left_by_the_run_loop_go_first_too() {
        let dir = tempfile::tempdir().unwrap();
        let (inbox, _run, conn) = single_server(dir.path());
        let (hello, _welcome) = hello(&conn, "turns");
        inbox.shared.lock().unwrap().turns.push(None, hello);
        let msg = lock(dlock_proto::SessionId(1), conn.id, 1, "a");
        assert!(inbox.try_handle_here(msg, conn.id, None).is_err());
    }

    #[tokio::test]
    async fn a_send_given_up_or_refused_is_not_counted_as_on_its_way() {
        let dir = tempfile::tempdir().unwrap();
        let (inbox, _run, conn) = single_server(dir.path());
        let session = dlock_proto::SessionId(1);
        let queued = || inbox.shared.queued.load(Ordering::SeqCst);
        // 16 messages fill the inbox; the 17th is refused.
        for id in 1..=16 {
            inbox.try_send(lock(session, conn.id, id, "a")).unwrap();
        }
        assert_eq!(queued(), 16);
        assert!(inbox.try_send(lock(session, conn.id, 17, "a")).is_err());
        assert_eq!(queued(), 16);
        // A send waiting for room, given up (as a timeout or a closing connection does).
        {
            let mut send = Box::pin(inbox.send(lock(session, conn.id, 18, "a")));
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            assert!(send.as_mut().poll(&mut cx).is_pending());
            assert_eq!(queued(), 17);
        }
        assert_eq!(queued(), 16);
    }

    #[tokio::test]
    async fn nothing_is_handled_in_place_once_the_run_loop_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let (inbox, run, conn) = single_server(dir.path());
        let ping = |id| request(dlock_proto::SessionId(1), conn.id, id, Request::Ping);
        // Polled once (it waits for its inbox), then dropped as an aborted task is.
        {
            let mut run = Box::pin(run);
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            assert!(run.as_mut().poll(&mut cx).is_pending());
            assert!(inbox.try_handle_here(ping(1), conn.id, None).is_ok());
        }
        assert!(inbox.try_handle_here(ping(2), conn.id, None).is_err());
    }
}
