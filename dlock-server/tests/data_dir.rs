//! A second `dlock-server` on a data directory another one uses gives up without ever
//! listening: a client that tries its port meanwhile is refused at once, not taken into the
//! backlog and reset when the server exits.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{DEADLINE, Server};

fn server(dir: &std::path::Path, listen: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dlock-server"));
    cmd.args([
        "--listen",
        listen,
        "--http-listen",
        "off",
        "--log-format",
        "json",
    ])
    .arg("--data-dir")
    .arg(dir);
    cmd
}

#[test]
fn a_second_server_on_a_used_data_dir_never_listens() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = server(dir.path(), "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the first server");
    let stdout = first.stdout.take().expect("stdout");
    let _first = Server(first);
    // Up once it says where it listens (after taking the data directory).
    let listening = BufReader::new(stdout)
        .lines()
        .map(|l| l.expect("log line"))
        .any(|l| l.contains("\"listen\":\""));
    assert!(listening, "the first server did not start");

    // A port for the second one: free a moment ago.
    let port: SocketAddr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let second = server(dir.path(), &port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the second server");
    let mut second = Server(second);
    // Until the second server gives up (it waits two seconds for the directory), its port
    // refuses every connection.
    let deadline = Instant::now() + DEADLINE;
    let mut tries = 0;
    let status = loop {
        if let Some(status) = second.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the second server did not give up"
        );
        let refused = TcpStream::connect_timeout(&port, Duration::from_secs(1)).is_err();
        assert!(
            refused,
            "the second server listened while it waited for the directory"
        );
        tries += 1;
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    assert!(tries > 0, "no connection was tried while it waited");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("in use by another dlock-server"),
        "{stderr}"
    );
}

/// A data directory whose fencing-token floor is gone while the lease record of a previous
/// run is there: starting would hand out tokens from 1 again, so the server refuses to start,
/// naming both files. A first start writes the floor before the record, so no crash leaves a
/// directory like this.
#[tokio::test]
async fn a_lease_record_without_a_floor_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = || dlock_server::Config {
        data_dir: dir.path().to_owned(),
        ..dlock_server::Config::default()
    };
    let start = |config| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        dlock_server::run(listener, config, async {}).await
    };
    // A first run writes both files.
    start(config()).await.expect("a fresh directory starts");
    assert!(dir.path().join("fencing-floor").exists());
    assert!(dir.path().join("max-lease-ttl").exists());
    std::fs::remove_file(dir.path().join("fencing-floor")).unwrap();
    let err = start(config())
        .await
        .expect_err("started without its floor");
    assert!(
        matches!(err, dlock_server::ServerError::MissingFloor { .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("fencing-floor") && message.contains("max-lease-ttl"),
        "{message}"
    );
    // Nothing was written meanwhile: the next start refuses again.
    assert!(!dir.path().join("fencing-floor").exists());
    // Both gone: a fresh start, knowingly.
    std::fs::remove_file(dir.path().join("max-lease-ttl")).unwrap();
    start(config())
        .await
        .expect("an emptied directory starts afresh");
}
