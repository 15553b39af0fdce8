//! A 3-member etcd cluster of `etcd` processes on loopback (`--initial-cluster`), with etcd's
//! default settings (100 ms heartbeat, 1 s election timeout).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use etcd_client::{Client, ConnectOptions};

use super::{Cluster, Member, members};
use crate::backend::etcd::EtcdBackend;

/// How long one status request to one member may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// The etcd cluster under test.
#[derive(Debug)]
pub struct EtcdCluster {
    etcd: PathBuf,
    members: Vec<Member>,
    backend: EtcdBackend,
    initial_cluster: String,
}

impl EtcdCluster {
    /// Three members (`e1`..`e3`) of `etcd` with client ports `base_port`+1..=3 and peer ports
    /// `base_port`+11..=13, files under `work_dir`; clients' leases live `lease_ttl`.
    pub fn new(etcd: &Path, work_dir: &Path, base_port: u16, lease_ttl: Duration) -> EtcdCluster {
        let (members, endpoints) = members::three(work_dir, "etcd-", base_port);
        let initial_cluster = members
            .iter()
            .map(|m| format!("e{}=http://{}", m.id, m.peer_addr))
            .collect::<Vec<_>>()
            .join(",");
        EtcdCluster {
            etcd: etcd.to_owned(),
            backend: EtcdBackend::new(&endpoints, lease_ttl),
            members,
            initial_cluster,
        }
    }

    /// (this member's id, its leader's id, its raft index) as member `idx` answers.
    async fn status(&self, idx: usize) -> Result<(u64, u64, u64)> {
        let url = format!("http://{}", self.members[idx].client_addr);
        let opts = ConnectOptions::new()
            .with_connect_timeout(STATUS_TIMEOUT)
            .with_timeout(STATUS_TIMEOUT);
        let mut client =
            tokio::time::timeout(STATUS_TIMEOUT, Client::connect([url.as_str()], Some(opts)))
                .await
                .context("connecting: timed out")??;
        let status = tokio::time::timeout(STATUS_TIMEOUT, client.status())
            .await
            .context("status: timed out")??;
        let id = status
            .header()
            .map(|h| h.member_id())
            .context("a status without a header")?;
        Ok((id, status.leader(), status.raft_index()))
    }
}

impl Cluster for EtcdCluster {
    type Backend = EtcdBackend;

    fn name(&self) -> &'static str {
        "etcd"
    }

    fn backend(&self) -> &EtcdBackend {
        &self.backend
    }

    fn members(&mut self) -> &mut [Member] {
        &mut self.members
    }

    fn start_member(&mut self, idx: usize, _first: bool) -> Result<()> {
        let m = &self.members[idx];
        let client_url = format!("http://{}", m.client_addr);
        let peer_url = format!("http://{}", m.peer_addr);
        // With a data directory from an earlier run, etcd ignores the --initial-* flags.
        let args: Vec<OsString> = vec![
            "--name".into(),
            format!("e{}", m.id).into(),
            "--data-dir".into(),
            m.data_dir.clone().into(),
            "--listen-client-urls".into(),
            client_url.clone().into(),
            "--advertise-client-urls".into(),
            client_url.into(),
            "--listen-peer-urls".into(),
            peer_url.clone().into(),
            "--initial-advertise-peer-urls".into(),
            peer_url.into(),
            "--initial-cluster".into(),
            self.initial_cluster.clone().into(),
            "--initial-cluster-state".into(),
            "new".into(),
            "--initial-cluster-token".into(),
            "dlock-failover".into(),
            "--log-level".into(),
            "warn".into(),
        ];
        let etcd = self.etcd.clone();
        self.members[idx].spawn(&etcd, args)
    }

    async fn leader(&mut self) -> Result<usize> {
        // Every running member must name the same leader, and that leader must answer as
        // one of them.
        let mut ids = Vec::new();
        let mut named = None;
        for idx in 0..self.members.len() {
            if !self.members[idx].running() {
                continue;
            }
            let (id, leader, _) = self.status(idx).await?;
            if leader == 0 {
                bail!("member e{} knows no leader", self.members[idx].id);
            }
            if named.is_some_and(|l| l != leader) {
                bail!("members disagree on the leader");
            }
            named = Some(leader);
            ids.push((idx, id));
        }
        let leader = named.context("no member runs")?;
        ids.iter()
            .find(|(_, id)| *id == leader)
            .map(|(idx, _)| *idx)
            .context("the named leader is not among the running members")
    }

    async fn caught_up(&mut self, idx: usize, leader: usize) -> Result<bool> {
        let (_, _, leader_index) = self.status(leader).await?;
        let (_, named, index) = self.status(idx).await?;
        Ok(named != 0 && index >= leader_index)
    }
}
