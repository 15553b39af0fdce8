//! What the tests of the `dlock-server` binary share.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

/// Every wait ends by this deadline.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A running `dlock-server` process, killed and reaped when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary on a free port, with JSON logs on a pipe, no HTTP listener, no restart
/// grace, its data in `data` and `args` besides; returns it, its address (read from its
/// start-up log line) and the rest of its log.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; not all of them start one"
)]
pub fn start(data: &Path, args: &[&OsStr]) -> (Server, String, Lines<BufReader<ChildStdout>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dlock-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            // Not the default 7421: a server the user started (the README's first command)
            // may hold it.
            "--http-listen",
            "off",
            "--log-format",
            "json",
            "--restart-grace",
            "0",
        ])
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dlock-server");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines
            .next()
            .expect("dlock-server ended without saying where it listens")
            .expect("log line");
        if let Some(rest) = line.split("\"listen\":\"").nth(1) {
            let addr = rest.split('"').next().expect("address").to_owned();
            return (server, addr, lines);
        }
    }
}
