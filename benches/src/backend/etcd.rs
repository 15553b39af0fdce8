//! etcd through its v3 concurrency API: one lease per benchmark client (kept alive in the
//! background), the `Lock`/`Unlock` RPCs with that lease, and a lease revoke at the end.
//!
//! Pending Lock calls are never abandoned: etcd 3.4's lock service can deadlock when many
//! waiting Lock calls are cancelled at once (etcd-io/etcd#13336), after which no waiter on
//! that server is ever woken again. Clients still queued when a window closes finish their
//! acquisition and release it, uncounted.
//!
//! etcd's Lock API is a mutex only: there is no shared mode, so the readers-writers scenario
//! is reported as unsupported rather than faked.

use std::time::Duration;

use anyhow::{Context, Result};
use etcd_client::{Client, LockOptions};
use tokio::task::JoinHandle;

use super::{Access, Backend, Conn};
use crate::Scenario;

/// The etcd backend.
#[derive(Clone, Debug)]
pub struct EtcdBackend {
    endpoints: Vec<String>,
    lease_ttl_s: i64,
}

impl EtcdBackend {
    /// A backend for the etcd at `addr` (`host:port`, or the comma-separated client addresses
    /// of every member of a cluster, all given to each client); leases live `lease_ttl` (at
    /// least 1 s) and are kept alive every third of it.
    pub fn new(addr: &str, lease_ttl: Duration) -> EtcdBackend {
        EtcdBackend {
            endpoints: endpoint_urls(addr),
            lease_ttl_s: i64::try_from(lease_ttl.as_secs().max(1)).unwrap_or(i64::MAX),
        }
    }
}

/// `http://` URLs of a comma-separated list of `host:port`.
pub fn endpoint_urls(addrs: &str) -> Vec<String> {
    addrs
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| format!("http://{a}"))
        .collect()
}

impl Backend for EtcdBackend {
    type Conn = EtcdConn;

    fn name(&self) -> &'static str {
        "etcd"
    }

    fn abandon_safe(&self) -> bool {
        false
    }

    fn unsupported(&self, scenario: Scenario) -> Option<&'static str> {
        match scenario {
            Scenario::ReadersWriters => Some("etcd's Lock API has no shared mode"),
            _ => None,
        }
    }

    async fn connect(&self, _id: usize) -> Result<EtcdConn> {
        let mut client = Client::connect(&self.endpoints, None)
            .await
            .with_context(|| format!("connecting to etcd at {}", self.endpoints.join(",")))?;
        let lease = client.lease_grant(self.lease_ttl_s, None).await?.id();
        let period = Duration::from_secs(u64::try_from(self.lease_ttl_s).unwrap_or(1)) / 3;
        let keep_alive = tokio::spawn(keep_alive(client.clone(), lease, period));
        Ok(EtcdConn {
            client,
            lease,
            keep_alive,
        })
    }
}

/// Keeps `lease` alive every `period` until aborted, as etcd's own clients do: a keep-alive
/// stream that breaks (its member died, a leader change) is opened again, after a short
/// pause, on whichever member answers.
async fn keep_alive(mut client: Client, lease: i64, period: Duration) {
    const REOPEN_PAUSE: Duration = Duration::from_millis(100);
    loop {
        if let Ok((mut keeper, mut responses)) = client.lease_keep_alive(lease).await {
            loop {
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match responses.message().await {
                    Ok(Some(r)) if r.ttl() > 0 => {}
                    // TTL 0: the lease is gone; nothing left to keep alive.
                    Ok(Some(_)) => return,
                    _ => break,
                }
                tokio::time::sleep(period).await;
            }
        }
        tokio::time::sleep(REOPEN_PAUSE).await;
    }
}

/// One etcd client (its own gRPC connection) with its lease.
pub struct EtcdConn {
    client: Client,
    lease: i64,
    keep_alive: JoinHandle<()>,
}

impl std::fmt::Debug for EtcdConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConn")
            .field("lease", &self.lease)
            .finish()
    }
}

impl Conn for EtcdConn {
    /// The key etcd created for the lock (the name plus the lease id).
    type Held = Vec<u8>;

    async fn acquire(&self, key: &str, _access: Access) -> Result<Vec<u8>> {
        let opts = LockOptions::new().with_lease(self.lease);
        let resp = self.client.clone().lock(key, Some(opts)).await?;
        Ok(resp.key().to_vec())
    }

    async fn still_held(&self, held: &Vec<u8>) -> Result<bool> {
        // The lock is the key etcd created; it lives as long as the lease.
        let resp = self.client.clone().get(held.as_slice(), None).await?;
        Ok(resp.count() == 1)
    }

    async fn release(&self, held: Vec<u8>) -> Result<()> {
        self.client.clone().unlock(held).await?;
        Ok(())
    }

    async fn close(mut self, _held: Vec<Vec<u8>>) -> Result<()> {
        // Revoking the lease deletes every key attached to it: all locks at once.
        self.keep_alive.abort();
        self.client.lease_revoke(self.lease).await?;
        Ok(())
    }
}
