//! Rate-limited logging of what clients do wrong: malformed or oversized frames, another
//! protocol on the lock port, handshakes that never come, failed authentication, clients
//! that do not read.
//!
//! Each is worth a line when it is rare, but anyone who can connect can make thousands a
//! second, and a line per connection would flood the log (and the disk under it). So of each
//! kind the first [`BURST`] in a window of [`WINDOW_MS`] are logged at WARN, the rest at
//! DEBUG, and the count of those is logged at WARN once the window is over, naming the metric
//! that counts them all:
//!
//! ```text
//! WARN … and 4990 more malformed frames in the last 10 s, logged at DEBUG (see dlock_frame_errors_total{kind="malformed"})
//! ```
//!
//! The limiter is a few relaxed atomics per kind, touched only when a client misbehaves: good
//! traffic never reaches it. Under a race a window may log one line more than [`BURST`];
//! exactness is not worth a lock here.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Complaints of one kind logged at WARN per window; the rest go to DEBUG and are summed up.
pub(crate) const BURST: u64 = 5;

/// The window of [`BURST`], in milliseconds.
pub(crate) const WINDOW_MS: u64 = 10_000;

/// What a client did wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Complaint {
    /// A frame whose body does not decode.
    Malformed,
    /// A frame over `--max-frame-len` (also HTTP or TLS sent to the lock port).
    TooLarge,
    /// A frame not finished within `--frame-timeout`.
    FrameTimeout,
    /// No `Hello` within `--handshake-timeout`.
    HandshakeTimeout,
    /// A first frame that is not a `Hello`.
    ExpectedHello,
    /// A `Hello` of another protocol version.
    VersionMismatch,
    /// A `Hello` without a valid token.
    Unauthenticated,
    /// A client that does not read what it is sent.
    SlowReader,
    /// A TLS handshake not finished within `--handshake-timeout`.
    TlsHandshakeTimeout,
    /// A TLS handshake that failed.
    TlsHandshake,
    /// A new session refused because its lease could not be recorded (a full disk).
    LeaseRecord,
}

impl Complaint {
    /// Every kind, in the order of [`Limiter`]'s slots.
    const ALL: [Complaint; 11] = [
        Complaint::Malformed,
        Complaint::TooLarge,
        Complaint::FrameTimeout,
        Complaint::HandshakeTimeout,
        Complaint::ExpectedHello,
        Complaint::VersionMismatch,
        Complaint::Unauthenticated,
        Complaint::SlowReader,
        Complaint::TlsHandshakeTimeout,
        Complaint::TlsHandshake,
        Complaint::LeaseRecord,
    ];

    /// What many of them are, for the summary.
    fn plural(self) -> &'static str {
        match self {
            Complaint::Malformed => "malformed frames",
            Complaint::TooLarge => "frames too large (or another protocol on the lock port)",
            Complaint::FrameTimeout => "frames not completed in time",
            Complaint::HandshakeTimeout => "connections without a Hello in time",
            Complaint::ExpectedHello => "connections whose first frame is not a Hello",
            Complaint::VersionMismatch => "connections of another protocol version",
            Complaint::Unauthenticated => "unauthenticated clients",
            Complaint::SlowReader => "clients closed for not reading",
            Complaint::TlsHandshakeTimeout => "TLS handshakes not completed in time",
            Complaint::TlsHandshake => "failed TLS handshakes",
            Complaint::LeaseRecord => "sessions refused for want of a lease record",
        }
    }

    /// Where they are all counted, for the summary.
    fn metric(self) -> &'static str {
        match self {
            Complaint::Malformed => "dlock_frame_errors_total{kind=\"malformed\"}",
            Complaint::TooLarge => "dlock_frame_errors_total{kind=\"too_large\"}",
            Complaint::FrameTimeout => "dlock_frame_errors_total{kind=\"frame_timeout\"}",
            Complaint::HandshakeTimeout => "dlock_frame_errors_total{kind=\"handshake_timeout\"}",
            Complaint::ExpectedHello => "dlock_frame_errors_total{kind=\"expected_hello\"}",
            Complaint::VersionMismatch => "dlock_frame_errors_total{kind=\"version_mismatch\"}",
            Complaint::Unauthenticated => {
                "dlock_rejected_requests_total{reason=\"unauthenticated\"}"
            }
            Complaint::LeaseRecord => {
                "dlock_rejected_requests_total{reason=\"storage_unavailable\"}"
            }
            Complaint::TlsHandshakeTimeout => {
                "dlock_frame_errors_total{kind=\"tls_handshake_timeout\"}"
            }
            Complaint::TlsHandshake => "dlock_frame_errors_total{kind=\"tls_handshake\"}",
            Complaint::SlowReader => "the DEBUG log",
        }
    }
}

/// The state of one kind in the current window.
#[derive(Debug)]
struct Slot {
    /// The current window: a time in ms divided by [`WINDOW_MS`].
    window: AtomicU64,
    /// Complaints in this window so far.
    seen: AtomicU64,
    /// Of those, the ones logged at DEBUG only.
    quiet: AtomicU64,
}

/// Counts complaints per kind and window and says which to log at WARN. Time comes from the
/// caller (milliseconds from any fixed origin), so tests need no clock.
#[derive(Debug)]
pub(crate) struct Limiter {
    slots: [Slot; Complaint::ALL.len()],
}

impl Limiter {
    /// No complaints yet.
    pub(crate) const fn new() -> Limiter {
        Limiter {
            slots: [const {
                Slot {
                    window: AtomicU64::new(0),
                    seen: AtomicU64::new(0),
                    quiet: AtomicU64::new(0),
                }
            }; Complaint::ALL.len()],
        }
    }

    /// Counts one complaint of `kind` at `now_ms`: whether to log it at WARN, and the number
    /// logged at DEBUG only in the window that has just ended, if it ended now with some.
    pub(crate) fn admit(&self, kind: Complaint, now_ms: u64) -> (bool, Option<u64>) {
        let slot = &self.slots[kind as usize];
        let ended = Self::roll(slot, now_ms);
        let warn = slot.seen.fetch_add(1, Relaxed) < BURST;
        if !warn {
            slot.quiet.fetch_add(1, Relaxed);
        }
        (warn, ended)
    }

    /// Ends the windows that are over at `now_ms`: the kinds with complaints logged at DEBUG
    /// only in them, and how many.
    pub(crate) fn flush(&self, now_ms: u64) -> Vec<(Complaint, u64)> {
        Complaint::ALL
            .into_iter()
            .filter_map(|kind| Some((kind, Self::roll(&self.slots[kind as usize], now_ms)?)))
            .collect()
    }

    /// Starts a new window in `slot` if `now_ms` is past its own; the quiet count of the one
    /// that ended, if not 0. Of racing callers one wins and reports it.
    fn roll(slot: &Slot, now_ms: u64) -> Option<u64> {
        let window = now_ms / WINDOW_MS;
        let current = slot.window.load(Relaxed);
        if window <= current
            || slot
                .window
                .compare_exchange(current, window, Relaxed, Relaxed)
                .is_err()
        {
            return None;
        }
        slot.seen.store(0, Relaxed);
        let quiet = slot.quiet.swap(0, Relaxed);
        (quiet > 0).then_some(quiet)
    }
}

/// The process's limiter: connections of every server in it share it.
static LIMITER: Limiter = Limiter::new();

/// Milliseconds since the process's first complaint or summary.
fn now_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn summarize(kind: Complaint, quiet: u64) {
    tracing::warn!(
        "… and {quiet} more {} in the last {} s, logged at DEBUG (see {})",
        kind.plural(),
        WINDOW_MS / 1000,
        kind.metric()
    );
}

/// Counts one complaint of `kind`: `true` if it is to be logged at WARN, `false` for DEBUG.
/// Use [`complain!`] rather than this.
pub(crate) fn admit(kind: Complaint) -> bool {
    let (warn, ended) = LIMITER.admit(kind, now_ms());
    if let Some(quiet) = ended {
        summarize(kind, quiet);
    }
    warn
}

/// Logs the summaries of the windows that have ended, every [`WINDOW_MS`] until `shutdown`,
/// so that the count of a burst that stopped is not held back until the next complaint.
pub(crate) async fn summaries(shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_millis(WINDOW_MS));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {
                for (kind, quiet) in LIMITER.flush(now_ms()) {
                    summarize(kind, quiet);
                }
            }
        }
    }
}

/// `complain!(Complaint::Malformed, %peer, "…")`: logs as `tracing::warn!` would, or at DEBUG
/// once [`BURST`] complaints of that kind have been logged in this window.
macro_rules! complain {
    ($kind:expr, $($arg:tt)+) => {
        if $crate::complaints::admit($kind) {
            ::tracing::warn!($($arg)+)
        } else {
            ::tracing::debug!($($arg)+)
        }
    };
}
pub(crate) use complain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_per_window_at_warn_then_one_summary() {
        let limiter = Limiter::new();
        let warned = (0..1_000)
            .filter(|i| limiter.admit(Complaint::Malformed, *i).0)
            .count();
        assert_eq!(warned, BURST as usize);
        // Another kind has its own burst.
        assert_eq!(limiter.admit(Complaint::TooLarge, 999), (true, None));
        // Nothing to report while the window lasts.
        assert_eq!(limiter.flush(WINDOW_MS - 1), vec![]);
        // The next window: the first complaint reports the one before, and is logged.
        assert_eq!(
            limiter.admit(Complaint::Malformed, WINDOW_MS),
            (true, Some(1_000 - BURST))
        );
        assert_eq!(limiter.admit(Complaint::Malformed, WINDOW_MS + 1).1, None);
    }

    #[test]
    fn flush_reports_a_burst_that_stopped_once() {
        let limiter = Limiter::new();
        for _ in 0..BURST + 3 {
            limiter.admit(Complaint::Unauthenticated, 7);
        }
        for _ in 0..BURST {
            limiter.admit(Complaint::SlowReader, 7);
        }
        // The slow readers all went to WARN: nothing to sum up for them.
        assert_eq!(
            limiter.flush(3 * WINDOW_MS + 5),
            vec![(Complaint::Unauthenticated, 3)]
        );
        assert_eq!(limiter.flush(4 * WINDOW_MS), vec![]);
        // A new window has a new burst.
        assert_eq!(
            limiter.admit(Complaint::Unauthenticated, 4 * WINDOW_MS),
            (true, None)
        );
    }
}
