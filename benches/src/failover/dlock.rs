//! A 3-node dlock cluster of release `dlock-server` processes on loopback, with the server's
//! default cluster settings.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dlock_client::Client;

use super::{Cluster, Member, members};
use crate::backend::dlock::DlockBackend;

/// A member is caught up when it holds the leader's log but for at most this many entries.
const CATCH_UP_SLACK: u64 = 16;

/// The dlock cluster under test.
#[derive(Debug)]
pub struct DlockCluster {
    server: PathBuf,
    members: Vec<Member>,
    backend: DlockBackend,
    endpoints: String,
    peers: String,
}

impl DlockCluster {
    /// Three members (ids 1..=3) of `server` (the `dlock-server` binary) with client ports
    /// `base_port`+1..=3 and raft ports `base_port`+11..=13, files under `work_dir`; clients
    /// ask for `lease_ttl`.
    pub fn new(
        server: &Path,
        work_dir: &Path,
        base_port: u16,
        lease_ttl: Duration,
    ) -> DlockCluster {
        let (members, endpoints) = members::three(work_dir, "dlock-", base_port);
        let peers = members
            .iter()
            .map(|m| format!("{}={}/{}", m.id, m.client_addr, m.peer_addr))
            .collect::<Vec<_>>()
            .join(",");
        DlockCluster {
            server: server.to_owned(),
            backend: DlockBackend::new(endpoints.clone(), lease_ttl),
            members,
            endpoints,
            peers,
        }
    }

    /// The cluster as the leader sees it, through a short-lived client of every member.
    async fn view(&self) -> Result<dlock_proto::status::ClusterView> {
        let client = Client::builder(self.endpoints.clone())
            .name("failover-observer")
            .connect_timeout(Duration::from_secs(1))
            .connect()
            .await?;
        let view = client.query_cluster().await;
        let _ = client.close().await;
        view?.context("the server does not run as a cluster")
    }
}

impl Cluster for DlockCluster {
    type Backend = DlockBackend;

    fn name(&self) -> &'static str {
        "dlock"
    }

    fn backend(&self) -> &DlockBackend {
        &self.backend
    }

    fn members(&mut self) -> &mut [Member] {
        &mut self.members
    }

    fn start_member(&mut self, idx: usize, first: bool) -> Result<()> {
        let m = &self.members[idx];
        let mut args: Vec<OsString> = vec![
            "--node-id".into(),
            m.id.to_string().into(),
            "--peers".into(),
            self.peers.clone().into(),
            "--listen".into(),
            m.client_addr.clone().into(),
            "--data-dir".into(),
            m.data_dir.clone().into(),
            "--http-listen".into(),
            "off".into(),
            "--log-level".into(),
            "warn".into(),
        ];
        // One member forms the cluster; the flag is ignored once a node has belonged to one.
        if first && idx == 0 {
            args.push("--init".into());
        }
        let server = self.server.clone();
        self.members[idx].spawn(&server, args)
    }

    async fn leader(&mut self) -> Result<usize> {
        let view = self.view().await?;
        let Some(leader) = view.leader else {
            bail!("no leader yet");
        };
        // Only the leader accepts a session, so the answer is the leader's own.
        if view.node_id != leader {
            bail!("node {} answered, naming {leader} the leader", view.node_id);
        }
        self.members
            .iter()
            .position(|m| m.id == leader)
            .with_context(|| format!("leader {leader} is not one of the members"))
    }

    async fn caught_up(&mut self, idx: usize, leader: usize) -> Result<bool> {
        let view = self.view().await?;
        let id = self.members[idx].id;
        if view.leader != Some(self.members[leader].id) {
            return Ok(false);
        }
        if idx == leader {
            return Ok(true);
        }
        let matched = view
            .members
            .iter()
            .find(|m| m.id == id)
            .and_then(|m| m.matched);
        // Within a few entries: each poll's own short session adds some to the log.
        Ok(matched.is_some_and(|m| m + CATCH_UP_SLACK >= view.last_log_index))
    }
}
