//! [`RawClient`]: a minimal client that speaks the wire protocol directly, so that the
//! end-to-end tests do not depend on `dlock-client`.

use dlock_proto::{ConvertRequest, LockRequest, UnlockRequest};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use dlock_proto::{
    ClientMessage, Event, EventKind, FencingToken, FrameCodec, Hello, LockFlags, LockId, Mode,
    PROTOCOL_VERSION, Query, Reply, Request, RequestId, Resume, ServerMessage, SessionId, Welcome,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// How long the helpers wait for an expected message before failing the test.
pub const WAIT: Duration = Duration::from_secs(10);

/// A framed connection to a dlock server, without any session logic.
pub type RawFramed = Framed<TcpStream, FrameCodec<ServerMessage, ClientMessage>>;

/// Opens a TCP connection and wraps it in the client-side codec (no `Hello` sent).
pub async fn connect_framed(addr: SocketAddr) -> Result<RawFramed> {
    let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .context("connect timed out")?
        .context("connect failed")?;
    stream.set_nodelay(true)?;
    Ok(Framed::new(stream, FrameCodec::default()))
}

/// [`connect_framed`] from the local address `from` (another loopback address, such as
/// 127.0.0.2, is another peer to the server).
pub async fn connect_framed_from(from: std::net::IpAddr, addr: SocketAddr) -> Result<RawFramed> {
    let socket = match from {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(from, 0))?;
    let stream = tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .context("connect timed out")?
        .context("connect failed")?;
    stream.set_nodelay(true)?;
    Ok(Framed::new(stream, FrameCodec::default()))
}

/// Receives the next message, failing after [`WAIT`]. `Ok(None)` when the server closed the
/// connection.
pub async fn recv_raw(framed: &mut RawFramed) -> Result<Option<ServerMessage>> {
    recv_raw_within(framed, WAIT).await
}

/// [`recv_raw`], failing after `wait`.
pub async fn recv_raw_within(
    framed: &mut RawFramed,
    wait: std::time::Duration,
) -> Result<Option<ServerMessage>> {
    match tokio::time::timeout(wait, framed.next()).await {
        Err(_) => bail!("no message from the server within {wait:?}"),
        Ok(None) => Ok(None),
        Ok(Some(Ok(Ok(msg)))) => Ok(Some(msg)),
        Ok(Some(Ok(Err(malformed)))) => bail!("server sent a malformed frame: {malformed}"),
        // A reset after the server's last frame counts as closed.
        Ok(Some(Err(dlock_proto::CodecError::Io(_)))) => Ok(None),
        Ok(Some(Err(e))) => Err(anyhow!("codec error: {e}")),
    }
}

/// A client session over one connection, with helpers to send requests and wait for events.
pub struct RawClient {
    /// The connection.
    pub framed: RawFramed,
    /// The session.
    pub session: SessionId,
    /// The session's secret.
    pub secret: u128,
    /// The `Welcome` received.
    pub welcome: Welcome,
    /// The highest event sequence number received.
    pub last_seq: u64,
    /// The next request id.
    next_id: u64,
    /// Messages received while waiting for something else, in arrival order.
    pending: Vec<ServerMessage>,
    addr: SocketAddr,
}

impl RawClient {
    /// Connects and opens a session with the server's default lease.
    pub async fn connect(addr: SocketAddr, name: &str) -> Result<RawClient> {
        RawClient::connect_with_ttl(addr, name, 0).await
    }

    /// Connects from the local address `from` (another loopback address is another peer to
    /// the server) and opens a session with the server's default lease.
    pub async fn connect_from(
        from: std::net::IpAddr,
        addr: SocketAddr,
        name: &str,
    ) -> Result<RawClient> {
        RawClient::open(connect_framed_from(from, addr).await?, addr, name, 0).await
    }

    /// Connects and opens a session with a lease of `ttl_ms` (0: the server's default).
    pub async fn connect_with_ttl(addr: SocketAddr, name: &str, ttl_ms: u64) -> Result<RawClient> {
        RawClient::open(connect_framed(addr).await?, addr, name, ttl_ms).await
    }

    /// Opens a session on `framed`, a new connection to `addr`.
    async fn open(
        mut framed: RawFramed,
        addr: SocketAddr,
        name: &str,
        ttl_ms: u64,
    ) -> Result<RawClient> {
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: name.to_owned(),
            lease_ttl_ms: ttl_ms,
            resume: None,
            token: None,
        };
        framed.send(ClientMessage::Hello(hello)).await?;
        let welcome = match recv_raw(&mut framed).await? {
            Some(ServerMessage::Welcome(w)) => w,
            other => bail!("expected Welcome, got {other:?}"),
        };
        Ok(RawClient {
            framed,
            session: welcome.session,
            secret: welcome.secret,
            welcome,
            last_seq: 0,
            next_id: 1,
            pending: Vec::new(),
            addr,
        })
    }

    /// Reconnects on a new connection and resumes this session from `last_seq`. Request ids
    /// continue where they were. Returns the `Welcome`; the replayed events follow as
    /// ordinary messages.
    pub async fn resume(&mut self) -> Result<Welcome> {
        let mut framed = connect_framed(self.addr).await?;
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: String::new(),
            lease_ttl_ms: 0,
            resume: Some(Resume {
                session: self.session,
                secret: self.secret,
                last_seq: self.last_seq,
            }),
            token: None,
        };
        framed.send(ClientMessage::Hello(hello)).await?;
        let welcome = match recv_raw(&mut framed).await? {
            Some(ServerMessage::Welcome(w)) => w,
            other => bail!("expected Welcome on resume, got {other:?}"),
        };
        self.framed = framed;
        self.pending.clear();
        Ok(welcome)
    }

    /// Sends a request with the next id; returns the id.
    pub async fn send(&mut self, body: Request) -> Result<RequestId> {
        let id = self.next_id();
        self.send_with_id(id, body).await?;
        Ok(id)
    }

    /// Takes the next request id without sending anything (for requests fed to
    /// [`framed`](Self::framed) directly, such as a pipelined batch flushed at once).
    pub fn next_id(&mut self) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        id
    }

    /// Feeds an EX `Lock` of `resource` with the next id into [`framed`](Self::framed)
    /// without flushing (one of a pipelined batch); returns the id.
    pub async fn feed_lock_ex(&mut self, resource: impl Into<Vec<u8>>) -> Result<RequestId> {
        let id = self.next_id();
        let body = Request::Lock(LockRequest {
            resource: resource.into(),
            mode: Mode::EX,
            flags: LockFlags::empty(),
            value: None,
            timeout_ms: None,
        });
        self.framed
            .feed(ClientMessage::Request { id, body })
            .await
            .context("feeding a request")?;
        Ok(id)
    }

    /// Sends a request with a chosen id (for retransmission tests).
    pub async fn send_with_id(&mut self, id: RequestId, body: Request) -> Result<()> {
        self.framed
            .send(ClientMessage::Request { id, body })
            .await
            .context("sending a request")
    }

    /// Acknowledges every event received so far.
    pub async fn ack(&mut self) -> Result<()> {
        let seq = self.last_seq;
        self.framed.send(ClientMessage::Ack { seq }).await?;
        Ok(())
    }

    /// Sends `Lock`; returns the request id.
    pub async fn lock(
        &mut self,
        resource: &str,
        mode: Mode,
        flags: LockFlags,
    ) -> Result<RequestId> {
        self.send(Request::Lock(LockRequest {
            resource: resource.as_bytes().to_vec(),
            mode,
            flags,
            value: None,
            timeout_ms: None,
        }))
        .await
    }

    /// Sends `Convert`; returns the request id.
    pub async fn convert(
        &mut self,
        lock: LockId,
        mode: Mode,
        flags: LockFlags,
    ) -> Result<RequestId> {
        self.send(Request::Convert(ConvertRequest {
            lock,
            mode,
            flags,
            value: None,
            timeout_ms: None,
        }))
        .await
    }

    /// Sends `Unlock`; returns the request id.
    pub async fn unlock(&mut self, lock: LockId) -> Result<RequestId> {
        self.send(Request::Unlock(UnlockRequest {
            lock,
            flags: LockFlags::empty(),
            value: None,
        }))
        .await
    }

    /// Takes a lock and waits for its grant: returns the lock id and token.
    pub async fn acquire(&mut self, resource: &str, mode: Mode) -> Result<(LockId, FencingToken)> {
        let id = self.lock(resource, mode, LockFlags::empty()).await?;
        let event = self.event_for(id).await?;
        match event.kind {
            EventKind::Granted { token, .. } => {
                Ok((event.lock.context("grant without a lock id")?, token))
            }
            other => bail!("expected Granted for {id}, got {other:?}"),
        }
    }

    /// Unlocks and waits for UNLOCKED.
    pub async fn release(&mut self, lock: LockId) -> Result<()> {
        let id = self.unlock(lock).await?;
        match self.event_for(id).await?.kind {
            EventKind::Unlocked => Ok(()),
            other => bail!("expected Unlocked for {id}, got {other:?}"),
        }
    }

    /// Receives the next message from the server (or one set aside earlier), failing after
    /// [`WAIT`]; `None` when the connection closed. Tracks `last_seq`.
    pub async fn recv(&mut self) -> Result<Option<ServerMessage>> {
        if !self.pending.is_empty() {
            return Ok(Some(self.pending.remove(0)));
        }
        let msg = recv_raw(&mut self.framed).await?;
        if let Some(ServerMessage::Event { seq, .. }) = &msg {
            self.last_seq = self.last_seq.max(*seq);
        }
        Ok(msg)
    }

    /// Waits for the first message matching `pick`, setting the others aside for later.
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&ServerMessage) -> Option<T>,
    ) -> Result<T> {
        if let Some(i) = self.pending.iter().position(|m| pick(m).is_some()) {
            let m = self.pending.remove(i);
            return pick(&m).context("picked message vanished");
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = match tokio::time::timeout(left, recv_raw(&mut self.framed)).await {
                Err(_) => bail!(
                    "timed out waiting for {what}; set aside: {:?}",
                    self.pending
                ),
                Ok(r) => r?,
            };
            let Some(msg) = msg else {
                bail!(
                    "connection closed while waiting for {what}; set aside: {:?}",
                    self.pending
                );
            };
            if let ServerMessage::Event { seq, .. } = &msg {
                self.last_seq = self.last_seq.max(*seq);
            }
            if let Some(t) = pick(&msg) {
                return Ok(t);
            }
            self.pending.push(msg);
        }
    }

    /// Waits for the next event answering request `id`.
    pub async fn event_for(&mut self, id: RequestId) -> Result<Event> {
        self.wait_for(&format!("an event for {id}"), |m| match m {
            ServerMessage::Event { event, .. } if event.request == Some(id) => Some(event.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for the next event whose kind matches `pick` (any request).
    pub async fn event_where(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Event) -> bool,
    ) -> Result<Event> {
        self.wait_for(what, |m| match m {
            ServerMessage::Event { event, .. } if pick(event) => Some(event.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for the reply to request `id`.
    pub async fn reply_for(&mut self, id: RequestId) -> Result<Reply> {
        self.wait_for(&format!("the reply to {id}"), |m| match m {
            ServerMessage::Reply { id: rid, body } if *rid == id => Some(body.clone()),
            _ => None,
        })
        .await
    }

    /// Pings and waits for the pong: proves the server serves this connection.
    pub async fn ping(&mut self) -> Result<()> {
        let id = self.send(Request::Ping).await?;
        match self.reply_for(id).await? {
            Reply::Pong { .. } => Ok(()),
            other => bail!("expected Pong, got {other:?}"),
        }
    }

    /// Queries one resource.
    pub async fn query_resource(
        &mut self,
        resource: &str,
    ) -> Result<Option<dlock_proto::ResourceInfo>> {
        let id = self
            .send(Request::Query(Query::Resource(
                resource.as_bytes().to_vec(),
            )))
            .await?;
        match self.reply_for(id).await? {
            Reply::Resources { mut resources, .. } => Ok(resources.pop()),
            other => bail!("expected Resources, got {other:?}"),
        }
    }

    /// Messages received while waiting for others and not consumed yet.
    pub fn set_aside(&self) -> &[ServerMessage] {
        &self.pending
    }

    /// Sends Goodbye and waits for SessionClosed.
    pub async fn goodbye(&mut self) -> Result<()> {
        let id = self.send(Request::Goodbye).await?;
        match self.event_for(id).await?.kind {
            EventKind::SessionClosed => Ok(()),
            other => bail!("expected SessionClosed, got {other:?}"),
        }
    }
}
