//! [`Proxy`]: a TCP proxy on `127.0.0.1:0` in front of a server, for fault tests.
//!
//! It can [`cut`](Proxy::cut) every current connection (both sockets closed at once, as a
//! broken network path looks to both ends) and [`blackhole`](Proxy::blackhole) traffic:
//! connections are accepted and kept, but nothing is forwarded in either direction until the
//! black hole is lifted. Bytes are held back, never dropped, so a lifted black hole resumes
//! the streams intact (a partition that heals).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// A TCP proxy forwarding `127.0.0.1:<port>` to an upstream address. Dropping it stops the
/// proxy and closes every connection through it.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

struct Shared {
    upstream: SocketAddr,
    /// `true` while traffic is black-holed.
    blackhole: watch::Sender<bool>,
    /// Tasks of the live connections (finished ones are pruned on each accept).
    conns: Mutex<Vec<AbortHandle>>,
    accepted: AtomicU64,
}

impl Proxy {
    /// Starts a proxy on `127.0.0.1:0` forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy")?;
        let addr = listener.local_addr()?;
        let (blackhole, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            upstream,
            blackhole,
            conns: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Proxy {
            addr,
            shared,
            accept,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every current connection, both sides. New connections are accepted as usual.
    pub fn cut(&self) {
        let conns =
            std::mem::take(&mut *self.shared.conns.lock().unwrap_or_else(|e| e.into_inner()));
        for c in conns {
            c.abort();
        }
    }

    /// Starts (`true`) or stops (`false`) black-holing: while on, connections are accepted and
    /// kept open but no byte is forwarded in either direction (and new connections are not
    /// passed upstream).
    pub fn blackhole(&self, on: bool) {
        self.shared.blackhole.send_replace(on);
    }

    /// How many connections the proxy has accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let task = tokio::spawn(serve(client, shared.clone()));
        let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|c| !c.is_finished());
        conns.push(task.abort_handle());
    }
}

/// Waits until traffic may flow.
async fn open(rx: &mut watch::Receiver<bool>) {
    // An error means the proxy is gone; the connection task is about to be aborted.
    let _ = rx.wait_for(|on| !on).await;
}

async fn serve(client: TcpStream, shared: Arc<Shared>) {
    let mut rx = shared.blackhole.subscribe();
    open(&mut rx).await;
    let Ok(upstream) = TcpStream::connect(shared.upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    // When either direction ends, the task returns and both sockets close.
    tokio::select! {
        () = pump(cr, uw, shared.blackhole.subscribe()) => {}
        () = pump(ur, cw, shared.blackhole.subscribe()) => {}
    }
}

/// Copies `from` to `to`, pausing (without reading) while black-holed.
async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    mut rx: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        open(&mut rx).await;
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // Black hole switched on while waiting to read: stop reading.
            _ = rx.wait_for(|on| *on) => continue,
        };
        // Bytes already read are held until the black hole lifts.
        open(&mut rx).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
