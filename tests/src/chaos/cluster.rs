//! Chaos against a cluster: three (or more) server children forming one cluster, the
//! faults that hit its members, and the history merged from the members' audit logs.
//!
//! - [`ClusterProc`]: the members as child processes (`chaos serve --node-id N --peers ...`),
//!   each with its own data directory and audit log, that can be killed (SIGKILL) and
//!   restarted from their data directories, or paused (SIGSTOP / SIGCONT).
//! - [`merge_member_logs`]: the committed history from every member's audit log: each input
//!   index once, in index order, checking that members agree wherever their logs overlap
//!   (a replication check), and marking inputs no member's log holds as a hole.
//!
//! A partition of one member is done by pausing it (SIGSTOP) for a while: its peers and its
//! clients see it fall silent, as behind a network partition; when it goes on, it hears of
//! the newer term and catches up. (Cutting its peer links through per-link proxies would also
//! let it run meanwhile; pausing is the stand-in until the cluster harness has them.)

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufRead, BufReader, Lines};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dlock_client::Client;
use serde::Serialize;
use tokio::time::Instant;

use super::history::{AuditLine, AuditStats, read_audit_logs};
use super::server_proc::{ServerProc, ServerSpec};

/// A cluster of server children on loopback.
pub struct ClusterProc {
    nodes: Vec<ServerProc>,
    /// Each member's audit log.
    audit_logs: Vec<PathBuf>,
    /// Members paused with SIGSTOP.
    paused: Vec<bool>,
    observer: Option<Client>,
}

/// Free loopback ports for `n` listeners (bound and released at once: the members bind them
/// again right after).
fn free_addrs(n: usize) -> Result<Vec<SocketAddr>> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map_err(Into::into))
        .collect()
}

impl ClusterProc {
    /// Starts `size` members of a new cluster in `dir` (member `i` keeps its data in
    /// `dir/node-i`, its audit log in `dir/audit-i.jsonl`, its log in `dir/server-i.log`),
    /// node 1 forming it, each with the server flags `args`.
    pub async fn start(
        exe: &Path,
        dir: &Path,
        size: usize,
        args: &[String],
    ) -> Result<ClusterProc> {
        let addrs = free_addrs(size * 2)?;
        let peers: Vec<String> = (0..size)
            .map(|i| format!("{}={}/{}", i + 1, addrs[2 * i], addrs[2 * i + 1]))
            .collect();
        let peers = peers.join(",");
        let mut nodes = Vec::with_capacity(size);
        let mut audit_logs = Vec::with_capacity(size);
        for i in 0..size {
            let id = i + 1;
            let audit_log = dir.join(format!("audit-{id}.jsonl"));
            let _ = std::fs::remove_file(&audit_log);
            let mut node_args = args.to_vec();
            node_args.extend([
                "--node-id".to_owned(),
                id.to_string(),
                "--peers".to_owned(),
                peers.clone(),
                // The audit log is not rotated during a run: the merge reads one file each.
                "--audit-log-max-size".to_owned(),
                "64GiB".to_owned(),
            ]);
            if id == 1 {
                node_args.push("--init".to_owned());
            }
            let spec = ServerSpec {
                exe: exe.to_owned(),
                data_dir: dir.join(format!("node-{id}")),
                audit_log: audit_log.clone(),
                log_file: dir.join(format!("server-{id}.log")),
                args: node_args,
            };
            nodes.push(ServerProc::start_on(spec, addrs[2 * i], Vec::new()).await?);
            audit_logs.push(audit_log);
        }
        Ok(ClusterProc {
            nodes,
            audit_logs,
            paused: vec![false; size],
            observer: None,
        })
    }

    /// How many members.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Every member's client address.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(ServerProc::addr).collect()
    }

    /// The endpoint list a client connects with (`a,b,c`).
    pub fn endpoints(&self) -> String {
        self.addrs()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every member's audit log.
    pub fn audit_logs(&self) -> &[PathBuf] {
        &self.audit_logs
    }

    /// How many times member `i` (from 0) was started.
    pub fn starts(&self, i: usize) -> u64 {
        self.nodes[i].starts()
    }

    async fn observer(&mut self) -> Result<&Client> {
        if self.observer.is_none() {
            let c = Client::builder(self.endpoints())
                .name("chaos-cluster-observer")
                .lease_ttl(Duration::from_secs(30))
                .backoff(Duration::from_millis(20), Duration::from_millis(200))
                .request_timeout(Duration::from_secs(2))
                .connect()
                .await
                .context("connecting the cluster observer")?;
            self.observer = Some(c);
        }
        self.observer.as_ref().context("observer")
    }

    /// The member (from 0) that leads and serves, once one does; fails after `within`.
    pub async fn leader(&mut self, within: Duration) -> Result<usize> {
        let deadline = Instant::now() + within;
        let size = self.size();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("no member leads and serves after {within:?}");
            }
            let answer = match self.observer().await {
                Ok(c) => tokio::time::timeout(left, c.query_cluster()).await,
                Err(_) => Ok(Ok(None)),
            };
            if let Ok(Ok(Some(view))) = answer
                && let Some(id) = view.leader
                && view.node_id == id
                && (1..=size as u64).contains(&id)
            {
                return Ok(usize::try_from(id - 1).unwrap_or(0));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills member `i` with SIGKILL (no shutdown, nothing flushed).
    pub async fn kill(&mut self, i: usize) {
        self.paused[i] = false;
        self.nodes[i].kill().await;
    }

    /// Starts member `i` again from its data directory.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        self.paused[i] = false;
        self.nodes[i].restart().await
    }

    /// Pauses member `i` (SIGSTOP) or lets it go on (SIGCONT).
    pub fn pause(&mut self, i: usize, stop: bool) -> Result<()> {
        self.nodes[i].pause(stop)?;
        self.paused[i] = stop;
        Ok(())
    }

    /// Lets every paused member go on and restarts every member that exited.
    pub async fn heal(&mut self) -> Result<()> {
        for i in 0..self.size() {
            if self.paused[i] {
                self.pause(i, false)?;
            }
            if self.nodes[i].pid().is_none() || self.nodes[i].exited().is_some() {
                self.nodes[i].restart().await?;
            }
        }
        Ok(())
    }

    /// Closes the observer and kills every member.
    pub async fn stop(&mut self) {
        if let Some(c) = self.observer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), c.close()).await;
        }
        for i in 0..self.size() {
            if self.paused[i] {
                let _ = self.pause(i, false);
            }
            self.nodes[i].kill().await;
        }
    }
}

/// What merging the members' logs found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MergeStats {
    /// Each member's counts.
    pub members: Vec<AuditStats>,
    /// Inputs in the merged history.
    pub inputs: u64,
    /// Inputs found in more than one member's log and compared.
    pub compared: u64,
    /// Inputs on which two members' logs disagree (input or events): the first few.
    pub mismatches: Vec<String>,
    /// How many inputs disagree.
    pub mismatch_count: u64,
    /// Ranges of inputs no member's log holds (each becomes a `Snapshot` line of the merged
    /// history, which the checker reports).
    pub holes: Vec<(u64, u64)>,
}

/// The input indices a member's log covers: `(after, upto]` ranges.
fn coverage(path: &Path) -> Result<(AuditStats, Vec<(u64, u64)>)> {
    let mut ranges = Vec::new();
    let mut from: Option<u64> = None;
    let mut last = 0u64;
    let stats = read_audit_logs(&[path], |_, line| match line {
        AuditLine::Replica { applied, .. } if from.is_none() => {
            from = Some(applied);
            last = applied;
        }
        AuditLine::Snapshot { after, upto, .. } => {
            ranges.push((from.unwrap_or(0), after));
            from = Some(upto);
            last = upto;
        }
        AuditLine::Apply { input, .. } => {
            if from.is_none() {
                from = Some(0);
            }
            last = input.index;
        }
        _ => {}
    })?;
    ranges.push((from.unwrap_or(0), last));
    Ok((stats, ranges))
}

/// A member's `Apply` lines in order, read again after [`coverage`] checked the file (so a
/// line that does not parse is a torn one, skipped).
struct Applies {
    lines: Lines<BufReader<File>>,
}

impl Applies {
    fn open(path: &Path) -> Result<Applies> {
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Applies {
            lines: BufReader::new(f).lines(),
        })
    }

    fn next_apply(&mut self) -> Result<Option<AuditLine>> {
        for line in self.lines.by_ref() {
            if let Ok(l @ AuditLine::Apply { .. }) = serde_json::from_str::<AuditLine>(&line?) {
                return Ok(Some(l));
            }
        }
        Ok(None)
    }
}

fn index_of(line: &AuditLine) -> u64 {
    match line {
        AuditLine::Apply { input, .. } => input.index,
        _ => 0,
    }
}

/// Merges the members' audit logs into one committed history, fed to `each` in index order:
/// a `Replica` line first, then every input once (with the earliest `ts_us` any member
/// applied it at), and a `Snapshot` line wherever no member's log holds an input.
pub fn merge_member_logs(paths: &[PathBuf], mut each: impl FnMut(AuditLine)) -> Result<MergeStats> {
    let mut stats = MergeStats::default();
    let mut covered = Vec::new();
    for p in paths {
        let (s, ranges) = coverage(p)?;
        stats.members.push(s);
        covered.push(ranges);
    }
    let mut readers = paths
        .iter()
        .map(|p| Applies::open(p))
        .collect::<Result<Vec<_>>>()?;
    let mut heads: Vec<Option<AuditLine>> = Vec::with_capacity(readers.len());
    let mut queue = BinaryHeap::new();
    for (i, r) in readers.iter_mut().enumerate() {
        let head = r.next_apply()?;
        if let Some(h) = &head {
            queue.push(Reverse((index_of(h), i)));
        }
        heads.push(head);
    }
    each(AuditLine::Replica {
        ts_us: 0,
        pid: 0,
        node: 0,
        applied: 0,
    });
    let held_anywhere = |a: u64, b: u64| {
        covered
            .iter()
            .any(|ranges| ranges.iter().any(|&(after, upto)| after < a && b <= upto))
    };
    let mut last = 0u64;
    while let Some(Reverse((index, first))) = queue.pop() {
        let Some(AuditLine::Apply {
            mut ts_us,
            input,
            events,
        }) = heads[first].take()
        else {
            continue;
        };
        // The same index from the other members' logs.
        while let Some(&Reverse((i2, m))) = queue.peek() {
            if i2 != index {
                break;
            }
            queue.pop();
            if let Some(AuditLine::Apply {
                ts_us: t2,
                input: in2,
                events: ev2,
            }) = heads[m].take()
            {
                stats.compared += 1;
                ts_us = ts_us.min(t2);
                if in2 != input || ev2 != events {
                    stats.mismatch_count += 1;
                    if stats.mismatches.len() < 10 {
                        stats.mismatches.push(format!(
                            "input {index}: member {} applied {input:?} giving {events:?}, member {} applied {in2:?} giving {ev2:?}",
                            first + 1,
                            m + 1
                        ));
                    }
                }
            }
            if let Some(h) = readers[m].next_apply()? {
                queue.push(Reverse((index_of(&h), m)));
                heads[m] = Some(h);
            }
        }
        if let Some(h) = readers[first].next_apply()? {
            queue.push(Reverse((index_of(&h), first)));
            heads[first] = Some(h);
        }
        if index > last + 1 && !held_anywhere(last + 1, index - 1) {
            // Indices without an input (openraft's own blank and membership entries) are
            // in every member's covered range; these are not.
            stats.holes.push((last, index - 1));
            each(AuditLine::Snapshot {
                ts_us,
                after: last,
                upto: index - 1,
            });
        }
        last = index;
        stats.inputs += 1;
        each(AuditLine::Apply {
            ts_us,
            input,
            events,
        });
    }
    Ok(stats)
}
