//! Limits of the HTTP listener's connections: how many may be open at once
//! ([`Config::http_max_connections`](crate::Config::http_max_connections)), how long one may
//! sit without sending a byte ([`IDLE_LIMIT`]), how long a request head may take to arrive
//! ([`HEAD_LIMIT`]) and how long one may live ([`LIFETIME_LIMIT`]).
//!
//! The head limit is what keeps slow clients from holding every connection: a client that
//! sends a header line every few seconds is never idle, nor is one that sends a request now
//! and then on a kept-alive connection, and either would hold its place for its whole life,
//! so that clients that reconnect as soon as they are closed could keep a health probe out
//! for good. With it each holds its place for at most [`HEAD_LIMIT`] between requests, and a
//! probe waiting in the backlog gets the first place that frees. The stream finds the end of
//! a request head (an empty line) in what it reads, and times the next from the last write
//! of the answer; nothing else of HTTP is parsed, and a body (or anything read before the
//! answer) is not under the limit.
//!
//! [`LimitedListener`] takes a semaphore permit before each accept, so that at the cap a new
//! connection waits in the kernel's backlog instead of being accepted; the permit goes with
//! the [`LimitedStream`] and is released when hyper drops the connection. A read of a
//! connection that is past either deadline fails with `TimedOut`, which makes hyper close
//! it; writes are not limited.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// A connection that has sent nothing for this long is closed.
pub(crate) const IDLE_LIMIT: Duration = Duration::from_secs(10);

/// A connection is closed once it has been open this long, busy or not (a browser's status
/// page reconnects by itself).
pub(crate) const LIFETIME_LIMIT: Duration = Duration::from_secs(60);

/// A request head must have arrived in full this long after the connection opened or the
/// previous answer was written, or the connection is closed: any HTTP client sends a head
/// in one write, and a kept-alive connection with no request to send is closed (the client
/// connects again when it has one).
pub(crate) const HEAD_LIMIT: Duration = Duration::from_secs(2);

/// Where a connection stands in its request and answer, as far as the limits need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// A request head is on its way, since the instant given; `matched` bytes of the
    /// empty line that ends it (`\r\n\r\n`) were the last ones read.
    Head { since: Instant, matched: u8 },
    /// The head is in: the request (and its body) is being handled, until an answer is
    /// written.
    Handling,
    /// HTTP/2 (its frames are not heads): only the idle and lifetime limits apply.
    Exempt,
}

impl Phase {
    /// The phase after reading `bytes`.
    fn read(self, bytes: &[u8]) -> Phase {
        const END: &[u8; 4] = b"\r\n\r\n";
        let Phase::Head { since, mut matched } = self else {
            return self;
        };
        if matched == 0 && bytes.starts_with(b"PRI * HTTP/2") {
            return Phase::Exempt;
        }
        for &b in bytes {
            matched = if b == END[usize::from(matched)] {
                matched + 1
            } else if b == b'\r' {
                1
            } else {
                0
            };
            if usize::from(matched) == END.len() {
                return Phase::Handling;
            }
        }
        Phase::Head { since, matched }
    }

    /// The phase after writing `bytes` at `now`: an answer ends the request and the next
    /// head is timed from its last write; an interim `100 Continue` does not (the body
    /// comes after it).
    fn written(self, bytes: &[u8], now: Instant) -> Phase {
        match self {
            Phase::Exempt => self,
            _ if bytes.is_empty() || bytes.starts_with(b"HTTP/1.1 100 ") => self,
            _ => Phase::Head {
                since: now,
                matched: 0,
            },
        }
    }

    /// When the head on its way must be in, if one is.
    fn head_deadline(self) -> Option<Instant> {
        match self {
            Phase::Head { since, .. } => Some(since + HEAD_LIMIT),
            _ => None,
        }
    }
}

/// A TCP listener that accepts at most `permits` connections at a time, each a
/// [`LimitedStream`].
#[derive(Debug)]
pub(crate) struct LimitedListener {
    /// The bound socket.
    inner: TcpListener,
    /// One permit per open connection.
    permits: Arc<Semaphore>,
    /// How long a connection may be idle.
    idle: Duration,
    /// How long a connection may live.
    lifetime: Duration,
}

impl LimitedListener {
    /// Accepts on `inner`, at most `max_connections` open at once, with the default limits
    /// in time ([`IDLE_LIMIT`], [`LIFETIME_LIMIT`]).
    pub(crate) fn new(inner: TcpListener, max_connections: usize) -> Self {
        Self::with_limits(inner, max_connections, IDLE_LIMIT, LIFETIME_LIMIT)
    }

    /// [`new`](Self::new) with other limits in time.
    pub(crate) fn with_limits(
        inner: TcpListener,
        max_connections: usize,
        idle: Duration,
        lifetime: Duration,
    ) -> Self {
        LimitedListener {
            inner,
            permits: Arc::new(Semaphore::new(max_connections)),
            idle,
            lifetime,
        }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore is never closed: the error cannot happen, but waiting for a permit
        // again is the harmless answer if it ever did.
        let permit = loop {
            if let Ok(p) = self.permits.clone().acquire_owned().await {
                break p;
            }
        };
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        (
            LimitedStream::new(io, permit, self.idle, self.lifetime),
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted HTTP connection: its reads fail with `TimedOut` once it has been idle too
/// long or open too long; it holds its listener's permit until dropped.
#[derive(Debug)]
pub(crate) struct LimitedStream {
    /// The socket.
    io: TcpStream,
    /// Released when the connection is dropped.
    _permit: OwnedSemaphorePermit,
    /// Fires at the earlier of the idle deadline and the end of the connection's life.
    deadline: Pin<Box<Sleep>>,
    /// When the connection must close, however busy.
    end: Instant,
    /// Fires at `end`: a write still pending then fails (a client that never reads its
    /// answer would otherwise hold its place for ever).
    life: Pin<Box<Sleep>>,
    /// How long the connection may be idle.
    idle: Duration,
    /// When it last sent a byte (or opened).
    last_read: Instant,
    /// Its request and answer, for the head limit.
    phase: Phase,
}

impl LimitedStream {
    /// Wraps `io`, accepted now.
    fn new(
        io: TcpStream,
        permit: OwnedSemaphorePermit,
        idle: Duration,
        lifetime: Duration,
    ) -> Self {
        let now = Instant::now();
        let end = now + lifetime;
        let mut stream = LimitedStream {
            io,
            _permit: permit,
            deadline: Box::pin(tokio::time::sleep_until(end)),
            end,
            life: Box::pin(tokio::time::sleep_until(end)),
            idle,
            last_read: now,
            // The first head is on its way from the start.
            phase: Phase::Head {
                since: now,
                matched: 0,
            },
        };
        stream.reset_deadline();
        stream
    }

    /// The earliest of the idle deadline, the head's and the end of the connection's life.
    fn reset_deadline(&mut self) {
        let mut next = (self.last_read + self.idle).min(self.end);
        if let Some(head) = self.phase.head_deadline() {
            next = next.min(head);
        }
        self.deadline.as_mut().reset(next);
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // First the deadline, so that a client sending a trickle cannot outlive its life;
        // pending, it wakes the task at the deadline.
        if this.deadline.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let why = if now >= this.end {
                "HTTP connection open too long"
            } else if this.phase.head_deadline().is_some_and(|at| now >= at) {
                "HTTP request head too slow"
            } else {
                "HTTP connection idle too long"
            };
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let now = Instant::now();
            this.last_read = now;
            this.phase = this.phase.read(&buf.filled()[before..]);
            this.reset_deadline();
        }
        read
    }
}

impl LimitedStream {
    /// `bytes` were written: an answer ends the request, and the next head's time starts.
    fn wrote(&mut self, bytes: &[u8]) {
        let phase = self.phase.written(bytes, Instant::now());
        if phase != self.phase {
            self.phase = phase;
            self.reset_deadline();
        }
    }

    /// The error of a write attempted after the connection's life ended; pending, it wakes
    /// the task when the life ends.
    fn past_life(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.life
            .as_mut()
            .poll(cx)
            .is_ready()
            .then(|| io::Error::new(io::ErrorKind::TimedOut, "HTTP connection open too long"))
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.past_life(cx) {
            return Poll::Ready(Err(e));
        }
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.wrote(&buf[..n]);
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.past_life(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.past_life(cx) {
            return Poll::Ready(Err(e));
        }
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = written {
            // What an answer starts with is in the first slice that has bytes.
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            this.wrote(&first[..n.min(first.len())]);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener as _;
    use futures_util::FutureExt as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn bound(max: usize) -> (LimitedListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        (LimitedListener::new(l, max), addr)
    }

    #[tokio::test]
    async fn at_the_cap_a_connection_is_accepted_only_once_another_closes() {
        let (mut listener, addr) = bound(2).await;
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let _c3 = TcpStream::connect(addr).await.unwrap();
        let (s1, _) = listener.accept().await;
        let (_s2, _) = listener.accept().await;
        {
            // The third is in the backlog, but with both permits out the accept waits for
            // a permit: it is not ready however often it is polled.
            let mut third = std::pin::pin!(listener.accept());
            for _ in 0..10 {
                assert!(third.as_mut().now_or_never().is_none());
                tokio::task::yield_now().await;
            }
            drop(s1);
            tokio::time::timeout(Duration::from_secs(10), third)
                .await
                .expect("accepted once a connection closed");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_times_out_and_data_resets_the_idle_clock() {
        let (mut listener, addr) = bound(1).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await;
        let opened = Instant::now();
        let mut buf = [0u8; 32];

        // A request head, at once: what follows is not under the head limit.
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(n, 18);
        // Nine seconds in, a byte: it is read, and the idle clock starts again.
        let write = async {
            tokio::time::sleep(Duration::from_secs(9)).await;
            client.write_all(b"x").await.unwrap();
        };
        let (n, ()) = tokio::join!(server.read(&mut buf), write);
        assert_eq!(n.unwrap(), 1);

        // Then nothing: the read fails at the idle deadline, counted from the byte. (The
        // timeout, in paused time, only keeps a failure from hanging.)
        let read = tokio::time::timeout(Duration::from_secs(3600), server.read(&mut buf));
        let err = read.await.expect("timed out by the server").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(opened.elapsed() >= Duration::from_secs(19));
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_is_closed_at_the_end_of_its_life() {
        let (mut listener, addr) = bound(1).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await;
        let opened = Instant::now();
        let mut buf = [0u8; 32];
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 18);
        let err = loop {
            assert!(opened.elapsed() < Duration::from_secs(3600), "never closed");
            // A byte every 5 s: never idle.
            let write = async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                client.write_all(b"x").await.unwrap();
            };
            let (read, ()) = tokio::join!(server.read(&mut buf), write);
            match read {
                Ok(n) => assert!(n > 0),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(opened.elapsed() >= LIFETIME_LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_to_a_client_that_never_reads_fails_at_the_end_of_its_life() {
        let (mut listener, addr) = bound(1).await;
        let _client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await;
        let opened = Instant::now();
        // The client reads nothing: the socket buffers fill and the write waits, until the
        // connection's life ends. (The timeout, in paused time, only keeps a failure from
        // hanging.)
        let chunk = vec![0u8; 1 << 20];
        let write = async {
            loop {
                server.write_all(&chunk).await?;
            }
        };
        let written: io::Result<()> = tokio::time::timeout(Duration::from_secs(3600), write)
            .await
            .expect("the write never failed");
        assert_eq!(written.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(opened.elapsed() >= LIFETIME_LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn hyper_closes_a_connection_that_sends_nothing() {
        let (listener, addr) = bound(4).await;
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let opened = Instant::now();
        let mut buf = [0u8; 64];
        // The server closes it: end of file (or a reset), never an answer. (The timeout,
        // in paused time, only keeps a failure from hanging.)
        let read = tokio::time::timeout(Duration::from_secs(3600), silent.read(&mut buf));
        match read.await.expect("closed by the server") {
            Ok(n) => assert_eq!(n, 0),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
        }
        // Its first head did not come in time.
        assert!(opened.elapsed() >= HEAD_LIMIT);
        assert!(opened.elapsed() < IDLE_LIMIT);
    }

    /// An app with `/` answering at once and `/slow` after 5 s, served on a listener of
    /// `max` connections.
    async fn served(max: usize) -> SocketAddr {
        let (listener, addr) = bound(max).await;
        let app = axum::Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "slow"
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// Reads until the connection closes; how long that took from `from`, and what was read.
    async fn until_closed(client: &mut TcpStream, from: Instant) -> (Duration, Vec<u8>) {
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            let read = tokio::time::timeout(Duration::from_secs(3600), client.read(&mut buf));
            match read.await.expect("closed by the server") {
                Ok(0) | Err(_) => return (from.elapsed(), got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_sent_a_line_at_a_time_is_cut_off_at_the_head_limit() {
        let addr = served(4).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        let opened = Instant::now();
        // Never idle: a header line every second, but never the empty line that ends it.
        let dribble = async {
            slow.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if slow.write_all(b"X-a: b\r\n").await.is_err() {
                    return;
                }
            }
        };
        let mut reader = TcpStream::connect(addr).await.unwrap();
        reader
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        drop(reader);
        tokio::select! {
            () = dribble => {}
            () = tokio::time::sleep(Duration::from_secs(3600)) => panic!("never cut off"),
        }
        let took = opened.elapsed();
        assert!(took >= HEAD_LIMIT && took < IDLE_LIMIT, "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_alive_connection_must_send_its_next_head_within_the_head_limit() {
        let addr = served(4).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 512];
        for _ in 0..2 {
            // A request a second after the last answer: served.
            tokio::time::sleep(HEAD_LIMIT / 2).await;
            client
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let n = client.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        }
        // Then nothing: closed a head limit after the last answer, not at the idle limit.
        let answered = Instant::now();
        let (took, got) = until_closed(&mut client, answered).await;
        assert!(took >= HEAD_LIMIT && took < IDLE_LIMIT, "{took:?}");
        assert!(
            got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
            "{got:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_handled_for_longer_than_the_head_limit_is_answered() {
        let addr = served(4).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let sent = Instant::now();
        client
            .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (took, got) = until_closed(&mut client, sent).await;
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
        assert!(got.ends_with(b"slow"));
        assert!(took >= Duration::from_secs(5));
    }

    #[test]
    fn the_phase_follows_heads_answers_and_interim_answers() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(1);
        let head = Phase::Head {
            since: t0,
            matched: 0,
        };
        // The empty line may come split over reads.
        let p = head.read(b"GET / HTTP/1.1\r\nHost: x\r");
        assert_eq!(
            p,
            Phase::Head {
                since: t0,
                matched: 1
            }
        );
        let p = p.read(b"\n\r");
        assert_eq!(p.head_deadline(), Some(t0 + HEAD_LIMIT));
        let p = p.read(b"\nbody");
        assert_eq!(p, Phase::Handling);
        assert_eq!(p.head_deadline(), None);
        // A body, however slow, is not a head; an interim answer does not end the request.
        assert_eq!(p.read(b"more body"), Phase::Handling);
        assert_eq!(
            p.written(b"HTTP/1.1 100 Continue\r\n\r\n", later),
            Phase::Handling
        );
        // The next head is timed from the answer.
        let p = p.written(b"HTTP/1.1 200 OK\r\n", later);
        assert_eq!(p.head_deadline(), Some(later + HEAD_LIMIT));
        assert_eq!(p.read(b"G").head_deadline(), Some(later + HEAD_LIMIT));
        // "\r\r\n\r\n" still ends a head.
        assert_eq!(head.read(b"x\r\r\n\r\n"), Phase::Handling);
        // HTTP/2 is not timed by heads.
        let h2 = head.read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert_eq!(h2, Phase::Exempt);
        assert_eq!(h2.written(b"x", later).read(b"frames"), Phase::Exempt);
    }
}
