//! Limits of the HTTP listener's connections: how many may be open at once
//! ([`Config::http_max_connections`](crate::Config::http_max_connections)), how long one may
//! sit without sending a byte ([`IDLE_LIMIT`]) and how long one may live ([`LIFETIME_LIMIT`]).
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
        LimitedStream {
            io,
            _permit: permit,
            deadline: Box::pin(tokio::time::sleep_until((now + idle).min(end))),
            end,
            life: Box::pin(tokio::time::sleep_until(end)),
            idle,
        }
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
            let why = if Instant::now() >= this.end {
                "HTTP connection open too long"
            } else {
                "HTTP connection idle too long"
            };
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let next = (Instant::now() + this.idle).min(this.end);
            this.deadline.as_mut().reset(next);
        }
        read
    }
}

impl LimitedStream {
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
        Pin::new(&mut this.io).poll_write(cx, buf)
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
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
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
        let mut buf = [0u8; 16];

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
        let mut buf = [0u8; 16];
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
        assert!(opened.elapsed() >= IDLE_LIMIT);
    }
}
