//! [`ClientBuilder`]: a client's settings, and connecting with them.

use std::sync::Arc;
use std::time::Duration;

use crate::client::Client;
use crate::driver;
use crate::error::{Error, Result};
use crate::settings::Settings;
use crate::view::SessionView;

impl Client {
    /// Connects with default settings and opens a session. `addr` is `host:port`, or several
    /// endpoints separated by commas (see [`Client::builder`]).
    pub async fn connect(addr: impl Into<String>) -> Result<Client> {
        Client::builder(addr).connect().await
    }

    /// A builder for a client with non-default settings.
    ///
    /// `addr` is the server's `host:port`, or the endpoints of several servers separated by
    /// commas (`"a:7420,b:7420,c:7420"`; [`ClientBuilder::endpoints`] takes a list). The
    /// client tries them in turn: a failed attempt moves on to the next endpoint at once, a
    /// whole round of failures waits out the [backoff](ClientBuilder::backoff), and a server
    /// that answers [`Refusal::NotLeader`](dlock_proto::Refusal::NotLeader) with the leader's
    /// address sends the client there, resuming its session if it has one. While members
    /// answer `NotLeader` (a cluster electing a new leader), rounds follow each other within
    /// 200 ms, and [`connect`](ClientBuilder::connect) waits for the leader.
    pub fn builder(addr: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(crate::machine::endpoints::parse_list(&addr.into()))
    }
}

/// Settings of a [`Client`]; see [`Client::builder`].
///
/// ```no_run
/// # async fn f() -> dlock_client::Result<()> {
/// use std::time::Duration;
/// let client = dlock_client::Client::builder("127.0.0.1:7420")
///     .name("billing-worker-3")
///     .lease_ttl(Duration::from_secs(5))
///     .backoff(Duration::from_millis(20), Duration::from_secs(2))
///     .connect()
///     .await?;
/// # let _ = client; Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    name: Option<String>,
    lease_ttl: Option<Duration>,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
    backoff: (Duration, Duration),
    safety_margin: Option<Duration>,
    tls: Option<crate::TlsOptions>,
    token: Option<String>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("ClientBuilder")
            .field("endpoints", &self.endpoints)
            .field("name", &self.name)
            .field("tls", &self.tls)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    fn new(endpoints: Vec<String>) -> Self {
        ClientBuilder {
            endpoints,
            name: None,
            lease_ttl: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Some(Duration::from_secs(30)),
            backoff: (Duration::from_millis(50), Duration::from_secs(5)),
            safety_margin: None,
            tls: None,
            token: None,
        }
    }

    /// The servers to connect to, tried in this order (replaces the address given to
    /// [`Client::builder`]); each entry is one `host:port`.
    pub fn endpoints<I, S>(mut self, endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.endpoints = endpoints.into_iter().map(Into::into).collect();
        self
    }

    /// Connect over TLS (default: plain TCP). The resume secret and the token then never
    /// cross the network in clear text.
    pub fn tls(mut self, options: crate::TlsOptions) -> Self {
        self.tls = Some(options);
        self
    }

    /// The bearer token proving this client's identity to a server that authenticates
    /// (`--auth-file`). Use it over TLS only.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// [`token`](Self::token) read from the first line of a file that is not blank
    /// (surrounding whitespace removed); a file that cannot be read or holds none is an
    /// [`Error::TokenFile`].
    pub fn token_file(self, path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let refused = |kind, what: String| {
            Error::TokenFile(Arc::new(std::io::Error::new(
                kind,
                format!("token file {}: {what}", path.display()),
            )))
        };
        let text = std::fs::read_to_string(path).map_err(|e| refused(e.kind(), e.to_string()))?;
        let Some(token) = text.lines().map(str::trim).find(|l| !l.is_empty()) else {
            let what = "holds no token (the first line that is not blank is the token)";
            return Err(refused(std::io::ErrorKind::InvalidData, what.into()));
        };
        Ok(self.token(token.to_owned()))
    }

    /// The session name (default `user@host:pid`). A server refuses a name longer than its
    /// [`max_session_name_len`](dlock_core::Config::max_session_name_len) (256 bytes by default,
    /// less the `[identity] ` a server that authenticates puts before the name)
    /// with [`Invalid::SessionNameTooLong`](crate::Invalid::SessionNameTooLong), which says
    /// both lengths.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The lease length to ask for (default: the server's default). If no renewal is
    /// confirmed for this long, the server ends the session and releases its locks. A zero
    /// TTL asks for no lease at all, not for the default: it is sent as 1 ms, below every
    /// server's minimum, so `connect` fails with the server's refusal.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = Some(ttl);
        self
    }

    /// How long one connection attempt (TCP connect plus handshake) may take (default 5 s).
    /// With several endpoints an attempt first gets a share of it (the timeout divided by
    /// their number, at least a second) that doubles with each round of attempts that failed
    /// in a row: a member that is stopped or whose machine is gone holds a new client up for
    /// that share, not the whole timeout, before the next member is asked. An attempt to resume a session takes at most a sixth of its lease (at least a
    /// second) as well, so that the other endpoints are tried while the lease lasts.
    ///
    /// It is also how long [`connect`](Self::connect) waits for a cluster to have a leader
    /// once a member has answered `NotLeader` (an election takes a few hundred
    /// milliseconds, a fail-over about a second).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// How long a request may wait for the server's first answer, across reconnects
    /// (default 30 s). A queued lock request is answered at once with "queued", so this does
    /// not limit how long a lock may wait; use [`LockOptions::timeout`](crate::LockOptions::timeout) for that. Expiry
    /// gives [`Error::RequestTimeout`], or [`Error::Disconnected`] while reconnecting.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = Some(d);
        self
    }

    /// Reconnect backoff with full jitter: the first retry waits a random time up to `min`,
    /// each further one up to twice as long as the one before, capped at `max` (defaults
    /// 50 ms and 5 s).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = (min, max.max(min));
        self
    }

    /// How long before the server could expire the session the client declares its locks
    /// lost (default max(TTL/10, 100 ms), at most TTL/2). Covers clock rate differences and
    /// the server's timer granularity.
    pub fn safety_margin(mut self, d: Duration) -> Self {
        self.safety_margin = Some(d);
        self
    }

    /// Connects, opens a session and starts the background task; later connection losses
    /// are handled in the background.
    ///
    /// Fails without any endpoint, and as soon as a whole round of connection attempts (one
    /// at each endpoint) fails without any member answering `NotLeader`: every endpoint
    /// refused the connection or could not be reached (a single server that is down is a
    /// quick [`Error::Connect`]), or a server refused the session for another reason
    /// ([`Error::Refused`]). A round in which a member answered `NotLeader` (with or without
    /// the leader's address, even one whose named leader cannot be reached: a leader that
    /// has just died) means the cluster is electing a leader: the client keeps trying until
    /// one answers, or fails with [`Error::NoLeader`] once members have answered
    /// `NotLeader` for the [connect timeout](Self::connect_timeout) (5 s by default; the
    /// round under way is finished first).
    pub async fn connect(self) -> Result<Client> {
        if self.endpoints.is_empty() {
            return Err(Error::Connect(Arc::new(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no server address given",
            ))));
        }
        let name = self.name.unwrap_or_else(default_name);
        let view = Arc::new(SessionView::default());
        let settings = Settings {
            endpoints: self.endpoints,
            name: name.clone(),
            lease_ttl: self.lease_ttl,
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            backoff_min: self.backoff.0,
            backoff_max: self.backoff.1,
            safety_margin: self.safety_margin,
            token: self.token,
        };
        let tls = match &self.tls {
            Some(options) => Some(options.build(&settings.endpoints)?),
            None => None,
        };
        if settings.token.is_some() && tls.is_none() {
            tracing::warn!(
                server = %settings.endpoints.join(","),
                "sending a token without TLS: anyone on the path can read and replay it"
            );
        }
        let tx = driver::start(settings, tls, view.clone()).await?;
        Ok(Client::from_parts(tx, view, name))
    }
}

impl ClientBuilder {
    /// Asks every endpoint at once, without opening a session, how it sees the cluster
    /// (what [`Client::query_cluster`] answers), each within the
    /// [connect timeout](Self::connect_timeout): an answer per endpoint, in the order given.
    /// Works while the cluster has no leader, when no session can be opened: each member
    /// answers with its own view (its term, its log, the leader it knows of, if any). TLS
    /// and the token are used as for [`connect`](Self::connect); the lease and the name are
    /// not. Fails only without any endpoint or with TLS options that cannot be used.
    pub async fn probe(self) -> Result<Vec<crate::Probed>> {
        if self.endpoints.is_empty() {
            return Err(Error::Connect(Arc::new(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no server address given",
            ))));
        }
        let tls = match &self.tls {
            Some(options) => Some(options.build(&self.endpoints)?),
            None => None,
        };
        let asks = self.endpoints.iter().map(|endpoint| {
            crate::probe::probe(
                endpoint.clone(),
                tls.clone(),
                self.token.clone(),
                self.connect_timeout,
            )
        });
        Ok(futures_util::future::join_all(asks).await)
    }
}

/// `user@host:pid`, from the environment.
fn default_name() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host}:{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_gives_its_first_line_that_is_not_blank() {
        let dir = std::env::temp_dir().join(format!("dlock-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t");
        std::fs::write(&file, "\n  \n  abc  \nalice 00\n").unwrap();
        let b = Client::builder("127.0.0.1:1").token_file(&file).unwrap();
        assert_eq!(b.token.as_deref(), Some("abc"));
        std::fs::write(&file, "\n \n").unwrap();
        let e = Client::builder("127.0.0.1:1")
            .token_file(&file)
            .unwrap_err();
        assert!(e.to_string().contains("holds no token"), "{e}");
        // A file that is not there: a local error, not a failed connection.
        let missing = dir.join("missing");
        let e = Client::builder("127.0.0.1:1")
            .token_file(&missing)
            .unwrap_err();
        assert!(matches!(&e, Error::TokenFile(_)), "{e:?}");
        assert!(
            e.to_string()
                .starts_with(&format!("token file {}: ", missing.display())),
            "{e}"
        );
        let source = std::error::Error::source(&e).expect("the io error");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("an io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn default_name_has_user_host_and_pid() {
        let name = default_name();
        let pid = std::process::id().to_string();
        assert!(
            name.contains('@') && name.ends_with(&format!(":{pid}")),
            "{name}"
        );
    }
}
