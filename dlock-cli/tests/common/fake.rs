//! [`FakeServer`]: a scripted dlock server on 127.0.0.1 whose lock table and clock the test
//! chooses, so that what dlock prints about them (ages above all) can be checked exactly.
//!
//! It speaks just enough of the protocol for one `dlock` run: the handshake, queries, pings,
//! renewals, `Goodbye`, and lock requests, which are never granted: a NOQUEUE request gets
//! NOT_QUEUED; any other is queued and then times out right after the next resource query
//! on its connection has been answered (so a waiting dlock draws its status line from that
//! answer before it learns the outcome).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use dlock_proto::codec::{decode_body, encode_body};
use dlock_proto::{
    ClientMessage, DEFAULT_MAX_FRAME_LEN, Event, EventKind, FencingToken, LockFlags, LockId,
    LockInfo, LockState, Mode, PROTOCOL_VERSION, Query, Reject, Reply, Request, RequestId,
    ResourceInfo, ServerMessage, SessionId, Welcome,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the fake server answers.
#[derive(Clone, Debug)]
pub struct Script {
    /// The clock in `Welcome::now_ms`.
    pub welcome_now_ms: u64,
    /// The clock in every `Reply::Resources`.
    pub resources_now_ms: u64,
    /// The clock in every `Reply::Session` (the session itself is never found).
    pub session_now_ms: u64,
    /// The lock table that resource and prefix queries read.
    pub resources: Vec<ResourceInfo>,
}

impl Script {
    /// Resource `app.db`, held in EX by `holder-1` (s7) since 30,000 ms and waited for in PR by
    /// `waiter-1` (s8) since 87,500 ms, answered at 90,000 ms: by the reply's clock the holder
    /// has held it for exactly 60 s and the waiter has waited 2.5 s. Every other clock the
    /// server shows differs wildly (1,000 ms at the handshake, 5,000,000 ms in session
    /// replies), so an age measured by any other clock is far off.
    pub fn clocked_table() -> Script {
        let lock = |id: u64, name: &str, state: LockState, since_ms: u64| LockInfo {
            lock: LockId(id),
            session: SessionId(id),
            session_name: name.to_owned(),
            token: state.granted_mode().map(|_| FencingToken(id * 10)),
            state,
            since_ms,
        };
        Script {
            welcome_now_ms: 1_000,
            resources_now_ms: 90_000,
            session_now_ms: 5_000_000,
            resources: vec![ResourceInfo {
                name: b"app.db".to_vec(),
                value: vec![0; 16],
                value_valid: true,
                granted: vec![lock(
                    7,
                    "holder-1",
                    LockState::Granted { mode: Mode::EX },
                    30_000,
                )],
                converting: vec![],
                waiting: vec![lock(
                    8,
                    "waiter-1",
                    LockState::Waiting { mode: Mode::PR },
                    87_500,
                )],
                omitted: 0,
            }],
        }
    }
}

/// A running fake server; it stops when dropped.
pub struct FakeServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
    session_queries: Arc<AtomicU64>,
}

impl FakeServer {
    /// Listens on an ephemeral port of 127.0.0.1 and serves every connection with `script`.
    pub async fn start(script: Script) -> Result<FakeServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let script = Arc::new(script);
        let session_queries = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&session_queries);
        let task = tokio::spawn(async move {
            let mut next_session = 1;
            while let Ok((stream, _)) = listener.accept().await {
                let session = SessionId(next_session);
                next_session += 1;
                let script = Arc::clone(&script);
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, session, &script, &counter).await {
                        eprintln!("fake server: {e:#}");
                    }
                });
            }
        });
        Ok(FakeServer {
            addr,
            task,
            session_queries,
        })
    }

    /// The address to point dlock at.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// How many session queries all connections have made so far.
    pub fn session_queries(&self) -> u64 {
        self.session_queries.load(Ordering::SeqCst)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A cluster member that does not lead: it refuses every `Hello` with `NotLeader`, naming
/// the leader its script gives for that connection. It stops when dropped.
pub struct FakeFollower {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl FakeFollower {
    /// Listens on an ephemeral port of 127.0.0.1; its `i`-th connection is told that
    /// `leaders[i]` leads (the last entry for every later one, `None` without any entry).
    pub async fn start(leaders: Vec<Option<String>>) -> Result<FakeFollower> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut n = 0;
            while let Ok((stream, _)) = listener.accept().await {
                let leader = leaders.get(n).or(leaders.last()).cloned().flatten();
                n += 1;
                tokio::spawn(async move {
                    if let Err(e) = refuse(stream, leader).await {
                        eprintln!("fake follower: {e:#}");
                    }
                });
            }
        });
        Ok(FakeFollower { addr, task })
    }

    /// The address to point dlock at.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for FakeFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers the `Hello` on `stream` with `NotLeader` naming `leader`.
async fn refuse(stream: TcpStream, leader: Option<String>) -> Result<()> {
    let mut conn = Conn {
        stream,
        session: SessionId(0),
        seq: 0,
    };
    match conn.recv().await? {
        Some(ClientMessage::Hello(_)) => {}
        other => bail!("expected Hello, got {other:?}"),
    }
    let refusal = dlock_proto::Refusal::NotLeader { leader };
    conn.send(&ServerMessage::Refused(refusal)).await
}

/// One connection: a session of its own, event sequence numbers from 1.
struct Conn {
    stream: TcpStream,
    session: SessionId,
    seq: u64,
}

impl Conn {
    async fn recv(&mut self) -> Result<Option<ClientMessage>> {
        let mut len = [0u8; 4];
        match self.stream.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = usize::try_from(u32::from_be_bytes(len))?;
        if len > DEFAULT_MAX_FRAME_LEN {
            bail!("frame of {len} bytes");
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).await?;
        Ok(Some(decode_body(&body)?))
    }

    async fn send(&mut self, msg: &ServerMessage) -> Result<()> {
        let body = encode_body(msg)?;
        let len = u32::try_from(body.len())?;
        self.stream.write_all(&len.to_be_bytes()).await?;
        self.stream.write_all(&body).await?;
        Ok(())
    }

    async fn event(
        &mut self,
        request: RequestId,
        lock: Option<LockId>,
        kind: EventKind,
    ) -> Result<()> {
        self.seq += 1;
        let event = Event {
            session: self.session,
            request: Some(request),
            lock,
            kind,
        };
        self.send(&ServerMessage::Event {
            seq: self.seq,
            event,
        })
        .await
    }

    async fn reply(&mut self, id: RequestId, body: Reply) -> Result<()> {
        self.send(&ServerMessage::Reply { id, body }).await
    }
}

async fn serve(
    stream: TcpStream,
    session: SessionId,
    script: &Script,
    session_queries: &AtomicU64,
) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut conn = Conn {
        stream,
        session,
        seq: 0,
    };
    let hello = match conn.recv().await? {
        Some(ClientMessage::Hello(h)) => h,
        other => bail!("expected Hello, got {other:?}"),
    };
    let lease_ttl_ms = if hello.lease_ttl_ms == 0 {
        10_000
    } else {
        hello.lease_ttl_ms
    };
    let welcome = Welcome {
        session,
        secret: 1,
        lease_ttl_ms,
        server_version: "fake".to_owned(),
        protocol_version: PROTOCOL_VERSION,
        resumed: false,
        lvb_len: 16,
        max_frame_len: u32::try_from(DEFAULT_MAX_FRAME_LEN)?,
        now_ms: script.welcome_now_ms,
    };
    conn.send(&ServerMessage::Welcome(welcome)).await?;
    let mut next_lock = 1;
    // The queued lock request that times out after the next resource query.
    let mut queued: Option<(RequestId, LockId)> = None;
    while let Some(msg) = conn.recv().await? {
        let ClientMessage::Request { id, body } = msg else {
            continue; // acks
        };
        match body {
            Request::Query(Query::Session { .. }) => {
                session_queries.fetch_add(1, Ordering::SeqCst);
                let body = Reply::Session {
                    now_ms: script.session_now_ms,
                    session: None,
                    more: false,
                };
                conn.reply(id, body).await?;
            }
            Request::Query(Query::Cluster) => {
                conn.reply(id, Reply::Cluster(None)).await?;
            }
            Request::Query(query) => {
                let resources = script
                    .resources
                    .iter()
                    .filter(|r| match &query {
                        Query::Resource(name) => &r.name == name,
                        Query::Prefix { prefix, .. } => r.name.starts_with(prefix),
                        Query::Session { .. } | Query::Cluster => false,
                    })
                    .cloned()
                    .collect();
                let body = Reply::Resources {
                    now_ms: script.resources_now_ms,
                    resources,
                    more: false,
                };
                conn.reply(id, body).await?;
                if let Some((request, lock)) = queued.take() {
                    conn.event(request, Some(lock), EventKind::TimedOut).await?;
                }
            }
            Request::Lock(req) => {
                let lock = LockId(next_lock);
                next_lock += 1;
                if req.flags.contains(LockFlags::NOQUEUE) {
                    conn.event(id, Some(lock), EventKind::NotQueued).await?;
                } else {
                    conn.event(id, Some(lock), EventKind::Queued).await?;
                    queued = Some((id, lock));
                }
            }
            Request::Ping => {
                let body = Reply::Pong {
                    server_version: "fake".to_owned(),
                };
                conn.reply(id, body).await?;
            }
            Request::Renew => {
                let kind = EventKind::Renewed {
                    ttl_ms: lease_ttl_ms,
                };
                conn.event(id, None, kind).await?;
            }
            Request::Goodbye => {
                conn.event(id, None, EventKind::SessionClosed).await?;
                return Ok(());
            }
            Request::Convert(_) | Request::Unlock(_) | Request::Cancel { .. } => {
                let kind = EventKind::Rejected {
                    reason: Reject::NotFound,
                };
                conn.event(id, None, kind).await.context("rejecting")?;
            }
        }
    }
    Ok(())
}
