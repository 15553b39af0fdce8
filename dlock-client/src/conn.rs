//! One TCP connection: the handshake, the read half and a writer task.
//!
//! The background task owns the connection; only the write half lives in a small helper
//! task behind a bounded queue, so that a peer that stops reading (a black hole) can never
//! block the background task: its timers (renewal, local lease, request timeouts) keep
//! running, and a full queue counts as a broken connection.

use std::io;
use std::time::Duration;

use dlock_proto::{
    ClientMessage, DEFAULT_MAX_FRAME_LEN, FrameCodec, Hello, Refusal, ServerMessage, Welcome,
};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite};

/// The largest frame the client accepts from the server. Generous, because prefix queries
/// can be large and the server is trusted to respect its own limits.
const READ_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Frames queued for the writer before the connection is considered stalled.
const WRITE_QUEUE: usize = 16 * 1024;

/// How long one flush may take before the writer gives up on the connection.
const WRITE_STALL: Duration = Duration::from_secs(10);

type Codec = FrameCodec<ServerMessage, ClientMessage>;

/// The read half of an established connection, and a queue to its writer task.
pub(crate) struct Conn {
    pub(crate) reader: FramedRead<OwnedReadHalf, Codec>,
    out: mpsc::Sender<ClientMessage>,
    writer: Option<JoinHandle<()>>,
}

/// Why sending to a connection failed.
#[derive(Debug)]
pub(crate) struct Stalled;

impl Conn {
    /// Queues a frame. Fails when the writer is gone or too far behind: the caller then
    /// treats the connection as broken.
    pub(crate) fn send(&self, msg: ClientMessage) -> Result<(), Stalled> {
        self.out.try_send(msg).map_err(|_| Stalled)
    }

    /// Lets the writer flush what is queued, then close the socket; does not wait.
    pub(crate) fn close_gracefully(mut self) {
        self.writer = None;
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            w.abort();
        }
    }
}

/// A successful handshake.
pub(crate) struct Handshake {
    pub(crate) conn: Conn,
    pub(crate) welcome: Welcome,
    /// When `Hello` was sent: the server opened or resumed the session after this.
    pub(crate) sent_at: Instant,
}

/// Why a handshake failed.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    Io(io::Error),
    Refused(Refusal),
    Protocol(String),
    Timeout,
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Io(e) => write!(f, "io error: {e}"),
            HandshakeError::Refused(r) => write!(f, "refused: {r}"),
            HandshakeError::Protocol(s) => write!(f, "protocol error: {s}"),
            HandshakeError::Timeout => f.write_str("timed out"),
        }
    }
}

/// Connects to `addr`, sends `hello` and waits for `Welcome`, all within `timeout`.
pub(crate) async fn handshake(
    addr: String,
    hello: Hello,
    timeout: Duration,
) -> Result<Handshake, HandshakeError> {
    match tokio::time::timeout(timeout, handshake_inner(addr, hello)).await {
        Ok(res) => res,
        Err(_) => Err(HandshakeError::Timeout),
    }
}

async fn handshake_inner(addr: String, hello: Hello) -> Result<Handshake, HandshakeError> {
    let stream = TcpStream::connect(&addr)
        .await
        .map_err(HandshakeError::Io)?;
    // Requests are small and latency matters more than packet count.
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let mut reader = FramedRead::new(r, Codec::new(READ_MAX_FRAME_LEN));
    let mut writer = FramedWrite::new(w, Codec::new(DEFAULT_MAX_FRAME_LEN));
    let sent_at = Instant::now();
    writer
        .send(ClientMessage::Hello(hello))
        .await
        .map_err(|e| HandshakeError::Protocol(e.to_string()))?;
    let welcome = match reader.next().await {
        Some(Ok(Ok(ServerMessage::Welcome(w)))) => w,
        Some(Ok(Ok(ServerMessage::Refused(r)))) => return Err(HandshakeError::Refused(r)),
        Some(Ok(Ok(ServerMessage::ShuttingDown))) => {
            return Err(HandshakeError::Refused(Refusal::ShuttingDown));
        }
        Some(Ok(Ok(other))) => {
            return Err(HandshakeError::Protocol(format!(
                "expected Welcome, got {other:?}"
            )));
        }
        Some(Ok(Err(malformed))) => return Err(HandshakeError::Protocol(malformed.to_string())),
        Some(Err(e)) => return Err(HandshakeError::Protocol(e.to_string())),
        None => {
            return Err(HandshakeError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection during the handshake",
            )));
        }
    };
    // From now on frames are limited by the server's maximum, so an oversized request fails
    // here instead of being refused by the server.
    let max = usize::try_from(welcome.max_frame_len).unwrap_or(DEFAULT_MAX_FRAME_LEN);
    let writer = FramedWrite::new(writer.into_inner(), Codec::new(max.max(1024)));
    let (out, rx) = mpsc::channel(WRITE_QUEUE);
    let writer = tokio::spawn(write_loop(writer, rx));
    Ok(Handshake {
        conn: Conn {
            reader,
            out,
            writer: Some(writer),
        },
        welcome,
        sent_at,
    })
}

/// Writes queued frames, flushing once per batch so pipelined requests share packets.
async fn write_loop(
    mut sink: FramedWrite<OwnedWriteHalf, Codec>,
    mut rx: mpsc::Receiver<ClientMessage>,
) {
    while let Some(msg) = rx.recv().await {
        if let Err(e) = sink.feed(msg).await {
            tracing::debug!(error = %e, "write failed");
            return;
        }
        while let Ok(msg) = rx.try_recv() {
            if let Err(e) = sink.feed(msg).await {
                tracing::debug!(error = %e, "write failed");
                return;
            }
        }
        // Usually the socket takes the batch at once; only a flush that has to wait gets a
        // stall timer (arming one per flush is a timer entry per request).
        let flushed = match sink.flush().now_or_never() {
            Some(res) => Ok(res),
            None => tokio::time::timeout(WRITE_STALL, sink.flush()).await,
        };
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "flush failed");
                return;
            }
            Err(_) => {
                tracing::debug!("flush stalled; giving up on the connection");
                return;
            }
        }
    }
    let _ = tokio::time::timeout(WRITE_STALL, sink.close()).await;
}
