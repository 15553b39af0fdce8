//! The one trait every lock service implements for the load generator.

use std::future::Future;

use anyhow::Result;

use crate::Scenario;

pub mod dlock;
pub mod echo;
#[cfg(feature = "peers")]
pub mod etcd;
#[cfg(feature = "peers")]
pub mod redis;

/// The kind of access a scenario asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A shared (read) lock: dlock's PR.
    Shared,
    /// An exclusive lock: dlock's EX.
    Exclusive,
}

/// A lock service under test.
pub trait Backend: Send + Sync + 'static {
    /// One client connection (a session).
    type Conn: Conn;

    /// The backend's name in reports.
    fn name(&self) -> &'static str;

    /// `Some(reason)` when this backend cannot run `scenario` honestly.
    fn unsupported(&self, scenario: Scenario) -> Option<&'static str>;

    /// CPU time used so far by the server when it runs inside this process (the echo
    /// floor); `None` for a server in a process of its own (see `--server-pid`).
    fn in_process_server_cpu(&self) -> Option<std::time::Duration> {
        None
    }

    /// The period on which an idle client of this backend talks to the server by itself
    /// (its lease renewals), if it has one: the idle scenario measures over whole periods.
    fn renewal_period(&self) -> Option<std::time::Duration> {
        None
    }

    /// Whether a pending [`Conn::acquire`] may be dropped (abandoned) when a window ends.
    /// When `false`, clients still waiting at the end finish their acquisition (uncounted)
    /// and release it instead.
    fn abandon_safe(&self) -> bool {
        true
    }

    /// Opens a new client connection; `id` numbers the clients of one run from 0.
    fn connect(&self, id: usize) -> impl Future<Output = Result<Self::Conn>> + Send;

    /// Opens a connection for an idle session: one that, left alone, talks to the server as
    /// this backend's client does by itself ([`Backend::renewal_period`]). By default
    /// [`Backend::connect`], whose client does that already.
    fn connect_idle(&self, id: usize) -> impl Future<Output = Result<Self::Conn>> + Send {
        self.connect(id)
    }
}

/// One client connection. Methods take `&self` so one connection can have several requests in
/// flight (the many-locks scenario pipelines acquisitions per session).
pub trait Conn: Send + Sync + 'static {
    /// Proof of a held lock, handed back to [`Conn::release`].
    type Held: Send + 'static;

    /// Acquires `key`, waiting as long as it takes (the caller bounds the wait).
    fn acquire(&self, key: &str, access: Access)
    -> impl Future<Output = Result<Self::Held>> + Send;

    /// Whether a lock acquired on this connection is known to be lost (a dlock lock whose
    /// session lease lapsed); `false` when the backend cannot tell.
    fn is_lost(&self, _held: &Self::Held) -> bool {
        false
    }

    /// Whether a lock acquired on this connection is still held, as far as the service can
    /// tell now (asking it where that takes a request). The fail-over benchmark asks this
    /// of a lock held across a leader kill.
    fn still_held(&self, held: &Self::Held) -> impl Future<Output = Result<bool>> + Send {
        std::future::ready(Ok(!self.is_lost(held)))
    }

    /// Releases a lock acquired on this connection.
    fn release(&self, held: Self::Held) -> impl Future<Output = Result<()>> + Send;

    /// Ends the connection; `held` are locks still held, which the backend releases in its
    /// own way (session close, lease revoke, or one by one).
    fn close(self, held: Vec<Self::Held>) -> impl Future<Output = Result<()>> + Send;
}

/// Why a backend was asked for but cannot be built.
pub fn peers_missing(name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the {name} backend needs the `peers` feature: \
         cargo run --release -p dlock-benches --features peers --bin loadgen -- ..."
    )
}
