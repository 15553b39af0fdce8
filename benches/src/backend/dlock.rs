//! dlock through its client SDK, as an application uses it: one [`Client`] (one session, one
//! connection) per benchmark client.

use std::time::Duration;

use anyhow::Result;
use dlock_client::{Client, LockGuard, Mode};

use super::{Access, Backend, Conn};
use crate::Scenario;

/// The dlock backend.
#[derive(Clone, Debug)]
pub struct DlockBackend {
    addr: String,
    lease_ttl: Duration,
}

impl DlockBackend {
    /// A backend for the server at `addr`; sessions ask for `lease_ttl`.
    pub fn new(addr: impl Into<String>, lease_ttl: Duration) -> DlockBackend {
        DlockBackend {
            addr: addr.into(),
            lease_ttl,
        }
    }
}

impl Backend for DlockBackend {
    type Conn = DlockConn;

    fn name(&self) -> &'static str {
        "dlock"
    }

    fn unsupported(&self, _scenario: Scenario) -> Option<&'static str> {
        None
    }

    async fn connect(&self, id: usize) -> Result<DlockConn> {
        let client = Client::builder(self.addr.clone())
            .name(format!("loadgen-{id}"))
            .lease_ttl(self.lease_ttl)
            .connect()
            .await?;
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
