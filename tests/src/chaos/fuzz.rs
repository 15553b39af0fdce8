//! Fuzzing without nightly: seeded random and mutation-based frame streams, against the frame
//! decoder in-process ([`fuzz_decoder`]) and against a live server child ([`run_fuzz`]).
//!
//! The live run checks that the server never panics (its log has no panic and the process is
//! still alive), that a well-behaved client keeps working throughout (one lock stays held, a
//! second loop keeps acquiring and releasing), that fuzzed sessions cannot touch the
//! well-behaved client's lock (R6), and that memory stays bounded: every fuzzed session's
//! locks are gone once its lease runs out, and the server's RSS before and after is reported
//! and bounded.
//!
//! About 650 lines on purpose: the two generators (random and mutated streams) serve both
//! targets, and the live run's checks only make sense next to what it sends.

use dlock_proto::{ConvertRequest, LockRequest, UnlockRequest};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::BytesMut;
use dlock_client::{Client, Mode};
use dlock_core::{LockFlags, LockId, RequestId, SessionId};
use dlock_proto::codec::encode_body;
use dlock_proto::{
    ClientMessage, FrameCodec, Hello, PROTOCOL_VERSION, Query, Request, Resume, ServerMessage,
};
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::codec::{Decoder, FramedRead};

use super::server_proc::{ServerProc, ServerSpec};

/// Resource names the fuzzer uses: a few, so fuzzed sessions contend with each other and
/// with the well-behaved client.
const NAMES: [&[u8]; 5] = [b"fuzz-a", b"fuzz-b", b"fuzz-keep", b"fuzz-cycle", b""];

/// Settings of a fuzz run.
#[derive(Clone, Debug)]
pub struct FuzzConfig {
    /// The executable that runs `serve`.
    pub exe: PathBuf,
    /// Number of inputs (frames or garbage chunks) sent to the live server.
    pub inputs: u64,
    /// Number of inputs fed to the decoder in-process.
    pub decoder_inputs: u64,
    /// Concurrent fuzzing connections.
    pub connections: usize,
    /// Seed.
    pub seed: u64,
    /// Largest acceptable RSS growth of the server over the run, in KiB.
    pub max_rss_growth_kib: u64,
}

impl Default for FuzzConfig {
    fn default() -> Self {
        FuzzConfig {
            exe: PathBuf::from("chaos"),
            inputs: 100_000,
            decoder_inputs: 100_000,
            connections: 8,
            seed: 1,
            max_rss_growth_kib: 128 * 1024,
        }
    }
}

/// What a fuzz run did and found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FuzzReport {
    /// Seed.
    pub seed: u64,
    /// Inputs fed to the decoder in-process.
    pub decoder_inputs: u64,
    /// Decoder inputs that panicked (hex of the first few).
    pub decoder_panics: Vec<String>,
    /// Inputs sent to the live server.
    pub live_inputs: u64,
    /// Connections the fuzzer opened.
    pub connections: u64,
    /// Frames the server sent back to fuzzing connections.
    pub frames_received: u64,
    /// Acquire/release cycles of the well-behaved client during the run.
    pub good_cycles: u64,
    /// Deadlock refusals of the well-behaved client's cycling lock (expected: fuzzed
    /// sessions wait for its long-held lock while holding the cycling one).
    pub good_deadlocks: u64,
    /// Unexpected errors of the well-behaved client (the first ten).
    pub good_errors: Vec<String>,
    /// Whether the well-behaved client's long-held lock was held throughout.
    pub keep_held: bool,
    /// Server RSS after start-up and warm-up, KiB.
    pub rss_before_kib: u64,
    /// Server RSS after the run and the fuzzed sessions' expiry, KiB.
    pub rss_after_kib: u64,
    /// Largest acceptable growth, KiB.
    pub max_rss_growth_kib: u64,
    /// Resources left on the server after the fuzzed sessions expired (only the
    /// well-behaved client's should remain).
    pub resources_left: Vec<String>,
    /// Panic lines in the server's log.
    pub server_panics: Vec<String>,
    /// Whether the server process was still running at the end.
    pub server_alive: bool,
}

impl FuzzReport {
    /// Whether every check passed.
    pub fn is_ok(&self) -> bool {
        self.decoder_panics.is_empty()
            && self.server_panics.is_empty()
            && self.server_alive
            && self.keep_held
            && self.good_errors.is_empty()
            && self.good_cycles > 0
            && self.resources_left.iter().all(|r| r == "fuzz-keep")
            && self.rss_after_kib <= self.rss_before_kib + self.max_rss_growth_kib
    }
}

impl fmt::Display for FuzzReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fuzz: seed {}; decoder: {} inputs, {} panics {:?}",
            self.seed,
            self.decoder_inputs,
            self.decoder_panics.len(),
            self.decoder_panics
        )?;
        writeln!(
            f,
            "live server: {} inputs over {} connections, {} frames back; server alive {}, panics {:?}",
            self.live_inputs,
            self.connections,
            self.frames_received,
            self.server_alive,
            self.server_panics
        )?;
        writeln!(
            f,
            "well-behaved client: {} cycles, {} deadlock refusals (R41), errors {:?}, long-held lock held throughout: {}",
            self.good_cycles, self.good_deadlocks, self.good_errors, self.keep_held
        )?;
        write!(
            f,
            "memory: server RSS {} KiB before, {} KiB after (limit +{} KiB); resources left {:?}; verdict: {}",
            self.rss_before_kib,
            self.rss_after_kib,
            self.max_rss_growth_kib,
            self.resources_left,
            if self.is_ok() { "ok" } else { "FAILED" }
        )
    }
}

/// Generates random messages and mutations of them.
pub struct FrameGen {
    rng: StdRng,
    /// Lock ids seen in the server's events (so requests can hit real locks).
    pub known_locks: Vec<LockId>,
    /// A lock of another session the fuzzer must not be able to touch.
    pub foreign_lock: Option<LockId>,
    next_request: u64,
}

impl FrameGen {
    /// A generator with `seed`.
    pub fn new(seed: u64) -> FrameGen {
        FrameGen {
            rng: StdRng::seed_from_u64(seed),
            known_locks: Vec::new(),
            foreign_lock: None,
            next_request: 1,
        }
    }

    fn mode(&mut self) -> Mode {
        Mode::ALL[self.rng.random_range(0..6)]
    }

    fn flags(&mut self) -> LockFlags {
        match self.rng.random_range(0..10) {
            0..5 => LockFlags::empty(),
            5 => LockFlags::NOQUEUE,
            6 => LockFlags::QUECVT,
            7 => LockFlags::VALBLK,
            8 => LockFlags::from_bits_retain(self.rng.random()),
            _ => LockFlags::IVVALBLK | LockFlags::VALBLK,
        }
    }

    fn lock_id(&mut self) -> LockId {
        match self.rng.random_range(0..10) {
            0..6 if !self.known_locks.is_empty() => {
                self.known_locks[self.rng.random_range(0..self.known_locks.len())]
            }
            6 if self.foreign_lock.is_some() => self.foreign_lock.unwrap_or(LockId(0)),
            _ => LockId(self.rng.random()),
        }
    }

    fn name(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..20) {
            0 => vec![b'x'; self.rng.random_range(1000..1100)],
            1 => (0..self.rng.random_range(1..40))
                .map(|_| self.rng.random())
                .collect(),
            _ => NAMES[self.rng.random_range(0..NAMES.len())].to_vec(),
        }
    }

    fn value(&mut self) -> Option<Vec<u8>> {
        match self.rng.random_range(0..4) {
            0 => Some(vec![7u8; self.rng.random_range(0..100)]),
            _ => None,
        }
    }

    fn timeout(&mut self) -> Option<u64> {
        match self.rng.random_range(0..4) {
            0 => Some(self.rng.random_range(0..500)),
            1 => Some(self.rng.random()),
            _ => None,
        }
    }

    /// A random request; ids usually increase, sometimes repeat or jump.
    pub fn request(&mut self) -> ClientMessage {
        let id = match self.rng.random_range(0..20) {
            0 => RequestId(self.rng.random()),
            1 => RequestId(self.next_request.saturating_sub(1)),
            _ => {
                self.next_request += 1;
                RequestId(self.next_request)
            }
        };
        let body = match self.rng.random_range(0..100) {
            0..35 => Request::Lock(LockRequest {
                resource: self.name(),
                mode: self.mode(),
                flags: self.flags(),
                value: self.value(),
                timeout_ms: self.timeout(),
            }),
            35..55 => Request::Convert(ConvertRequest {
                lock: self.lock_id(),
                mode: self.mode(),
                flags: self.flags(),
                value: self.value(),
                timeout_ms: self.timeout(),
            }),
            55..75 => Request::Unlock(UnlockRequest {
                lock: self.lock_id(),
                flags: self.flags(),
                value: self.value(),
            }),
            75..85 => Request::Cancel {
                lock: self.lock_id(),
            },
            85..88 => Request::Query(Query::Prefix {
                prefix: self.name(),
                limit: self.rng.random(),
                after: self.rng.random_bool(0.5).then(|| self.name()),
            }),
            88..90 => Request::Query(Query::Session {
                session: SessionId(self.rng.random()),
                after: self.rng.random_bool(0.5).then(|| self.lock_id()),
            }),
            90..93 => Request::Query(Query::Resource(self.name())),
            93..96 => Request::Ping,
            96..98 => Request::Renew,
            _ => Request::Goodbye,
        };
        ClientMessage::Request { id, body }
    }

    /// A `Hello`, usually valid, sometimes with a bad version, lease or resume.
    pub fn hello(&mut self) -> ClientMessage {
        let resume = if self.rng.random_range(0..10) == 0 {
            Some(Resume {
                session: SessionId(self.rng.random()),
                secret: self.rng.random(),
                last_seq: self.rng.random(),
            })
        } else {
            None
        };
        ClientMessage::Hello(Hello {
            protocol_version: if self.rng.random_range(0..20) == 0 {
                self.rng.random()
            } else {
                PROTOCOL_VERSION
            },
            client_name: "fuzz".into(),
            lease_ttl_ms: match self.rng.random_range(0..10) {
                0 => self.rng.random(),
                1 => 1,
                _ => self.rng.random_range(200..800),
            },
            resume,
            token: None,
        })
    }

    /// Any message.
    pub fn message(&mut self) -> ClientMessage {
        match self.rng.random_range(0..20) {
            0 => self.hello(),
            1 => ClientMessage::Ack {
                seq: self.rng.random(),
            },
            _ => self.request(),
        }
    }

    /// One input as bytes on the wire: usually a valid frame, sometimes mutated, truncated,
    /// oversized or plain garbage. The second value says whether the stream is now out of
    /// sync (the server will close the connection).
    pub fn input(&mut self) -> (Vec<u8>, bool) {
        let msg = self.message();
        let mut frame = frame_of(&msg);
        match self.rng.random_range(0..100) {
            0..88 => (frame, false),
            88..94 => {
                // Mutate the body, keep the length prefix right.
                let mut body = frame.split_off(4);
                self.mutate(&mut body);
                (frame_bytes(&body), false)
            }
            94..97 => {
                let n = self.rng.random_range(0..64);
                let garbage: Vec<u8> = (0..n).map(|_| self.rng.random()).collect();
                (frame_bytes(&garbage), false)
            }
            97..98 => {
                // A length prefix far beyond the maximum frame.
                let mut b = (u32::MAX - self.rng.random_range(0..1000))
                    .to_be_bytes()
                    .to_vec();
                b.extend_from_slice(&frame[4..]);
                (b, true)
            }
            _ => {
                // Raw bytes, out of frame.
                let n = self.rng.random_range(1..32);
                ((0..n).map(|_| self.rng.random()).collect(), true)
            }
        }
    }

    /// Flips, inserts, deletes or overwrites a few bytes.
    pub fn mutate(&mut self, b: &mut Vec<u8>) {
        for _ in 0..self.rng.random_range(1..4) {
            if b.is_empty() {
                b.push(self.rng.random());
                continue;
            }
            let i = self.rng.random_range(0..b.len());
            match self.rng.random_range(0..5) {
                0 => b[i] ^= 1 << self.rng.random_range(0..8),
                1 => b.insert(i, self.rng.random()),
                2 => {
                    b.remove(i);
                }
                3 => b[i] = [0, 0xff, 0xfb, 0xfc, 0xfd][self.rng.random_range(0..5)],
                _ => b.truncate(i),
            }
        }
    }
}

/// The wire bytes of a message: length prefix and body.
pub fn frame_of(msg: &ClientMessage) -> Vec<u8> {
    frame_bytes(&encode_body(msg).unwrap_or_default())
}

fn frame_bytes(body: &[u8]) -> Vec<u8> {
    let mut b = u32::try_from(body.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes()
        .to_vec();
    b.extend_from_slice(body);
    b
}

/// Feeds `inputs` generated inputs to the server-side and client-side decoders in-process,
/// each alone and as a stream; returns the inputs (hex) that panicked.
pub fn fuzz_decoder(seed: u64, inputs: u64) -> Vec<String> {
    let mut g = FrameGen::new(seed);
    let mut panics = Vec::new();
    let mut stream = BytesMut::new();
    let mut server_side: FrameCodec<ClientMessage, ServerMessage> = FrameCodec::default();
    let mut client_side: FrameCodec<ServerMessage, ClientMessage> = FrameCodec::default();
    for _ in 0..inputs {
        let (bytes, _) = g.input();
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut one = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = server_side.decode(&mut one) {}
            let mut one = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = client_side.decode(&mut one) {}
            let _ = dlock_proto::codec::decode_body::<ClientMessage>(&bytes);
            let _ = dlock_proto::codec::decode_body::<ServerMessage>(&bytes);
            stream.extend_from_slice(&bytes);
            loop {
                match server_side.decode(&mut stream) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => {
                        // Out of sync: a real server closes the connection here.
                        stream.clear();
                        server_side = FrameCodec::default();
                        break;
                    }
                }
            }
            if stream.len() > 1 << 20 {
                stream.clear();
            }
        }));
        if ok.is_err() && panics.len() < 10 {
            panics.push(bytes.iter().map(|b| format!("{b:02x}")).collect());
        }
    }
    panics
}

/// Fuzzes a live server child; see the module docs.
pub async fn run_fuzz(cfg: FuzzConfig) -> Result<FuzzReport> {
    let mut report = FuzzReport {
        seed: cfg.seed,
        max_rss_growth_kib: cfg.max_rss_growth_kib,
        ..FuzzReport::default()
    };
    let decoder = {
        let (seed, n) = (cfg.seed, cfg.decoder_inputs);
        tokio::task::spawn_blocking(move || fuzz_decoder(seed, n))
    };

    let dir = tempfile::Builder::new().prefix("dlock-fuzz-").tempdir()?;
    let log_file = dir.path().join("server.log");
    let spec = ServerSpec {
        exe: cfg.exe.clone(),
        data_dir: dir.path().join("data"),
        audit_log: dir.path().join("audit.jsonl"),
        log_file: log_file.clone(),
        args: vec!["--log-level".into(), "error".into()],
    };
    let mut server = ServerProc::start(spec).await?;
    let addr = server.addr();

    // The well-behaved client: one lock held throughout, one loop acquiring and releasing.
    let good = Client::builder(addr.to_string())
        .name("fuzz-good")
        .lease_ttl(Duration::from_secs(5))
        .connect()
        .await
        .context("connecting the well-behaved client")?;
    let keep = good.lock("fuzz-keep", Mode::EX).await?;
    let keep_token = keep.token();
    let stop = Arc::new(AtomicU64::new(0));
    let cycles = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let deadlocks = Arc::new(AtomicU64::new(0));
    let cycler = {
        let (good, stop, cycles, errors, deadlocks) = (
            good.clone(),
            stop.clone(),
            cycles.clone(),
            errors.clone(),
            deadlocks.clone(),
        );
        tokio::spawn(async move {
            while stop.load(Ordering::SeqCst) == 0 {
                let r = tokio::time::timeout(Duration::from_secs(10), async {
                    let g = good.lock("fuzz-cycle", Mode::PW).await?;
                    g.unlock().await
                })
                .await;
                match r {
                    Ok(Ok(())) => {
                        cycles.fetch_add(1, Ordering::SeqCst);
                    }
                    // Fuzzed sessions queue behind the long-held lock while holding
                    // fuzz-cycle: a real deadlock, and this request is the youngest on the
                    // cycle (R41). Expected; try again.
                    Ok(Err(dlock_client::Error::Deadlock)) => {
                        deadlocks.fetch_add(1, Ordering::SeqCst);
                    }
                    other => {
                        let mut e = errors.lock().unwrap_or_else(|e| e.into_inner());
                        if e.len() < 10 {
                            e.push(format!("{other:?}"));
                        }
                    }
                }
            }
        })
    };
    // Warm up so that the "before" RSS includes the runtime's steady state.
    for _ in 0..50 {
        let g = good.lock("fuzz-warm", Mode::EX).await?;
        g.unlock().await?;
    }
    report.rss_before_kib = server.rss_kib().unwrap_or(0);

    let budget = Arc::new(AtomicU64::new(cfg.inputs));
    let sent = Arc::new(AtomicU64::new(0));
    let conns = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for c in 0..cfg.connections {
        let mut g = FrameGen::new(cfg.seed.wrapping_mul(31).wrapping_add(c as u64));
        g.foreign_lock = Some(keep.lock_id());
        let (budget, sent, conns, received) = (
            budget.clone(),
            sent.clone(),
            conns.clone(),
            received.clone(),
        );
        tasks.spawn(async move { fuzz_connection(addr, g, budget, sent, conns, received).await });
    }
    let limit = Duration::from_secs(300);
    tokio::time::timeout(limit, async { while tasks.join_next().await.is_some() {} })
        .await
        .context("the fuzzing connections did not finish in time")?;
    report.live_inputs = sent.load(Ordering::SeqCst);
    report.connections = conns.load(Ordering::SeqCst);
    report.frames_received = received.load(Ordering::SeqCst);

    // Fuzzed sessions have leases under a second (or were refused): wait for every lock of
    // theirs to go, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = good.query_prefix("fuzz", 100).await?;
        let names: Vec<String> = left
            .iter()
            .map(|r| String::from_utf8_lossy(&r.name).into_owned())
            .filter(|n| n != "fuzz-cycle")
            .collect();
        // The empty name is invalid, so it never appears.
        let others = good.query_prefix("", 100).await?;
        let extra: Vec<String> = others
            .iter()
            .map(|r| String::from_utf8_lossy(&r.name).into_owned())
            .filter(|n| !n.starts_with("fuzz"))
            .collect();
        report.resources_left = names.into_iter().chain(extra).collect();
        // Fuzzed sessions lock fuzz-keep too (an NL lock is granted beside the EX one):
        // they are gone only once nothing but the well-behaved client's lock is left there.
        let only_keep = good.query_resource("fuzz-keep").await?.is_some_and(|r| {
            r.granted
                .iter()
                .chain(&r.converting)
                .chain(&r.waiting)
                .all(|l| l.session == good.session_id())
        });
        if (only_keep && report.resources_left.iter().all(|r| r == "fuzz-keep"))
            || tokio::time::Instant::now() >= deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(1, Ordering::SeqCst);
    let _ = tokio::time::timeout(Duration::from_secs(15), cycler).await;
    report.good_cycles = cycles.load(Ordering::SeqCst);
    report.good_deadlocks = deadlocks.load(Ordering::SeqCst);
    report.good_errors = errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let info = good.query_resource("fuzz-keep").await?;
    report.keep_held = !keep.is_lost()
        && keep.token() == keep_token
        && info.is_some_and(|r| {
            r.granted.len() == 1
                && r.granted[0].lock == keep.lock_id()
                && r.granted[0].session == good.session_id()
        });
    report.rss_after_kib = server.rss_kib().unwrap_or(u64::MAX);
    report.server_alive = server.exited().is_none();
    let _ = keep.unlock().await;
    let _ = good.close().await;
    server.kill().await;
    report.server_panics = std::fs::read_to_string(&log_file)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("panicked"))
        .take(10)
        .map(str::to_owned)
        .collect();
    report.decoder_inputs = cfg.decoder_inputs;
    report.decoder_panics = decoder.await.context("decoder fuzzing task")?;
    Ok(report)
}

/// One fuzzing connection after another until the shared budget of inputs is spent.
async fn fuzz_connection(
    addr: SocketAddr,
    mut g: FrameGen,
    budget: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    conns: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
) {
    let seen: Arc<Mutex<Vec<LockId>>> = Arc::new(Mutex::new(Vec::new()));
    while budget.load(Ordering::SeqCst) > 0 {
        let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await
        else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        conns.fetch_add(1, Ordering::SeqCst);
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = stream.into_split();
        // Read and decode everything the server sends, remembering lock ids.
        let reader = {
            let (seen, received) = (seen.clone(), received.clone());
            tokio::spawn(async move {
                let mut frames =
                    FramedRead::new(rd, FrameCodec::<ServerMessage, ClientMessage>::default());
                while let Some(Ok(msg)) = frames.next().await {
                    received.fetch_add(1, Ordering::Relaxed);
                    if let Ok(ServerMessage::Event { event, .. }) = msg
                        && let Some(lock) = event.lock
                    {
                        let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                        if s.len() >= 64 {
                            s.remove(0);
                        }
                        s.push(lock);
                    }
                }
            })
        };
        g.known_locks = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut out = Vec::new();
        if g.rng.random_range(0..10) < 8 {
            out.extend_from_slice(&frame_of(&g.hello()));
        }
        let per_conn = g.rng.random_range(1..400);
        let mut closed = false;
        for _ in 0..per_conn {
            if budget
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
                .is_err()
            {
                break;
            }
            sent.fetch_add(1, Ordering::Relaxed);
            let (bytes, desync) = g.input();
            out.extend_from_slice(&bytes);
            if out.len() > 8 * 1024 || desync {
                if wr.write_all(&out).await.is_err() {
                    closed = true;
                    break;
                }
                out.clear();
            }
            if desync {
                break;
            }
            if g.rng.random_range(0..50) == 0 {
                g.known_locks = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
            }
        }
        if !closed && !out.is_empty() {
            let _ = wr.write_all(&out).await;
        }
        // Close abruptly (no Goodbye) most of the time; the session lives out its lease.
        let _ = wr.shutdown().await;
        drop(wr);
        let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    }
}
