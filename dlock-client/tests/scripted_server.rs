//! The client against a scripted server that speaks the wire protocol by hand: resume with
//! retransmission and replay de-duplication, refused resume, the grant-races-cancel path and
//! the local lease (with paused time). Real TCP on 127.0.0.1:0.

use dlock_proto::{ConvertRequest, LockRequest, UnlockRequest};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use dlock_client::{Client, ConvertOptions, Error, Invalid, LostReason, Mode, UnlockOptions};
use dlock_core::{Event, EventKind, FencingToken, LockId, RequestId, SessionId};
use dlock_proto::{
    ClientMessage, FrameCodec, Hello, PROTOCOL_VERSION, Refusal, Request, ServerMessage, Welcome,
};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
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
async fn refused_resume_loses_locks_fails_pending_requests_and_opens_a_new_session() -> Result<()> {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let (client, mut conn) = connect(&listener, Duration::from_secs(10)).await?;
        let mut seq = 1;

        let locking = tokio::spawn({
            let client = client.clone();
            async move { client.lock("held", Mode::EX).await }
        });
        let (id, _) = recv_request(&mut conn, &mut seq).await?;
        send_event(&mut conn, &mut seq, Some(id), Some(LockId(1)), granted(3)).await?;
        let guard = locking.await??;

        let pending = tokio::spawn({
            let client = client.clone();
            async move { client.lock("waiting", Mode::EX).await }
        });
        let (id, _) = recv_request(&mut conn, &mut seq).await?;
        send_event(
            &mut conn,
            &mut seq,
            Some(id),
            Some(LockId(2)),
            EventKind::Queued,
        )
        .await?;
        drop(conn);

        let mut conn = accept(&listener).await?;
        ensure!(recv_hello(&mut conn).await?.resume.is_some());
        conn.send(ServerMessage::Refused(Refusal::UnknownSession))
            .await?;
        drop(conn);

        ensure!(guard.lost().await == LostReason::SessionExpired);
        let err = pending.await?.unwrap_err();
        ensure!(matches!(err, Error::SessionLost), "{err:?}");

        // A fresh session, without resume.
        let mut conn = accept(&listener).await?;
        ensure!(recv_hello(&mut conn).await?.resume.is_none());
        conn.send(welcome(false, SessionId(8), 10_000)).await?;
        ping_round_trip(&client, &mut conn, &mut 1).await?;
        ensure!(client.session_id() == SessionId(8));
        let err = guard.unlock().await.unwrap_err();
        ensure!(matches!(err, Error::SessionLost), "{err:?}");
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
async fn local_lease_lapses_before_the_server_could_expire_the_session() -> Result<()> {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let ttl = Duration::from_secs(3);
        let before_connect = Instant::now();
        let (client, mut conn) = connect(&listener, ttl).await?;
        let mut seq = 1;
        let locking = tokio::spawn({
            let client = client.clone();
            async move { client.lock("r", Mode::EX).await }
        });
        let (id, _) = recv_request(&mut conn, &mut seq).await?;
        send_event(&mut conn, &mut seq, Some(id), Some(LockId(1)), granted(1)).await?;
        let guard = locking.await??;

        // From here on time is virtual and only moves when everything waits. The server
        // answers renewals for a while, acknowledging what it is told.
        tokio::time::pause();
        let mut last_confirmed_send = Instant::now();
        let mut renewals = 0;
        let mut acked = 0;
        while renewals < 10 {
            match conn.next().await.context("connection open")?? {
                Ok(ClientMessage::Ack { seq }) => acked = seq,
                Ok(ClientMessage::Request {
                    id,
                    body: Request::Renew,
                }) => {
                    // Every renewal goes with an Ack of every event received so far.
                    ensure!(acked == seq - 1, "acked {acked}, sent up to {}", seq - 1);
                    renewals += 1;
                    last_confirmed_send = Instant::now();
                    send_event(
                        &mut conn,
                        &mut seq,
                        Some(id),
                        None,
                        EventKind::Renewed { ttl_ms: 3000 },
                    )
                    .await?;
                }
                other => bail!("expected Renew or Ack, got {other:?}"),
            }
        }
        ensure!(!guard.is_lost());
        ensure!(
            last_confirmed_send - before_connect >= ttl * 3,
            "renewals kept the lease for several TTLs"
        );
        // Then it goes silent (but keeps the connection open).
        let silent_since = Instant::now();
        let reason = guard.lost().await;
        let lost_at = Instant::now();
        ensure!(reason == LostReason::LocalLeaseLapsed, "{reason:?}");
        // Default margin: max(TTL/10, 100 ms) = 300 ms.
        let margin = Duration::from_millis(300);
        ensure!(
            lost_at < last_confirmed_send + ttl,
            "lost at {:?} after the last confirmed renewal, not before the TTL",
            lost_at - last_confirmed_send
        );
        ensure!(
            lost_at + Duration::from_millis(2) >= last_confirmed_send + ttl - margin,
            "not earlier than needed: {:?}",
            lost_at - last_confirmed_send
        );
        ensure!(lost_at > silent_since);
        ensure!(
            client.session_id() == SessionId(0),
            "the lapsed session is dropped"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_cancel_succeeds_once_and_a_second_cancel_finds_nothing_pending() -> Result<()> {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let (client, mut conn) = connect(&listener, Duration::from_secs(10)).await?;
        let mut seq = 1;
        let locking = tokio::spawn({
            let client = client.clone();
            async move { client.lock("r", Mode::NL).await }
        });
        let (id, _) = recv_request(&mut conn, &mut seq).await?;
        let lock = LockId(3);
        let nl = EventKind::Granted {
            mode: Mode::NL,
            token: FencingToken(1),
            value: None,
            value_valid: true,
        };
        send_event(&mut conn, &mut seq, Some(id), Some(lock), nl).await?;
        let mut guard = locking.await??;
        let canceller = guard.canceller();

        let converting = tokio::spawn(async move {
            let res = guard.convert(Mode::EX).await;
            (guard, res)
        });
        let (convert_id, body) = recv_request(&mut conn, &mut seq).await?;
        ensure!(
            matches!(
                body,
                Request::Convert(ConvertRequest { mode: Mode::EX, .. })
            ),
            "{body:?}"
        );
        send_event(
            &mut conn,
            &mut seq,
            Some(convert_id),
            Some(lock),
            EventKind::Queued,
        )
        .await?;

        let first = tokio::spawn({
            let c = canceller.clone();
            async move { c.cancel().await }
        });
        let (c1, body) = recv_request(&mut conn, &mut seq).await?;
        ensure!(body == Request::Cancel { lock });
        let second = tokio::spawn({
            let c = canceller.clone();
            async move { c.cancel().await }
        });
        let (c2, body) = recv_request(&mut conn, &mut seq).await?;
        ensure!(body == Request::Cancel { lock } && c2 > c1);

        // The first cancel succeeds: only the conversion's completion says so. The second
        // finds nothing pending and is refused with its own id.
        send_event(
            &mut conn,
            &mut seq,
            Some(convert_id),
            Some(lock),
            EventKind::Cancelled,
        )
        .await?;
        let not_pending = EventKind::Rejected {
            reason: dlock_core::Reject::NotPending,
        };
        send_event(&mut conn, &mut seq, Some(c2), Some(lock), not_pending).await?;

        first.await??;
        let err = second.await?.unwrap_err();
        ensure!(matches!(err, Error::NotPending), "{err:?}");
        let (guard, res) = converting.await?;
        ensure!(matches!(res, Err(Error::Cancelled)), "{res:?}");
        ensure!(guard.mode() == Mode::NL, "the lock keeps its old mode");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn reconnects_back_off_exponentially_with_jitter() -> Result<()> {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let connecting = tokio::spawn(
            Client::builder(addr)
                .lease_ttl(Duration::from_secs(600))
                .backoff(Duration::from_millis(100), Duration::from_millis(800))
                .connect(),
        );
        let mut conn = accept(&listener).await?;
        recv_hello(&mut conn).await?;
        conn.send(welcome(false, SESSION, 600_000)).await?;
        let _client = connecting.await??;

        // Virtual time from here: the gaps between attempts are exactly the backoff delays.
        tokio::time::pause();
        let mut last = Instant::now();
        drop(conn);
        let mut gaps = Vec::new();
        for _ in 0..7 {
            let (attempt, _) = listener.accept().await?;
            let now = Instant::now();
            gaps.push(now - last);
            last = now;
            // Fail the handshake: the client sees the connection closed.
            drop(attempt);
        }
        let ms = Duration::from_millis;
        for (k, gap) in gaps.iter().enumerate() {
            // Attempt k waits in [0, d] with d = min(100 ms * 2^k, 800 ms) (full jitter).
            let d = ms(100 * (1 << k)).min(ms(800));
            ensure!(
                *gap <= d + ms(2),
                "gap {k} = {gap:?}, expected within [0, {d:?}]"
            );
        }
        let at_upper_bound = gaps
            .iter()
            .enumerate()
            .filter(|(k, g)| **g == ms(100 * (1 << k)).min(ms(800)))
            .count();
        ensure!(at_upper_bound < gaps.len(), "no jitter: {gaps:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn unanswered_requests_time_out_and_say_whether_the_client_was_connected() -> Result<()> {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let connecting = tokio::spawn(
            Client::builder(addr)
                .lease_ttl(Duration::from_secs(600))
                .request_timeout(Duration::from_millis(500))
                .connect(),
        );
        let mut conn = accept(&listener).await?;
        recv_hello(&mut conn).await?;
        conn.send(welcome(false, SESSION, 600_000)).await?;
        let client = connecting.await??;

        tokio::time::pause();
        // Connected, but the server never answers.
        let started = Instant::now();
        let err = client.ping().await.unwrap_err();
        ensure!(matches!(err, Error::RequestTimeout), "{err:?}");
        ensure!(started.elapsed() >= Duration::from_millis(500));

        // Disconnected: reconnect attempts reach a listener that never answers the Hello.
        drop(conn);
        let err = client.ping().await.unwrap_err();
        ensure!(matches!(err, Error::Disconnected), "{err:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn many_unacknowledged_events_are_acknowledged_without_waiting_for_a_renewal() -> Result<()> {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let (client, mut conn) = connect(&listener, Duration::from_secs(600)).await?;
        let mut seq = 1;
        let locking = tokio::spawn({
            let client = client.clone();
            async move { client.lock("r", Mode::EX).await }
        });
        let (id, _) = recv_request(&mut conn, &mut seq).await?;
        let lock = LockId(1);
        send_event(&mut conn, &mut seq, Some(id), Some(lock), granted(1)).await?;
        let _guard = locking.await??;
        for _ in 0..200 {
            let kind = EventKind::Blocking { mode: Mode::PR };
            send_event(&mut conn, &mut seq, None, Some(lock), kind).await?;
        }
        // Renewals are 200 s apart: an Ack now is the "many unacknowledged" one.
        match conn.next().await.context("connection open")?? {
            Ok(ClientMessage::Ack { seq: acked }) => {
                ensure!((64..=201).contains(&acked), "ack of {acked}");
            }
            Ok(other) => bail!("expected Ack, got {other:?}"),
            Err(e) => bail!("malformed: {e}"),
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_lease_that_lapses_while_reconnecting_is_not_resumed_afterwards() -> Result<()> {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let (client, mut conn) = connect(&listener, Duration::from_secs(3)).await?;
        let mut seq = 1;
        let locking = tokio::spawn({
            let client = client.clone();
            async move { client.lock("r", Mode::EX).await }
        });
        let (id, _) = recv_request(&mut conn, &mut seq).await?;
        send_event(&mut conn, &mut seq, Some(id), Some(LockId(1)), granted(1)).await?;
        let guard = locking.await??;

        // The connection breaks and the server stops answering handshakes: the client's
        // resume attempt hangs (connect timeout 5 s) past its local lease (3 s - 300 ms).
        tokio::time::pause();
        drop(conn);
        ensure!(guard.lost().await == LostReason::LocalLeaseLapsed);

        // Every later attempt opens a fresh session; a resume attempt left over from before
        // the lapse has been given up by the client.
        for _ in 0..5 {
            let mut next = accept(&listener).await?;
            let Ok(hello) = recv_hello(&mut next).await else {
                continue; // closed before it said anything
            };
            if hello.resume.is_some() {
                // The attempt from before the lapse. Even if the server accepts the resume,
                // the client must not take the session back.
                let _ = next.send(welcome(true, SESSION, 3000)).await;
                continue;
            }
            next.send(welcome(false, SessionId(9), 3000)).await?;
            ping_round_trip(&client, &mut next, &mut 1).await?;
            ensure!(client.session_id() == SessionId(9));
            ensure!(guard.is_lost());
            return Ok(());
        }
        bail!("no fresh session was opened")
    })
    .await
}

/// A granted EX lock on `r` with id `lock`, through the script.
async fn grant(
    client: &Client,
    conn: &mut Conn,
    seq: &mut u64,
    lock: LockId,
) -> Result<dlock_client::LockGuard> {
    let locking = tokio::spawn({
        let client = client.clone();
        async move { client.lock("r", Mode::EX).await }
    });
    let (id, _) = recv_request(conn, seq).await?;
    send_event(conn, seq, Some(id), Some(lock), granted(1)).await?;
    Ok(locking.await??)
}

/// Expects a plain unlock of `lock` (no flags, no value: what a dropped guard sends) and
/// returns its id.
async fn recv_plain_unlock(conn: &mut Conn, seq: &mut u64, lock: LockId) -> Result<RequestId> {
    let (id, body) = recv_request(conn, seq).await?;
    ensure!(
        body == Request::Unlock(UnlockRequest {
            lock,
            flags: dlock_core::LockFlags::empty(),
            value: None
        }),
        "expected a plain unlock of {lock}, got {body:?}"
    );
    Ok(id)
}

fn rejected(reason: dlock_core::Reject) -> EventKind {
    EventKind::Rejected { reason }
}

#[tokio::test]
async fn an_unlock_the_server_refuses_is_followed_by_a_plain_unlock() -> Result<()> {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let (client, mut conn) = connect(&listener, Duration::from_secs(10)).await?;
        let mut seq = 1;
        let lock = LockId(3);
        let guard = grant(&client, &mut conn, &mut seq, lock).await?;
        let lost = guard.lost();

        // The value fits the block length the client was told, yet the server refuses it.
        let unlocking = tokio::spawn(guard.unlock_with(UnlockOptions::new().value(b"v".to_vec())));
        let (id, body) = recv_request(&mut conn, &mut seq).await?;
        ensure!(
            matches!(&body, Request::Unlock(UnlockRequest { value: Some(v), .. }) if v == b"v"),
            "{body:?}"
        );
        let too_long = dlock_core::Invalid::ValueTooLong { len: 1, max: 0 };
        let refusal = rejected(dlock_core::Reject::Invalid(too_long.clone()));
        send_event(&mut conn, &mut seq, Some(id), Some(lock), refusal).await?;
        let res = unlocking.await?;
        ensure!(
            matches!(&res, Err(Error::Invalid(i)) if *i == too_long),
            "{res:?}"
        );

        // The guard is gone, so the client releases the lock itself, without the value.
        let id = recv_plain_unlock(&mut conn, &mut seq, lock).await?;
        ensure!(
            lost.clone().now_or_never().is_none(),
            "released before the server said so"
        );
        send_event(
            &mut conn,
            &mut seq,
            Some(id),
            Some(lock),
            EventKind::Unlocked,
        )
        .await?;
        ensure!(lost.await == LostReason::Released);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_busy_unlock_of_a_dropped_guard_cancels_then_unlocks_once() -> Result<()> {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let (client, mut conn) = connect(&listener, Duration::from_secs(10)).await?;
        let mut seq = 1;
        let lock = LockId(4);
        let guard = grant(&client, &mut conn, &mut seq, lock).await?;
        let lost = guard.lost();
        drop(guard);

        let id = recv_plain_unlock(&mut conn, &mut seq, lock).await?;
        let busy = rejected(dlock_core::Reject::Busy);
        send_event(&mut conn, &mut seq, Some(id), Some(lock), busy.clone()).await?;
        // R45: whatever is pending on the lock is cancelled first, then it is unlocked.
        let (cid, body) = recv_request(&mut conn, &mut seq).await?;
        ensure!(body == Request::Cancel { lock }, "{body:?}");
        let id = recv_plain_unlock(&mut conn, &mut seq, lock).await?;
        ensure!(cid < id);
        // Refused again: the client gives up rather than loop.
        let not_pending = rejected(dlock_core::Reject::NotPending);
        send_event(&mut conn, &mut seq, Some(cid), Some(lock), not_pending).await?;
        send_event(&mut conn, &mut seq, Some(id), Some(lock), busy).await?;
        ping_round_trip(&client, &mut conn, &mut seq).await?;
        ensure!(lost.clone().now_or_never().is_none());

        // Until the session ends, which ends the lock too.
        send_event(&mut conn, &mut seq, None, None, EventKind::SessionExpired).await?;
        ensure!(lost.await == LostReason::SessionExpired);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_unlock_the_server_did_not_take_is_sent_again_plain() -> Result<()> {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let (client, mut conn) = connect(&listener, Duration::from_secs(10)).await?;
        let mut seq = 1;
        let lock = LockId(5);
        let guard = grant(&client, &mut conn, &mut seq, lock).await?;
        let lost = guard.lost();
        let unlocking = tokio::spawn(guard.unlock());
        let id = recv_plain_unlock(&mut conn, &mut seq, lock).await?;
        conn.send(ServerMessage::Reply {
            id,
            body: dlock_proto::Reply::Error(dlock_proto::RequestError::Overloaded),
        })
        .await?;
        let res = unlocking.await?;
        ensure!(matches!(res, Err(Error::Overloaded)), "{res:?}");
        let id = recv_plain_unlock(&mut conn, &mut seq, lock).await?;
        send_event(
            &mut conn,
            &mut seq,
            Some(id),
            Some(lock),
            EventKind::Unlocked,
        )
        .await?;
        ensure!(lost.await == LostReason::Released);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn values_longer_than_the_value_block_are_refused_before_sending() -> Result<()> {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let (client, mut conn) = connect(&listener, Duration::from_secs(10)).await?;
        let mut seq = 1;
        let lock = LockId(6);
        let len = client.value_block_len();
        ensure!(len == 32, "the script announces 32, client says {len}");
        let mut guard = grant(&client, &mut conn, &mut seq, lock).await?;
        let lost = guard.lost();

        // A conversion keeps its guard: refused, nothing sent, the lock unchanged.
        let res = guard
            .convert_with(Mode::NL, ConvertOptions::new().value(vec![1u8; len + 1]))
            .await;
        ensure!(
            matches!(res, Err(Error::Invalid(Invalid::ValueTooLong { len: l, max: 32 })) if l == len + 1),
            "{res:?}"
        );
        ensure!(guard.mode() == Mode::EX);

        // An unlock consumes its guard: refused, and the lock released as by a drop.
        let res = guard
            .unlock_with(UnlockOptions::new().value(vec![1u8; len + 1]))
            .await;
        ensure!(
            matches!(res, Err(Error::Invalid(Invalid::ValueTooLong { .. }))),
            "{res:?}"
        );
        // The first request the script sees is that plain unlock (no convert, no value).
        let id = recv_plain_unlock(&mut conn, &mut seq, lock).await?;
        send_event(&mut conn, &mut seq, Some(id), Some(lock), EventKind::Unlocked).await?;
        ensure!(lost.await == LostReason::Released);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_unlock_answered_not_found_forgets_the_lock_without_retrying() -> Result<()> {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let (client, mut conn) = connect(&listener, Duration::from_secs(10)).await?;
        let mut seq = 1;
        let lock = LockId(7);
        let guard = grant(&client, &mut conn, &mut seq, lock).await?;
        let lost = guard.lost();
        let unlocking = tokio::spawn(guard.unlock());
        let id = recv_plain_unlock(&mut conn, &mut seq, lock).await?;
        let not_found = rejected(dlock_core::Reject::NotFound);
        send_event(&mut conn, &mut seq, Some(id), Some(lock), not_found).await?;
        let res = unlocking.await?;
        ensure!(matches!(res, Err(Error::NotFound)), "{res:?}");
        // The server holds no such lock: nothing is held, nothing more is sent.
        ensure!(lost.await == LostReason::Released);
        ping_round_trip(&client, &mut conn, &mut seq).await?;
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
async fn a_refused_unlock_by_id_sends_nothing_in_its_place() -> Result<()> {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let (client, mut conn) = connect(&listener, Duration::from_secs(10)).await?;
        let mut seq = 1;
        let lock = LockId(3);
        let guard = grant(&client, &mut conn, &mut seq, lock).await?;
        let unlocking = tokio::spawn({
            let client = client.clone();
            async move { client.unlock_by_id(lock, UnlockOptions::new()).await }
        });
        let (id, body) = recv_request(&mut conn, &mut seq).await?;
        ensure!(
            matches!(body, Request::Unlock(UnlockRequest { lock: l, .. }) if l == lock),
            "{body:?}"
        );
        let refusal = rejected(dlock_core::Reject::Busy);
        send_event(&mut conn, &mut seq, Some(id), Some(lock), refusal).await?;
        let res = unlocking.await?;
        ensure!(matches!(res, Err(Error::Busy)), "{res:?}");
        // No cancel and no plain unlock follow: the next request is the ping.
        ping_round_trip(&client, &mut conn, &mut seq).await?;
        ensure!(!guard.is_lost() && guard.mode() == Mode::EX);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_dropped_pending_lock_is_cancelled_and_a_racing_grant_released() -> Result<()> {
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
        let (id, _) = recv_request(&mut conn, &mut seq).await?;
        let lock = LockId(9);
        send_event(&mut conn, &mut seq, Some(id), Some(lock), EventKind::Queued).await?;
        let pending = requesting.await??;
        drop(pending);
        let (cid, body) = recv_request(&mut conn, &mut seq).await?;
        ensure!(body == Request::Cancel { lock }, "{body:?}");
        // The grant wins the race; the cancel finds nothing pending.
        send_event(&mut conn, &mut seq, Some(id), Some(lock), granted(2)).await?;
        let refusal = rejected(dlock_core::Reject::NotPending);
        send_event(&mut conn, &mut seq, Some(cid), Some(lock), refusal).await?;
        recv_plain_unlock(&mut conn, &mut seq, lock).await?;
        Ok(())
    })
    .await
}
