//! The member processes of a cluster under test: spawned by the benchmark itself, so that it
//! knows which process to SIGKILL and can restart it from its data directory.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};
use tokio::process::{Child, Command};

/// One member of a cluster: its addresses, its data directory and, while it runs, its process.
#[derive(Debug)]
pub struct Member {
    /// The member's id in its cluster (dlock's node id; etcd's member name is `e<id>`).
    pub id: u64,
    /// Where its clients connect (`127.0.0.1:PORT`).
    pub client_addr: String,
    /// Where its peers connect (`127.0.0.1:PORT`).
    pub peer_addr: String,
    /// Its data directory, kept across a kill and restart.
    pub data_dir: PathBuf,
    /// Its stdout and stderr, appended across restarts.
    pub log: PathBuf,
    child: Option<Child>,
}

impl Member {
    /// A member that is not running yet, with its files under `work_dir`.
    pub fn new(work_dir: &Path, prefix: &str, id: u64, client_port: u16, peer_port: u16) -> Member {
        Member {
            id,
            client_addr: format!("127.0.0.1:{client_port}"),
            peer_addr: format!("127.0.0.1:{peer_port}"),
            data_dir: work_dir.join(format!("{prefix}{id}")),
            log: work_dir.join(format!("{prefix}{id}.log")),
            child: None,
        }
    }

    /// Starts `program` with `args` as this member. The process is killed if the handle is
    /// dropped (the benchmark ends or fails), so none outlives it.
    pub fn spawn(&mut self, program: &Path, args: Vec<OsString>) -> Result<()> {
        anyhow::ensure!(self.child.is_none(), "member {} already runs", self.id);
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating {}", self.data_dir.display()))?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// The process id while the member runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether the member's process runs (it has not been killed, nor exited by itself).
    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends SIGKILL at once (before it returns), then reaps the process.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill().context("sending SIGKILL")?;
            child.wait().await.context("reaping a killed member")?;
        }
        Ok(())
    }

    /// The last lines of the member's log, for an error message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

/// Three members (ids 1..=3) named `prefix` + id, with client ports `base_port`+1..=3 and
/// peer ports `base_port`+11..=13, files under `work_dir`; and their client addresses as one
/// comma-separated list.
pub fn three(work_dir: &Path, prefix: &str, base_port: u16) -> (Vec<Member>, String) {
    let members: Vec<Member> = (1..=3u16)
        .map(|i| {
            Member::new(
                work_dir,
                prefix,
                u64::from(i),
                base_port + i,
                base_port + 10 + i,
            )
        })
        .collect();
    let endpoints = members
        .iter()
        .map(|m| m.client_addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    (members, endpoints)
}

/// Writes the pids of the running `members` to `path`, one a line, so that a script that
/// started the benchmark can stop them even if the benchmark itself is killed.
pub fn write_pid_file(path: &Path, members: &[Member]) -> Result<()> {
    let text: String = members
        .iter()
        .filter_map(Member::pid)
        .map(|p| format!("{p}\n"))
        .collect();
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spawn_kill_and_pid_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut m = Member::new(dir.path(), "m", 1, 1, 2);
        assert_eq!(m.client_addr, "127.0.0.1:1");
        assert!(!m.running());
        m.spawn(Path::new("sleep"), vec!["30".into()])
            .expect("spawn sleep");
        assert!(m.running());
        let pid = m.pid().expect("a pid");
        let file = dir.path().join("pids");
        write_pid_file(&file, std::slice::from_ref(&m)).expect("pid file");
        assert_eq!(
            std::fs::read_to_string(&file).expect("read"),
            format!("{pid}\n")
        );
        m.kill().await.expect("kill");
        assert!(!m.running());
        assert_eq!(m.pid(), None);
        assert!(!Path::new(&format!("/proc/{pid}")).exists() || zombie_or_reused(pid));
        write_pid_file(&file, std::slice::from_ref(&m)).expect("pid file");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "");
    }

    /// A pid may be reused by another process at once; the killed one is reaped, so its
    /// entry, if any, is not a `sleep`.
    fn zombie_or_reused(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim() != "sleep")
            .unwrap_or(true)
    }
}
