//! One chaos run: a server child with an audit log (or a cluster of three, each member with
//! its own), the workload, the fault injector, a quiet end, and the checker over the history
//! (a cluster's: the members' logs merged by index, see [`merge_member_logs`]).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use dlock_client::Client;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::checker::{CheckConfig, CheckReport, Checker};
use super::cluster::{MergeStats, merge_member_logs};
use super::faults::{self, FaultConfig, FaultCounts, FaultKind, Servers};
use super::history::{AuditStats, read_audit_log};
use super::server_proc::{ServerProc, ServerSpec};
use super::workload::{self, Recorder, Slot, WorkloadConfig};
use crate::cluster::{ClusterOptions, TestCluster};
use crate::proxy::Proxy;

/// Settings of a chaos run.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// The executable that runs `serve` (the `chaos` binary).
    pub exe: PathBuf,
    /// How long the workload runs (faults included).
    pub duration: Duration,
    /// The workload.
    pub workload: WorkloadConfig,
    /// The faults.
    pub faults: FaultConfig,
    /// Seed of every random choice (the workload's timing still varies from run to run).
    pub seed: u64,
    /// Where to keep the data directory, audit log and server log; a temporary directory
    /// (kept only if a violation is found) if `None`.
    pub dir: Option<PathBuf>,
    /// The checker's settings (`expect_quiescent` is set by the run).
    pub check: CheckConfig,
    /// Run against a cluster of three members instead of a single server.
    pub cluster: bool,
}

impl ChaosConfig {
    /// A bounded run for the test suite: 16 clients on 4 resources with 1 s leases, the
    /// given fault kinds, a seed from the clock (printed by the report), and the checker's
    /// defaults (strict: a restarted server must wait out the old leases,
    /// [`CheckConfig::restart_grace`]).
    pub fn for_tests(exe: PathBuf, kinds: &[FaultKind], duration: Duration) -> ChaosConfig {
        ChaosConfig {
            exe,
            duration,
            workload: WorkloadConfig::default(),
            faults: FaultConfig {
                kinds: kinds.to_vec(),
                ..FaultConfig::default()
            },
            seed: super::history::now_us(),
            dir: None,
            check: CheckConfig::default(),
            cluster: false,
        }
    }

    /// [`for_tests`](Self::for_tests) against a cluster of three members.
    pub fn for_cluster_tests(exe: PathBuf, kinds: &[FaultKind], duration: Duration) -> ChaosConfig {
        ChaosConfig {
            cluster: true,
            ..ChaosConfig::for_tests(exe, kinds, duration)
        }
    }
}

/// Runs `cfg` under a hard timeout of 120 s and checks what every test of the suite expects
/// of a run: no violation of any property, at least one fault of every configured kind, at
/// least 100 operations and 50 grants checked, and at least one server lifetime. The report is
/// printed, so a failing run shows its counterexample and seed.
pub async fn run_chaos_checked(cfg: ChaosConfig) -> Result<ChaosReport> {
    let kinds = cfg.faults.kinds.clone();
    let report = tokio::time::timeout(Duration::from_secs(120), run_chaos(cfg))
        .await
        .context("the chaos run did not finish within its hard timeout")??;
    println!("{report}");
    ensure!(report.is_ok(), "violations found:\n{report}");
    for kind in &kinds {
        ensure!(
            report.faults.get(kind).copied().unwrap_or(0) > 0,
            "no {} fault was injected:\n{report}",
            kind.name()
        );
    }
    ensure!(
        report.check.op_count() >= 100,
        "too little work was checked:\n{report}"
    );
    ensure!(
        report.check.grants >= 50,
        "too few grants were checked:\n{report}"
    );
    ensure!(
        report.audit.starts + report.audit.replicas >= 1,
        "no server lifetime in the audit log:\n{report}"
    );
    Ok(report)
}

/// What a chaos run did and found.
#[derive(Clone, Debug, Serialize)]
pub struct ChaosReport {
    /// The seed.
    pub seed: u64,
    /// How long the workload ran.
    pub duration: Duration,
    /// Faults injected, by kind.
    pub faults: FaultCounts,
    /// The audit log's counts.
    pub audit: AuditStats,
    /// The checker's verdict.
    pub check: CheckReport,
    /// Against a cluster: what merging the members' logs found (the replication check).
    pub merge: Option<MergeStats>,
    /// Where the history is (kept if a violation was found or a directory was given).
    pub dir: PathBuf,
}

impl ChaosReport {
    /// Whether no property was violated.
    pub fn is_ok(&self) -> bool {
        self.check.is_ok() && self.merge.as_ref().is_none_or(|m| m.mismatch_count == 0)
    }

    /// Operations the workload completed and the checker judged.
    pub fn operations(&self) -> u64 {
        self.check.op_count()
    }
}

impl fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "chaos run: seed {}, {:?} of workload, history in {}",
            self.seed,
            self.duration,
            self.dir.display()
        )?;
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{}={n}", k.name()))
            .collect();
        writeln!(f, "faults injected: {}", faults.join(" "))?;
        writeln!(
            f,
            "audit log: {} inputs, {} server starts, {} torn lines",
            self.audit.applied, self.audit.starts, self.audit.torn
        )?;
        if let Some(m) = &self.merge {
            let members: Vec<String> = m
                .members
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    format!(
                        "member {}: {} inputs, {} opens, {} torn, {} snapshot holes",
                        i + 1,
                        s.applied,
                        s.replicas,
                        s.torn,
                        s.snapshots
                    )
                })
                .collect();
            writeln!(f, "cluster logs: {}", members.join("; "))?;
            writeln!(
                f,
                "replication check: {} inputs merged, {} compared across members, {} disagree, {} holes no member holds",
                m.inputs,
                m.compared,
                m.mismatch_count,
                m.holes.len()
            )?;
            for x in &m.mismatches {
                writeln!(f, "  {x}")?;
            }
        }
        write!(f, "{}", self.check)
    }
}

/// Runs the workload against a server child while injecting faults, then checks the history.
pub async fn run_chaos(cfg: ChaosConfig) -> Result<ChaosReport> {
    let temp;
    let dir = match &cfg.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            temp = None;
            d.clone()
        }
        None => {
            let t = tempfile::Builder::new().prefix("dlock-chaos-").tempdir()?;
            let p = t.path().to_owned();
            temp = Some(t);
            p
        }
    };
    let audit_log = dir.join("audit.jsonl");
    let mut single = None;
    let mut cluster = None;
    if cfg.cluster {
        for id in 1..=3 {
            let _ = std::fs::remove_file(dir.join(format!("audit-{id}.jsonl")));
            let _ = std::fs::remove_dir_all(dir.join(format!("node{id}")));
        }
        let opts = ClusterOptions::new(&cfg.exe)
            .proxied()
            .audit_logs()
            .in_dir(&dir)
            .args(["--log-level", "warn"]);
        let mut c = TestCluster::start(opts).await?;
        c.wait_leader(Duration::from_secs(30)).await?;
        cluster = Some(c);
    } else {
        let _ = std::fs::remove_file(&audit_log);
        let spec = ServerSpec {
            exe: cfg.exe.clone(),
            data_dir: dir.join("data"),
            audit_log: audit_log.clone(),
            log_file: dir.join("server.log"),
            args: vec!["--log-level".into(), "warn".into()],
        };
        single = Some(ServerProc::start(spec).await?);
    }
    let upstreams = match (&single, &cluster) {
        (Some(s), _) => vec![s.addr()],
        (_, Some(c)) => c.ids().into_iter().map(|id| c.client_addr(id)).collect(),
        _ => Vec::new(),
    };
    let endpoints = upstreams
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let w = cfg.workload.clone();
    let mut slots = Vec::with_capacity(w.clients);
    for _ in 0..w.clients {
        let mut proxies = Vec::with_capacity(upstreams.len());
        for up in &upstreams {
            proxies.push(Proxy::start(*up).await?);
        }
        slots.push(Arc::new(Slot {
            proxies,
            paused: AtomicBool::new(false),
            busy: AtomicBool::new(false),
        }));
    }
    let rec = Recorder::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut clients = JoinSet::new();
    for (i, slot) in slots.iter().enumerate() {
        clients.spawn(workload::run_client(
            i,
            w.clone(),
            slot.clone(),
            cfg.seed.wrapping_add(1 + i as u64),
            rec.clone(),
            stop_rx.clone(),
        ));
    }
    let started = Instant::now();
    let until = started + cfg.duration;
    let mut servers = match (&mut single, &mut cluster) {
        (Some(s), _) => Servers::One(s),
        (_, Some(c)) => Servers::Cluster(c),
        _ => bail!("no server"),
    };
    let counts = faults::inject(
        &cfg.faults,
        &slots,
        &mut servers,
        w.lease_ttl,
        w.resources,
        cfg.seed,
        &rec,
        until,
    )
    .await?;
    let duration = started.elapsed();
    let _ = stop_tx.send(true);
    // Every client finishes its operation (bounded by the hang bound), releases and closes.
    let stopped = tokio::time::timeout(w.hang_bound * 2 + Duration::from_secs(5), async {
        while clients.join_next().await.is_some() {}
    })
    .await;
    if stopped.is_err() {
        bail!(
            "the workload did not stop within {:?} after the run ended (a hang); history in {}",
            w.hang_bound * 2,
            keep(temp, &dir).display()
        );
    }
    drop(slots);
    if let Some(c) = &mut cluster {
        for id in c.ids() {
            c.heal(id);
            if !c.is_running(id) {
                c.restart(id).await?;
            }
        }
    }
    // A cluster's sessions get the fail-over grace on every leader change.
    let quiet = w.lease_ttl * 2 + Duration::from_secs(if cfg.cluster { 20 } else { 10 });
    wait_quiet(&endpoints, quiet).await?;
    if let Some(s) = &mut single {
        s.kill().await;
    }
    if let Some(c) = &mut cluster {
        for id in c.ids() {
            c.kill(id).await;
        }
    }

    let mut checker = Checker::new(CheckConfig {
        expect_quiescent: true,
        ..cfg.check.clone()
    });
    let (audit, merge) = match &cluster {
        None => (read_audit_log(&audit_log, |line| checker.feed(line))?, None),
        Some(c) => {
            let logs: Vec<PathBuf> = c.ids().into_iter().map(|id| c.audit_log(id)).collect();
            let merge = merge_member_logs(&logs, |line| checker.feed(line))?;
            let mut audit = AuditStats {
                applied: merge.inputs,
                ..AuditStats::default()
            };
            for m in &merge.members {
                audit.torn += m.torn;
                audit.gaps += m.gaps;
                audit.replicas += m.replicas;
                audit.snapshots += m.snapshots;
            }
            (audit, Some(merge))
        }
    };
    let records = rec.take();
    // The workload's side of the history, kept next to the audit log.
    if let Ok(file) = std::fs::File::create(dir.join("client.jsonl")) {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(file);
        for r in &records {
            if serde_json::to_writer(&mut w, r).is_err() || w.write_all(b"\n").is_err() {
                break;
            }
        }
    }
    let check = checker.finish(&records);
    let safe = check.is_ok() && merge.as_ref().is_none_or(|m| m.mismatch_count == 0);
    let dir = if safe {
        match temp {
            Some(t) => {
                let p = t.path().to_owned();
                drop(t);
                p
            }
            None => dir,
        }
    } else {
        keep(temp, &dir)
    };
    Ok(ChaosReport {
        seed: cfg.seed,
        duration,
        faults: counts,
        audit,
        check,
        merge,
        dir,
    })
}

/// Keeps a temporary history directory for inspection.
fn keep(temp: Option<tempfile::TempDir>, dir: &std::path::Path) -> PathBuf {
    match temp {
        Some(t) => t.keep(),
        None => dir.to_owned(),
    }
}

/// Waits until the server (at `endpoints`) holds no lock on the workload's resources (every
/// session closed or expired), or fails after `limit`.
async fn wait_quiet(endpoints: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    let client = Client::builder(endpoints)
        .name("chaos-observer")
        .connect()
        .await
        .context("connecting the observer")?;
    loop {
        let left = client.query_prefix("chaos-", 100).await?;
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            bail!("locks still held {limit:?} after the workload stopped: {left:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = client.close().await;
    Ok(())
}
