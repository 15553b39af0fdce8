//! Smoke tests of the client's driver against a scripted server that speaks the wire protocol
//! by hand, over real TCP on 127.0.0.1:0: resume with retransmission and replay
//! de-duplication, a pending lock across a reconnect, and a dropped lock future whose grant
//! raced its cancel, a cluster whose followers still name a leader that is gone. The session logic in all its corners is tested on virtual time by the
//! machine's own scenario tests (`src/machine/tests`).

use dlock_proto::{LockRequest, UnlockRequest};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use dlock_client::{Client, Mode};
use dlock_core::{Event, EventKind, FencingToken, LockId, RequestId, SessionId};
use dlock_proto::{
    ClientMessage, FrameCodec, Hello, PROTOCOL_VERSION, Request, ServerMessage, Welcome,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

const LIMIT: Duration = Duration::from_secs(20);
const SESSION: SessionId = SessionId(7);
const SECRET: u128 = 42;

type Conn = Framed<TcpStream, FrameCodec<ClientMessage, ServerMessage>>;

async fn bounded<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(LIMIT, f)
        .await
        .context("test did not finish in time")?
}

async fn accept(listener: &TcpListener) -> Result<Conn> {
    let (stream, _) = listener.accept().await?;
    Ok(Framed::new(stream, FrameCodec::default()))
}

/// The next message other than `Ack`.
async fn recv(conn: &mut Conn) -> Result<ClientMessage> {
    loop {
        match conn.next().await {
            Some(Ok(Ok(ClientMessage::Ack { .. }))) => continue,
            Some(Ok(Ok(m))) => return Ok(m),
            Some(Ok(Err(e))) => bail!("malformed: {e}"),
            Some(Err(e)) => bail!("read: {e}"),
            None => bail!("client closed the connection"),
        }
    }
}

async fn recv_hello(conn: &mut Conn) -> Result<Hello> {
    match recv(conn).await? {
        ClientMessage::Hello(h) => Ok(h),
        other => bail!("expected Hello, got {other:?}"),
    }
}

/// The next request other than `Renew` (renewals are answered with `Renewed` at `seq`
/// numbers taken from `next_seq`).
async fn recv_request(conn: &mut Conn, next_seq: &mut u64) -> Result<(RequestId, Request)> {
    loop {
        match recv(conn).await? {
            ClientMessage::Request {
                id,
                body: Request::Renew,
            } => {
                send_event(
                    conn,
                    next_seq,
                    Some(id),
                    None,
                    EventKind::Renewed { ttl_ms: 10_000 },
                )
                .await?;
            }
            ClientMessage::Request { id, body } => return Ok((id, body)),
            other => bail!("expected a request, got {other:?}"),
        }
    }
}

fn welcome(resumed: bool, session: SessionId, ttl_ms: u64) -> ServerMessage {
    ServerMessage::Welcome(Welcome {
        session,
        secret: SECRET,
        lease_ttl_ms: ttl_ms,
        server_version: "scripted".into(),
        protocol_version: PROTOCOL_VERSION,
        resumed,
        lvb_len: 32,
        max_frame_len: 64 * 1024,
        now_ms: 5_000,
    })
}

async fn send_event(
    conn: &mut Conn,
    next_seq: &mut u64,
    request: Option<RequestId>,
    lock: Option<LockId>,
    kind: EventKind,
) -> Result<u64> {
    let seq = *next_seq;
    *next_seq += 1;
    send_event_at(conn, seq, request, lock, kind).await?;
    Ok(seq)
}

async fn send_event_at(
    conn: &mut Conn,
    seq: u64,
    request: Option<RequestId>,
    lock: Option<LockId>,
    kind: EventKind,
) -> Result<()> {
    let event = Event {
        session: SESSION,
        request,
        lock,
        kind,
    };
    conn.send(ServerMessage::Event { seq, event }).await?;
    Ok(())
}

fn granted(token: u64) -> EventKind {
    EventKind::Granted {
        mode: Mode::EX,
        token: FencingToken(token),
        value: None,
        value_valid: true,
    }
}

/// A ping answered by the script: once it is back, the client has processed every event
/// sent before it.
async fn ping_round_trip(client: &Client, conn: &mut Conn, seq: &mut u64) -> Result<()> {
    let pinging = tokio::spawn({
        let client = client.clone();
        async move { client.ping().await }
    });
    let (id, body) = recv_request(conn, seq).await?;
    ensure!(body == Request::Ping, "{body:?}");
    conn.send(ServerMessage::Reply {
        id,
        body: dlock_proto::Reply::Pong {
            server_version: "scripted".into(),
        },
    })
    .await?;
    pinging.await??;
    Ok(())
}

async fn connect(listener: &TcpListener, ttl: Duration) -> Result<(Client, Conn)> {
    let addr = listener.local_addr()?.to_string();
    let connecting = tokio::spawn(
        Client::builder(addr)
            .name("scripted")
            .lease_ttl(ttl)
            .backoff(Duration::from_millis(5), Duration::from_millis(20))
            .connect(),
    );
    let mut conn = accept(listener).await?;
    let hello = recv_hello(&mut conn).await?;
    ensure!(hello.resume.is_none());
    ensure!(hello.client_name == "scripted");
    let ttl_ms = u64::try_from(ttl.as_millis())?;
    ensure!(hello.lease_ttl_ms == ttl_ms);
    conn.send(welcome(false, SESSION, ttl_ms)).await?;
    let client = connecting.await??;
    ensure!(client.session_id() == SESSION);
    Ok((client, conn))
}

#[tokio::test]
async fn resume_retransmits_outstanding_requests_and_drops_replayed_duplicates() -> Result<()> {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let (client, mut conn) = connect(&listener, Duration::from_secs(10)).await?;
        let mut seq = 1;

        let locking = tokio::spawn({
            let client = client.clone();
            async move { client.lock("r", Mode::EX).await }
        });
        let (id, body) = recv_request(&mut conn, &mut seq).await?;
        ensure!(
            matches!(&body, Request::Lock(LockRequest { resource, mode: Mode::EX, .. }) if resource == b"r")
        );
        let lock = LockId(100);
        let queued_seq =
            send_event(&mut conn, &mut seq, Some(id), Some(lock), EventKind::Queued).await?;
        // Make sure the client has seen `Queued` before the connection breaks.
        ping_round_trip(&client, &mut conn, &mut seq).await?;
        drop(conn);

        // The client reconnects and resumes with the last sequence number it saw.
        let mut conn = accept(&listener).await?;
        let hello = recv_hello(&mut conn).await?;
        let resume = hello.resume.context("resume")?;
        ensure!(resume.session == SESSION && resume.secret == SECRET);
        ensure!(
            resume.last_seq == queued_seq,
            "last_seq {}",
            resume.last_seq
        );
        conn.send(welcome(true, SESSION, 10_000)).await?;
        // Replay (with a duplicate of the already seen Queued), then the grant twice.
        send_event_at(
            &mut conn,
            queued_seq,
            Some(id),
            Some(lock),
            EventKind::Queued,
        )
        .await?;
        let grant_seq = send_event(&mut conn, &mut seq, Some(id), Some(lock), granted(5)).await?;
        send_event_at(&mut conn, grant_seq, Some(id), Some(lock), granted(5)).await?;

        // The outstanding lock request is re-sent with its id.
        let (again, body) = recv_request(&mut conn, &mut seq).await?;
        ensure!(again == id, "re-sent {again} instead of {id}");
        ensure!(matches!(body, Request::Lock(LockRequest { .. })));

        let mut guard = locking.await??;
        ensure!(guard.lock_id() == lock && guard.token() == FencingToken(5));
        ensure!(client.session_id() == SESSION);

        // A replayed blocking notification (a sequence number already seen) is dropped.
        let blocking = |mode| EventKind::Blocking { mode };
        let s = send_event(&mut conn, &mut seq, None, Some(lock), blocking(Mode::PR)).await?;
        ensure!(guard.blocked().await? == Mode::PR);
        send_event_at(&mut conn, s, None, Some(lock), blocking(Mode::CR)).await?;
        send_event(&mut conn, &mut seq, None, Some(lock), blocking(Mode::EX)).await?;
        ensure!(
            guard.blocked().await? == Mode::EX,
            "the duplicate was delivered"
        );

        let unlocking = tokio::spawn(guard.unlock());
        let (uid, body) = recv_request(&mut conn, &mut seq).await?;
        ensure!(
            matches!(body, Request::Unlock(UnlockRequest { lock: l, .. }) if l == lock),
            "{body:?}"
        );
        send_event(
            &mut conn,
            &mut seq,
            Some(uid),
            Some(lock),
            EventKind::Unlocked,
        )
        .await?;
        unlocking.await??;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_grant_that_races_the_cancel_of_a_dropped_lock_future_is_released() -> Result<()> {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let (client, mut conn) = connect(&listener, Duration::from_secs(10)).await?;
        let mut seq = 1;

        let locking = tokio::spawn({
            let client = client.clone();
            async move { client.lock("r", Mode::EX).await }
        });
        let (id, _) = recv_request(&mut conn, &mut seq).await?;
        let lock = LockId(9);
        send_event(&mut conn, &mut seq, Some(id), Some(lock), EventKind::Queued).await?;
        // Round trip a ping so the client has processed Queued.
        ping_round_trip(&client, &mut conn, &mut seq).await?;

        locking.abort();
        ensure!(locking.await.is_err_and(|e| e.is_cancelled()));
        let (cid, body) = recv_request(&mut conn, &mut seq).await?;
        ensure!(body == Request::Cancel { lock }, "{body:?}");
        // The grant was already on its way: granted, and the cancel finds nothing pending.
        send_event(&mut conn, &mut seq, Some(id), Some(lock), granted(11)).await?;
        send_event(
            &mut conn,
            &mut seq,
            Some(cid),
            Some(lock),
            EventKind::Rejected {
                reason: dlock_core::Reject::NotPending,
            },
        )
        .await?;
        let (_, body) = recv_request(&mut conn, &mut seq).await?;
        ensure!(
            matches!(body, Request::Unlock(UnlockRequest { lock: l, .. }) if l == lock),
            "the unwanted grant is released: {body:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_pending_lock_is_answered_at_queued_and_survives_a_reconnect() -> Result<()> {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let (client, mut conn) = connect(&listener, Duration::from_secs(10)).await?;
        let mut seq = 1;
        let requesting = tokio::spawn({
            let client = client.clone();
            async move {
                client
                    .lock_request("r", Mode::EX, dlock_client::LockOptions::new())
                    .await
            }
        });
        let (id, body) = recv_request(&mut conn, &mut seq).await?;
        ensure!(
            matches!(body, Request::Lock(LockRequest { .. })),
            "{body:?}"
        );
        let lock = LockId(100);
        send_event(&mut conn, &mut seq, Some(id), Some(lock), EventKind::Queued).await?;
        let pending = requesting.await??;
        ensure!(pending.lock_id() == lock && !pending.is_granted());

        // The connection breaks; the resumed session re-sends the request and the grant
        // reaches the pending lock.
        ping_round_trip(&client, &mut conn, &mut seq).await?;
        drop(conn);
        let mut conn = accept(&listener).await?;
        let hello = recv_hello(&mut conn).await?;
        ensure!(hello.resume.is_some());
        conn.send(welcome(true, SESSION, 10_000)).await?;
        let (again, _) = recv_request(&mut conn, &mut seq).await?;
        ensure!(again == id, "re-sent {again} instead of {id}");
        send_event(&mut conn, &mut seq, Some(id), Some(lock), granted(5)).await?;
        let guard = pending.granted().await?;
        ensure!(guard.lock_id() == lock && guard.token() == FencingToken(5));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_follower_naming_the_leader_sends_the_client_there() -> Result<()> {
    bounded(async {
        let follower = TcpListener::bind("127.0.0.1:0").await?;
        let leader = TcpListener::bind("127.0.0.1:0").await?;
        let leader_addr = leader.local_addr()?.to_string();
        let endpoints = format!("{},{}", follower.local_addr()?, leader_addr);
        let connecting = tokio::spawn(
            Client::builder(endpoints)
                .name("scripted")
                .backoff(Duration::from_secs(30), Duration::from_secs(30))
                .connect(),
        );

        // The first endpoint is a follower: it refuses and names the leader.
        let mut conn = accept(&follower).await?;
        ensure!(recv_hello(&mut conn).await?.resume.is_none());
        let refusal = dlock_proto::Refusal::NotLeader {
            leader: Some(leader_addr),
        };
        conn.send(ServerMessage::Refused(refusal)).await?;

        // The client goes to the leader (at once: the 30 s backoff would outlast the test).
        let mut conn = accept(&leader).await?;
        let hello = recv_hello(&mut conn).await?;
        ensure!(hello.resume.is_none() && hello.client_name == "scripted");
        conn.send(welcome(false, SESSION, 10_000)).await?;
        let client = connecting.await??;
        ensure!(client.session_id() == SESSION);

        // Requests flow on the leader's connection.
        let mut seq = 1;
        ping_round_trip(&client, &mut conn, &mut seq).await?;
        Ok(())
    })
    .await
}

/// An address nothing listens on: connections to it are refused, as to a SIGKILLed server.
async fn dead_address() -> Result<String> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    Ok(l.local_addr()?.to_string())
}

/// Accepts one connection on `follower` and refuses its `Hello` with `NotLeader`, naming
/// `leader`.
async fn refuse_not_leader(follower: &TcpListener, leader: Option<String>) -> Result<()> {
    let mut conn = accept(follower).await?;
    recv_hello(&mut conn).await?;
    let refusal = dlock_proto::Refusal::NotLeader { leader };
    conn.send(ServerMessage::Refused(refusal)).await?;
    Ok(())
}

#[tokio::test]
async fn followers_naming_a_dead_leader_do_not_fail_the_first_connect() -> Result<()> {
    bounded(async {
        // The leader was SIGKILLed; its followers still name it until they elect another.
        let dead = dead_address().await?;
        let f1 = TcpListener::bind("127.0.0.1:0").await?;
        let f2 = TcpListener::bind("127.0.0.1:0").await?;
        let endpoints = format!("{dead},{},{}", f1.local_addr()?, f2.local_addr()?);
        let mut connecting = tokio::spawn(
            Client::builder(endpoints)
                .name("scripted")
                .backoff(Duration::from_secs(30), Duration::from_secs(30))
                .connect(),
        );

        // One whole round: the dead leader refuses the connection, each follower names it,
        // and the client tries it after each.
        refuse_not_leader(&f1, Some(dead.clone())).await?;
        refuse_not_leader(&f2, Some(dead.clone())).await?;
        // The next round (within the election cap, not the 30 s backoff) finds f1 elected,
        // unless the connect gave up.
        let mut conn = tokio::select! {
            conn = accept(&f1) => conn?,
            r = &mut connecting => {
                let r = r?.map(|c| c.session_id());
                bail!("the connect ended after one round: {r:?}");
            }
        };
        ensure!(recv_hello(&mut conn).await?.resume.is_none());
        conn.send(welcome(false, SESSION, 10_000)).await?;
        let client = connecting.await??;
        ensure!(client.session_id() == SESSION);
        let mut seq = 1;
        ping_round_trip(&client, &mut conn, &mut seq).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_cluster_without_a_leader_fails_the_first_connect_with_no_leader() -> Result<()> {
    bounded(async {
        let dead = dead_address().await?;
        let follower = TcpListener::bind("127.0.0.1:0").await?;
        let endpoints = format!("{dead},{}", follower.local_addr()?);
        // The follower answers NotLeader without a leader, for as long as it is asked.
        let answering =
            tokio::spawn(async move { while refuse_not_leader(&follower, None).await.is_ok() {} });
        let res = Client::builder(endpoints)
            .name("scripted")
            .connect_timeout(Duration::from_millis(300))
            .connect()
            .await;
        answering.abort();
        match res {
            Err(dlock_client::Error::NoLeader) => Ok(()),
            Err(e) => bail!("failed with {e:?} instead of NoLeader"),
            Ok(c) => bail!(
                "connected (session {:?}) to a cluster without a leader",
                c.session_id()
            ),
        }
    })
    .await
}
