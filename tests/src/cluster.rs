//! [`TestCluster`]: a dlock cluster of real server processes on 127.0.0.1, for fail-over,
//! recovery and partition tests.
//!
//! Each node is a `dlock-server` child (the `chaos serve` binary of this package, which takes
//! every server flag) with its own client port, peer port and data directory, so it can be
//! killed with SIGKILL ([`kill`](TestCluster::kill)) and started again from the same
//! directory ([`restart`](TestCluster::restart)). With [`ClusterOptions::proxied`] every
//! peer link i→j goes through its own [`Proxy`]: node i's `--peers` names the proxy as node
//! j's raft address, so a test can cut or black-hole single links, or
//! [`isolate`](TestCluster::isolate) a node from the others.
//!
//! Every wait polls observable state under a deadline; dropping the cluster kills every
//! node (SIGKILL) and stops every proxy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dlock_proto::{
    ClientMessage, FrameCodec, Hello, PROTOCOL_VERSION, Refusal, Request, RequestId, ServerMessage,
};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_util::codec::Framed;

use crate::chaos::server_proc::LISTENING;
use crate::proxy::Proxy;

/// How long a node may take to print that it listens.
const START_WAIT: Duration = Duration::from_secs(30);

/// How long one probe of a node waits for an answer to its `Hello`.
const PROBE_WAIT: Duration = Duration::from_millis(500);

/// Set (to anything) to keep every node's data directory and log after the test.
pub const KEEP_ENV: &str = "DLOCK_CLUSTER_KEEP";

/// The nodes' log filter, unless a test gives `--log-level`.
const NODE_LOG_LEVEL: &str = "info,openraft=warn";

/// The pause between two rounds of polling.
const POLL: Duration = Duration::from_millis(20);

/// How a [`TestCluster`] is started.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The executable that understands `serve` and the server's flags (the `chaos` binary).
    pub exe: PathBuf,
    /// How many nodes (3 or 5).
    pub nodes: u64,
    /// Route every peer link i→j through its own proxy.
    pub proxied: bool,
    /// Further server flags, given to every node.
    pub args: Vec<String>,
    /// Give every node its own audit log, `audit-ID.jsonl` in the cluster's directory (see
    /// [`TestCluster::audit_log`]), never rotated.
    pub audit_logs: bool,
    /// Keep the nodes' data, logs and audit logs in this directory (created if missing, and
    /// kept) instead of a temporary one.
    pub dir: Option<PathBuf>,
    /// Give every node an HTTP listener (see [`TestCluster::http_addr`]); without it they
    /// run with `--http-listen off`.
    pub http: bool,
}

impl ClusterOptions {
    /// Three nodes started from `exe`, peers connected directly, no further flags.
    pub fn new(exe: impl Into<PathBuf>) -> ClusterOptions {
        ClusterOptions {
            exe: exe.into(),
            nodes: 3,
            proxied: false,
            args: Vec::new(),
            audit_logs: false,
            dir: None,
            http: false,
        }
    }

    /// Gives every node an HTTP listener on a loopback port of its own (see
    /// [`TestCluster::http_addr`]).
    pub fn http(mut self) -> ClusterOptions {
        self.http = true;
        self
    }

    /// Gives every node its own audit log (see [`TestCluster::audit_log`]).
    pub fn audit_logs(mut self) -> ClusterOptions {
        self.audit_logs = true;
        self
    }

    /// Keeps everything in `dir` instead of a temporary directory.
    pub fn in_dir(mut self, dir: impl Into<PathBuf>) -> ClusterOptions {
        self.dir = Some(dir.into());
        self
    }

    /// Routes every peer link through its own proxy (see [`TestCluster::link`]).
    pub fn proxied(mut self) -> ClusterOptions {
        self.proxied = true;
        self
    }

    /// Adds server flags for every node.
    pub fn args<I, S>(mut self, args: I) -> ClusterOptions
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// What a node answered to a `Hello`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// It opened a session: it leads (the probe's session is closed again at once).
    Leader,
    /// It refused with `NotLeader`, naming the leader's client address if it knows it.
    NotLeader(Option<String>),
    /// Any other answer, or none within the probe's wait (not running, no quorum, ...).
    NoAnswer(String),
}

struct Node {
    client: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    /// This node's `--peers`.
    peers: String,
    /// The address its peer listener binds.
    raft: SocketAddr,
    /// Its HTTP listener's address, if it has one.
    http: Option<SocketAddr>,
    child: Option<Child>,
}

/// A running cluster of server processes. See the [module docs](self).
pub struct TestCluster {
    opts: ClusterOptions,
    dir: PathBuf,
    /// Removes `dir` on drop, unless [`KEEP_ENV`] asked to keep it.
    _cleanup: Option<tempfile::TempDir>,
    nodes: BTreeMap<u64, Node>,
    links: BTreeMap<(u64, u64), Proxy>,
}

impl TestCluster {
    /// Starts `opts.nodes` nodes, node 1 with `--init`, and returns once every one listens
    /// for clients (a leader is elected shortly after: [`wait_leader`](Self::wait_leader)).
    pub async fn start(opts: ClusterOptions) -> Result<TestCluster> {
        let (dir, cleanup) = match &opts.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                (dir.clone(), None)
            }
            None => TestCluster::temp_dir()?,
        };
        let ids: Vec<u64> = (1..=opts.nodes).collect();
        let per_node = if opts.http { 3 } else { 2 };
        let ports = crate::ports::reserve(ids.len() * per_node)?;
        let client = |id: u64| ports[(id as usize - 1) * per_node];
        let raft = |id: u64| ports[(id as usize - 1) * per_node + 1];
        let http = |id: u64| opts.http.then(|| ports[(id as usize - 1) * per_node + 2]);
        let mut links = BTreeMap::new();
        if opts.proxied {
            for &from in &ids {
                for &to in ids.iter().filter(|&&to| to != from) {
                    links.insert((from, to), Proxy::start(raft(to)).await?);
                }
            }
        }
        let mut nodes = BTreeMap::new();
        for &id in &ids {
            let peers = ids
                .iter()
                .map(|&j| {
                    let reach = match links.get(&(id, j)) {
                        Some(p) => p.addr(),
                        None => raft(j),
                    };
                    format!("{j}={}/{reach}", client(j))
                })
                .collect::<Vec<_>>()
                .join(",");
            let data_dir = dir.join(format!("node{id}"));
            std::fs::create_dir_all(&data_dir)?;
            nodes.insert(
                id,
                Node {
                    client: client(id),
                    log: dir.join(format!("node{id}.log")),
                    data_dir,
                    peers,
                    raft: raft(id),
                    http: http(id),
                    child: None,
                },
            );
        }
        let mut cluster = TestCluster {
            opts,
            dir,
            _cleanup: cleanup,
            nodes,
            links,
        };
        for id in ids {
            cluster.launch(id, id == 1).await?;
        }
        Ok(cluster)
    }

    /// A temporary directory for the nodes, removed on drop unless [`KEEP_ENV`] is set.
    fn temp_dir() -> Result<(PathBuf, Option<tempfile::TempDir>)> {
        let tmp = tempfile::Builder::new()
            .prefix("dlock-cluster-")
            .tempdir()?;
        let dir = tmp.path().to_owned();
        let cleanup = if std::env::var_os(KEEP_ENV).is_some() {
            eprintln!(
                "{KEEP_ENV}: keeping the nodes' data and logs in {}",
                dir.display()
            );
            drop(tmp.keep());
            None
        } else {
            Some(tmp)
        };
        Ok((dir, cleanup))
    }

    /// Node `id`'s audit log (a cluster started with [`ClusterOptions::audit_logs`]).
    pub fn audit_log(&self, id: u64) -> PathBuf {
        self.dir.join(format!("audit-{id}.jsonl"))
    }

    /// Every node's id, in order.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// The client address of node `id`.
    pub fn client_addr(&self, id: u64) -> SocketAddr {
        self.node(id).client
    }

    /// Node `id`'s peer (Raft) address, where it listens for its peers.
    pub fn raft_addr(&self, id: u64) -> SocketAddr {
        self.node(id).raft
    }

    /// Node `id`'s HTTP listener (a cluster started with [`ClusterOptions::http`]).
    pub fn http_addr(&self, id: u64) -> Option<SocketAddr> {
        self.node(id).http
    }

    /// Every node's client address, comma-separated: what `Client::builder` and
    /// `dlock --server` take.
    pub fn endpoints(&self) -> String {
        self.nodes
            .values()
            .map(|n| n.client.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node whose client address is `addr`.
    pub fn id_of(&self, addr: &str) -> Option<u64> {
        self.nodes
            .iter()
            .find(|(_, n)| n.client.to_string() == addr)
            .map(|(id, _)| *id)
    }

    /// Node `id`'s data directory (its Raft log and snapshot are in `raft/` below it).
    pub fn data_dir(&self, id: u64) -> &Path {
        &self.node(id).data_dir
    }

    /// The directory holding every node's data directory and log file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last `lines` lines of every node's log, for a failure message.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for (id, n) in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- node {id} ---\n"));
            for l in &all[all.len().saturating_sub(lines)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// The proxy of the peer link `from` → `to` (a cluster started with
    /// [`ClusterOptions::proxied`]).
    pub fn link(&self, from: u64, to: u64) -> &Proxy {
        self.links
            .get(&(from, to))
            .unwrap_or_else(|| panic!("no proxied link {from}->{to}"))
    }

    /// Cuts node `id` off from every other node: its links both ways are black-holed (no
    /// byte passes, new connections hang) and their connections closed. Clients still reach
    /// it.
    pub fn isolate(&self, id: u64) {
        for ((from, to), p) in &self.links {
            if *from == id || *to == id {
                p.blackhole(true);
                p.cut();
            }
        }
    }

    /// Lifts [`isolate`](Self::isolate).
    pub fn heal(&self, id: u64) {
        for ((from, to), p) in &self.links {
            if *from == id || *to == id {
                p.blackhole(false);
            }
        }
    }

    /// Whether node `id`'s process is running.
    pub fn is_running(&mut self, id: u64) -> bool {
        let node = self.node_mut(id);
        match node.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                node.child = None;
                false
            }
            None => false,
        }
    }

    /// Kills node `id` with SIGKILL (nothing flushed, no goodbye) and reaps it.
    pub async fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.node_mut(id).child.take() {
            let _ = child.kill().await;
        }
    }

    /// Stops node `id` gracefully, as an operator does (SIGINT, which the server takes as it
    /// takes SIGTERM), and waits (at most `within`) for it to exit.
    pub async fn stop(&mut self, id: u64, within: Duration) -> Result<()> {
        let Some(mut child) = self.node_mut(id).child.take() else {
            return Ok(());
        };
        let pid = child.id().context("the node's process id")?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)?;
        match tokio::time::timeout(within, child.wait()).await {
            Ok(status) => {
                status?;
                Ok(())
            }
            Err(_) => {
                let _ = child.kill().await;
                bail!("node {id} did not exit within {within:?} of SIGINT")
            }
        }
    }

    /// Starts node `id` again from its data directory, on the same addresses.
    pub async fn restart(&mut self, id: u64) -> Result<()> {
        self.kill(id).await;
        self.launch(id, false).await
    }

    /// Asks node `id` whether it leads: sends a `Hello` and waits half a second for the
    /// answer. A leader's probe session is closed again with `Goodbye`.
    pub async fn probe(&self, id: u64) -> Probe {
        match tokio::time::timeout(PROBE_WAIT, probe_addr(self.node(id).client)).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => Probe::NoAnswer(format!("{e:#}")),
            Err(_) => Probe::NoAnswer(format!("no answer within {PROBE_WAIT:?}")),
        }
    }

    /// Waits (at most `within`) until one of the running nodes not in `except` accepts a
    /// session, and returns its id.
    pub async fn wait_leader_except(&mut self, except: &[u64], within: Duration) -> Result<u64> {
        let deadline = Instant::now() + within;
        let mut last = BTreeMap::new();
        loop {
            for id in self.ids() {
                if except.contains(&id) || !self.is_running(id) {
                    continue;
                }
                let p = self.probe(id).await;
                if p == Probe::Leader {
                    return Ok(id);
                }
                last.insert(id, p);
            }
            if Instant::now() >= deadline {
                bail!(
                    "no leader among the nodes but {except:?} within {within:?}; last answers {last:?}\n{}",
                    self.log_tails(15)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// [`wait_leader_except`](Self::wait_leader_except) with no node excluded.
    pub async fn wait_leader(&mut self, within: Duration) -> Result<u64> {
        self.wait_leader_except(&[], within).await
    }

    fn node(&self, id: u64) -> &Node {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Starts node `id`'s process and waits until it listens for clients.
    async fn launch(&mut self, id: u64, init: bool) -> Result<()> {
        let exe = self.opts.exe.clone();
        let mut extra = self.opts.args.clone();
        if self.opts.audit_logs {
            extra.push("--audit-log".to_owned());
            extra.push(self.audit_log(id).display().to_string());
            // Not rotated: one file per node holds its whole history.
            extra.extend(["--audit-log-max-size".to_owned(), "64GiB".to_owned()]);
        }
        let node = self.node_mut(id);
        let http = node
            .http
            .map_or_else(|| "off".to_owned(), |a| a.to_string());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("opening {}", node.log.display()))?;
        // A restarted node rebinds its old ports, which a moment ago belonged to the killed
        // process; a failed start is retried a few times.
        let mut last_err = String::new();
        for _ in 0..20 {
            let mut cmd = Command::new(&exe);
            cmd.arg("serve")
                .args(["--listen", &node.client.to_string()])
                .arg("--data-dir")
                .arg(&node.data_dir)
                .args(["--http-listen", &http])
                .args(["--node-id", &id.to_string()])
                .args(["--peers", &node.peers])
                .args(["--raft-listen", &node.raft.to_string()])
                .args(&extra)
                // Sessions and leadership in the nodes' logs (a test's --log-level wins).
                .env("DLOCK_LOG_LEVEL", NODE_LOG_LEVEL)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log.try_clone()?))
                .kill_on_drop(true);
            if init {
                cmd.arg("--init");
            }
            let mut child = cmd
                .spawn()
                .with_context(|| format!("starting {}", exe.display()))?;
            let stdout = child.stdout.take().context("child stdout")?;
            let mut lines = BufReader::new(stdout).lines();
            match tokio::time::timeout(START_WAIT, lines.next_line()).await {
                Ok(Ok(Some(line))) if line.starts_with(LISTENING) => {
                    // Keep draining stdout so the child never blocks on it.
                    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                    node.child = Some(child);
                    return Ok(());
                }
                other => {
                    let _ = child.kill().await;
                    last_err = format!("{other:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        bail!(
            "node {id} did not start: {last_err}; the end of {}:\n{}",
            node.log.display(),
            log_tail(&node.log, 20)
        )
    }
}

/// One `Hello` to `addr` and its answer.
async fn probe_addr(addr: SocketAddr) -> Result<Probe> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut framed = Framed::new(
        stream,
        FrameCodec::<ServerMessage, ClientMessage>::default(),
    );
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        client_name: "cluster-probe".to_owned(),
        lease_ttl_ms: 0,
        resume: None,
        token: None,
    };
    framed.send(ClientMessage::Hello(hello)).await?;
    Ok(match framed.next().await {
        Some(Ok(Ok(ServerMessage::Welcome(_)))) => {
            let bye = ClientMessage::Request {
                id: RequestId(1),
                body: Request::Goodbye,
            };
            // The session expires anyway if the goodbye is lost.
            let _ = framed.send(bye).await;
            Probe::Leader
        }
        Some(Ok(Ok(ServerMessage::Refused(Refusal::NotLeader { leader })))) => {
            Probe::NotLeader(leader)
        }
        other => Probe::NoAnswer(format!("{other:?}")),
    })
}

/// The last `lines` lines of the file at `path` (a node's log), or why it could not be read.
fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("({e})"),
    }
}
