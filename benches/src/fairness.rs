//! The fairness bench: what one client address's flood does to another address's lock cycle.
//!
//! A *bystander* (one `dlock-client` session from the server's own loopback address, say
//! 127.0.0.1) locks and unlocks a key of its own without pause. In one run it is measured
//! twice on the same server:
//! 1. **alone**, for [`FairSpec::quiet`];
//! 2. **under attack**: an *attacker* from another loopback address (127.0.0.2) opens
//!    [`FairSpec::sessions`] sessions, one connection each, and every session pipelines
//!    [`FairSpec::locks`] lock requests on names of its own at once (written in one go, read
//!    back as the grants come); once every session has all its grants, all say goodbye,
//!    which releases them. The bystander's cycles from the first attacking connection to the
//!    last goodbye are the second figure, also split into the two phases (taking, releasing).
//!
//! The ratio of the two in one run says what the flood costs the bystander on that machine at
//! that moment, which is steadier on a shared machine than either figure alone. Every wait
//! is bounded ([`FairSpec::limit`]); only loopback addresses are used.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use dlock_client::{Client, Mode};
use dlock_proto::{
    ClientMessage, EventKind, FrameCodec, Hello, LockFlags, LockRequest, PROTOCOL_VERSION, Request,
    RequestId, ServerMessage,
};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use futures_util::{SinkExt, future};
use hdrhistogram::Histogram;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::codec::Framed;

use crate::report::{new_histogram, record};

/// Attacking connections being opened at the same time (the server's accept backlog is
/// never overrun).
pub const CONNECT_AT_ONCE: usize = 256;

/// The attacker acknowledges its events every this many.
const ACK_EVERY: usize = 250;

/// What one run does.
#[derive(Clone, Debug)]
pub struct FairSpec {
    /// The server.
    pub addr: SocketAddr,
    /// The address the attacker connects from (another loopback address than the
    /// bystander's, so that the server sees two clients).
    pub attacker_ip: IpAddr,
    /// Attacking sessions (one connection each).
    pub sessions: usize,
    /// Lock requests each attacking session pipelines.
    pub locks: usize,
    /// How long the bystander is measured alone.
    pub quiet: Duration,
    /// The longest an attack (or any wait of a run) may take before the run fails.
    pub limit: Duration,
}

/// A bystander's lock cycles in one window.
#[derive(Debug)]
pub struct Cycles {
    /// Completed cycles.
    pub count: u64,
    /// Length of the window.
    pub window: Duration,
    /// Cycle times (µs).
    pub times: Histogram<u64>,
    /// Cycles that failed (a lock or unlock that returned an error).
    pub errors: u64,
    /// When each cycle began and how long it took, in order.
    pub samples: Vec<(Instant, Duration)>,
}

impl Cycles {
    /// The cycles that began in `from..to`.
    pub fn between(&self, from: Instant, to: Instant) -> Cycles {
        let samples: Vec<_> = self
            .samples
            .iter()
            .copied()
            .filter(|&(t, _)| from <= t && t < to)
            .collect();
        let mut times = new_histogram();
        for &(_, d) in &samples {
            record(&mut times, d);
        }
        Cycles {
            count: samples.len() as u64,
            window: to.saturating_duration_since(from),
            times,
            errors: 0,
            samples,
        }
    }

    /// `(p50, p99, max)` in µs, zeros if no cycle completed.
    pub fn percentiles(&self) -> (u64, u64, u64) {
        if self.times.is_empty() {
            return (0, 0, 0);
        }
        (
            self.times.value_at_quantile(0.5),
            self.times.value_at_quantile(0.99),
            self.times.max(),
        )
    }
}

/// What the attacker did.
#[derive(Debug)]
pub struct Attack {
    /// Locks granted to it.
    pub granted: u64,
    /// Requests answered `Overloaded` (and not retried).
    pub overloaded: u64,
    /// From its first connection to its last goodbye.
    pub took: Duration,
    /// When it began.
    pub began: Instant,
    /// When the last of its sessions had every grant (and began to say goodbye).
    pub all_granted: Instant,
    /// When its last session was closed.
    pub ended: Instant,
}

/// One run: the bystander alone, then beside the attack.
#[derive(Debug)]
pub struct FairRun {
    /// The bystander alone.
    pub alone: Cycles,
    /// The bystander while the attack ran.
    pub attacked: Cycles,
    /// The attack.
    pub attack: Attack,
}

/// Runs the bench once against the server at `spec.addr` (see the module docs).
pub async fn run(spec: &FairSpec) -> Result<FairRun> {
    ensure!(
        spec.addr.ip().is_loopback() && spec.attacker_ip.is_loopback(),
        "the fairness bench only uses loopback addresses"
    );
    let bystander = Arc::new(
        Client::builder(spec.addr.to_string())
            .name("fair-bystander")
            .connect()
            .await
            .context("connecting the bystander")?,
    );
    // Warm the bystander's path up before measuring.
    for _ in 0..100 {
        bystander
            .lock("fair/bystander", Mode::EX)
            .await?
            .unlock()
            .await?;
    }
    let (stop_tx, stop) = watch::channel(false);
    let quiet = tokio::spawn(cycle(bystander.clone(), stop.clone()));
    tokio::time::sleep(spec.quiet).await;
    stop_tx.send_replace(true);
    let alone = quiet.await.context("the bystander failed")?;

    let (stop_tx, stop) = watch::channel(false);
    let beside = tokio::spawn(cycle(bystander.clone(), stop));
    // The attacker runs on a runtime of its own, so that its thousand tasks never stand in
    // the way of the bystander's in this process: what is measured is the server's turn
    // taking, and the operating system's between the two runtimes' threads.
    let attacker = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("fair-attacker")
        .enable_all()
        .build()
        .context("starting the attacker's runtime")?;
    let attack_spec = spec.clone();
    let attack = attacker
        .spawn(async move { tokio::time::timeout(attack_spec.limit, attack(&attack_spec)).await });
    let attack = attack.await;
    stop_tx.send_replace(true);
    let attacked = beside.await.context("the bystander failed")?;
    attacker.shutdown_background();
    let attack = attack
        .context("the attack panicked")?
        .map_err(|_| anyhow::anyhow!("the attack took over {:?}", spec.limit))??;
    bystander.close().await.context("closing the bystander")?;
    Ok(FairRun {
        alone,
        attacked,
        attack,
    })
}

/// Locks and unlocks a key of the bystander's own until `stop` turns true.
async fn cycle(client: Arc<Client>, stop: watch::Receiver<bool>) -> Cycles {
    let mut c = Cycles {
        count: 0,
        window: Duration::ZERO,
        times: new_histogram(),
        errors: 0,
        samples: Vec::new(),
    };
    let start = Instant::now();
    while !*stop.borrow() {
        let t0 = Instant::now();
        let done = match client.lock("fair/bystander", Mode::EX).await {
            Ok(guard) => guard.unlock().await.is_ok(),
            Err(_) => false,
        };
        if done {
            c.count += 1;
            let took = t0.elapsed();
            record(&mut c.times, took);
            c.samples.push((t0, took));
        } else {
            c.errors += 1;
            if c.errors > 100 {
                break;
            }
        }
    }
    c.window = start.elapsed();
    c
}

/// One attacking connection, without any of the SDK's logic.
type Raw = Framed<TcpStream, FrameCodec<ServerMessage, ClientMessage>>;

/// Opens every attacking session, lets each pipeline its locks, and closes them.
async fn attack(spec: &FairSpec) -> Result<Attack> {
    let start = Instant::now();
    let conns: Vec<Raw> = stream::iter(0..spec.sessions)
        .map(|s| open(spec.attacker_ip, spec.addr, s))
        .buffer_unordered(CONNECT_AT_ONCE)
        .try_collect()
        .await?;
    // Every session says goodbye once all have their grants, so that the bystander's
    // cycles can be told apart by phase: taking, then releasing.
    let barrier = Arc::new(tokio::sync::Barrier::new(spec.sessions));
    let granted_at = Arc::new(std::sync::Mutex::new(start));
    let results = future::try_join_all(conns.into_iter().enumerate().map(|(s, conn)| {
        let (barrier, granted_at) = (barrier.clone(), granted_at.clone());
        async move {
            let (mut framed, counts) = flood(conn, s, spec.locks).await?;
            {
                let mut at = granted_at.lock().unwrap_or_else(|p| p.into_inner());
                *at = (*at).max(Instant::now());
            }
            barrier.wait().await;
            goodbye(&mut framed, spec.locks).await?;
            anyhow::Ok(counts)
        }
    }))
    .await?;
    let (granted, overloaded) = results.iter().fold((0, 0), |(g, o), r| (g + r.0, o + r.1));
    let all_granted = *granted_at.lock().unwrap_or_else(|p| p.into_inner());
    Ok(Attack {
        granted,
        overloaded,
        took: start.elapsed(),
        began: start,
        all_granted,
        ended: Instant::now(),
    })
}

/// A connection from `from` to `addr` with an open session.
async fn open(from: IpAddr, addr: SocketAddr, s: usize) -> Result<Raw> {
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(from, 0))?;
    let stream = socket
        .connect(addr)
        .await
        .with_context(|| format!("attacker {s} connecting"))?;
    stream.set_nodelay(true)?;
    let mut framed = Framed::new(stream, FrameCodec::default());
    framed
        .send(ClientMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: format!("fair-attacker-{s}"),
            lease_ttl_ms: 0,
            resume: None,
            token: None,
        }))
        .await?;
    match next(&mut framed).await? {
        ServerMessage::Welcome(_) => Ok(framed),
        other => bail!("attacker {s}: expected Welcome, got {other:?}"),
    }
}

/// The next message; an error if the connection closed or sent garbage.
async fn next(framed: &mut Raw) -> Result<ServerMessage> {
    match framed.next().await {
        Some(Ok(Ok(msg))) => Ok(msg),
        Some(Ok(Err(malformed))) => bail!("malformed frame from the server: {malformed}"),
        Some(Err(e)) => bail!("reading from the server: {e}"),
        None => bail!("the server closed an attacking connection"),
    }
}

/// Sends `locks` lock requests at once and reads their answers (acknowledging as it goes).
/// Returns the connection, the grants and the `Overloaded` answers.
async fn flood(mut framed: Raw, s: usize, locks: usize) -> Result<(Raw, (u64, u64))> {
    for l in 0..locks {
        let body = Request::Lock(LockRequest {
            resource: format!("fair/attacker{s:05}/lock{l:05}").into_bytes(),
            mode: dlock_proto::Mode::EX,
            flags: LockFlags::empty(),
            value: None,
            timeout_ms: None,
        });
        let id = RequestId(l as u64 + 1);
        framed.feed(ClientMessage::Request { id, body }).await?;
    }
    framed.flush().await?;
    let (mut granted, mut overloaded, mut answered) = (0, 0, 0);
    while answered < locks {
        match next(&mut framed).await? {
            ServerMessage::Event { seq, event } => {
                match event.kind {
                    EventKind::Granted { .. } => granted += 1,
                    EventKind::Rejected { .. } | EventKind::NotQueued => {}
                    _ => continue,
                }
                answered += 1;
                if answered % ACK_EVERY == 0 {
                    framed.send(ClientMessage::Ack { seq }).await?;
                }
            }
            ServerMessage::Reply { .. } => {
                // Over a rate limit: answered at once and not queued.
                overloaded += 1;
                answered += 1;
            }
            other => bail!("attacker {s}: unexpected {other:?}"),
        }
    }
    Ok((framed, (granted, overloaded)))
}

/// Says goodbye (releasing every lock of the session) and waits for the session's end.
async fn goodbye(framed: &mut Raw, locks: usize) -> Result<()> {
    let bye = RequestId(locks as u64 + 1);
    framed
        .send(ClientMessage::Request {
            id: bye,
            body: Request::Goodbye,
        })
        .await?;
    loop {
        match next(framed).await? {
            ServerMessage::Event { event, .. } if event.kind == EventKind::SessionClosed => {
                return Ok(());
            }
            _ => {}
        }
    }
}
