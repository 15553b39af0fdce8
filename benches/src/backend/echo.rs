//! The floor: a bare TCP echo server, two round trips per cycle (one for "acquire", one for
//! "release"), with the same framing cost as nothing at all. No lock service can beat it on the
//! same machine and transport.
//!
//! For the idle scenario each connection also does what an idle dlock client does by itself:
//! one round trip per lease renewal, each wait drawn from the same range as the client's
//! ([`dlock_client::renewal_wait_range`]). What the echo server spends on those is the floor
//! of what idle sessions can cost a server: a wake-up, a read and a write per renewal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, oneshot};
use tokio_util::task::AbortOnDropHandle;

use super::{Access, Backend, Conn};
use crate::Scenario;

/// Bytes per request and per reply: about a lock request frame of dlock.
const MSG_LEN: usize = 48;

/// The name of the echo server's threads, to tell their CPU time apart.
const THREAD_PREFIX: &str = "echo-server";

/// The first byte of a message standing for an acquisition, a release, a lease renewal.
const ACQUIRE: u8 = 1;
const RELEASE: u8 = 2;
const RENEW: u8 = 3;

/// The echo floor. Starts its own echo server on `127.0.0.1:0`, in a thread with its own
/// two-worker runtime (like a server process of its own); stopping happens on drop.
#[derive(Debug)]
pub struct EchoBackend {
    addr: SocketAddr,
    lease_ttl: Duration,
    /// Renewal messages the server has echoed.
    renewals: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EchoBackend {
    /// Starts the echo server. Idle connections make one round trip per renewal of a dlock
    /// lease of `lease_ttl`.
    pub async fn start(lease_ttl: Duration) -> Result<EchoBackend> {
        let (addr_tx, addr_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let renewals = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&renewals);
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
                rt.block_on(serve(addr_tx, stop_rx, counter));
            })
            .context("spawning the echo server thread")?;
        let addr = addr_rx.await.context("echo server thread died")??;
        Ok(EchoBackend {
            addr,
            lease_ttl,
            renewals,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The echo server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many renewal messages of idle connections the server has echoed so far.
    pub fn renewals_echoed(&self) -> u64 {
        self.renewals.load(Ordering::Relaxed)
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

async fn serve(
    addr_tx: oneshot::Sender<Result<SocketAddr>>,
    mut stop: oneshot::Receiver<()>,
    renewals: Arc<AtomicU64>,
) {
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
                    tokio::spawn(echo(stream, Arc::clone(&renewals)));
                }
            }
        }
    }
}

/// Echoes fixed-size messages until the peer closes, counting renewals in `renewals`.
async fn echo(mut stream: TcpStream, renewals: Arc<AtomicU64>) {
    let _ = stream.set_nodelay(true);
    let mut buf = [0u8; MSG_LEN];
    while stream.read_exact(&mut buf).await.is_ok() {
        if stream.write_all(&buf).await.is_err() {
            return;
        }
        if buf[0] == RENEW {
            renewals.fetch_add(1, Ordering::Relaxed);
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
            Scenario::Uncontended | Scenario::Idle => None,
            _ => Some("the echo floor holds no locks; it is only a floor for uncontended and idle"),
        }
    }

    fn renewal_period(&self) -> Option<Duration> {
        Some(self.lease_ttl / 3)
    }

    async fn connect(&self, _id: usize) -> Result<EchoConn> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        Ok(EchoConn {
            stream: Arc::new(Mutex::new(stream)),
            _renewing: None,
        })
    }

    async fn connect_idle(&self, id: usize) -> Result<EchoConn> {
        let mut conn = self.connect(id).await?;
        let stream = Arc::clone(&conn.stream);
        let waits = dlock_client::renewal_wait_range(self.lease_ttl);
        let task = tokio::spawn(async move {
            loop {
                let wait = rand::rng().random_range(waits.clone());
                tokio::time::sleep(wait).await;
                if round_trip(&stream, "renew", RENEW).await.is_err() {
                    return;
                }
            }
        });
        conn._renewing = Some(AbortOnDropHandle::new(task));
        Ok(conn)
    }
}

/// One connection to the echo server.
#[derive(Debug)]
pub struct EchoConn {
    stream: Arc<Mutex<TcpStream>>,
    /// The task imitating a client's lease renewals, on an idle connection; aborted when
    /// the connection is dropped.
    _renewing: Option<AbortOnDropHandle<()>>,
}

/// Sends a message holding `tag` and `key` and waits for it to come back.
async fn round_trip(stream: &Mutex<TcpStream>, key: &str, tag: u8) -> Result<()> {
    let mut msg = [0u8; MSG_LEN];
    msg[0] = tag;
    let n = key.len().min(MSG_LEN - 1);
    msg[1..1 + n].copy_from_slice(&key.as_bytes()[..n]);
    let mut stream = stream.lock().await;
    stream.write_all(&msg).await?;
    let mut reply = [0u8; MSG_LEN];
    stream.read_exact(&mut reply).await?;
    anyhow::ensure!(reply == msg, "echo server answered something else");
    Ok(())
}

impl Conn for EchoConn {
    type Held = String;

    async fn acquire(&self, key: &str, _access: Access) -> Result<String> {
        round_trip(&self.stream, key, ACQUIRE).await?;
        Ok(key.to_owned())
    }

    async fn release(&self, held: String) -> Result<()> {
        round_trip(&self.stream, &held, RELEASE).await
    }

    async fn close(self, _held: Vec<String>) -> Result<()> {
        Ok(())
    }
}
