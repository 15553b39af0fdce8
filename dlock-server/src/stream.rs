//! The streams a connection can run on — plain TCP or TLS over TCP — and how each splits
//! into a read half and a write half, so that one connection task serves both.

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// A read half that can say when it has bytes without taking a buffer for them.
pub(crate) trait ReadHalf: AsyncRead + Unpin + Send + 'static {
    /// Completes when a read may make progress. Plain TCP waits for readiness, so an idle
    /// connection holds no read buffer; other streams (TLS, whose records must be decrypted
    /// to know whether they hold application data) complete at once.
    fn ready(&self) -> impl Future<Output = io::Result<()>> + Send;
}

impl ReadHalf for OwnedReadHalf {
    fn ready(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.readable()
    }
}

impl<S: AsyncRead + Send + 'static> ReadHalf for tokio::io::ReadHalf<S> {
    fn ready(&self) -> impl Future<Output = io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

/// A stream a connection task can serve.
pub(crate) trait ServerStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The read half.
    type Read: ReadHalf;
    /// The write half.
    type Write: AsyncWrite + Unpin + Send + 'static;
    /// Splits the stream (after disabling Nagle's algorithm: replies are small and latency
    /// matters more than packet count).
    fn split(self) -> (Self::Read, Self::Write);
}

impl ServerStream for TcpStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;
    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        let _ = self.set_nodelay(true);
        self.into_split()
    }
}

type Tls = tokio_rustls::server::TlsStream<TcpStream>;

impl ServerStream for Tls {
    type Read = tokio::io::ReadHalf<Tls>;
    type Write = tokio::io::WriteHalf<Tls>;
    fn split(self) -> (Self::Read, Self::Write) {
        let _ = self.get_ref().0.set_nodelay(true);
        tokio::io::split(self)
    }
}
