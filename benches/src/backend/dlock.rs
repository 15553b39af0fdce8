//! dlock through its client SDK, as an application uses it: one [`Client`] (one session, one
//! connection) per benchmark client.

use std::time::Duration;

use anyhow::Result;
use dlock_client::{Client, LockGuard, Mode, TlsOptions};

use super::{Access, Backend, Conn};
use crate::Scenario;

/// The dlock backend.
#[derive(Clone, Debug)]
pub struct DlockBackend {
    addr: String,
    lease_ttl: Duration,
    tls: Option<TlsOptions>,
}

impl DlockBackend {
    /// A backend for the server at `addr`; sessions ask for `lease_ttl`.
    pub fn new(addr: impl Into<String>, lease_ttl: Duration) -> DlockBackend {
        DlockBackend {
            addr: addr.into(),
            lease_ttl,
            tls: None,
        }
    }

    /// The same over TLS (backend name `dlock-tls`).
    pub fn with_tls(self, tls: TlsOptions) -> DlockBackend {
        DlockBackend {
            tls: Some(tls),
            ..self
        }
    }
}

impl Backend for DlockBackend {
    type Conn = DlockConn;

    fn name(&self) -> &'static str {
        if self.tls.is_some() {
            "dlock-tls"
        } else {
            "dlock"
        }
    }

    fn unsupported(&self, _scenario: Scenario) -> Option<&'static str> {
        None
    }

    /// A dlock client renews its lease every third of its TTL on average (the TTL asked,
    /// which the server grants within its bounds; each wait is drawn from TTL/3 ± a tenth).
    fn renewal_period(&self) -> Option<Duration> {
        Some(self.lease_ttl / 3)
    }

    async fn connect(&self, id: usize) -> Result<DlockConn> {
        // A client given a cluster's members fails its first connection when none of them
        // leads at that moment (an election); before a measured window that is tried again,
        // for a bounded time.
        let cluster = self.addr.contains(',');
        let deadline = tokio::time::Instant::now() + CLUSTER_CONNECT_WAIT;
        loop {
            match self.connect_once(id).await {
                Err(_) if cluster && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(CLUSTER_CONNECT_PAUSE).await;
                }
                other => return other,
            }
        }
    }
}

/// How long a client of a cluster keeps trying to make its first connection.
const CLUSTER_CONNECT_WAIT: Duration = Duration::from_secs(10);

/// The pause before another first connection attempt to a cluster.
const CLUSTER_CONNECT_PAUSE: Duration = Duration::from_millis(50);

impl DlockBackend {
    async fn connect_once(&self, id: usize) -> Result<DlockConn> {
        let mut builder = Client::builder(self.addr.clone())
            .name(format!("loadgen-{id}"))
            .lease_ttl(self.lease_ttl);
        if let Some(tls) = &self.tls {
            builder = builder.tls(tls.clone());
        }
        let client = builder.connect().await?;
        Ok(DlockConn { client })
    }
}

/// One dlock session.
#[derive(Debug)]
pub struct DlockConn {
    client: Client,
}

impl Conn for DlockConn {
    type Held = LockGuard;

    async fn acquire(&self, key: &str, access: Access) -> Result<LockGuard> {
        let mode = match access {
            Access::Shared => Mode::PR,
            Access::Exclusive => Mode::EX,
        };
        Ok(self.client.lock(key, mode).await?)
    }

    fn is_lost(&self, held: &LockGuard) -> bool {
        held.is_lost()
    }

    async fn release(&self, held: LockGuard) -> Result<()> {
        Ok(held.unlock().await?)
    }

    async fn close(self, held: Vec<LockGuard>) -> Result<()> {
        // Goodbye releases every lock of the session at once; the guards are dropped after,
        // when there is nothing left to release.
        let res = self.client.close().await;
        drop(held);
        Ok(res?)
    }
}
