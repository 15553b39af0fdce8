//! The peer listener's admission: at most [`MAX_PEER_CONNECTIONS`] peer connections at once,
//! warnings about refused ones at most once a second, and the counters behind the
//! `dlock_cluster_peer_connections*` metrics ([`PeerPortStats`]).
//!
//! A member's peer port answers whoever reaches it (a secret is proven only once a
//! connection is open), so a flood of connections to it must cost the member a bounded
//! number of file descriptors and log lines: the descriptors it needs for its clients, its
//! log and its snapshots come from the same open-file limit. A connection over the limit is
//! closed at once, before anything is read from it. Members keep a few connections to each
//! other (one per openraft client, and a few idle ones for heartbeat rounds; a follower of
//! an idle 3-member cluster answers two or three), far below the limit, and a connection
//! that stays silent is closed after
//! [`PEER_IDLE_LIMIT`](crate::network::PEER_IDLE_LIMIT), so that peers gone without a word
//! do not hold places for good.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The most peer connections a member answers at once, handshakes in progress included.
pub const MAX_PEER_CONNECTIONS: usize = 64;

/// At most one warning of a kind in this long.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(1);

/// Why a member closed a peer connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerClose {
    /// It came when the member already answered [`MAX_PEER_CONNECTIONS`]: closed unread.
    Limit,
    /// It failed the greeting or the proof of the cluster secret (or sent neither within
    /// [`HANDSHAKE_WAIT`](crate::peer_auth::HANDSHAKE_WAIT)), or sent a frame the peer
    /// protocol does not allow there.
    Refused,
    /// It stayed silent for [`PEER_IDLE_LIMIT`](crate::network::PEER_IDLE_LIMIT).
    Idle,
}

impl PeerClose {
    /// Every reason, in the order of [`PeerPortCounts::closed`].
    pub const ALL: [PeerClose; 3] = [PeerClose::Limit, PeerClose::Refused, PeerClose::Idle];

    /// The reason's name in metrics: `limit`, `refused`, `idle`.
    pub fn label(self) -> &'static str {
        match self {
            PeerClose::Limit => "limit",
            PeerClose::Refused => "refused",
            PeerClose::Idle => "idle",
        }
    }
}

/// A peer port's counters, shared by its listener and its connections (and read by the
/// server's metrics): connections answered now, and those the member closed, by reason.
/// Connections the other side closes, or that fail, are not counted as closed.
#[derive(Debug, Default)]
pub struct PeerPortStats {
    open: AtomicU64,
    closed: [AtomicU64; PeerClose::ALL.len()],
}

/// What a [`PeerPortStats`] held when it was read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerPortCounts {
    /// Peer connections answered now (at most [`MAX_PEER_CONNECTIONS`]).
    pub open: u64,
    /// Peer connections this member closed since it started, by [`PeerClose`] in the order
    /// of [`PeerClose::ALL`].
    pub closed: [u64; PeerClose::ALL.len()],
}

impl PeerPortCounts {
    /// Connections closed for `why`.
    pub fn closed(&self, why: PeerClose) -> u64 {
        self.closed[why as usize]
    }
}

impl PeerPortStats {
    /// The counters as they are now.
    pub fn counts(&self) -> PeerPortCounts {
        PeerPortCounts {
            open: self.open.load(Ordering::Relaxed),
            closed: std::array::from_fn(|i| self.closed[i].load(Ordering::Relaxed)),
        }
    }

    /// Counts a connection closed for `why`.
    pub(crate) fn count_close(&self, why: PeerClose) {
        self.closed[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection answered until the returned guard is dropped.
    fn answering(self: &Arc<Self>) -> Answering {
        self.open.fetch_add(1, Ordering::Relaxed);
        Answering(Arc::clone(self))
    }
}

/// One answered connection in [`PeerPortStats::open`], until dropped.
struct Answering(Arc<PeerPortStats>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Lets a warning through at most once per period, counting those held back.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    /// When a warning last went through, and how many were held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    /// A throttle letting one warning through per `every`.
    pub(crate) fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// The state (a panic elsewhere cannot leave it half-changed: it is two plain values).
    fn state(&self) -> std::sync::MutexGuard<'_, (Option<Instant>, u64)> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Some(held back since the last one)` if a warning may be logged at `now`; `None` (and
    /// it is counted) if not.
    pub(crate) fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = self.state();
        match state.0 {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                state.1 += 1;
                None
            }
            _ => {
                state.0 = Some(now);
                Some(std::mem::take(&mut state.1))
            }
        }
    }

    /// The count of warnings held back in a period that ended with none let through after
    /// them, once (and the next warning goes through at once); `None` if there are none or
    /// the period has not ended. Without this, the size of a burst that stopped would be
    /// told only with the next warning, if one ever came.
    pub(crate) fn take_ended(&self, now: Instant) -> Option<u64> {
        let mut state = self.state();
        match state.0 {
            Some(last) if state.1 > 0 && now.saturating_duration_since(last) >= self.every => {
                state.0 = None;
                Some(std::mem::take(&mut state.1))
            }
            _ => None,
        }
    }
}

/// Logs, every [`WARN_EVERY`] until `shutdown`, how many warnings each of `throttles` held
/// back in a period that has ended (its `&str` says what they were about). One task for all
/// of a listener's throttles.
pub(crate) async fn report_held_back(
    throttles: Vec<(Arc<Throttle>, &'static str)>,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(WARN_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {
                for (throttle, what) in &throttles {
                    if let Some(not_logged) = throttle.take_ended(Instant::now()) {
                        tracing::warn!(not_logged, "{what} (not logged one by one)");
                    }
                }
            }
        }
    }
}

/// Accepts connections on `listener` until `shutdown` is cancelled and runs `handle` on
/// each in a task of its own, at most `max` at once: a connection over that is closed at
/// once. A connection's task ends when `handle`'s future does, or at `shutdown`. `stats`
/// counts the connections answered and those closed over the limit; `over` throttles the
/// warnings about the latter.
pub(crate) async fn accept_bounded<F, Fut>(
    listener: TcpListener,
    max: usize,
    stats: Arc<PeerPortStats>,
    over: Arc<Throttle>,
    shutdown: CancellationToken,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a peer connection failed");
                // Out of file descriptors and the like: let the condition pass.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Counted first, so that whoever sees it closed sees it counted.
            stats.count_close(PeerClose::Limit);
            drop(stream);
            if let Some(not_logged) = over.admit(Instant::now()) {
                tracing::warn!(
                    %peer,
                    max,
                    not_logged,
                    "peer connections at their limit: a new one closed at once"
                );
            }
            continue;
        };
        stream.set_nodelay(true).ok();
        let conn = handle(stream, peer);
        let shutdown = shutdown.clone();
        let answering = stats.answering();
        tokio::spawn(async move {
            let _slot = slot;
            let _answering = answering;
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = conn => {}
            }
            tracing::debug!(%peer, "peer connection closed");
        });
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;

    use super::*;

    #[test]
    fn a_throttle_lets_one_warning_a_period_through_and_counts_the_rest() {
        let t = Throttle::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(t.admit(t0), Some(0));
        assert_eq!(t.admit(t0 + Duration::from_millis(500)), None);
        assert_eq!(t.admit(t0 + Duration::from_millis(999)), None);
        assert_eq!(t.admit(t0 + Duration::from_secs(1)), Some(2));
        assert_eq!(t.admit(t0 + Duration::from_millis(1500)), None);
        assert_eq!(t.admit(t0 + Duration::from_secs(3)), Some(1));
    }

    #[test]
    fn a_throttle_tells_what_it_held_back_once_the_period_ends() {
        let t = Throttle::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(t.take_ended(at(5_000)), None, "nothing held back");
        assert_eq!(t.admit(t0), Some(0));
        assert_eq!(t.take_ended(at(2_000)), None, "nothing held back yet");
        assert_eq!(t.admit(at(100)), None);
        assert_eq!(t.admit(at(200)), None);
        assert_eq!(t.take_ended(at(999)), None, "the period is not over");
        assert_eq!(t.take_ended(at(1_000)), Some(2));
        assert_eq!(t.take_ended(at(3_000)), None, "told once");
        // The next warning goes through at once, with nothing held back before it.
        assert_eq!(t.admit(at(1_001)), Some(0));
        assert_eq!(t.admit(at(1_002)), None);
        // A warning let through tells the count itself.
        assert_eq!(t.admit(at(2_001)), Some(1));
        assert_eq!(t.take_ended(at(9_000)), None);
    }

    /// Reads until the connection closes; what came first (empty if nothing did).
    async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[tokio::test]
    async fn a_connection_over_the_limit_is_closed_unanswered_until_a_place_frees() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (started, mut starts) = mpsc::unbounded_channel();
        let (ended, mut ends) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let stats = Arc::new(PeerPortStats::default());
        // Each handled connection is greeted, then held until its client closes it (on this
        // test's one thread, its task ends in the same poll as it says so).
        tokio::spawn(accept_bounded(
            listener,
            2,
            Arc::clone(&stats),
            Arc::new(Throttle::new(WARN_EVERY)),
            shutdown.clone(),
            move |mut stream, peer| {
                let (started, ended) = (started.clone(), ended.clone());
                async move {
                    started.send(peer).unwrap();
                    stream.write_all(b"hello").await.unwrap();
                    until_closed(&mut stream).await;
                    ended.send(peer).unwrap();
                }
            },
        ));
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let mut hello = [0u8; 5];
            c.read_exact(&mut hello).await.unwrap();
            assert_eq!(&hello, b"hello");
            held.push(c);
        }
        let counts = stats.counts();
        assert_eq!((counts.open, counts.closed), (2, [0, 0, 0]));
        // A third: closed without a word (a handled one would read the greeting here), and
        // never handled.
        let mut third = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 5];
        let read = third.read(&mut buf).await;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert_eq!(stats.counts().closed(PeerClose::Limit), 1);
        // One of the two goes; its place takes the next connection.
        let gone = held.pop().unwrap();
        let gone_addr = gone.local_addr().unwrap();
        drop(gone);
        assert_eq!(ends.recv().await, Some(gone_addr));
        assert_eq!(stats.counts().open, 1);
        let mut next = TcpStream::connect(addr).await.unwrap();
        let mut hello = [0u8; 5];
        next.read_exact(&mut hello).await.unwrap();
        let handled: Vec<SocketAddr> = std::iter::from_fn(|| starts.try_recv().ok()).collect();
        assert_eq!(handled.len(), 3, "{handled:?}");
        assert!(!handled.contains(&third.local_addr().unwrap()));
        let counts = stats.counts();
        assert_eq!((counts.open, counts.closed), (2, [1, 0, 0]));
        shutdown.cancel();
    }
}
