//! The tokio driver: one task that owns the socket and runs the [`SessionMachine`].
//!
//! Each turn it waits for one input (an op from the handles, a frame, the connection
//! attempt's result, write progress, or the machine's timer), feeds it to the machine with
//! the current instant, and then writes everything the machine has queued: the frames of a
//! turn are encoded into one buffer and go out with one write, without any other task in
//! between.
//!
//! A peer that stops reading (a black hole) must not block the machine's timers (renewal,
//! local lease, request timeouts), so the socket is only written when it is writable, and a
//! write buffer that grows past [`WRITE_BUF_MAX`] or makes no progress for [`WRITE_STALL`]
//! counts as a broken connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dlock_proto::{ClientMessage, CodecError, FrameCodec, MalformedFrame, ServerMessage};
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::bytes::{Buf, BytesMut};
use tokio_util::codec::{Encoder, FramedRead};

use crate::error::{Error, Result};
use crate::machine::{Action, SessionMachine};
use crate::op::{Op, OpSender};
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

/// At most this many ops or frames are taken per turn, so that neither side starves the
/// other and the timer.
const BATCH: usize = 256;

type Codec = FrameCodec<ServerMessage, ClientMessage>;
type Frame =
    Option<std::result::Result<std::result::Result<ServerMessage, MalformedFrame>, CodecError>>;
/// The read half of a connection, plain TCP or TLS.
type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a connection, plain TCP or TLS.
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;
type Halves = (ReadHalf, WriteHalf);
type Connecting = Pin<Box<dyn Future<Output = io::Result<Halves>> + Send>>;

/// The driver's connection.
enum Link {
    None,
    Connecting(Connecting),
    Up {
        reader: FramedRead<ReadHalf, Codec>,
        writer: WriteHalf,
    },
}

/// One input, as the select loop saw it.
enum Input {
    Op(Option<Op>),
    Frame(Frame),
    Connected(io::Result<Halves>),
    Written(io::Result<usize>),
    /// What a TLS stream held back after a write has gone out.
    Flushed(io::Result<()>),
    Timer,
}

struct Driver {
    /// TLS, if the client connects over it.
    tls: Option<Tls>,
    machine: SessionMachine,
    ops: mpsc::UnboundedReceiver<Op>,
    link: Link,
    /// Encoded frames not yet written.
    wbuf: BytesMut,
    /// When the write buffer last made progress (or became non-empty).
    write_progress: Instant,
    /// Written to a TLS stream and not yet flushed.
    unflushed: bool,
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
    let mut driver = Driver {
        tls,
        machine: SessionMachine::new(settings, view, rand::random(), now),
        ops,
        link: Link::None,
        wbuf: BytesMut::new(),
        write_progress: now,
        unflushed: false,
    };
    match driver.run(true).await {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(e),
        None => return Err(Error::Closed),
    }
    tokio::spawn(async move {
        driver.run(false).await;
        tracing::debug!("client task stopped");
    });
    Ok(tx)
}

/// The next frame, or never without a connection.
async fn read(reader: Option<&mut FramedRead<ReadHalf, Codec>>) -> Frame {
    match reader {
        Some(r) => r.next().await,
        None => std::future::pending().await,
    }
}

/// One write of the buffer, or never when there is nothing to write or no connection.
/// And once the buffer is written and `unflushed`, a flush of what the stream holds back
/// (TLS records a full socket did not take).
async fn write(writer: Option<&mut WriteHalf>, buf: &[u8], unflushed: bool) -> Input {
    match writer {
        Some(w) if !buf.is_empty() => Input::Written(w.write(buf).await),
        Some(w) if unflushed => Input::Flushed(w.flush().await),
        _ => std::future::pending().await,
    }
}

/// The connection attempt's result, or never without one.
async fn connected(connecting: Option<&mut Connecting>) -> io::Result<Halves> {
    match connecting {
        Some(c) => c.await,
        None => std::future::pending().await,
    }
}

/// Opens a connection to `addr`, over TLS with `tls` (the handshake included).
async fn open(addr: String, tls: Option<Tls>) -> io::Result<Halves> {
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

impl Driver {
    /// Runs until the machine stops (`None`), or with `first`, until the first session is
    /// established or its attempt failed.
    async fn run(&mut self, first: bool) -> Option<Result<()>> {
        // One timer for the task's life, moved only when the deadline changes: a fresh sleep
        // per turn would register and clear a timer entry for every frame.
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut timer_at: Option<Instant> = None;
        loop {
            if let Some(done) = self.drain_outputs(first) {
                return done;
            }
            // What the turn queued goes out now, in this turn, when the socket takes it:
            // waiting for the select below to find the socket writable costs a whole turn
            // per request. A write that had to wait, or failed, is the select's again
            // (a failure is handled, and its outputs drained, on the next pass).
            if self.write_now().await {
                continue;
            }
            let deadline = self.deadline();
            if deadline != timer_at {
                if let Some(at) = deadline {
                    timer.as_mut().reset(at);
                }
                timer_at = deadline;
            }
            let (reader, writer, connecting) = match &mut self.link {
                Link::Up { reader, writer } => (Some(reader), Some(writer), None),
                Link::Connecting(c) => (None, None, Some(c)),
                Link::None => (None, None, None),
            };
            let input = tokio::select! {
                op = self.ops.recv() => Input::Op(op),
                frame = read(reader) => Input::Frame(frame),
                res = connected(connecting) => Input::Connected(res),
                written = write(writer, &self.wbuf, self.unflushed) => written,
                () = &mut timer, if timer_at.is_some() => {
                    // Elapsed: armed again on the next turn even if the deadline stays.
                    timer_at = None;
                    Input::Timer
                }
            };
            self.handle(input);
        }
    }

    /// Writes the buffer once if the socket takes it without waiting; `true` if a write
    /// was made (its result handled).
    async fn write_now(&mut self) -> bool {
        let Link::Up { writer, .. } = &mut self.link else {
            return false;
        };
        if self.wbuf.is_empty() {
            return false;
        }
        let buf = &self.wbuf;
        let ready = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(Pin::new(&mut *writer).poll_write(cx, buf))
        })
        .await;
        match ready {
            std::task::Poll::Ready(res) => {
                self.handle(Input::Written(res));
                true
            }
            std::task::Poll::Pending => false,
        }
    }

    fn handle(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Op(None) => self.machine.handle_handles_gone(now),
            Input::Op(Some(op)) => {
                self.machine.handle_op(op, now);
                for _ in 1..BATCH {
                    let Ok(op) = self.ops.try_recv() else { break };
                    self.machine.handle_op(op, now);
                }
            }
            Input::Frame(frame) => {
                self.on_frame(frame, now);
                for _ in 1..BATCH {
                    let Link::Up { reader, .. } = &mut self.link else {
                        break;
                    };
                    let Some(frame) = reader.next().now_or_never() else {
                        break;
                    };
                    self.on_frame(frame, now);
                }
            }
            Input::Connected(Ok((r, w))) => {
                self.link = Link::Up {
                    reader: FramedRead::new(r, Codec::new(READ_MAX_FRAME_LEN)),
                    writer: w,
                };
                self.wbuf.clear();
                self.unflushed = false;
                self.machine.handle_connection_up(now);
            }
            Input::Connected(Err(e)) => {
                self.link = Link::None;
                self.machine.handle_connect_failed(e, now);
            }
            Input::Written(Ok(n)) if n > 0 => {
                self.wbuf.advance(n);
                // A TLS stream may keep encrypted bytes when the socket is full; they are
                // flushed once the buffer is written, so nothing waits for the next write.
                self.unflushed = self.tls.is_some();
                self.write_progress = now;
            }
            Input::Flushed(Ok(())) => self.unflushed = false,
            Input::Flushed(Err(e)) => {
                tracing::debug!(error = %e, "flush failed");
                self.machine
                    .handle_connection_lost(Error::Protocol(format!("write failed: {e}")), now);
            }
            Input::Written(res) => {
                let e = res
                    .err()
                    .map_or_else(|| "connection closed".to_owned(), |e| e.to_string());
                tracing::debug!(error = %e, "write failed");
                self.machine
                    .handle_connection_lost(Error::Protocol(format!("write failed: {e}")), now);
            }
            Input::Timer => {
                if !self.wbuf.is_empty() && now >= self.write_progress + WRITE_STALL {
                    tracing::debug!("writes stalled; giving up on the connection");
                    // Dropped here already, so that a stalled socket can never wake the loop
                    // again, whatever the machine makes of the loss.
                    self.disconnect(false);
                    let err = Error::Protocol("writes stalled".into());
                    self.machine.handle_connection_lost(err, now);
                }
                self.machine.handle_timeout(now);
            }
        }
    }

    fn on_frame(&mut self, frame: Frame, now: Instant) {
        let err = match frame {
            Some(Ok(Ok(msg))) => return self.machine.handle_frame(msg, now),
            Some(Ok(Err(malformed))) => {
                tracing::warn!(error = %malformed, "malformed frame from the server");
                Error::Protocol(malformed.to_string())
            }
            Some(Err(e)) => Error::Protocol(e.to_string()),
            None => Error::Connect(Arc::new(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ))),
        };
        self.machine.handle_connection_lost(err, now);
    }

    /// When the loop must wake up by itself: the machine's deadline, or the write stall.
    fn deadline(&self) -> Option<Instant> {
        let stall = (!self.wbuf.is_empty()).then(|| self.write_progress + WRITE_STALL);
        match (self.machine.poll_timeout(), stall) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Encodes the machine's frames and carries out its actions. `Some` when the loop ends.
    fn drain_outputs(&mut self, first: bool) -> Option<Option<Result<()>>> {
        loop {
            // Frames first: they belong to the connection the next `Disconnect` ends.
            while let Some(msg) = self.machine.poll_transmit() {
                if let Err(err) = self.encode(msg) {
                    self.machine.handle_connection_lost(err, Instant::now());
                }
            }
            let action = self.machine.poll_action()?;
            match action {
                Action::Connect { addr } => {
                    self.link = Link::Connecting(Box::pin(open(addr, self.tls.clone())));
                }
                Action::Disconnect { graceful } => self.disconnect(graceful),
                Action::Established if first => return Some(Some(Ok(()))),
                Action::ConnectFailed(e) if first => return Some(Some(Err(e))),
                Action::Established | Action::ConnectFailed(_) => {}
                Action::Stop => {
                    self.disconnect(true);
                    return Some(None);
                }
            }
        }
    }

    fn encode(&mut self, msg: ClientMessage) -> Result<()> {
        if !matches!(self.link, Link::Up { .. }) {
            return Ok(());
        }
        if self.wbuf.is_empty() {
            self.write_progress = Instant::now();
        }
        // The server's limit: an oversized request fails here instead of being refused by the
        // server (the machine checks sizes first, so this is a last line).
        let max = self.machine.max_frame_len().max(1024);
        Codec::new(max)
            .encode(msg, &mut self.wbuf)
            .map_err(|e| Error::Protocol(e.to_string()))?;
        if self.wbuf.len() > WRITE_BUF_MAX {
            return Err(Error::Protocol("write buffer full".into()));
        }
        Ok(())
    }

    /// Drops the connection; `graceful` lets what is buffered be written first (in a small
    /// task of its own, bounded by the stall time).
    fn disconnect(&mut self, graceful: bool) {
        let link = std::mem::replace(&mut self.link, Link::None);
        let buf = std::mem::take(&mut self.wbuf);
        if let (true, Link::Up { mut writer, reader }) = (graceful, link) {
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
