//! The `dlock-server` binary reloads its rules on SIGHUP: a request the old rules refuse is
//! granted under the new ones, on the same connection and session.

use std::process::Command;
use std::time::Instant;

use dlock_proto::{
    ClientMessage, EventKind, FrameCodec, Hello, LockRequest, Mode, PROTOCOL_VERSION, Reply,
    Request, RequestError, RequestId, ServerMessage,
};
use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::Framed;

mod common;

use common::{DEADLINE, Server};

/// Starts the binary on a free port with `rules`; returns it and its address.
fn start(dir: &std::path::Path, rules: &std::path::Path) -> (Server, String) {
    let (server, addr, _) = common::start(
        &dir.join("data"),
        &["--auth-rules".as_ref(), rules.as_os_str()],
    );
    (server, addr)
}

async fn lock_ex(
    framed: &mut Framed<tokio::net::TcpStream, FrameCodec<ServerMessage, ClientMessage>>,
    id: u64,
) -> Result<(), RequestError> {
    let body = Request::Lock(LockRequest::new("jobs/1", Mode::EX));
    framed
        .send(ClientMessage::Request {
            id: RequestId(id),
            body,
        })
        .await
        .expect("send");
    loop {
        let msg = tokio::time::timeout(DEADLINE, framed.next())
            .await
            .expect("an answer in time")
            .expect("connection open")
            .expect("frame")
            .expect("well-formed");
        match msg {
            ServerMessage::Reply {
                id: RequestId(r),
                body: Reply::Error(e),
            } if r == id => return Err(e),
            ServerMessage::Event { event, .. } if event.request == Some(RequestId(id)) => {
                if let EventKind::Granted { .. } = event.kind {
                    return Ok(());
                }
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn sighup_reloads_the_rules_for_a_live_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, "[identities.\"*\"]\n\"jobs/\" = \"read\"\n").expect("rules");
    let (server, addr) = start(dir.path(), &rules);
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let mut framed = Framed::new(stream, FrameCodec::new(1 << 20));
    framed
        .send(ClientMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: "sighup".into(),
            lease_ttl_ms: 0,
            resume: None,
            token: None,
        }))
        .await
        .expect("hello");
    let welcome = framed
        .next()
        .await
        .expect("open")
        .expect("frame")
        .expect("well-formed");
    assert!(matches!(welcome, ServerMessage::Welcome(_)), "{welcome:?}");
    assert_eq!(
        lock_ex(&mut framed, 1).await,
        Err(RequestError::PermissionDenied)
    );

    std::fs::write(&rules, "[identities.\"*\"]\n\"jobs/\" = \"write\"\n").expect("rules");
    let status = Command::new("kill")
        .args(["-HUP", &server.0.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    // The signal is handled asynchronously: ask until granted, within the deadline.
    let until = Instant::now() + DEADLINE;
    let mut id = 2;
    loop {
        match lock_ex(&mut framed, id).await {
            Ok(()) => break,
            Err(RequestError::PermissionDenied) if Instant::now() < until => {
                tokio::task::yield_now().await;
                id += 1;
            }
            Err(e) => panic!("not granted after SIGHUP: {e}"),
        }
    }
    drop(server);
}
