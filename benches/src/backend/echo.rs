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

/// The echo floor: connections to an echo server, either one started in this process
/// ([`EchoBackend::start`]) or one running as a process of its own (the `echo-server`
/// binary, [`EchoBackend::external`]).
#[derive(Debug)]
pub struct EchoBackend {
    addr: SocketAddr,
    lease_ttl: Duration,
    /// The server this process runs, if it runs one.
    own: Option<OwnServer>,
}

/// An echo server running in this process; stopped on drop.
#[derive(Debug)]
struct OwnServer {
    /// Renewal messages the server has echoed.
    renewals: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EchoBackend {
    /// Starts an echo server on `127.0.0.1:0`, in a thread with its own two-worker runtime
    /// (like a server process of its own). Idle connections make one round trip per renewal
    /// of a dlock lease of `lease_ttl`.
    pub async fn start(lease_ttl: Duration) -> Result<EchoBackend> {
        let (addr_tx, addr_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let renewals = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&renewals);
        let thread = thread::Builder::new()
            .name(THREAD_PREFIX.into())
            .spawn(move || {
                let rt = match runtime(THREAD_PREFIX) {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = addr_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match TcpListener::bind("127.0.0.1:0").await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = addr_tx.send(Err(e.into()));
                            return;
                        }
                    };
                    let _ = addr_tx.send(listener.local_addr().map_err(Into::into));
                    serve(listener, async move { drop(stop_rx.await) }, counter).await;
                });
            })
            .context("spawning the echo server thread")?;
        let addr = addr_rx.await.context("echo server thread died")??;
        Ok(EchoBackend {
            addr,
            lease_ttl,
            own: Some(OwnServer {
                renewals,
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
        })
    }

    /// The echo floor through an echo server already listening on `addr` (the `echo-server`
    /// binary): loadgen then holds one end of each connection only, and the server's CPU and
    /// RSS are measured like any server's, through `--server-pid`.
    pub fn external(addr: SocketAddr, lease_ttl: Duration) -> EchoBackend {
        EchoBackend {
            addr,
            lease_ttl,
            own: None,
        }
    }

    /// The echo server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many renewal messages of idle connections the server has echoed so far; `None`
    /// for an external server, whose count this process cannot see.
    pub fn renewals_echoed(&self) -> Option<u64> {
        self.own
            .as_ref()
            .map(|own| own.renewals.load(Ordering::Relaxed))
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The runtime an echo server runs on: two workers, as a dlock server has on a two-core
/// machine, with threads named `name`.
pub fn runtime(name: &str) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .context("building the echo server's runtime")
}

/// Serves echo connections accepted from `listener` until `stop` completes, counting the
/// renewal messages of idle connections in `renewals`.
pub async fn serve(
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()>,
    renewals: Arc<AtomicU64>,
) {
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
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
        // An external server's CPU is read through its pid (`--server-pid`), as dlock's is.
        self.own.as_ref()?;
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
