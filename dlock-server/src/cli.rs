//! Command-line flags of the `dlock-server` binary (each also settable by a `DLOCK_*`
//! environment variable).
//!
//! About 680 lines on purpose, 270 of them its tests: one flat struct of flags whose doc
//! comments are `dlock-server --help`, and their translation into a [`Config`]; split, the
//! help text and the checks of each flag would live apart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::{Config, RestartGrace};

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// The dlock lock server: a distributed lock manager with the semantics of the VMS / Linux
/// DLM, serving leased client sessions over TCP.
///
/// With no arguments it listens on 127.0.0.1:7420, gives sessions a 10 s lease and keeps
/// its small durable state (the fencing-token floor and the longest lease granted) in
/// ./dlock-data/. Every flag can also be set with the environment variable shown. SIGINT or
/// SIGTERM shut it down gracefully.
///
/// After a restart on an existing data directory the server is in a recovery grace: it
/// accepts sessions and answers queries, but grants nothing until the leases of its previous
/// run have run out (see --restart-grace).
#[derive(Clone, Debug, Parser)]
#[command(name = "dlock-server", version, about, long_about)]
pub struct Args {
    /// Address to listen on: an IP address and a port (`0.0.0.0:7420` for every interface;
    /// host names such as `localhost` are not resolved).
    #[arg(long, env = "DLOCK_LISTEN", default_value = crate::DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Directory for durable state (the fencing-token floor, the longest lease granted);
    /// created if missing.
    #[arg(long, env = "DLOCK_DATA_DIR", default_value = crate::DEFAULT_DATA_DIR, value_parser = parse_path)]
    pub data_dir: PathBuf,

    /// Lease given to clients that do not ask for one (e.g. "10s", "1m 30s").
    #[arg(long, env = "DLOCK_LEASE_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,

    /// Shortest lease a client may ask for.
    #[arg(long, env = "DLOCK_MIN_LEASE_TTL", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub min_lease_ttl: Duration,

    /// Longest lease a client may ask for.
    #[arg(long, env = "DLOCK_MAX_LEASE_TTL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub max_lease_ttl: Duration,

    /// Time a new connection has to send its Hello before it is closed.
    #[arg(long, env = "DLOCK_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,

    /// Time a client has to finish a frame once its first byte has arrived.
    #[arg(long, env = "DLOCK_FRAME_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub frame_timeout: Duration,

    /// Most bytes queued for one connection; its reader pauses at a quarter of this, and a
    /// client whose outbox is over it is cut off as a slow reader (e.g. `4MiB`).
    #[arg(long, env = "DLOCK_OUTBOX_MAX_BYTES", default_value = "4MiB")]
    pub outbox_max_bytes: bytesize::ByteSize,

    /// Most live sessions one client address may hold (sessions of dropped connections count
    /// until their leases run out).
    #[arg(long, env = "DLOCK_MAX_SESSIONS_PER_PEER", default_value_t = 25_000)]
    pub max_sessions_per_peer: usize,

    /// Most locks the sessions of one client address may own together (granted or queued);
    /// more are rejected with LimitExceeded(LocksPerPeer). Unset: only --max-locks applies.
    #[arg(long, env = "DLOCK_MAX_LOCKS_PER_PEER")]
    pub max_locks_per_peer: Option<usize>,

    /// Most bytes of unacknowledged events the sessions of one client address may hold
    /// together (connected or not, e.g. `16MiB`); over it, that address's session holding the
    /// most is closed. Unset: a quarter of the replay pool (5% of --memory-budget).
    #[arg(long, env = "DLOCK_MAX_REPLAY_BYTES_PER_PEER")]
    pub max_replay_bytes_per_peer: Option<bytesize::ByteSize>,

    /// Most open connections from one client address; more are refused
    /// (TooManyConnectionsFromPeer) and closed.
    #[arg(long, env = "DLOCK_MAX_CONNECTIONS_PER_PEER", default_value_t = Config::default().max_connections_per_peer)]
    pub max_connections_per_peer: usize,

    /// Total memory the limits may cost: `auto` (half the machine's or container's memory)
    /// or a size such as 4GiB. Limits whose worst case does not fit are lowered at start.
    #[arg(long, env = "DLOCK_MEMORY_BUDGET", default_value = "auto")]
    pub memory_budget: crate::budget::MemoryBudget,

    /// Most locks (granted, converting or waiting) over all sessions.
    #[arg(long, env = "DLOCK_MAX_LOCKS", default_value_t = dlock_core::Config::default().max_locks)]
    pub max_locks: usize,

    /// Most requests per second one connection may send on average (bursts of a tenth of a
    /// second's worth pass at once); over it a request is answered Overloaded (never an
    /// unlock, cancel, goodbye or renewal: they count, but are carried out). 0: no limit.
    #[arg(long, env = "DLOCK_MAX_REQUEST_RATE", default_value_t = Config::default().max_request_rate)]
    pub max_request_rate: u64,

    /// Most requests per second all connections of one client address may send together
    /// (bursts of a tenth of a second's worth pass at once); over it a request is answered
    /// Overloaded, as for --max-request-rate. 0 (the default): no limit, as every client on the server's own machine
    /// shares one address; set it on a server shared by several machines.
    #[arg(long, env = "DLOCK_MAX_REQUEST_RATE_PER_PEER", default_value_t = Config::default().max_request_rate_per_peer)]
    pub max_request_rate_per_peer: u64,

    /// A client that does not read what is written to it for this long is cut off (its
    /// session lives on).
    #[arg(long, env = "DLOCK_SLOW_READER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub slow_reader_timeout: Duration,

    /// After a restart, wait this long before granting anything, so that clients of the
    /// previous run see their leases run out first: "auto" (the longest lease the previous run
    /// granted, as recorded in the data directory, plus 100 ms), a duration ("15s"), or "0" to
    /// grant at once (unsafe: a client of the previous run may still believe it holds a lock
    /// that is granted to another; only fencing tokens then protect the resource). Meanwhile
    /// sessions open, renew and query as usual; lock, convert, unlock, cancel and goodbye
    /// requests are held and applied in arrival order when the grace ends. A first start on
    /// an empty data directory never waits.
    #[arg(long, env = "DLOCK_RESTART_GRACE", default_value = "auto")]
    pub restart_grace: RestartGrace,

    /// Most requests held during the restart grace (over all sessions); further ones are
    /// refused as overloaded.
    #[arg(long, env = "DLOCK_GRACE_QUEUE_CAPACITY", default_value_t = Config::default().grace_queue_capacity)]
    pub grace_queue_capacity: usize,

    /// Maximum open connections; more are refused (TooManyConnections) and closed.
    #[arg(long, env = "DLOCK_MAX_CONNECTIONS", default_value_t = Config::default().max_connections)]
    pub max_connections: usize,

    /// Maximum live sessions; further Hellos are refused with a limit error.
    #[arg(long, env = "DLOCK_MAX_SESSIONS", default_value_t = dlock_core::Config::default().max_sessions)]
    pub max_sessions: usize,

    /// Maximum locks (granted, converting or waiting) one session may own.
    #[arg(long, env = "DLOCK_MAX_LOCKS_PER_SESSION", default_value_t = dlock_core::Config::default().max_locks_per_session)]
    pub max_locks_per_session: usize,

    /// Maximum queued requests (converting plus waiting) on one resource.
    #[arg(long, env = "DLOCK_MAX_WAITERS_PER_RESOURCE", default_value_t = dlock_core::Config::default().max_waiters_per_resource)]
    pub max_waiters_per_resource: usize,

    /// Most queued requests and holders one deadlock search examines (R40). A search that
    /// reaches it reports no deadlock (its requests wait until cancelled, timed out or their
    /// sessions end). Lower, it bounds what one request can cost the lock engine (about
    /// 0.1 µs a step, so 100,000 is some 10 ms on a slow core); higher, it finds cycles in
    /// larger tables.
    #[arg(long, env = "DLOCK_MAX_DEADLOCK_SEARCH", default_value_t = dlock_core::Config::default().max_deadlock_search)]
    pub max_deadlock_search: usize,

    /// Maximum number of resources (a resource lives while any lock on it exists).
    #[arg(long, env = "DLOCK_MAX_RESOURCES", default_value_t = dlock_core::Config::default().max_resources)]
    pub max_resources: usize,

    /// Maximum resource name length in bytes.
    #[arg(long, env = "DLOCK_MAX_NAME_LEN", default_value_t = dlock_core::Config::default().max_name_len)]
    pub max_name_len: usize,

    /// Length of every resource's lock value block in bytes.
    #[arg(long, env = "DLOCK_VALUE_LEN", default_value_t = dlock_core::Config::default().lvb_len)]
    pub value_len: usize,

    /// Maximum frame body length in bytes; a longer frame closes the connection. At least the
    /// longest name plus the value block length plus 1,024 bytes.
    #[arg(long, env = "DLOCK_MAX_FRAME_LEN", default_value_t = dlock_proto::DEFAULT_MAX_FRAME_LEN)]
    pub max_frame_len: usize,

    /// Log format.
    #[arg(long, env = "DLOCK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Log filter, e.g. "info" or "dlock_server=debug"; RUST_LOG is used when this is unset.
    #[arg(long, env = "DLOCK_LOG_LEVEL", value_parser = parse_log_filter)]
    pub log_level: Option<String>,

    /// Append an audit log (one JSON line per applied engine input and its events) to this
    /// file; off by default. In a cluster every member records what it applies from the
    /// replicated log.
    #[arg(long, env = "DLOCK_AUDIT_LOG", value_parser = parse_path)]
    pub audit_log: Option<PathBuf>,

    /// Rotate the audit log when it grows past this size (e.g. `256MiB`; at least `64KiB`).
    #[arg(long, env = "DLOCK_AUDIT_LOG_MAX_SIZE", default_value = "256MiB", value_parser = parse_audit_log_size)]
    pub audit_log_max_size: bytesize::ByteSize,

    /// Rotated audit log files kept (`PATH.1` .. `PATH.N`).
    #[arg(long, env = "DLOCK_AUDIT_LOG_KEEP", default_value_t = crate::audit::AuditConfig::DEFAULT_KEEP)]
    pub audit_log_keep: usize,

    /// Serve TLS only, with this certificate chain (PEM, leaf first). Needs --tls-key.
    /// Reloaded on SIGHUP.
    #[arg(long, env = "DLOCK_TLS_CERT", requires = "tls_key", value_parser = parse_path)]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "DLOCK_TLS_KEY", requires = "tls_cert", value_parser = parse_path)]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates signed by these CAs (PEM), mutual TLS; the certificate's
    /// subject common name is the client's identity. Needs --tls-cert.
    #[arg(long, env = "DLOCK_TLS_CLIENT_CA", requires = "tls_cert", value_parser = parse_path)]
    pub tls_client_ca: Option<PathBuf>,

    /// Authenticate clients by token: a file of `IDENTITY SHA256HEX` lines (see the
    /// `new-token` and `hash-token` commands). A client without a valid token is refused.
    /// Reloaded on SIGHUP.
    #[arg(long, env = "DLOCK_AUTH_FILE", value_parser = parse_path)]
    pub auth_file: Option<PathBuf>,

    /// Authorisation rules (TOML): per identity and resource-name prefix, none, list, read
    /// or write; and the admins who may inspect other sessions. Without it everything is
    /// allowed. Reloaded on SIGHUP.
    #[arg(long, env = "DLOCK_AUTH_RULES", value_parser = parse_path)]
    pub auth_rules: Option<PathBuf>,

    /// Address of the HTTP listener: Prometheus metrics at /metrics, /healthz, /readyz, a
    /// JSON API under /api/ and a live status page at /; `off` disables it. With --auth-file
    /// everything but the probes asks for a token; it has no TLS: keep it on a private address.
    /// Against DNS rebinding, only a Host that is an IP address, localhost or a name of
    /// --http-allowed-host is answered (any Host on /healthz, /readyz and /metrics).
    #[arg(long, env = "DLOCK_HTTP_LISTEN", default_value = crate::DEFAULT_HTTP_LISTEN)]
    pub http_listen: HttpListen,

    /// Most open connections of the HTTP listener; further ones wait (in the kernel's
    /// backlog) until one closes. An HTTP connection is also closed after 10 s without a
    /// byte from the client, when a request head has not arrived 2 s after it opened or
    /// after the previous answer, or after 60 s in all.
    #[arg(long, env = "DLOCK_HTTP_MAX_CONNECTIONS", default_value_t = Config::default().http_max_connections)]
    pub http_max_connections: usize,

    /// A DNS name the HTTP listener answers for, besides IP addresses and `localhost`
    /// (repeat the flag, or separate names by commas). A request whose Host header names
    /// anything else gets 421, on every path but /healthz, /readyz and /metrics: against DNS
    /// rebinding, where a web page open in a browser on this machine reaches the listener
    /// under the page's own name. Give the names the listener is reached by, such as
    /// `dlock-1.internal`, or the one a proxy in front of it passes on.
    #[arg(long, env = "DLOCK_HTTP_ALLOWED_HOST", value_name = "NAME", value_delimiter = ',', value_parser = crate::http::parse_host_name)]
    pub http_allowed_host: Vec<String>,

    /// Cluster mode: this server's id among --peers. Without it (and --peers) the server
    /// runs alone.
    #[arg(long, env = "DLOCK_NODE_ID", requires = "peers")]
    pub node_id: Option<u64>,

    /// Cluster mode: every member as ID=CLIENT_ADDR/RAFT_ADDR, comma-separated, e.g.
    /// `1=10.0.0.1:7420/10.0.0.1:7520,2=10.0.0.2:7420/10.0.0.2:7520,3=…`. CLIENT_ADDR is where
    /// the member's clients connect (its --listen), RAFT_ADDR where its peers do. The peer
    /// port has no TLS (keep it on a private network); without --cluster-secret-file it has
    /// no authentication either.
    #[arg(long, env = "DLOCK_PEERS", requires = "node_id", value_parser = crate::cluster::parse_peers)]
    pub peers: Option<std::collections::BTreeMap<u64, dlock_raft::Member>>,

    /// Cluster mode: form the cluster from --peers if this node has never belonged to one
    /// (give it to one node of a new cluster; ignored afterwards).
    #[arg(long, env = "DLOCK_INIT", requires = "peers", value_parser = clap::builder::BoolishValueParser::new())]
    pub init: bool,

    /// Cluster mode: when a new leader takes over, every session's lease is extended to
    /// at least this long from then, so that clients finding the new leader keep their locks.
    #[arg(long, env = "DLOCK_FAILOVER_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub failover_grace: Duration,

    /// Cluster mode: the address the peer listener binds, when it is not this node's
    /// RAFT_ADDR in --peers (the default): peers still connect to RAFT_ADDR, which then
    /// reaches this address through a proxy, a NAT or a port forward.
    #[arg(long, env = "DLOCK_RAFT_LISTEN", requires = "peers")]
    pub raft_listen: Option<SocketAddr>,

    /// Cluster mode, tuning: take a Raft snapshot every N applied entries and keep the last
    /// tenth of them in the log (default 10000). Lower it to bound the log's size and
    /// replay time; a follower that is behind by more than the kept entries catches up by
    /// snapshot.
    #[arg(long, env = "DLOCK_SNAPSHOT_EVERY", requires = "peers", value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every: Option<u64>,

    /// Cluster mode: a file holding a secret (at least 16 bytes; surrounding whitespace is
    /// ignored) that every member must have. Peers prove it to each other (HMAC-SHA256
    /// challenge and response both ways) before any Raft traffic; a connection that does not
    /// is refused. Make one with `head -c 32 /dev/urandom | base64 > cluster.secret`.
    #[arg(long, env = "DLOCK_CLUSTER_SECRET_FILE", requires = "peers", value_parser = parse_path)]
    pub cluster_secret_file: Option<PathBuf>,

    /// A tool instead of the server.
    #[command(subcommand)]
    pub command: Option<Tool>,
}

/// Tools of the `dlock-server` binary.
#[derive(Clone, Debug, Subcommand)]
pub enum Tool {
    /// Print a fresh random token for IDENTITY on the first line and its --auth-file line
    /// on the second. Give the token to the client (--token-file); add the line to the
    /// server's auth file.
    NewToken {
        /// The identity the token proves.
        identity: String,
    },
    /// Print the SHA-256 hash of a token read from standard input (one line, surrounding
    /// whitespace removed), as an --auth-file line wants it. No token (empty input, a blank
    /// line) is an error.
    HashToken,
}

/// The value of `--http-listen`: an address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpListen(pub Option<SocketAddr>);

impl std::str::FromStr for HttpListen {
    type Err = String;

    fn from_str(s: &str) -> Result<HttpListen, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(HttpListen(None));
        }
        s.parse()
            .map(|a| HttpListen(Some(a)))
            .map_err(|e| format!("expected an address such as 127.0.0.1:7421, or `off`: {e}"))
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Args {
    /// The server configuration these flags describe.
    pub fn to_config(&self) -> Config {
        let defaults = Config::default();
        Config {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            default_lease_ttl: self.lease_ttl,
            handshake_timeout: self.handshake_timeout,
            frame_timeout: self.frame_timeout,
            outbox_max_bytes: usize::try_from(self.outbox_max_bytes.as_u64()).unwrap_or(usize::MAX),
            slow_reader_timeout: self.slow_reader_timeout,
            max_sessions_per_peer: self.max_sessions_per_peer,
            max_locks_per_peer: self.max_locks_per_peer,
            max_replay_bytes_per_peer: self
                .max_replay_bytes_per_peer
                .map(|b| usize::try_from(b.as_u64()).unwrap_or(usize::MAX)),
            max_connections_per_peer: self.max_connections_per_peer,
            max_request_rate: self.max_request_rate,
            max_request_rate_per_peer: self.max_request_rate_per_peer,
            memory_budget: self.memory_budget,
            max_connections: self.max_connections,
            max_frame_len: self.max_frame_len,
            engine: dlock_core::Config {
                lvb_len: self.value_len,
                max_name_len: self.max_name_len,
                max_sessions: self.max_sessions,
                max_resources: self.max_resources,
                max_locks_per_session: self.max_locks_per_session,
                max_locks: self.max_locks,
                max_waiters_per_resource: self.max_waiters_per_resource,
                max_deadlock_search: self.max_deadlock_search,
                min_ttl_ms: ms(self.min_lease_ttl),
                max_ttl_ms: ms(self.max_lease_ttl),
                ..defaults.engine.clone()
            },
            replay_capacity: crate::config::replay_capacity_for(self.max_locks_per_session),
            restart_grace: self.restart_grace,
            grace_queue_capacity: self.grace_queue_capacity,
            audit_log: self
                .audit_log
                .as_ref()
                .map(|path| crate::audit::AuditConfig {
                    path: path.clone(),
                    max_size: self.audit_log_max_size.as_u64(),
                    keep: self.audit_log_keep,
                }),
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(crate::TlsConfig {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.tls_client_ca.clone(),
                }),
                _ => None,
            },
            auth_file: self.auth_file.clone(),
            auth_rules: self.auth_rules.clone(),
            http_listen: self.http_listen.0,
            http_max_connections: self.http_max_connections,
            http_allowed_hosts: self.http_allowed_host.clone(),
            cluster: match (self.node_id, &self.peers) {
                (Some(node_id), Some(members)) => Some(crate::cluster::ClusterConfig {
                    node_id,
                    members: members.clone(),
                    init: self.init,
                    failover_grace: self.failover_grace,
                    raft_bind: self.raft_listen,
                    snapshot_every: self.snapshot_every,
                    secret_file: self.cluster_secret_file.clone(),
                }),
                _ => None,
            },
            ..defaults
        }
    }
}

/// `--audit-log-max-size`: a size of at least [`AuditConfig::MIN_MAX_SIZE`](crate::audit::AuditConfig::MIN_MAX_SIZE)
/// (a log rotated every few lines keeps almost no history).
/// Checks a `--log-level` filter: each directive a level, `TARGET=LEVEL`, or a target that
/// names code (a module path, or a crate whose lines the server logs). A bare word that is
/// none of these (`garbage`, `inof`) would be read as a target that logs nothing, and silence
/// every line, errors included.
fn parse_log_filter(s: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    const CRATES: [&str; 7] = [
        "openraft", "tokio", "hyper", "axum", "rustls", "tower", "h2",
    ];
    for d in s.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !d.contains(['=', '[', '{']);
        let known = LEVELS.iter().any(|l| d.eq_ignore_ascii_case(l))
            || d.contains("::")
            || d.starts_with("dlock")
            || CRATES.contains(&d);
        if bare && !known {
            return Err(format!(
                "{d:?} is neither a level ({}) nor TARGET=LEVEL (e.g. dlock_server=debug)",
                LEVELS.join(", ")
            ));
        }
    }
    Ok(s.to_owned())
}

/// A file or directory path, refused if it begins or ends with a blank (`DLOCK_DATA_DIR=" "`,
/// a stray space in an environment file): the server would quietly make and use a
/// directory of that name beside the one meant.
fn parse_path(s: &str) -> Result<PathBuf, String> {
    if s.trim().is_empty() {
        return Err("the path is blank".into());
    }
    if s.trim() != s {
        return Err(format!(
            "{s:?} begins or ends with a blank; give the path without it ({:?})",
            s.trim()
        ));
    }
    Ok(PathBuf::from(s))
}

fn parse_audit_log_size(s: &str) -> Result<bytesize::ByteSize, String> {
    let size: bytesize::ByteSize = s.parse()?;
    if size.as_u64() < crate::audit::AuditConfig::MIN_MAX_SIZE {
        return Err(format!(
            "{size} is below the minimum of {}: the log would be rotated every few lines",
            bytesize::ByteSize::b(crate::audit::AuditConfig::MIN_MAX_SIZE)
        ));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_with_a_stray_blank_is_refused() {
        assert_eq!(
            parse_path("/var/lib/dlock"),
            Ok(PathBuf::from("/var/lib/dlock"))
        );
        assert_eq!(parse_path("my dir"), Ok(PathBuf::from("my dir")));
        assert!(parse_path(" ").unwrap_err().contains("blank"));
        let e = parse_path("/var/lib/dlock ").unwrap_err();
        assert!(e.contains("\"/var/lib/dlock\""), "{e}");
        for flag in ["--data-dir", "--audit-log", "--auth-file", "--auth-rules"] {
            let e = Args::try_parse_from(["dlock-server", flag, "x "]).unwrap_err();
            assert!(
                e.to_string().contains("begins or ends with a blank"),
                "{flag}: {e}"
            );
        }
    }

    #[test]
    fn a_log_filter_that_would_silence_everything_is_refused() {
        for ok in [
            "info",
            "WARN",
            "info,openraft=warn",
            "dlock_server=debug",
            "dlock_raft",
            "x::y",
        ] {
            assert_eq!(parse_log_filter(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in ["garbage", "inof", "info,nonsense"] {
            let e = parse_log_filter(bad).unwrap_err();
            assert!(e.contains("neither a level"), "{bad}: {e}");
        }
        let e = Args::try_parse_from(["dlock-server", "--log-level", "garbage"]).unwrap_err();
        assert!(e.to_string().contains("neither a level"), "{e}");
    }

    #[test]
    fn no_arguments_give_the_documented_defaults() {
        let args = Args::try_parse_from(["dlock-server"]).unwrap();
        let http = Some(crate::DEFAULT_HTTP_LISTEN.parse().unwrap());
        let expected = Config {
            http_listen: http,
            ..Config::default()
        };
        assert_eq!(args.to_config(), expected);
        assert_eq!(args.log_format, LogFormat::Human);
    }

    #[test]
    fn http_listen_takes_an_address_or_off() {
        let parse = |v: &str| {
            Args::try_parse_from(["dlock-server", "--http-listen", v])
                .map(|a| a.to_config().http_listen)
        };
        assert_eq!(parse("off").unwrap(), None);
        assert_eq!(
            parse("0.0.0.0:9100").unwrap(),
            Some("0.0.0.0:9100".parse().unwrap())
        );
        assert!(parse("nowhere").is_err());
    }

    #[test]
    fn http_allowed_hosts_are_repeated_or_separated_by_commas() {
        let parse = |flags: &[&str]| {
            let mut argv = vec!["dlock-server"];
            argv.extend_from_slice(flags);
            Args::try_parse_from(argv).map(|a| a.to_config().http_allowed_hosts)
        };
        assert_eq!(parse(&[]).unwrap(), Vec::<String>::new());
        assert_eq!(
            parse(&[
                "--http-allowed-host",
                "dlock-1.internal,dlock.example",
                "--http-allowed-host",
                "ops"
            ])
            .unwrap(),
            ["dlock-1.internal", "dlock.example", "ops"]
        );
        let e = parse(&["--http-allowed-host", "dlock.internal:7421"]).unwrap_err();
        assert!(e.to_string().contains("without a port"), "{e}");
    }

    #[test]
    fn flags_reach_the_config() {
        let args = Args::try_parse_from([
            "dlock-server",
            "--listen",
            "0.0.0.0:9000",
            "--lease-ttl",
            "2s",
            "--min-lease-ttl",
            "50ms",
            "--max-locks-per-session",
            "7",
            "--value-len",
            "48",
            "--log-format",
            "json",
            "--restart-grace",
            "0",
            "--grace-queue-capacity",
            "9",
            "--http-max-connections",
            "3",
            "--max-deadlock-search",
            "5000",
        ])
        .unwrap();
        let c = args.to_config();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.default_lease_ttl, Duration::from_secs(2));
        assert_eq!(c.engine.min_ttl_ms, 50);
        assert_eq!(c.engine.max_locks_per_session, 7);
        // Room for a burst of an event per lock twice over, whatever the limit.
        assert_eq!(c.replay_capacity, 2 * 7 + 1024);
        assert_eq!(c.engine.lvb_len, 48);
        assert_eq!(args.log_format, LogFormat::Json);
        assert_eq!(c.restart_grace, RestartGrace::DISABLED);
        assert_eq!(c.grace_queue_capacity, 9);
        assert_eq!(c.http_max_connections, 3);
        assert_eq!(c.engine.max_deadlock_search, 5000);
    }

    /// `validate` of the configuration `flags` give, its error as text.
    fn check(flags: &[&str]) -> Result<(), String> {
        let mut argv = vec!["dlock-server"];
        argv.extend_from_slice(flags);
        let config = Args::try_parse_from(argv).unwrap().to_config();
        crate::setup::validate(&config).map_err(|e| e.to_string())
    }

    #[test]
    fn value_blocks_and_names_shorter_than_the_rules_allow_are_refused() {
        assert!(check(&[]).is_ok());
        assert!(check(&["--value-len", "32", "--max-name-len", "64"]).is_ok());
        let e = check(&["--value-len", "31"]).unwrap_err();
        assert!(e.contains("value block length 31 bytes"), "{e}");
        let e = check(&["--max-name-len", "63"]).unwrap_err();
        assert!(e.contains("maximum name length 63 bytes"), "{e}");
        // The longest name and value block must fit in a frame.
        let e = check(&["--max-frame-len", "10"]).unwrap_err();
        assert!(e.contains("it must be at least 2112"), "{e}");
        let e = check(&["--max-name-len", "100000"]).unwrap_err();
        assert!(e.contains("maximum frame length 65536 bytes"), "{e}");
        assert!(check(&["--max-name-len", "100000", "--max-frame-len", "1048576"]).is_ok());
    }

    #[test]
    fn leases_and_a_restart_grace_over_a_day_are_refused() {
        assert!(check(&["--max-lease-ttl", "24h", "--restart-grace", "24h"]).is_ok());
        let e = check(&["--max-lease-ttl", "24h 1ms"]).unwrap_err();
        assert!(
            e.contains("--max-lease-ttl 86400001 ms is longer than a day"),
            "{e}"
        );
        // Far beyond: refused, not an overflow.
        let e = check(&["--max-lease-ttl", "500000000000y"]).unwrap_err();
        assert!(e.contains("--max-lease-ttl"), "{e}");
        let e = check(&["--restart-grace", "25h"]).unwrap_err();
        assert!(
            e.contains("--restart-grace 1day 1h is longer than a day"),
            "{e}"
        );
    }

    #[test]
    fn limits_that_would_refuse_every_client_are_refused_by_their_flag() {
        for flag in [
            "--max-sessions",
            "--max-sessions-per-peer",
            "--max-connections-per-peer",
            "--max-locks",
            "--max-locks-per-session",
            "--max-locks-per-peer",
            "--max-resources",
            "--max-deadlock-search",
            "--outbox-max-bytes",
        ] {
            let e = check(&[flag, "0"]).unwrap_err();
            assert!(
                e.contains(&format!("{flag} (")) && e.contains("at least 1"),
                "{e}"
            );
            assert!(check(&[flag, "1"]).is_ok(), "{flag} 1");
        }
        for flag in [
            "--handshake-timeout",
            "--frame-timeout",
            "--slow-reader-timeout",
        ] {
            let e = check(&[flag, "0s"]).unwrap_err();
            assert!(e.contains(flag) && e.contains("longer than 0"), "{e}");
            assert!(check(&[flag, "1ms"]).is_ok(), "{flag} 1ms");
        }
        let audit = [
            "dlock-server",
            "--audit-log",
            "/tmp/audit.jsonl",
            "--audit-log-max-size",
        ];
        let e = Args::try_parse_from([&audit[..], &["0"]].concat())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--audit-log-max-size") && e.contains("minimum"),
            "{e}"
        );
        assert!(Args::try_parse_from([&audit[..], &["64KiB"]].concat()).is_ok());
        let e = check(&["--lease-ttl", "0s"]).unwrap_err();
        assert!(
            e.contains("--lease-ttl") && e.contains("--min-lease-ttl 100 ms"),
            "{e}"
        );
    }

    #[test]
    fn connections_are_fitted_to_the_open_file_limit() {
        let config = || Args::try_parse_from(["dlock-server"]).unwrap().to_config();
        let mut c = config();
        assert_eq!(c.max_connections, 10_000);
        assert_eq!(
            crate::setup::fit_to_open_files(&mut c, None),
            None,
            "no limit"
        );
        assert_eq!(crate::setup::fit_to_open_files(&mut c, Some(1 << 20)), None);
        assert_eq!(c.max_connections, 10_000);
        // `ulimit -n 1024`: 768 connections, and no address may have more.
        assert_eq!(
            crate::setup::fit_to_open_files(&mut c, Some(1024)),
            Some(768)
        );
        assert_eq!((c.max_connections, c.max_connections_per_peer), (768, 768));
        let mut c = config();
        assert_eq!(crate::setup::fit_to_open_files(&mut c, Some(100)), Some(1));
    }

    #[test]
    fn restart_grace_takes_auto_or_a_duration() {
        let parse = |v: &str| {
            Args::try_parse_from(["dlock-server", "--restart-grace", v])
                .map(|a| a.to_config().restart_grace)
        };
        assert_eq!(parse("auto").unwrap(), RestartGrace::Auto);
        assert_eq!(
            parse("15s").unwrap(),
            RestartGrace::Fixed(Duration::from_secs(15))
        );
        assert_eq!(parse("0").unwrap(), RestartGrace::DISABLED);
        assert!(parse("later").is_err());
    }

    #[test]
    fn security_flags_reach_the_config() {
        let args = Args::try_parse_from([
            "dlock-server",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-client-ca",
            "ca.pem",
            "--auth-file",
            "tokens",
            "--auth-rules",
            "rules.toml",
        ])
        .unwrap();
        let c = args.to_config();
        let tls = c.tls.expect("tls");
        assert_eq!(tls.cert, PathBuf::from("c.pem"));
        assert_eq!(tls.key, PathBuf::from("k.pem"));
        assert_eq!(tls.client_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(c.auth_file, Some(PathBuf::from("tokens")));
        assert_eq!(c.auth_rules, Some(PathBuf::from("rules.toml")));
        assert!(Args::try_parse_from(["dlock-server", "--tls-cert", "c.pem"]).is_err());
    }

    #[test]
    fn raft_listen_and_snapshot_every_reach_the_cluster_config() {
        let peers = "1=127.0.0.1:7420/127.0.0.1:7520,2=127.0.0.1:7421/127.0.0.1:9002";
        let base = ["dlock-server", "--node-id", "1", "--peers", peers];
        let c = Args::try_parse_from(base).unwrap().to_config();
        let cc = c.cluster.expect("cluster mode");
        assert_eq!((cc.raft_bind, cc.snapshot_every), (None, None));
        assert_eq!(cc.raft_listen().unwrap(), "127.0.0.1:7520".parse().unwrap());

        let mut tuned = base.to_vec();
        tuned.extend(["--raft-listen", "127.0.0.1:9520", "--snapshot-every", "50"]);
        let cc = Args::try_parse_from(tuned)
            .unwrap()
            .to_config()
            .cluster
            .unwrap();
        assert_eq!(cc.raft_listen().unwrap(), "127.0.0.1:9520".parse().unwrap());
        assert_eq!(cc.snapshot_every, Some(50));
        assert_eq!(cc.secret_file, None);
        let mut secret = base.to_vec();
        secret.extend(["--cluster-secret-file", "/etc/dlock/cluster.secret"]);
        let cc = Args::try_parse_from(secret)
            .unwrap()
            .to_config()
            .cluster
            .unwrap();
        assert_eq!(
            cc.secret_file,
            Some(PathBuf::from("/etc/dlock/cluster.secret"))
        );
        // Node 1 reaches node 2 at the address of its own --peers.
        let book = crate::cluster::peer_addresses(&cc);
        assert_eq!(
            book.into_iter().collect::<Vec<_>>(),
            [(2, "127.0.0.1:9002".to_owned())]
        );

        for bad in [
            vec!["dlock-server", "--raft-listen", "127.0.0.1:9520"],
            vec!["dlock-server", "--snapshot-every", "50"],
            [base.as_slice(), &["--snapshot-every", "0"]].concat(),
            [base.as_slice(), &["--raft-listen", "nowhere"]].concat(),
        ] {
            assert!(Args::try_parse_from(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
