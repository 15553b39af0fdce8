//! Helpers for the `dlock` binary's tests: run it against an in-process server, poll for
//! conditions with a deadline.
#![allow(dead_code)]

pub mod fake;

use std::future::Future;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dlock_client::{Client, ResourceInfo};
use tokio::process::{Child, Command};

pub use dlock_tests::TestServer;

/// Every wait in these tests ends by this deadline.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A `dlock` command aimed at `server`, with stdin closed and stdout/stderr captured; it is
/// killed if the test drops it.
pub fn dlock(server: &TestServer, args: &[&str]) -> Command {
    dlock_at(&server.addr().to_string(), args)
}

/// A `dlock` command aimed at `addr`.
pub fn dlock_at(addr: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dlock"));
    cmd.args(args)
        .env("DLOCK_SERVER", addr)
        .env_remove("RUST_LOG")
        .env_remove("DLOCK_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs a command to completion (within [`DEADLINE`]) and returns its output.
pub async fn output(mut cmd: Command) -> Result<Output> {
    let child = cmd.spawn().context("spawning dlock")?;
    finish(child).await
}

/// Waits (within [`DEADLINE`]) for a spawned dlock to exit and returns its output.
pub async fn finish(child: Child) -> Result<Output> {
    tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .context("dlock did not exit in time")?
        .context("waiting for dlock")
}

/// The exit code of an output, failing on death by signal.
pub fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("dlock died of a signal: {out:?}"))
}

/// The output's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The output's stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` every 20 ms until it returns `Some`, for at most [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The lines of a file (empty if it does not exist yet).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits until the file holds at least `n` lines and returns them.
pub async fn lines_at_least(path: &Path, n: usize) -> Result<Vec<String>> {
    eventually(&format!("{n} lines in {}", path.display()), || async {
        let l = lines(path);
        (l.len() >= n).then_some(l)
    })
    .await
}

/// A client of the test server, for looking at the lock table.
pub async fn observer(server: &TestServer) -> Result<Client> {
    Ok(Client::connect(server.addr().to_string()).await?)
}

/// Waits until `resource` shows `holders` granted locks and `waiters` waiting ones.
pub async fn queues(
    client: &Client,
    resource: &str,
    holders: usize,
    waiters: usize,
) -> Result<ResourceInfo> {
    eventually(
        &format!("{resource}: {holders} holders and {waiters} waiters"),
        || async {
            let info = client.query_resource(resource).await.ok().flatten();
            match info {
                Some(r) if r.granted.len() == holders && r.waiting.len() == waiters => Some(r),
                None if holders == 0 && waiters == 0 => Some(ResourceInfo {
                    name: resource.as_bytes().to_vec(),
                    value: Vec::new(),
                    value_valid: true,
                    granted: Vec::new(),
                    converting: Vec::new(),
                    waiting: Vec::new(),
                    omitted: 0,
                }),
                _ => None,
            }
        },
    )
    .await
}

/// A shell script for a child of `dlock acquire`: log `start-<tag>-$DLOCK_MODE-$DLOCK_TOKEN`,
/// wait for the file `go-<tag>` in `dir`, log `end-<tag>`.
pub fn step_script(dir: &Path, tag: &str) -> String {
    let log = dir.join("log");
    let go = dir.join(format!("go-{tag}"));
    format!(
        "echo \"start-{tag}-$DLOCK_RESOURCE-$DLOCK_MODE-$DLOCK_TOKEN\" >> '{log}'; \
         while [ ! -e '{go}' ]; do sleep 0.02; done; echo 'end-{tag}' >> '{log}'",
        log = log.display(),
        go = go.display()
    )
}

/// Lets the child of [`step_script`] with this tag finish.
pub fn release(dir: &Path, tag: &str) {
    std::fs::write(dir.join(format!("go-{tag}")), b"").expect("writing a marker file");
}
