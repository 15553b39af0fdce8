//! The tokio driver: the [`SessionMachine`] behind a mutex, the handles that use it in
//! place, and one task that reads the socket and keeps the machine's time.
//!
//! A handle's op is handled by the handle's own task when the machine is free (see
//! [`Shared::try_handle`]): it goes into the machine, its frame is encoded and, on plain TCP,
//! written to the socket at once, all without the driver task. That saves a task wake-up and
//! a channel per request. The driver task is woken only when the op left it something to do:
//! an action (connect, disconnect, stop), a deadline earlier than its timer, bytes the socket
//! did not take, or a TLS stream to write. An op that finds the machine busy goes through a
//! channel, and the next op handled in place takes the channel's ops first, so ops stay in
//! the order they were sent.
//!
//! The driver task waits for every other input at once (ops from the channel, frames, the
//! connection attempt's result, write progress, the machine's timer): each wake-up it takes
//! what is ready, feeds it to the machine with the current instant, and writes what the
//! machine queued, encoded into one buffer and written with one call.
//!
//! A peer that stops reading (a black hole) must not block the machine's timers (renewal,
//! local lease, request timeouts), so the socket is only written when it is writable, and a
//! write buffer that grows past [`WRITE_BUF_MAX`] or makes no progress for [`WRITE_STALL`]
//! counts as a broken connection.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use dlock_proto::{ClientMessage, CodecError, FrameCodec, MalformedFrame, ServerMessage};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_util::bytes::{Buf, BytesMut};
use tokio_util::codec::{Encoder, FramedRead};

use crate::error::{Error, Result};
use crate::machine::{Action, SessionMachine};
use crate::op::{InlineOps, Op, OpSender};
use crate::settings::Settings;
use crate::tls::Tls;
use crate::view::SessionView;

/// The largest frame the client accepts from the server. Generous, because prefix queries
/// can be large and the server is trusted to respect its own limits.
const READ_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Bytes waiting to be written before the connection is considered stalled.
const WRITE_BUF_MAX: usize = 16 * 1024 * 1024;

/// How long the write buffer may wait without progress before the connection is given up.
const WRITE_STALL: Duration = Duration::from_secs(10);

/// At most this many ops or frames are taken per pass, so that neither side starves the
/// other and the timer.
const BATCH: usize = 256;

/// At most this many passes per wake-up of the driver task before it lets other tasks run.
const PASSES: usize = 16;

type Codec = FrameCodec<ServerMessage, ClientMessage>;
type Frame =
    Option<std::result::Result<std::result::Result<ServerMessage, MalformedFrame>, CodecError>>;
/// The read half of a connection, plain TCP or TLS.
pub(crate) type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a connection, plain TCP or TLS.
pub(crate) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;
pub(crate) type Halves = (ReadHalf, WriteHalf);
type Connecting = Pin<Box<dyn Future<Output = io::Result<Halves>> + Send>>;

/// What the handles and the driver task share.
struct Shared {
    state: Mutex<State>,
}

/// The machine and the write side of the connection.
struct State {
    /// `None` once the driver has stopped: ops are refused from then on.
    machine: Option<SessionMachine>,
    /// Ops that found the machine busy.
    ops: mpsc::UnboundedReceiver<Op>,
    out: Out,
    /// Actions the machine gave while a handle used it, for the driver, in order. While
    /// any wait, ops go through the channel.
    actions: VecDeque<Action>,
    /// When the driver's timer fires next.
    armed: Option<Instant>,
    /// The driver task's waker.
    waker: Option<Waker>,
}

/// The write side of the connection.
struct Out {
    /// The connection's write half, while it is up.
    writer: Option<WriteHalf>,
    /// Encoded frames not yet written.
    wbuf: BytesMut,
    /// When the write buffer last made progress (or became non-empty).
    write_progress: Instant,
    /// Written to a TLS stream and not yet flushed.
    unflushed: bool,
    /// Whether the connection is TLS: then only the driver writes, as it flushes what the
    /// stream holds back; on plain TCP a handle may write to the socket itself.
    tls: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl InlineOps for Shared {
    fn try_handle(&self, op: Op) -> std::result::Result<(), Op> {
        // Busy (the driver, or another handle, or this very task dropping something while
        // it holds the state): the channel.
        let Ok(mut state) = self.state.try_lock() else {
            return Err(op);
        };
        let s = &mut *state;
        let Some(machine) = s.machine.as_mut() else {
            return Err(op);
        };
        if !s.actions.is_empty() {
            return Err(op);
        }
        let now = Instant::now();
        while let Ok(earlier) = s.ops.try_recv() {
            machine.handle_op(earlier, now);
        }
        machine.handle_op(op, now);
        let mut wake = false;
        s.out.encode_all(machine, now);
        // Frames before an action belong to the connection it may end, so the driver takes
        // over from the first action on.
        if let Some(action) = machine.poll_action() {
            s.actions.push_back(action);
            wake = true;
        }
        if let Some(at) = machine.poll_timeout()
            && s.armed.is_none_or(|armed| at < armed)
        {
            wake = true;
        }
        if !s.out.wbuf.is_empty() {
            wake |= !s.out.write_inline(now);
        }
        if wake && let Some(w) = &s.waker {
            w.wake_by_ref();
        }
        Ok(())
    }
}

impl Out {
    /// Encodes every frame the machine has queued (a frame that cannot be is a lost
    /// connection, which the machine is told of).
    fn encode_all(&mut self, machine: &mut SessionMachine, now: Instant) {
        while let Some(msg) = machine.poll_transmit() {
            if let Err(err) = self.encode(machine.max_frame_len(), msg, now) {
                machine.handle_connection_lost(err, now);
            }
        }
    }

    /// Encodes `msg` into the write buffer (dropped without a connection).
    fn encode(&mut self, max_frame_len: usize, msg: ClientMessage, now: Instant) -> Result<()> {
        if self.writer.is_none() {
            return Ok(());
        }
        if self.wbuf.is_empty() {
            self.write_progress = now;
        }
        // The server's limit: an oversized request fails here instead of being refused by the
        // server (the machine checks sizes first, so this is a last line).
        Codec::new(max_frame_len.max(1024))
            .encode(msg, &mut self.wbuf)
            .map_err(|e| Error::Protocol(e.to_string()))?;
        if self.wbuf.len() > WRITE_BUF_MAX {
            return Err(Error::Protocol("write buffer full".into()));
        }
        Ok(())
    }

    /// One write from a handle's task; `true` if the buffer went out whole. Anything else
    /// (a partial write, a full socket, an error, TLS) is the driver's.
    fn write_inline(&mut self, now: Instant) -> bool {
        if self.tls {
            return false;
        }
        // A full socket registers this waker, which does nothing: the driver, woken because
        // the buffer is not empty, polls again with its own.
        let mut cx = Context::from_waker(Waker::noop());
        matches!(self.write_some(&mut cx, now), Poll::Ready(Ok(()))) && self.wbuf.is_empty()
    }

    /// One write of the buffer (not empty): `Ok` on progress, `Err` with the reason when
    /// the connection is broken, `Pending` while the socket is full (or there is none).
    fn write_some(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<Result<(), String>> {
        let Some(writer) = self.writer.as_mut() else {
            return Poll::Pending;
        };
        match Pin::new(writer).poll_write(cx, &self.wbuf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(n)) if n > 0 => {
                self.wbuf.advance(n);
                // A TLS stream may keep encrypted bytes when the socket is full; they are
                // flushed once the buffer is written, so nothing waits for the next write.
                self.unflushed = self.tls;
                self.write_progress = now;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(_)) => Poll::Ready(Err("connection closed".to_owned())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.to_string())),
        }
    }
}

impl State {
    /// Writes the buffer, or flushes what a TLS stream held back; `true` on progress or an
    /// error (which the machine is told of).
    fn poll_write(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let res = if !self.out.wbuf.is_empty() {
            match self.out.write_some(cx, now) {
                Poll::Pending => return false,
                Poll::Ready(Ok(())) => return true,
                Poll::Ready(Err(e)) => e,
            }
        } else if self.out.unflushed
            && let Some(writer) = self.out.writer.as_mut()
        {
            match Pin::new(writer).poll_flush(cx) {
                Poll::Pending => return false,
                Poll::Ready(Ok(())) => {
                    self.out.unflushed = false;
                    return true;
                }
                Poll::Ready(Err(e)) => e.to_string(),
            }
        } else {
            return false;
        };
        tracing::debug!(error = %res, "write failed");
        if let Some(machine) = self.machine.as_mut() {
            machine.handle_connection_lost(Error::Protocol(format!("write failed: {res}")), now);
        }
        true
    }
}

/// The driver task's own part: the read side, the connection attempt and the timer.
struct Driver {
    shared: Arc<Shared>,
    /// TLS, if the client connects over it.
    tls: Option<Tls>,
    connecting: Option<Connecting>,
    reader: Option<FramedRead<ReadHalf, Codec>>,
    /// One timer for the task's life, moved only when the deadline changes.
    timer: Pin<Box<Sleep>>,
    timer_at: Option<Instant>,
    /// Every handle is gone (the channel said so).
    handles_gone: bool,
}

/// Opens the first connection and session, then spawns the driver task. Fails when the
/// machine reports a failed round of attempts (it does not report a round in which a cluster
/// member answered `NotLeader`, until that has lasted a connect timeout); later connection
/// losses are handled in the background.
pub(crate) async fn start(
    settings: Settings,
    tls: Option<Tls>,
    view: Arc<SessionView>,
) -> Result<OpSender> {
    let (tx, ops) = mpsc::unbounded_channel();
    let now = Instant::now();
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            machine: Some(SessionMachine::new(settings, view, rand::random(), now)),
            ops,
            out: Out {
                writer: None,
                wbuf: BytesMut::new(),
                write_progress: now,
                unflushed: false,
                tls: tls.is_some(),
            },
            actions: VecDeque::new(),
            armed: None,
            waker: None,
        }),
    });
    let mut driver = Driver {
        shared: shared.clone(),
        tls,
        connecting: None,
        reader: None,
        timer: Box::pin(tokio::time::sleep_until(now)),
        timer_at: None,
        handles_gone: false,
    };
    match std::future::poll_fn(|cx| driver.poll_run(cx, true)).await {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(e),
        None => return Err(Error::Closed),
    }
    tokio::spawn(async move {
        std::future::poll_fn(|cx| driver.poll_run(cx, false)).await;
        tracing::debug!("client task stopped");
    });
    Ok(OpSender::new(tx, Some(shared)))
}

/// Opens a connection to `addr`, over TLS with `tls` (the handshake included).
pub(crate) async fn open(addr: String, tls: Option<Tls>) -> io::Result<Halves> {
    let stream = TcpStream::connect(&addr).await?;
    // Requests are small and latency matters more than packet count.
    let _ = stream.set_nodelay(true);
    match tls {
        None => {
            let (r, w) = stream.into_split();
            Ok((Box::new(r), Box::new(w)))
        }
        Some(tls) => {
            let name = tls
                .server_name(&addr)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            let stream = tls
                .connector
                .connect(name, stream)
                .await
                .map_err(not_tls_hint)?;
            let (r, w) = tokio::io::split(stream);
            Ok((Box::new(r), Box::new(w)))
        }
    }
}

/// A TLS handshake error, with a hint when the server's answer was not TLS at all: a server
/// that serves plain TCP (no `--tls-cert`) answers the handshake with a dlock frame.
fn not_tls_hint(e: io::Error) -> io::Error {
    let not_tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| matches!(r, rustls::Error::InvalidMessage(_)));
    if not_tls {
        io::Error::new(
            e.kind(),
            format!("the server did not answer TLS (is it running without --tls-cert?): {e}"),
        )
    } else {
        e
    }
}

/// The TLS alert with which a server refused this client's certificate, if `e` is one: with
/// TLS 1.3 it comes after the client's side of the handshake, with the first read.
fn certificate_refused(e: &io::Error) -> Option<String> {
    use rustls::AlertDescription as A;
    let Some(rustls::Error::AlertReceived(alert)) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return None;
    };
    matches!(
        alert,
        A::CertificateRequired
            | A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied
    )
    .then(|| format!("{alert:?}"))
}

/// What a frame from the server does to the machine.
fn on_frame(machine: &mut SessionMachine, frame: Frame, now: Instant) {
    let err = match frame {
        Some(Ok(Ok(msg))) => return machine.handle_frame(msg, now),
        Some(Ok(Err(malformed))) => {
            tracing::warn!(error = %malformed, "malformed frame from the server");
            machine.malformed(&malformed)
        }
        Some(Err(CodecError::Io(e))) if certificate_refused(&e).is_some() => {
            Error::CertificateRefused(certificate_refused(&e).unwrap_or_default())
        }
        Some(Err(e)) => Error::Protocol(e.to_string()),
        None => Error::Connect(Arc::new(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "server closed the connection",
        ))),
    };
    machine.handle_connection_lost(err, now);
}

impl Driver {
    /// Runs until the machine stops (`None`), or with `first`, until the first session is
    /// established or its attempt failed.
    ///
    /// Each pass takes every input that is ready, carries out the machine's outputs and
    /// writes; the task sleeps after a pass in which nothing was ready (so every input has
    /// registered the task's waker).
    fn poll_run(&mut self, cx: &mut Context<'_>, first: bool) -> Poll<Option<Result<()>>> {
        let shared = self.shared.clone();
        let mut state = shared.lock();
        let s = &mut *state;
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        for _ in 0..PASSES {
            let Some(machine) = s.machine.as_mut() else {
                return Poll::Ready(None);
            };
            let now = Instant::now();
            // Whether another pass is needed: something polled did not end waiting (a batch
            // was cut short, a future was made or moved that must be polled to register its
            // waker). What a pass handles, its outputs included, is done within the pass.
            let mut busy = false;
            if !self.handles_gone {
                busy = true;
                for _ in 0..BATCH {
                    match s.ops.poll_recv(cx) {
                        Poll::Ready(Some(op)) => machine.handle_op(op, now),
                        Poll::Ready(None) => {
                            self.handles_gone = true;
                            machine.handle_handles_gone(now);
                            break;
                        }
                        Poll::Pending => {
                            busy = false;
                            break;
                        }
                    }
                }
            }
            if let Some(c) = self.connecting.as_mut()
                && let Poll::Ready(res) = c.as_mut().poll(cx)
            {
                self.connecting = None;
                busy = true;
                match res {
                    Ok((r, w)) => {
                        self.reader = Some(FramedRead::new(r, Codec::new(READ_MAX_FRAME_LEN)));
                        s.out.writer = Some(w);
                        s.out.wbuf.clear();
                        s.out.unflushed = false;
                        machine.handle_connection_up(now);
                    }
                    Err(e) => match certificate_refused(&e) {
                        Some(why) => {
                            machine.handle_connect_error(Error::CertificateRefused(why), now);
                        }
                        None => machine.handle_connect_failed(e, now),
                    },
                }
            }
            if let Some(reader) = self.reader.as_mut() {
                let mut waiting = false;
                for _ in 0..BATCH {
                    let Poll::Ready(frame) = reader.poll_next_unpin(cx) else {
                        waiting = true;
                        break;
                    };
                    let fine = matches!(frame, Some(Ok(Ok(_))));
                    on_frame(machine, frame, now);
                    if !fine {
                        break;
                    }
                }
                busy |= !waiting;
            }
            if self.timer_at.is_some() && self.timer.as_mut().poll(cx).is_ready() {
                // Elapsed: armed again below even if the deadline stays.
                self.timer_at = None;
                busy = true;
                if !s.out.wbuf.is_empty() && now >= s.out.write_progress + WRITE_STALL {
                    tracing::debug!("writes stalled; giving up on the connection");
                    // Dropped here already, so that a stalled socket can never wake the task
                    // again, whatever the machine makes of the loss.
                    self.disconnect(s, false);
                    let Some(machine) = s.machine.as_mut() else {
                        return Poll::Ready(None);
                    };
                    let err = Error::Protocol("writes stalled".into());
                    machine.handle_connection_lost(err, now);
                }
                if let Some(machine) = s.machine.as_mut() {
                    machine.handle_timeout(now);
                }
            }
            match self.drain_outputs(s, first, now) {
                Drained::Done(done) => return Poll::Ready(done),
                Drained::Acted => busy = true,
                Drained::Quiet => {}
            }
            busy |= s.poll_write(cx, now);
            // When the task must wake up by itself: the machine's deadline, or the stall.
            let stall = (!s.out.wbuf.is_empty()).then(|| s.out.write_progress + WRITE_STALL);
            let due = s.machine.as_ref().and_then(SessionMachine::poll_timeout);
            let deadline = match (due, stall) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            // The deadline changes a few times a renewal period (a renewal sent, answered),
            // not with every request: moved at once, the timer never wakes the task early.
            if deadline != self.timer_at {
                if let Some(at) = deadline {
                    self.timer.as_mut().reset(at);
                    // Polled on the next pass, which registers the waker for the new time.
                    busy = true;
                }
                self.timer_at = deadline;
            }
            s.armed = self.timer_at;
            if !busy {
                return Poll::Pending;
            }
        }
        // Still busy: let other tasks run, and come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Encodes the machine's frames and carries out its actions (those a handle left first).
    fn drain_outputs(&mut self, s: &mut State, first: bool, now: Instant) -> Drained {
        let mut drained = Drained::Quiet;
        loop {
            let action = match s.actions.pop_front() {
                Some(action) => action,
                None => {
                    let Some(machine) = s.machine.as_mut() else {
                        return drained;
                    };
                    // Frames first: they belong to the connection the next `Disconnect` ends.
                    s.out.encode_all(machine, now);
                    let Some(action) = machine.poll_action() else {
                        return drained;
                    };
                    action
                }
            };
            drained = Drained::Acted;
            match action {
                Action::Connect { addr } => {
                    self.connecting = Some(Box::pin(open(addr, self.tls.clone())));
                }
                Action::Disconnect { graceful } => self.disconnect(s, graceful),
                Action::Established if first => return Drained::Done(Some(Ok(()))),
                Action::ConnectFailed(e) if first => return Drained::Done(Some(Err(e))),
                Action::Established | Action::ConnectFailed(_) => {}
                Action::Stop => {
                    self.disconnect(s, true);
                    stop(s);
                    return Drained::Done(None);
                }
            }
        }
    }

    /// Drops the connection; `graceful` lets what is buffered be written first (in a small
    /// task of its own, bounded by the stall time).
    fn disconnect(&mut self, s: &mut State, graceful: bool) {
        self.connecting = None;
        let reader = self.reader.take();
        let writer = s.out.writer.take();
        let buf = std::mem::take(&mut s.out.wbuf);
        s.out.unflushed = false;
        if let (true, Some(mut writer)) = (graceful, writer) {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(WRITE_STALL, async {
                    writer.write_all(&buf).await?;
                    writer.shutdown().await
                })
                .await;
                drop(reader);
            });
        }
    }
}

/// What [`Driver::drain_outputs`] did.
enum Drained {
    /// Nothing but frames: the pass may end.
    Quiet,
    /// Carried out actions (a connection opened or dropped): another pass polls what changed.
    Acted,
    /// The task's poll ends with this.
    Done(Option<Result<()>>),
}

/// Refuses every later op and lets the machine go (its callers' answers fail as closed).
fn stop(s: &mut State) {
    s.ops.close();
    s.actions.clear();
    s.machine = None;
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The task is gone (stopped, or its runtime shut down): nothing would answer an op
        // any more.
        let shared = self.shared.clone();
        let mut state = shared.lock();
        state.out.writer = None;
        stop(&mut state);
    }
}

#[cfg(test)]
mod tests;
