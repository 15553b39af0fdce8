//! The settings a [`ClientBuilder`](crate::ClientBuilder) collects.

use std::time::Duration;

/// Settings of one client.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// The server endpoints, tried in turn (never empty).
    pub(crate) endpoints: Vec<String>,
    /// The session name.
    pub(crate) name: String,
    /// The lease length to ask for (`None`: the server's default).
    pub(crate) lease_ttl: Option<Duration>,
    /// How long one connection attempt (TCP connect plus handshake) may take.
    pub(crate) connect_timeout: Duration,
    /// How long a request may wait for its first answer.
    pub(crate) request_timeout: Option<Duration>,
    /// The first reconnect window.
    pub(crate) backoff_min: Duration,
    /// The largest reconnect window.
    pub(crate) backoff_max: Duration,
    /// How long before the server could expire the session the locks are given up.
    pub(crate) safety_margin: Option<Duration>,
    /// The bearer token sent in `Hello`, if any.
    pub(crate) token: Option<String>,
}
