//! Server settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::budget::MemoryBudget;
use crate::grace::RestartGrace;

/// Every setting of the server. `Default` gives the documented defaults: listen on
/// `127.0.0.1:7420`, a 10 s default lease, state in `./dlock-data/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Address [`serve`](crate::serve) binds. [`run`](crate::run) takes a bound listener
    /// instead and ignores this.
    pub listen: SocketAddr,
    /// Directory of the server's durable state (the fencing-token floor and the record of
    /// the longest lease granted).
    pub data_dir: PathBuf,
    /// Lease given to a session whose `Hello` asks for 0 (the server default).
    pub default_lease_ttl: Duration,
    /// A connection that does not complete its `Hello` within this time is closed with
    /// `ProtocolError::HandshakeTimeout`.
    pub handshake_timeout: Duration,
    /// Once a frame's first byte has arrived, the rest must arrive within this time, or the
    /// connection is closed with `ProtocolError::FrameTimeout` (its session lives on).
    pub frame_timeout: Duration,
    /// Maximum number of open connections; a further connection is answered with
    /// `Refused(TooManyConnections)` and closed.
    pub max_connections: usize,
    /// Maximum frame body length in bytes, both directions.
    pub max_frame_len: usize,
    /// Capacity of the core task's inbox (commands from all connections).
    pub inbox_capacity: usize,
    /// Most inbox messages the core task handles per wake-up.
    pub max_batch: usize,
    /// Most bytes (approximately) queued for one connection. The connection's reader stops
    /// taking requests while its outbox holds more than a quarter of this (so a client that
    /// reads is slowed down, never cut off, by its own answers); a client whose outbox is
    /// over it (it does not read its events) is disconnected as a slow reader, and its
    /// session lives on until its lease runs out. One reply or event larger than this still
    /// passes an empty outbox.
    pub outbox_max_bytes: usize,
    /// Most open connections from one client address (IP); a further one is answered with
    /// `Refused(TooManyConnectionsFromPeer)` and closed. Default 2,500, a quarter of the
    /// default [`max_connections`](Config::max_connections), so that no one address can take
    /// them all. (Clients on the server's own machine all come from one loopback address.)
    pub max_connections_per_peer: usize,
    /// Most requests per second one connection may send, on average (bursts of a tenth of a
    /// second's worth pass at once); a request over it is answered
    /// `RequestError::Overloaded` without reaching the engine. Unlocks, cancels, goodbyes and
    /// renewals count towards it but are never refused. 0: no limit.
    pub max_request_rate: u64,
    /// Requests per second all connections of one client address may send together (bursts
    /// of a tenth of that pass at once); over it, a request is answered `Overloaded` by its
    /// connection. 0 (the default): no limit, as every client on the server's own machine
    /// shares one address.
    pub max_request_rate_per_peer: u64,
    /// Most live sessions opened from one client address (IP). Sessions whose connection
    /// dropped count until their lease runs out, so one address cannot fill the session
    /// table; over it, `Hello` is refused with `TooManySessionsFromPeer`.
    pub max_sessions_per_peer: usize,
    /// Most locks (granted, converting or waiting) that the sessions opened from one client
    /// address may own together; over it, a lock request is rejected with
    /// `LimitExceeded(LocksPerPeer)`. `None`: only the table's limit (`engine.max_locks`).
    pub max_locks_per_peer: Option<usize>,
    /// A connection whose writer cannot hand its queued frames to the socket within this
    /// time (the client does not read) is closed; its session lives on.
    pub slow_reader_timeout: Duration,
    /// Most events kept per session for replay until the client acknowledges them. On
    /// overflow the session is closed as expired. One engine step can send a session an
    /// event for each of its locks twice over (every queued request granted at once when a
    /// holder leaves, a blocking notification for each lock it holds), so anything below
    /// [`replay_capacity_for`] its `engine.max_locks_per_session` lets a session within its
    /// limits be closed by a burst it could not acknowledge in time; the default is that.
    pub replay_capacity: usize,
    /// Most resources one prefix query returns.
    pub max_query_resources: usize,
    /// How long graceful shutdown waits for outboxes to drain before closing connections.
    pub shutdown_grace: Duration,
    /// Limits and parameters of the lock engine (lease bounds, value block length, name
    /// length, sessions, resources, locks per session, waiters per resource).
    pub engine: dlock_core::Config,
    /// How long a restarted server waits before it grants anything, so that clients of the
    /// previous lifetime see their leases run out first (see [`crate::grace`]). Default
    /// [`RestartGrace::Auto`]. A first start on a fresh data directory never waits.
    pub restart_grace: RestartGrace,
    /// Most lock-changing requests (lock, convert, unlock, cancel, goodbye) held during the
    /// restart grace, over all sessions; further ones get `RequestError::Overloaded`.
    pub grace_queue_capacity: usize,
    /// The total memory the limits may cost (see [`crate::budget`]): at start every limit
    /// whose worst case does not fit its share is lowered, and the outbox and replay pools
    /// are sized from it. Default [`MemoryBudget::Auto`]: half the machine's (or container's)
    /// memory.
    pub memory_budget: MemoryBudget,
    /// Bytes all outboxes together may hold beyond their own reserve
    /// ([`crate::budget::OUTBOX_RESERVE`] each); set from the memory budget at start.
    pub outbox_pool_bytes: usize,
    /// Bytes all sessions' replay buffers together may hold; over it, the session holding the
    /// most is closed as overflowed. Set from the memory budget at start.
    pub replay_pool_bytes: usize,
    /// Bytes the replay buffers of the sessions of one client address may hold together
    /// (connected or not); over it, that address's session holding the most is closed as
    /// overflowed, never another address's. `None`: a quarter of `replay_pool_bytes`.
    pub max_replay_bytes_per_peer: Option<usize>,
    /// Opt-in audit log: if set, one JSON line per applied engine input with its events is
    /// appended to this file, flushed before the events are dispatched, and rotated by size
    /// (see [`crate::audit`]).
    pub audit_log: Option<crate::audit::AuditConfig>,
    /// Serve TLS only, with this certificate and key (and, for mutual TLS, this client CA).
    /// Default: plain TCP.
    pub tls: Option<crate::security::TlsConfig>,
    /// Authenticate clients by bearer token: a file of `IDENTITY SHA256HEX` lines (see
    /// [`crate::security::tokens`]). A `Hello` without a valid token is refused with
    /// `Refusal::Unauthenticated`. Default: no tokens.
    pub auth_file: Option<PathBuf>,
    /// Authorisation rules per identity and resource-name prefix (TOML, see
    /// [`crate::security::rules`]). Default: everything allowed.
    pub auth_rules: Option<PathBuf>,
    /// Address of the HTTP listener (metrics, health, JSON API, status page), if any. Used
    /// by [`serve`](crate::serve) and [`Server::http`](crate::Server::http); [`run`](crate::run)
    /// serves no HTTP (see [`run_with_http`](crate::run_with_http)). The binary's default is
    /// [`DEFAULT_HTTP_LISTEN`]; the library's is none.
    pub http_listen: Option<SocketAddr>,
    /// Most open connections of the HTTP listener (it serves monitoring, probes and the
    /// status page, not lock clients); further ones wait in the kernel's backlog until one
    /// closes. Each HTTP connection is also closed once it has sent nothing for 10 s or has
    /// been open 60 s. Default 64.
    pub http_max_connections: usize,
    /// Host names the HTTP listener answers for besides IP addresses and `localhost`, in any
    /// case (`--http-allowed-host`). A request whose `Host` names anything else is refused
    /// with `421`, on every path but `/healthz`, `/readyz` and `/metrics`: a web page reached
    /// through DNS rebinding names its own host. Default: none.
    pub http_allowed_hosts: Vec<String>,
    /// Cluster mode: replicate the engine through Raft with these members. `None` (the
    /// default): a single server.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// The binary's default HTTP listen address.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:7421";

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7420";

/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "dlock-data";

/// The replay capacity a session with up to `max_locks_per_session` locks needs: an event
/// for each lock twice over, plus room for the rest (see [`Config::replay_capacity`]). An
/// event takes about 100 bytes while it waits; the replay pool (`--memory-budget`) bounds
/// what all sessions hold together.
pub fn replay_capacity_for(max_locks_per_session: usize) -> usize {
    max_locks_per_session.saturating_mul(2).saturating_add(1024)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7420)),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            default_lease_ttl: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            frame_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_frame_len: dlock_proto::DEFAULT_MAX_FRAME_LEN,
            inbox_capacity: 4096,
            max_batch: 256,
            outbox_max_bytes: 4 << 20,
            max_connections_per_peer: 2_500,
            max_request_rate: 200_000,
            max_request_rate_per_peer: 0,
            max_sessions_per_peer: 25_000,
            max_locks_per_peer: None,
            slow_reader_timeout: Duration::from_secs(10),
            replay_capacity: replay_capacity_for(
                dlock_core::Config::default().max_locks_per_session,
            ),
            max_query_resources: 1000,
            shutdown_grace: Duration::from_secs(2),
            engine: dlock_core::Config::default(),
            restart_grace: RestartGrace::Auto,
            grace_queue_capacity: 65_536,
            audit_log: None,
            tls: None,
            auth_file: None,
            auth_rules: None,
            http_listen: None,
            http_max_connections: 64,
            http_allowed_hosts: Vec::new(),
            cluster: None,
            memory_budget: MemoryBudget::Auto,
            outbox_pool_bytes: usize::MAX,
            replay_pool_bytes: usize::MAX,
            max_replay_bytes_per_peer: None,
        }
    }
}
