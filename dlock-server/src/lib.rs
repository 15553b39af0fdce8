//! dlock-server: serves the dlock engine over TCP.
//!
//! One task owns the engine ([`dlock_core::Core`]) and applies the commands of every
//! connection in one order; one task per connection decodes frames and writes that
//! connection's outbox. The binary (`dlock-server`) only parses flags, sets up logging and
//! calls [`serve`]; tests call [`run`] with a listener on `127.0.0.1:0`.
//!
//! What the server adds to the engine:
//!
//! - **Sessions over connections.** `Hello` opens a session (with a random secret) or
//!   resumes one; a resumed session gets every event after the client's `last_seq` again.
//!   Each event carries a per-session `seq` and stays in a bounded replay buffer until the
//!   client acknowledges it. A dropped connection leaves the session (and its locks, R51)
//!   until its lease runs out; any message renews the lease.
//! - **Retransmissions.** Engine request ids must increase within a session; one at or
//!   below the highest seen is not applied again (its events come from the replay).
//! - **Fencing-token floor.** A ceiling persisted (fsynced, written ahead of use) in the data
//!   directory keeps tokens and ids growing across restarts, even after `kill -9`.
//! - **Recovery grace after a restart** ([`grace`]). The engine starts empty after a restart,
//!   but a client of the previous run may still believe it holds its locks until its lease
//!   runs out. So the server records (fsynced, before the session is confirmed) the longest
//!   lease it has granted, and a restart on an existing data directory waits that long plus
//!   [`GRACE_MARGIN`] (100 ms) before granting anything ([`Config::restart_grace`], flag
//!   `--restart-grace auto|<duration>|0`). Meanwhile connections, handshakes and new sessions
//!   work as usual; resumes of old sessions are refused (`UnknownSession`), so their clients
//!   learn at once that their locks are gone; queries, pings, acks and renewals are served at
//!   once; lock, convert, unlock, cancel and goodbye requests are held in a bounded FIFO
//!   ([`Config::grace_queue_capacity`], beyond it `RequestError::Overloaded`) and applied in
//!   arrival order when the grace ends (a request timeout counts from then). A first start on
//!   a fresh data directory has no grace; so has `--restart-grace 0`, at the risk that a lock
//!   is granted while a client of the previous run still believes it holds it (fencing tokens
//!   still protect resources that check them). A graceful shutdown is followed by a grace
//!   too: a client may have missed the `ShuttingDown` notice.
//! - **Bounds everywhere.** Connections (over the limit, `Refused(TooManyConnections)` and
//!   a closed socket), frame length, the
//!   core's inbox, each connection's outbox in bytes (a client that does not read is cut off as a
//!   slow reader), each session's replay buffer, query reply sizes.
//! - **Operations over HTTP** (`http`, only with [`run_with_http`], [`serve`] with
//!   [`Config::http_listen`] or [`Server::http`]): Prometheus metrics at `/metrics`, `/healthz`,
//!   `/readyz` (503 during the restart grace), a JSON API under `/api/` (the types of
//!   `dlock_proto::status`) and a live status page at `/`. Counting costs the hot path no
//!   lock: the core task's counters are its own integers, the connections' relaxed atomics.
//! - **Bad input harms nobody else.** Garbage, oversized or malformed frames, a wrong
//!   protocol version or a missing `Hello` get a typed error and a closed connection.
//!
//! ```no_run
//! # async fn example() -> Result<(), dlock_server::ServerError> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
//! let config = dlock_server::Config {
//!     data_dir: "/tmp/dlock-example".into(),
//!     ..Default::default()
//! };
//! dlock_server::run(listener, config, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```
#![forbid(unsafe_code)]

mod admission;
pub mod audit;
mod audit_replica;
pub mod budget;
pub mod cli;
pub mod cluster;
mod complaints;
mod config;
mod conn;
mod core_task;
mod dormant;
mod error;
mod floor;
mod frames;
pub mod grace;
mod handle;
mod http;
mod logged;
mod metrics;
mod msg;
mod outbox;
pub mod security;
mod setup;
mod spawn;
mod stream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::complaints::{Complaint, complain};

pub use config::{
    Config, DEFAULT_DATA_DIR, DEFAULT_HTTP_LISTEN, DEFAULT_LISTEN, replay_capacity_for,
};
pub use error::ServerError;
pub use grace::{GRACE_MARGIN, RestartGrace};
pub use security::{Security, TlsConfig};
pub use setup::{FRAME_HEADROOM, MIN_NAME_LEN, MIN_VALUE_LEN};
use setup::{lock_data_dir, start_cluster, validate};
pub use spawn::{Server, ServerHandle};

/// Most connections over [`Config::max_connections`] (or over
/// [`Config::max_connections_per_peer`]) being refused at one time. A refusal sends one
/// small frame and waits (at most [`Config::shutdown_grace`]) for the client to close, so
/// that the client reads the refusal rather than a reset. Beyond this many, a further
/// connection is still sent its refusal (a fresh socket takes one small frame without
/// waiting), but it is closed at once: a client whose first request crosses that close may
/// see a reset instead.
pub const MAX_REFUSALS: usize = 256;

/// The log filter without `--log-level` or `RUST_LOG`: `info`, and openraft's `warn`, but
/// not its line per failed heartbeat or append to a member that is down (20 a second), nor
/// its line per failed (pre-)vote request of a member that cannot reach a majority (several
/// a second): the server says once, then once a minute, that a member does not answer.
pub const DEFAULT_LOG_FILTER: &str = "info,openraft=warn,openraft::core::heartbeat=error,\
     openraft::core::raft_core=error,openraft::replication=error,\
     openraft::engine::handler::replication_handler=error";

/// The server's version string, sent in `Welcome` and `Pong`.
pub const SERVER_VERSION: &str = concat!("dlock-server ", env!("CARGO_PKG_VERSION"));

/// Serves `listener` until `shutdown` completes, then shuts down gracefully: stops
/// accepting, sends `ShuttingDown` to every client (a cluster member does not: the sessions
/// stay with the cluster, and its clients resume at the new leader), flushes the outboxes
/// (bounded by [`Config::shutdown_grace`]) and returns.
///
/// Returns an error if the data directory cannot be used (the fencing-token floor is written
/// at the start), or if, while serving, the floor could not be raised for so long that every
/// token reserved ahead is used (the server stops rather than risk handing out a token that a
/// restart could repeat; a failed write before that is logged and retried).
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let security = Security::load(&config)?;
    run_inner(listener, None, config, security, shutdown, None).await
}

/// [`run`] with security state loaded beforehand by [`Security::load`], which the caller
/// keeps to [`reload`](Security::reload) it (on SIGHUP, say) while the server runs.
pub async fn run_secured(
    listener: TcpListener,
    config: Config,
    security: Arc<Security>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    run_inner(listener, None, config, security, shutdown, None).await
}

/// [`run_secured`], and the HTTP listener (metrics, health, JSON API, status page) on `http`
/// until the server stops. `config.http_listen` is not used: `http` is already bound.
pub async fn run_with_http(
    listener: TcpListener,
    http: TcpListener,
    config: Config,
    security: Arc<Security>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    run_inner(listener, Some(http), config, security, shutdown, None).await
}

/// Serves until `shutdown`; `dir_lock` is the data directory's lock if the caller took it
/// already (it is taken here otherwise).
pub(crate) async fn run_inner(
    listener: TcpListener,
    http: Option<TcpListener>,
    config: Config,
    security: Arc<Security>,
    shutdown: impl Future<Output = ()>,
    dir_lock: Option<floor::DirLock>,
) -> Result<(), ServerError> {
    validate(&config)?;
    let mut config = config;
    let fitted_budget = setup::fit_limits(&mut config);
    let _dir_lock = match dir_lock {
        Some(lock) => lock,
        None => lock_data_dir(&config.data_dir).await?,
    };
    setup::warn_if_open(
        &config.data_dir,
        if config.cluster.is_some() {
            "the fencing floor, the lease record and this member's Raft state (raft/, which \
             holds every session's resume secret)"
        } else {
            "the fencing floor and the lease record, which fencing tokens and the restart \
             grace rest on"
        },
    );
    let mut floor = floor::Floor::open(&config.data_dir)?;
    if config.cluster.is_none() {
        // The floor is written before the lease record, at the first start too: a record
        // without a floor is a floor lost since, and tokens would start again from 1.
        if !floor.existed() && grace::LeaseRecord::exists(&config.data_dir) {
            return Err(ServerError::MissingFloor {
                floor: config.data_dir.join(floor::FILE_NAME),
                record: config.data_dir.join(grace::FILE_NAME),
            });
        }
        // A data directory that cannot be written stops the server here, before it serves
        // anyone.
        floor.reserve()?;
    }
    // A previous lifetime that did not record its leases may have granted the longest lease
    // the configuration allows.
    let assume_ms = config.engine.max_ttl_ms;
    let (lease_record, previous) =
        grace::LeaseRecord::open(&config.data_dir, floor.existed(), assume_ms)?;
    let grace_len = grace::grace_for(config.restart_grace, previous, assume_ms);
    let start = tokio::time::Instant::now();
    info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        data_dir = %config.data_dir.display(),
        fencing_floor = floor.base(),
        default_lease_ttl = ?config.default_lease_ttl,
        min_lease_ttl_ms = config.engine.min_ttl_ms,
        max_lease_ttl_ms = config.engine.max_ttl_ms,
        memory_budget = %bytesize::ByteSize(fitted_budget).display().iec(),
        max_connections = config.max_connections,
        max_sessions = config.engine.max_sessions,
        max_locks = config.engine.max_locks,
        max_resources = config.engine.max_resources,
        max_locks_per_session = config.engine.max_locks_per_session,
        max_waiters_per_resource = config.engine.max_waiters_per_resource,
        max_name_len = config.engine.max_name_len,
        value_len = config.engine.lvb_len,
        max_frame_len = config.max_frame_len,
        restart_grace = %config.restart_grace,
        "dlock-server starting"
    );
    let grace = setup::restart_grace(grace_len, &lease_record, previous, assume_ms, start);
    setup::warn_if_exposed(&listener, &security);
    if let Some(warning) = setup::rules_warning(security.has_rules(), security.authenticates()) {
        warn!("{warning}");
    }
    let config = Arc::new(config);
    let token = CancellationToken::new();
    // In a cluster: the Raft node, its peer listener, the leader's duties and the proposer.
    let mut cluster_tasks = JoinSet::new();
    let (cluster, raft) = match &config.cluster {
        None => (None, None),
        Some(cc) => {
            let (link, raft) =
                start_cluster(cc, &config, &mut cluster_tasks, token.clone()).await?;
            (Some(link), Some(raft))
        }
    };
    let grace = if config.cluster.is_some() {
        None
    } else {
        grace
    };
    let sequencer = cluster.as_ref().map(|link| link.sequencer.clone());
    // The counts of client misbehaviour logged at DEBUG only; in a JoinSet so that it stops
    // with `run`, however it ends.
    let mut summaries = JoinSet::new();
    summaries.spawn(complaints::summaries(token.clone()));
    // In a JoinSet so that dropping `run` (an abort) also drops the core task.
    let mut core = JoinSet::new();
    let (core_tx, core_run) = core_task::run::start(
        core_task::CoreTask::new(
            config.clone(),
            floor,
            lease_record,
            start,
            grace,
            security.clone(),
            cluster,
        ),
        config.inbox_capacity,
        token.clone(),
    );
    core.spawn(core_run);
    let mut conns = JoinSet::new();
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let peers = Arc::new(admission::PeerConnections::default());
    let outbox_pool = Arc::new(outbox::BytePool::new(config.outbox_pool_bytes));
    let net = Arc::new(metrics::NetMetrics::default());
    // In a JoinSet so that the HTTP listener stops with `run`, however it ends.
    let mut http_task = JoinSet::new();
    if let Some(http) = http {
        let state = http::HttpState {
            core_tx: core_tx.clone(),
            net: net.clone(),
            security: security.clone(),
            cluster: sequencer,
            allowed_hosts: http::AllowedHosts::new(&config.http_allowed_hosts),
        };
        http_task.spawn(http::serve(
            http,
            config.http_max_connections,
            state,
            token.clone(),
        ));
    }

    // Refusals in progress (each answers one connection over the limit), bounded too.
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let mut next_conn = 0u64;
    let mut shutdown = std::pin::pin!(shutdown);

    let mut result = loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => break Ok(()),
            r = core.join_next() => break core_result(r),
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // Usually out of file descriptors: back off briefly, keep serving.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // The permit is taken after `accept`: over the limit, a connection gets a typed
        // refusal at once instead of waiting unanswered in the listen backlog, where its
        // client could not tell a full server from a stuck one.
        let per_peer = config.max_connections_per_peer;
        let admitted = match permits.clone().try_acquire_owned() {
            Err(_) => Err(dlock_proto::Refusal::TooManyConnections),
            Ok(permit) => match peers.try_acquire(peer.ip(), per_peer) {
                Some(slot) => Ok((permit, slot)),
                None => Err(dlock_proto::Refusal::TooManyConnectionsFromPeer {
                    limit: u32::try_from(per_peer).unwrap_or(u32::MAX),
                }),
            },
        };
        if let Err(refusal) = &admitted {
            count_refusal(&net, refusal);
        }
        match admitted {
            Ok((permit, slot)) => {
                next_conn += 1;
                let admitted = admission::Admitted {
                    _permit: permit,
                    _slot: slot,
                    outbox_pool: outbox_pool.clone(),
                    net: net.clone(),
                    _open: net.opened(),
                };
                let who = conn::Peer {
                    addr: peer,
                    cert_identity: None,
                    security: security.clone(),
                };
                let (core_tx, config, token) = (core_tx.clone(), config.clone(), token.clone());
                // A plain connection's task is the connection's own future, with nothing
                // around it: a task is as large as its largest state, and a TLS handshake's
                // would make every plain connection carry several kilobytes more for its
                // whole life (10,000 idle connections held 10 KiB each instead of 4).
                match security.current().acceptor.clone() {
                    None => {
                        let task =
                            conn::serve(stream, who, next_conn, core_tx, config, token, admitted);
                        debug_assert!(
                            std::mem::size_of_val(&task) <= CONN_TASK_MAX,
                            "a plain connection's task grew to {} bytes: every connection \
                             carries it for its whole life",
                            std::mem::size_of_val(&task)
                        );
                        conns.spawn(task)
                    }
                    Some(acceptor) => conns.spawn(serve_tls(
                        stream, acceptor, who, next_conn, core_tx, config, token, admitted,
                    )),
                };
            }
            Err(refusal) => match refusals.clone().try_acquire_owned() {
                Ok(refusing) => {
                    debug!(%peer, %refusal, "refusing a connection");
                    let config = config.clone();
                    let acceptor = security.current().acceptor.clone();
                    conns.spawn(async move {
                        refuse_conn(stream, acceptor, refusal, config).await;
                        drop(refusing);
                    });
                }
                // Even the refusals are at their limit: answered without waiting, if plain.
                Err(_) if security.current().acceptor.is_none() => {
                    refuse_at_once(&stream, refusal, config.max_frame_len);
                }
                Err(_) => drop(stream),
            },
        }
    };

    // Connections already in the listen backlog get a refusal rather than a reset.
    while let Some(Ok((stream, _))) = listener.accept().now_or_never() {
        conns.spawn(refuse_conn(
            stream,
            security.current().acceptor.clone(),
            dlock_proto::Refusal::ShuttingDown,
            config.clone(),
        ));
    }
    drop(listener);
    drop(core_tx);
    if let Some(raft) = &raft
        && let Some(to) = dlock_raft::hand_over(raft, Duration::from_secs(2)).await
    {
        info!(to, "handed the leadership over before stopping");
    }
    if config.cluster.is_some() {
        info!(
            connections = conns.len(),
            "shutting down; the sessions stay with the cluster: clients resume at the new leader"
        );
    } else {
        info!(connections = conns.len(), "shutting down");
    }
    token.cancel();
    // Writers flush within `shutdown_grace`; give them that plus a margin, then cut.
    let wait = config.shutdown_grace + Duration::from_secs(1);
    if tokio::time::timeout(wait, async { while conns.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        warn!(
            remaining = conns.len(),
            "closing connections that did not drain in time"
        );
        conns.shutdown().await;
    }
    if !core.is_empty() {
        match tokio::time::timeout(Duration::from_secs(5), core.join_next()).await {
            Ok(Some(Ok(Err(e)))) if result.is_ok() => result = Err(e),
            Ok(_) => {}
            Err(_) => core.shutdown().await,
        }
    }
    if let Some(raft) = raft {
        if let Err(e) = raft.shutdown().await {
            warn!(error = %e, "the Raft node did not stop cleanly");
        }
        cluster_tasks.shutdown().await;
    }
    info!("dlock-server stopped");
    result
}

/// The most a plain connection's future may take: with tokio's task header it stays in
/// jemalloc's 4 KiB size class (it was 3,184 bytes when this was set; 10,000 idle
/// connections held 10 KiB each while the TLS path's state was part of it). Checked in
/// debug builds, by every test that connects.
const CONN_TASK_MAX: usize = 3584;

/// Serves an admitted connection over TLS, after a handshake that must finish within
/// [`Config::handshake_timeout`] (the connection holds its places under the connection
/// limits meanwhile, so a slow handshake cannot take more than its one).
#[allow(clippy::too_many_arguments)]
async fn serve_tls(
    stream: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    mut who: conn::Peer,
    id: u64,
    core_tx: core_task::run::CoreInbox,
    config: Arc<Config>,
    shutdown: CancellationToken,
    admitted: admission::Admitted,
) {
    let addr = who.addr;
    let tls = match tokio::time::timeout(config.handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            admitted.net.frame_error(metrics::FrameError::TlsHandshake);
            complain!(Complaint::TlsHandshake, peer = %addr, error = %e, "TLS handshake failed; closing connection");
            return;
        }
        Err(_) => {
            admitted
                .net
                .frame_error(metrics::FrameError::TlsHandshakeTimeout);
            complain!(Complaint::TlsHandshakeTimeout, peer = %addr, "TLS handshake not completed in time; closing connection");
            return;
        }
    };
    // A common name that is no identity a token could name (blanks, `*`, a leading `#`) is
    // none: the session name carries the identity as `[identity] name`, and a new leader
    // reads it back from there, which such a name would not survive.
    who.cert_identity = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(security::tls::certificate_identity)
        .filter(|cn| match security::check_identity(cn) {
            Ok(()) => true,
            Err(why) => {
                complain!(Complaint::Unauthenticated, peer = %addr, common_name = %cn, reason = %why, "the client certificate's common name is not a usable identity; the client is not authenticated by it");
                false
            }
        });
    conn::serve(tls, who, id, core_tx, config, shutdown, admitted).await;
}

/// Refuses a connection, over TLS if the server speaks it (a TLS client could not read a
/// refusal in clear text). Bounded by [`Config::shutdown_grace`] for the handshake too.
async fn refuse_conn(
    stream: tokio::net::TcpStream,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    refusal: dlock_proto::Refusal,
    config: Arc<Config>,
) {
    match acceptor {
        None => conn::refuse(stream, refusal, config).await,
        Some(acceptor) => {
            if let Ok(Ok(tls)) =
                tokio::time::timeout(config.shutdown_grace, acceptor.accept(stream)).await
            {
                conn::refuse(tls, refusal, config).await;
            }
        }
    }
}

/// Writes `refusal` to a plain connection without waiting for anything, and reads off what
/// the client has sent already (a handshake's worth at most: the accept loop must not be
/// held by a client that streams), so that the close that follows (when `stream` is
/// dropped) is an orderly one rather than a reset that could destroy the refusal before the
/// client reads it. A fresh socket's send buffer always takes the one small frame.
fn refuse_at_once(
    stream: &tokio::net::TcpStream,
    refusal: dlock_proto::Refusal,
    max_frame_len: usize,
) {
    use tokio_util::codec::Encoder;
    let mut frame = bytes::BytesMut::new();
    let mut codec =
        dlock_proto::FrameCodec::<dlock_proto::ClientMessage, dlock_proto::ServerMessage>::new(
            max_frame_len,
        );
    if codec
        .encode(dlock_proto::ServerMessage::Refused(refusal), &mut frame)
        .is_ok()
    {
        let _ = stream.try_write(&frame);
    }
    let mut discard = [0u8; 1024];
    for _ in 0..4 {
        if !matches!(stream.try_read(&mut discard), Ok(n) if n > 0) {
            break;
        }
    }
}

/// The result of the core task, which only ends early on an error.
fn core_result(
    r: Option<Result<Result<(), ServerError>, tokio::task::JoinError>>,
) -> Result<(), ServerError> {
    match r {
        Some(Ok(Ok(()))) | None => Err(ServerError::CoreTask("core task ended".into())),
        Some(Ok(Err(e))) => Err(e),
        Some(Err(e)) => Err(ServerError::CoreTask(e.to_string())),
    }
}

/// Counts a connection refused by the accept loop.
fn count_refusal(net: &metrics::NetMetrics, refusal: &dlock_proto::Refusal) {
    match refusal {
        dlock_proto::Refusal::TooManyConnections => {
            net.refused(metrics::NetRefusal::TooManyConnections);
        }
        dlock_proto::Refusal::TooManyConnectionsFromPeer { .. } => {
            net.refused(metrics::NetRefusal::TooManyConnectionsFromPeer);
        }
        _ => {}
    }
}

/// Binds `addr` for the server (clients or HTTP).
pub(crate) async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, ServerError> {
    listen(addr).map_err(|source| ServerError::Bind { addr, source })
}

/// Connections the kernel may hold for the accept loop: room for a fleet reconnecting at
/// once after a restart (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: u32 = 4096;

/// A listener on `addr` with [`BACKLOG`] (tokio's `bind` asks for 1,024, and on some
/// systems gets 128), reusing the address as `bind` does.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Binds `addr` for the HTTP listener.
pub(crate) async fn bind_http(addr: std::net::SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::HttpBind { addr, source })
}

/// Binds `config.listen` (and `config.http_listen`, if set) and calls [`run`] (or
/// [`run_with_http`]). Either address in use is an error before anything is served.
pub async fn serve(
    config: Config,
    security: Arc<Security>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    // A configuration that cannot run is refused before anything listens, and so is a data
    // directory another server uses: listening first would take its clients' connections
    // into the backlog, to be reset when this server gives up.
    validate(&config)?;
    let dir_lock = lock_data_dir(&config.data_dir).await?;
    let listener = bind(config.listen).await?;
    let http = match config.http_listen {
        Some(addr) => Some(bind_http(addr).await?),
        None => None,
    };
    if let Some(http) = &http
        && let Ok(addr) = http.local_addr()
    {
        info!(%addr, "HTTP listener: /metrics, /healthz, /readyz, /api/..., status page at /");
    }
    run_inner(listener, http, config, security, shutdown, Some(dir_lock)).await
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::{Context, SubscriberExt};

    /// Records the target and level of every event it is given.
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let m = event.metadata();
            let mut seen = self.0.lock().unwrap();
            seen.push(format!("{} {}", m.level(), m.target()));
        }
    }

    #[test]
    fn the_default_log_filter_drops_openraft_floods_and_keeps_the_rest() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let filter = tracing_subscriber::EnvFilter::new(super::DEFAULT_LOG_FILTER);
        let subscriber =
            tracing_subscriber::registry().with(Seen(seen.clone()).with_filter(filter));
        tracing::subscriber::with_default(subscriber, || {
            // A line per failed heartbeat, append or (pre-)vote request: dropped.
            tracing::warn!(target: "openraft::core::heartbeat", "heartbeat failed");
            tracing::warn!(target: "openraft::replication", "append failed");
            tracing::warn!(target: "openraft::core::raft_core", "while requesting pre-vote");
            tracing::info!(target: "openraft::core", "openraft's info");
            // Kept: openraft's errors and its other warnings, and dlock's own lines.
            tracing::error!(target: "openraft::core::raft_core", "fatal");
            tracing::warn!(target: "openraft::storage", "a storage warning");
            tracing::warn!(target: "dlock_raft::network", "a member does not answer");
            tracing::info!(target: "dlock_server::setup", "listening");
        });
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "ERROR openraft::core::raft_core",
                "WARN openraft::storage",
                "WARN dlock_raft::network",
                "INFO dlock_server::setup",
            ]
        );
    }
}
