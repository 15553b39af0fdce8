//! The `dlock-server` binary keeps serving while nothing takes its log lines: a log file on a
//! disk that stalls, or a pipe nobody reads, must not stop the server with it.

use dlock_proto::{ClientMessage, FrameCodec, Hello, PROTOCOL_VERSION, ServerMessage};
use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::Framed;

mod common;

use common::DEADLINE;

/// Sessions opened and closed while the log is not read: at the debug level each writes
/// about 550 bytes of JSON lines, several times what a pipe holds (64 KiB on Linux).
const SESSIONS: usize = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_nobody_reads_does_not_stop_the_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The log is read up to the line that says where it listens, then never again (the
    // pipe stays open, held by `lines`).
    let (_server, addr, lines) = common::start(
        &dir.path().join("data"),
        &["--log-level".as_ref(), "debug".as_ref()],
    );
    for n in 0..SESSIONS {
        let opened = tokio::time::timeout(DEADLINE, async {
            let stream = tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect");
            let mut framed = Framed::new(
                stream,
                FrameCodec::<ServerMessage, ClientMessage>::default(),
            );
            framed
                .send(ClientMessage::Hello(Hello {
                    protocol_version: PROTOCOL_VERSION,
                    client_name: format!("quiet-{n}"),
                    lease_ttl_ms: 0,
                    resume: None,
                    token: None,
                }))
                .await
                .expect("hello");
            match framed.next().await {
                Some(Ok(Ok(ServerMessage::Welcome(_)))) => {}
                other => panic!("session {n}: {other:?}"),
            }
        })
        .await;
        assert!(
            opened.is_ok(),
            "session {n} was not opened within {DEADLINE:?}: the server stopped with its log"
        );
    }
    drop(lines);
}
