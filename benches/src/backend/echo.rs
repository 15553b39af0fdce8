//! The floor: a bare TCP echo server, two round trips per cycle (one for "acquire", one for
//! "release"), with the same framing cost as nothing at all. No lock service can beat it on the
//! same machine and transport.

use std::net::SocketAddr;
use std::thread;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, oneshot};

use super::{Access, Backend, Conn};
use crate::Scenario;

/// Bytes per request and per reply: about a lock request frame of dlock.
const MSG_LEN: usize = 48;

/// The name of the echo server's threads, to tell their CPU time apart.
const THREAD_PREFIX: &str = "echo-server";

/// The echo floor. Starts its own echo server on `127.0.0.1:0`, in a thread with its own
/// two-worker runtime (like a server process of its own); stopping happens on drop.
#[derive(Debug)]
pub struct EchoBackend {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EchoBackend {
    /// Starts the echo server.
    pub async fn start() -> Result<EchoBackend> {
        let (addr_tx, addr_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = thread::Builder::new()
            .name(THREAD_PREFIX.into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name(THREAD_PREFIX)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = addr_tx.send(Err(anyhow::Error::from(e)));
                        return;
                    }
                };
                rt.block_on(serve(addr_tx, stop_rx));
            })
            .context("spawning the echo server thread")?;
        let addr = addr_rx.await.context("echo server thread died")??;
        Ok(EchoBackend {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The echo server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(addr_tx: oneshot::Sender<Result<SocketAddr>>, mut stop: oneshot::Receiver<()>) {
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            let _ = addr_tx.send(Err(e.into()));
            return;
        }
    };
    let _ = addr_tx.send(listener.local_addr().map_err(Into::into));
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(echo(stream));
                }
            }
        }
    }
}

/// Echoes fixed-size messages until the peer closes.
async fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = [0u8; MSG_LEN];
    while stream.read_exact(&mut buf).await.is_ok() {
        if stream.write_all(&buf).await.is_err() {
            return;
        }
    }
}

impl Backend for EchoBackend {
    type Conn = EchoConn;

    fn name(&self) -> &'static str {
        "echo"
    }

    fn in_process_server_cpu(&self) -> Option<std::time::Duration> {
        crate::cpu::own_threads_cpu(THREAD_PREFIX).ok()
    }

    fn unsupported(&self, scenario: Scenario) -> Option<&'static str> {
        match scenario {
            Scenario::Uncontended => None,
            _ => Some("the echo floor holds no locks; it is only a floor for uncontended"),
        }
    }

    async fn connect(&self, _id: usize) -> Result<EchoConn> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        Ok(EchoConn {
            stream: Mutex::new(stream),
        })
    }
}

/// One connection to the echo server.
#[derive(Debug)]
pub struct EchoConn {
    stream: Mutex<TcpStream>,
}

impl EchoConn {
    async fn round_trip(&self, key: &str, tag: u8) -> Result<()> {
        let mut msg = [0u8; MSG_LEN];
        msg[0] = tag;
        let n = key.len().min(MSG_LEN - 1);
        msg[1..1 + n].copy_from_slice(&key.as_bytes()[..n]);
        let mut stream = self.stream.lock().await;
        stream.write_all(&msg).await?;
        let mut reply = [0u8; MSG_LEN];
        stream.read_exact(&mut reply).await?;
        anyhow::ensure!(reply == msg, "echo server answered something else");
        Ok(())
    }
}

impl Conn for EchoConn {
    type Held = String;

    async fn acquire(&self, key: &str, _access: Access) -> Result<String> {
        self.round_trip(key, 1).await?;
        Ok(key.to_owned())
    }

    async fn release(&self, held: String) -> Result<()> {
        self.round_trip(&held, 2).await
    }

    async fn close(self, _held: Vec<String>) -> Result<()> {
        Ok(())
    }
}
