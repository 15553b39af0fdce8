//! [`ServerProc`]: a dlock server in a child process (`chaos serve`), so that it can be killed
//! with SIGKILL and restarted on the same address and data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The line `chaos serve` prints on stdout once it listens: `listening on <addr>`.
pub const LISTENING: &str = "listening on ";

/// How a server child is started.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    /// The executable that understands `serve` (the `chaos` binary).
    pub exe: PathBuf,
    /// The server's data directory (the fencing-token floor lives here).
    pub data_dir: PathBuf,
    /// The audit log to append to.
    pub audit_log: PathBuf,
    /// Where the child's stderr (its log) goes.
    pub log_file: PathBuf,
    /// Further server flags (`--lease-ttl 1s`, ...).
    pub args: Vec<String>,
}

/// A running (or killed) server child.
pub struct ServerProc {
    spec: ServerSpec,
    env: Vec<(String, String)>,
    addr: Option<SocketAddr>,
    child: Option<Child>,
    starts: u64,
}

impl ServerProc {
    /// Starts a server on a free loopback port below the ephemeral range (see
    /// [`ports::reserve`](crate::ports::reserve): a restart binds it again).
    pub async fn start(spec: ServerSpec) -> Result<ServerProc> {
        ServerProc::start_with_env(spec, Vec::new()).await
    }

    /// Starts a server on a free loopback port with these environment variables set (on top of
    /// this process's environment), for this start and every restart.
    pub async fn start_with_env(
        spec: ServerSpec,
        env: Vec<(String, String)>,
    ) -> Result<ServerProc> {
        let mut p = ServerProc {
            spec,
            env,
            addr: Some(crate::ports::reserve(1)?[0]),
            child: None,
            starts: 0,
        };
        p.launch().await?;
        Ok(p)
    }

    /// The address it listens on (the same across restarts).
    pub fn addr(&self) -> SocketAddr {
        self.addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// How many times a server process was started.
    pub fn starts(&self) -> u64 {
        self.starts
    }

    /// The child's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The child's resident set size in KiB (Linux), while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid()?)
    }

    /// The child's peak resident set size in KiB since it started (Linux), while it runs.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(self.pid()?)
    }

    /// Whether the child has exited (for example after a panic).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    async fn launch(&mut self) -> Result<()> {
        let listen = self.addr().to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log_file)
            .with_context(|| format!("opening {}", self.spec.log_file.display()))?;
        // No HTTP listener unless asked for: the default address (127.0.0.1:7421) is one per
        // machine, and two children of tests that run side by side would fight over it (the
        // second exits at once: h6 did while h5 ran).
        let asks_http = self
            .spec
            .args
            .iter()
            .any(|a| a.starts_with("--http-listen"));
        let http_off: &[&str] = if asks_http {
            &[]
        } else {
            &["--http-listen", "off"]
        };
        // A restart rebinds the old port; the old socket may linger for a moment.
        let mut last_err = None;
        for _ in 0..50 {
            let mut cmd = Command::new(&self.spec.exe);
            cmd.arg("serve")
                .arg("--listen")
                .arg(&listen)
                .arg("--data-dir")
                .arg(&self.spec.data_dir)
                .arg("--audit-log")
                .arg(&self.spec.audit_log)
                .args(&self.spec.args)
                .args(http_off)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log.try_clone()?))
                .kill_on_drop(true);
            let mut child = cmd
                .spawn()
                .with_context(|| format!("starting {}", self.spec.exe.display()))?;
            let stdout = child.stdout.take().context("child stdout")?;
            let mut lines = BufReader::new(stdout).lines();
            let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
            match first {
                Ok(Ok(Some(line))) if line.starts_with(LISTENING) => {
                    let addr: SocketAddr = line[LISTENING.len()..]
                        .trim()
                        .parse()
                        .with_context(|| format!("parsing {line:?}"))?;
                    self.addr = Some(addr);
                    self.child = Some(child);
                    self.starts += 1;
                    // Keep draining stdout so the child never blocks on it.
                    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                    return Ok(());
                }
                other => {
                    // How it ended, if it did (a child that closed its output and exited).
                    let status = tokio::time::timeout(Duration::from_millis(100), child.wait())
                        .await
                        .ok()
                        .and_then(Result::ok);
                    let _ = child.kill().await;
                    last_err = Some(format!("{other:?}, exit status {status:?}"));
                    // Port still taken (or a slow start): try again shortly.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        // The log says why (it is gone with the test's temporary directory): from the last
        // attempt's error on (its backtrace cut short), or else its last 2 KiB.
        let log = std::fs::read(&self.spec.log_file).unwrap_or_default();
        let log = String::from_utf8_lossy(&log);
        let from = log.rfind("Error:").unwrap_or_else(|| {
            let mut chars = log.char_indices().rev();
            chars.nth(2047).map_or(0, |(i, _)| i)
        });
        let log_tail: String = log
            .get(from..)
            .unwrap_or_default()
            .chars()
            .take(2048)
            .collect();
        bail!(
            "the server child did not start on {listen}: {}; the log {}:\n{log_tail}",
            last_err.unwrap_or_default(),
            self.spec.log_file.display()
        )
    }

    /// Kills the child with SIGKILL (no shutdown, nothing flushed) and reaps it.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the server again on the same address, data directory and audit log.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill().await;
        self.launch().await
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.spec.data_dir
    }
}

/// `VmRSS` of a process in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// `VmHWM` (the peak resident set size) of a process in KiB, from `/proc/<pid>/status`.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
