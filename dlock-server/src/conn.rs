//! One client connection: a reader that decodes frames and feeds the core task, and a writer
//! that drains the connection's outbox, all queued frames per turn with one write.
//!
//! About 630 lines on purpose: the handshake, the reader and the writer run in one task and
//! depend on each other's order there (the reader puts an answer it made in place into the
//! outbox without a wake-up because the writer is polled after it on every wake-up; the
//! reader takes no request while the outbox holds more than a quarter of its bound, which
//! only the writer drains), so they are read best in one file.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use dlock_proto::{
    ClientMessage, CodecError, FrameCodec, Hello, PROTOCOL_VERSION, ProtocolError, Refusal, Reply,
    RequestError, RequestId, ServerMessage, SessionId,
};
use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{Semaphore, TryAcquireError, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::codec::FramedWrite;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::Config;
use crate::admission::{AckFilter, Admitted, RateLimit, SharedRate, admit_shared};
use crate::budget::OUTBOX_RESERVE;
use crate::complaints::{Complaint, complain};
use crate::core_task::run::CoreInbox;
use crate::dormant::Dormant;
use crate::frames::{FrameReader, ReadOutcome};
use crate::handle::{ConnHandle, ConnId, ConnShared, Final};
use crate::metrics::{FrameError, NetMetrics, NetRefusal};
use crate::msg::{CoreMsg, HelloOutcome, StatusAnswer, StatusQuery};
use crate::outbox::Outbox;
use crate::security::Security;
use crate::stream::{ReadHalf, ServerStream};

/// Most requests of one connection waiting in (or for) the core task. Bounds what one
/// connection can put in the shared inbox ahead of others, and how far its answers can
/// overshoot the point where its reader stops taking requests (a quarter of the outbox
/// bound): with 64 KiB answers, 32 of them fit in the rest of the default bound.
const MAX_IN_FLIGHT: usize = 32;

/// The writer's buffer size before it writes to the socket in the middle of a turn. Frames
/// are encoded into one buffer and written when the turn's frames are all in; a turn of
/// small frames (a core wake-up's events of about a hundred bytes each) stays below this
/// and goes out with one write.
const WRITE_BUFFER: usize = 64 * 1024;

/// Who is on the other end of a connection, as far as the transport can tell.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    /// The client's address.
    pub(crate) addr: SocketAddr,
    /// The identity its (verified) TLS client certificate names, if any.
    pub(crate) cert_identity: Option<String>,
    /// The server's security state, to authenticate its `Hello`.
    pub(crate) security: Arc<Security>,
}

/// Serves one accepted connection (plain TCP or TLS) until it closes, holding its places
/// under the connection limits (`admitted`).
pub(crate) async fn serve<S: ServerStream>(
    stream: S,
    who: Peer,
    id: ConnId,
    core_tx: CoreInbox,
    config: Arc<Config>,
    server_shutdown: CancellationToken,
    admitted: Admitted,
) {
    let peer = who.addr;
    let (r, w) = stream.split();
    let reader = FrameReader::new(r, config.max_frame_len, config.frame_timeout);
    let mut writer = FramedWrite::new(
        w,
        FrameCodec::<ClientMessage, ServerMessage>::new(config.max_frame_len),
    );
    writer.set_backpressure_boundary(WRITE_BUFFER);
    let shared = crate::outbox::Shared {
        reserve: OUTBOX_RESERVE,
        pool: admitted.outbox_pool.clone(),
    };
    let outbox = Arc::new(Outbox::with_pool(config.outbox_max_bytes, Some(shared)));
    let shared = Arc::new(ConnShared::new(server_shutdown, peer, admitted.net.clone()));
    let conn = ConnHandle {
        id,
        outbox: outbox.clone(),
        shared: shared.clone(),
    };
    // Both halves run in this task: aborting the server drops them together, and a request
    // crosses at most two tasks (this one and the core task), one when the core is idle and
    // this task handles it in place. Both halves are polled on every wake-up of the task,
    // the reader first, but the half that was not woken returns at once (socket readiness
    // and the outbox are checked without a system call), so the two do not compete; while
    // the reader waits for room in the core's inbox, the writer keeps draining the outbox.
    // The rate this connection shares with the others of its address (none if unlimited).
    let peer_rate = (config.max_request_rate_per_peer > 0)
        .then(|| admitted._slot.shared_rate(config.max_request_rate_per_peer));
    let read = std::pin::pin!(read_loop(reader, conn, core_tx, &config, &who, peer_rate));
    let write = std::pin::pin!(write_loop(writer, outbox, shared, &config));
    reader_then_writer(read, write).await;
    debug!(%peer, conn = id, "connection closed");
}

/// Runs both halves of a connection to their ends, polling the reader before the writer on
/// every wake-up of the task: what the reader had handled in place (and put in the outbox
/// without waking the task, see `CoreInbox::try_handle_here`) is then written in the same
/// wake-up.
async fn reader_then_writer(
    mut read: Pin<&mut impl Future<Output = ()>>,
    mut write: Pin<&mut impl Future<Output = ()>>,
) {
    let (mut read_done, mut write_done) = (false, false);
    std::future::poll_fn(|cx| {
        if !read_done {
            read_done = read.as_mut().poll(cx).is_ready();
        }
        if !write_done {
            write_done = write.as_mut().poll(cx).is_ready();
        }
        if read_done && write_done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

/// Sends `refusal` to a connection that will not be served, then closes it.
///
/// After the refusal the write half is shut and the input read until the client closes
/// (all within [`Config::shutdown_grace`]): closing a socket with unread input (the client's
/// `Hello`) resets the connection, and a reset can destroy the refusal before the client
/// has read it.
pub(crate) async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    refusal: Refusal,
    config: Arc<Config>,
) {
    let mut sink = FramedWrite::new(
        stream,
        FrameCodec::<ClientMessage, ServerMessage>::new(config.max_frame_len),
    );
    let _ = tokio::time::timeout(config.shutdown_grace, async move {
        if sink.send(ServerMessage::Refused(refusal)).await.is_err() || sink.close().await.is_err()
        {
            return;
        }
        let mut stream = sink.into_inner();
        let mut discard = [0u8; 512];
        while matches!(stream.read(&mut discard).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// What one decoded frame turned out to be.
enum Frame {
    Message(ClientMessage),
    /// The client closed its sending half between frames (EOF): no request follows, but it
    /// may still be reading the answers (`printf ... | nc -N` does exactly this).
    Eof,
    /// The connection is over (IO error, or a protocol error already handled).
    End,
}

/// Reads the next frame; protocol errors close the connection with the matching message.
async fn next_frame<R: ReadHalf>(reader: &mut FrameReader<R>, conn: &ConnHandle) -> Frame {
    let peer = conn.peer();
    let outcome = reader.next().await;
    let net = &conn.shared.net;
    net.read(reader.take_bytes_read());
    match outcome {
        ReadOutcome::Closed => Frame::Eof,
        ReadOutcome::TimedOut => {
            net.frame_error(FrameError::Timeout);
            complain!(Complaint::FrameTimeout, %peer, "frame not completed in time; closing connection");
            conn.close(
                Some(ServerMessage::ProtocolError(ProtocolError::FrameTimeout)),
                true,
            );
            Frame::End
        }
        ReadOutcome::Frame(Ok(msg)) => Frame::Message(msg),
        ReadOutcome::Frame(Err(malformed)) => {
            net.frame_error(FrameError::Malformed);
            complain!(Complaint::Malformed, %peer, error = %malformed, "malformed frame; closing connection");
            conn.close(
                Some(ServerMessage::ProtocolError(ProtocolError::Malformed(
                    malformed.0,
                ))),
                true,
            );
            Frame::End
        }
        ReadOutcome::Failed(
            e @ (CodecError::FrameTooLarge { len, max }
            | CodecError::ForeignProtocol { len, max, .. }),
        ) => {
            // Bytes of another protocol are answered as any other length past the maximum:
            // read as a length, that is what they are.
            net.frame_error(FrameError::TooLarge);
            complain!(Complaint::TooLarge, %peer, len, max, error = %e, "frame too large; closing connection");
            conn.close(
                Some(ServerMessage::ProtocolError(ProtocolError::FrameTooLarge {
                    len: len as u64,
                    max: max as u64,
                })),
                true,
            );
            Frame::End
        }
        ReadOutcome::Failed(e) => {
            debug!(%peer, error = %e, "read failed");
            Frame::End
        }
    }
}

async fn read_loop<R: ReadHalf>(
    mut reader: FrameReader<R>,
    conn: ConnHandle,
    core_tx: CoreInbox,
    config: &Config,
    who: &Peer,
    peer_rate: Option<SharedRate>,
) {
    let token = conn.shared.token.clone();
    // The handshake runs boxed: its state (the Hello, its timer, the wait for the core)
    // would otherwise be part of every connection's task for the connection's whole life.
    let session = tokio::select! {
        biased;
        _ = token.cancelled() => None,
        s = Box::pin(handshake(&mut reader, &conn, &core_tx, config, who)) => s,
    };
    let Some(session) = session else {
        conn.close(None, true);
        return;
    };
    // One cancellation future for the whole loop: making a fresh one per frame registers and
    // unregisters a waiter on the token each time, which showed up in the per-frame profile;
    // and it is polled only once it has fired (`Dormant`), not at every frame.
    let mut cancelled = Dormant::new(token.cancelled_owned());
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut rate = RateLimit::new(config.max_request_rate, Instant::now());
    let mut acks = AckFilter::default();
    // Whether the loop ended at the client's EOF, every request it sent read and passed on.
    let mut input_ended = false;

    loop {
        let frame = tokio::select! {
            biased;
            _ = &mut cancelled => break,
            f = next_frame(&mut reader, &conn) => f,
        };
        // The instant read for a request, if nothing waited after it: the start of its
        // handling here, for one clock read less per request.
        let mut start = None;
        let msg = match frame {
            Frame::End => break,
            Frame::Eof => {
                input_ended = true;
                break;
            }
            Frame::Message(ClientMessage::Hello(_) | ClientMessage::Probe(_)) => {
                // Not fatal: answered with a typed error; a Hello carries no request id.
                // Neither does a probe, which belongs before a session as a Hello does.
                conn.shared.net.refused(NetRefusal::UnexpectedHello);
                let reply = ServerMessage::Reply {
                    id: RequestId(0),
                    body: Reply::Error(RequestError::UnexpectedHello),
                };
                if !answer_here(&conn, reply) {
                    break;
                }
                continue;
            }
            Frame::Message(ClientMessage::Ack { seq }) => {
                let passed = acks.pass(seq, || {
                    let now = Instant::now();
                    rate.admit(|| now) && peer_rate.as_ref().is_none_or(|r| admit_shared(r, now))
                });
                if !passed {
                    tokio::task::coop::consume_budget().await;
                    continue;
                }
                CoreMsg::Ack {
                    session,
                    conn: conn.id,
                    seq,
                }
            }
            Frame::Message(ClientMessage::Request { id, body }) => {
                // Flow control, so that a client that writes faster than it reads is slowed
                // down rather than cut off, and its answers stay bounded: no new request is
                // taken while the outbox holds more than a quarter of its bound, and at most
                // MAX_IN_FLIGHT of the connection's requests wait in (or for) the core task.
                // Both waits are skipped when there is nothing to wait for (the usual case):
                // a select polls the cancellation first, which takes locks, on every pass.
                let limit = config.outbox_max_bytes / 4;
                if !conn.outbox.is_drained_to(limit) {
                    tokio::select! {
                        biased;
                        _ = &mut cancelled => break,
                        _ = conn.outbox.drained_to(limit) => {}
                    }
                }
                // One clock read per request: the rate's and the service time's.
                let received = Instant::now();
                let admitted = rate.admit(|| received)
                    && peer_rate.as_ref().is_none_or(|r| admit_shared(r, received));
                // What ends or keeps what the session has (a release, a cancel, a goodbye, a
                // renewal) uses up the rate but is never refused for it: refused, it would
                // leave locks held and requests queued that nobody wants, or let a lease run
                // out, and so cost others more than taking it does.
                if !admitted && !ends_or_keeps(&body) {
                    // Over its rate, or its address over the address's: answered here, at no cost to the engine or anyone else.
                    conn.shared.net.refused(NetRefusal::Overloaded);
                    let reply = ServerMessage::Reply {
                        id,
                        body: Reply::Error(RequestError::Overloaded),
                    };
                    if !answer_here(&conn, reply) {
                        break;
                    }
                    continue;
                }
                let slot = match in_flight.clone().try_acquire_owned() {
                    Ok(slot) => {
                        start = Some(received);
                        Ok(slot)
                    }
                    Err(TryAcquireError::Closed) => break,
                    Err(TryAcquireError::NoPermits) => tokio::select! {
                        biased;
                        _ = &mut cancelled => break,
                        slot = in_flight.clone().acquire_owned() => slot,
                    },
                };
                let Ok(slot) = slot else { break };
                CoreMsg::Request {
                    session,
                    conn: conn.id,
                    id,
                    body,
                    slot,
                    received,
                }
            }
        };
        // Handled in this task if the core is idle (see `CoreInbox::try_handle_here`): the
        // answer is then in the outbox, which the writer half drains before the task sleeps.
        let msg = match core_tx.try_handle_here(msg, conn.id, start) {
            Ok(()) => {
                // A request handled here costs the task a unit of tokio's budget, as a read
                // from the socket does: a client that pipelines thousands (decoded from what
                // one read took, without touching the socket again) gives up its worker
                // every 128 of them.
                tokio::task::coop::consume_budget().await;
                continue;
            }
            Err(msg) => msg,
        };
        // Waiting here when the core's inbox is full is the backpressure of the whole
        // server; the writer keeps draining the outbox meanwhile. The common case (room in
        // the inbox) takes the permit without building a waiting future.
        let msg = match core_tx.try_send(msg) {
            Ok(()) => continue,
            Err(mpsc::error::TrySendError::Closed(_)) => break,
            Err(mpsc::error::TrySendError::Full(msg)) => msg,
        };
        let sent = tokio::select! {
            biased;
            _ = &mut cancelled => break,
            r = core_tx.send(msg) => r,
        };
        if sent.is_err() {
            break;
        }
    }
    // Detach from the session (it lives on until its lease runs out, R51), unless the
    // server is going away anyway.
    let detach = if input_ended {
        // A half-closed client still reads: the core task closes the connection itself once
        // it has handled every request read before the EOF (they are ahead of this message
        // in the inbox, in order) and queued their answers before the close.
        CoreMsg::InputEnded {
            session,
            conn: conn.clone(),
        }
    } else {
        CoreMsg::Disconnected {
            session,
            conn: conn.id,
        }
    };
    let sent = tokio::select! {
        biased;
        _ = conn.shared.server_shutdown.cancelled() => false,
        r = core_tx.send(detach) => r.is_ok(),
    };
    if input_ended && sent {
        // Bounded, as a frame in progress is: a half-closed client holds its connection slot
        // no longer than a client that stops in the middle of a frame. The writer keeps
        // draining the outbox meanwhile, and a client that does not read is cut off by the
        // slow-reader timeout as usual.
        let _ = tokio::time::timeout(config.frame_timeout, conn.shared.token.cancelled()).await;
    }
    conn.close(None, true);
}

/// Queues an answer the connection makes itself; `false` (and the connection is being
/// closed as a slow reader) if its outbox is full.
fn answer_here(conn: &ConnHandle, reply: ServerMessage) -> bool {
    if conn.outbox.try_push(reply).is_ok() {
        return true;
    }
    conn.close(
        Some(ServerMessage::ProtocolError(ProtocolError::SlowReader)),
        false,
    );
    false
}

/// Waits for `Hello` (bounded by the handshake timeout) and opens or resumes the session,
/// queueing `Welcome` and any replayed events on the outbox. `None` if the connection ends.
async fn handshake<R: ReadHalf>(
    reader: &mut FrameReader<R>,
    conn: &ConnHandle,
    core_tx: &CoreInbox,
    config: &Config,
    who: &Peer,
) -> Option<SessionId> {
    let peer = conn.peer();
    let first = tokio::time::timeout(config.handshake_timeout, next_frame(reader, conn)).await;
    let mut hello: Hello = match first {
        Err(_) => {
            complain!(Complaint::HandshakeTimeout, %peer, "no Hello within the handshake timeout; closing connection");
            conn.shared.net.frame_error(FrameError::HandshakeTimeout);
            conn.close(
                Some(ServerMessage::ProtocolError(
                    ProtocolError::HandshakeTimeout,
                )),
                true,
            );
            return None;
        }
        Ok(Frame::End | Frame::Eof) => return None,
        Ok(Frame::Message(ClientMessage::Hello(hello))) => hello,
        Ok(Frame::Message(ClientMessage::Probe(probe))) => {
            let version = probe.protocol_version;
            if admit(conn, who, version, probe.token.as_deref()).is_some() {
                answer_probe(conn, core_tx).await;
            }
            return None;
        }
        Ok(Frame::Message(_)) => {
            complain!(Complaint::ExpectedHello, %peer, "first frame is not a Hello; closing connection");
            conn.shared.net.frame_error(FrameError::ExpectedHello);
            conn.close(Some(ServerMessage::Refused(Refusal::ExpectedHello)), true);
            return None;
        }
    };
    // The token is checked here and goes no further: the core task sees only the identity.
    let token = hello.token.take();
    let identity = admit(conn, who, hello.protocol_version, token.as_deref())?;
    let (reply_tx, reply_rx) = oneshot::channel();
    let msg = CoreMsg::Hello {
        conn: conn.clone(),
        hello,
        identity,
        reply: reply_tx,
    };
    core_tx.send(msg).await.ok()?;
    match reply_rx.await.ok()? {
        HelloOutcome::Refused(refusal) => {
            debug!(%peer, %refusal, "handshake refused");
            conn.close(Some(ServerMessage::Refused(refusal)), true);
            None
        }
        HelloOutcome::Welcome {
            session,
            messages,
            up_to_seq,
        } => {
            // The core buffers live events of this session until `ReplayDone`, so these go
            // out first and in order; `send` waits for the writer rather than failing, so
            // a long replay is not mistaken for a slow reader.
            for m in messages {
                conn.outbox.push(m).await.ok()?;
            }
            let done = CoreMsg::ReplayDone {
                session,
                conn: conn.id,
                up_to_seq,
            };
            core_tx.send(done).await.ok()?;
            Some(session)
        }
    }
}

/// Checks the protocol `version` and the `token` of a `Hello` or a probe: the identity the
/// client proved (`None` on a server that authenticates nobody), or `None` after closing the
/// connection with the refusal.
fn admit(
    conn: &ConnHandle,
    who: &Peer,
    version: u32,
    token: Option<&str>,
) -> Option<Option<Arc<str>>> {
    let peer = conn.peer();
    if version != PROTOCOL_VERSION {
        complain!(Complaint::VersionMismatch, %peer, client = version, server = PROTOCOL_VERSION, "protocol version mismatch; closing connection");
        conn.shared.net.frame_error(FrameError::VersionMismatch);
        conn.close(
            Some(ServerMessage::Refused(Refusal::VersionMismatch {
                server: PROTOCOL_VERSION,
                client: version,
            })),
            true,
        );
        return None;
    }
    match who
        .security
        .authenticate(token, who.cert_identity.as_deref())
    {
        Ok(identity) => Some(identity),
        Err(_) => {
            complain!(Complaint::Unauthenticated, %peer, "client not authenticated; closing connection");
            conn.shared.net.refused(NetRefusal::Unauthenticated);
            conn.close(Some(ServerMessage::Refused(Refusal::Unauthenticated)), true);
            None
        }
    }
}

/// Answers a probe with the cluster as this server sees it, then closes the connection.
async fn answer_probe(conn: &ConnHandle, core_tx: &CoreInbox) {
    let (reply, answer) = oneshot::channel();
    let query = CoreMsg::Status {
        query: StatusQuery::Cluster,
        reply,
    };
    if core_tx.send(query).await.is_err() {
        return;
    }
    if let Ok(StatusAnswer::Cluster(view)) = answer.await {
        conn.close(Some(ServerMessage::Probed(view)), true);
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut sink: FramedWrite<W, FrameCodec<ClientMessage, ServerMessage>>,
    outbox: Arc<Outbox>,
    shared: Arc<ConnShared>,
    config: &Config,
) {
    let (peer, grace) = (shared.peer, config.shutdown_grace);
    {
        // One turn: take everything queued (the core task delivers a wake-up's output at
        // once; the outbox's byte bound bounds a turn), encode it, then write with one flush.
        let normal = async {
            loop {
                let turn = outbox.take().await;
                if turn.is_empty() {
                    return; // closed
                }
                // A client that does not read stalls the turn: past the slow-reader timeout
                // it is cut off (its session lives on), so it holds no outbox for long. The
                // turn is first tried without a timer: a socket with room takes it at once,
                // and arming a timer per turn showed up in the per-request profile.
                let written = {
                    let write = std::pin::pin!(async {
                        for m in turn {
                            if !feed(&mut sink, m, peer, &shared.net).await {
                                return false;
                            }
                        }
                        sink.flush().await.is_ok()
                    });
                    match poll_once(write).await {
                        Ok(done) => Ok(done),
                        Err(write) => tokio::time::timeout(config.slow_reader_timeout, write).await,
                    }
                };
                match written {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(_) => {
                        complain!(Complaint::SlowReader, %peer, "client not reading; closing connection");
                        shared.close(None, false);
                        return;
                    }
                }
                if outbox.is_empty() {
                    // Idle: hold no write buffer while waiting (the next turn allocates one
                    // of the size its frames need).
                    *sink.write_buffer_mut() = bytes::BytesMut::new();
                }
            }
        };
        tokio::select! {
            biased;
            _ = Dormant::new(shared.token.clone().cancelled_owned()) => {}
            _ = normal => {}
        }
    }
    // The reader stops too when the writer ends on its own (write error); nothing more is
    // queued once the writer is gone.
    shared.token.cancel();
    outbox.close();
    let fin = shared.take_final().unwrap_or_else(|| {
        // `ShuttingDown` tells the client its session ends with this server. A cluster
        // member that stops leaves the sessions to the others: its clients are disconnected
        // without it, as when it stops leading, and resume at the new leader.
        if shared.server_shutdown.is_cancelled() && config.cluster.is_none() {
            Final {
                msg: Some(ServerMessage::ShuttingDown),
                flush_first: true,
            }
        } else {
            Final {
                msg: None,
                flush_first: true,
            }
        }
    });
    // Bounded: a peer that does not read cannot hold the connection open.
    let _ = tokio::time::timeout(grace, async {
        if fin.flush_first {
            for m in outbox.try_take() {
                if !feed(&mut sink, m, peer, &shared.net).await {
                    return;
                }
            }
        }
        if let Some(m) = fin.msg
            && !feed(&mut sink, m, peer, &shared.net).await
        {
            return;
        }
        let _ = sink.close().await;
    })
    .await;
}

/// Polls `fut` once: its output if it is ready at once, else the future to go on with.
async fn poll_once<F: Future + Unpin>(mut fut: F) -> Result<F::Output, F> {
    let ready =
        std::future::poll_fn(|cx| std::task::Poll::Ready(Pin::new(&mut fut).poll(cx))).await;
    match ready {
        std::task::Poll::Ready(out) => Ok(out),
        std::task::Poll::Pending => Err(fut),
    }
}

/// Feeds one frame; `false` if the connection is broken.
async fn feed<W: AsyncWrite + Unpin>(
    sink: &mut FramedWrite<W, FrameCodec<ClientMessage, ServerMessage>>,
    msg: ServerMessage,
    peer: SocketAddr,
    net: &NetMetrics,
) -> bool {
    let before = sink.write_buffer().len();
    match sink.feed(msg).await {
        Ok(()) => {
            // Feeding flushes the whole buffer first when it is over the boundary, so what
            // the buffer grew by, or all of it after a flush, is this frame.
            let after = sink.write_buffer().len();
            net.written(
                (if after >= before {
                    after - before
                } else {
                    after
                }) as u64,
            );
            true
        }
        Err(CodecError::Io(e)) => {
            debug!(%peer, error = %e, "write failed");
            false
        }
        Err(e) => {
            // Not sendable (too large for the frame limit); the core avoids this, so it is
            // a bug worth a warning, but not a reason to drop the connection.
            warn!(%peer, error = %e, "dropping an outgoing message");
            true
        }
    }
}

/// Whether a request only ends or keeps what its session already has: the rate limit
/// counts it but never refuses it (see the read loop).
fn ends_or_keeps(body: &dlock_proto::Request) -> bool {
    matches!(
        body,
        dlock_proto::Request::Unlock(_)
            | dlock_proto::Request::Cancel { .. }
            | dlock_proto::Request::Goodbye
            | dlock_proto::Request::Renew
    )
}
