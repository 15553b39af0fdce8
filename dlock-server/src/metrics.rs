//! What the server counts for `/metrics`, kept cheap on the hot path.
//!
//! Two kinds of counters, so that no request takes a lock or shares a cache line it need
//! not: what connections see ([`NetMetrics`]: bytes, frame errors, refusals they answer
//! themselves) are relaxed atomics shared by every connection task; what the core task sees
//! (engine events, request service and queue wait times, busy time) are plain integers
//! owned by the core task ([`crate::core_task`]), copied out when `/metrics` asks for them
//! through the core's inbox, together with a census of the lock table.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters of the connection layer, shared by the accept loop and every connection.
#[derive(Debug, Default)]
pub(crate) struct NetMetrics {
    /// Connections open now (admitted ones; refusals in progress are not counted).
    pub(crate) open: AtomicU64,
    /// Connections admitted since start.
    pub(crate) accepted: AtomicU64,
    /// Bytes read from clients.
    pub(crate) bytes_in: AtomicU64,
    /// Bytes written to clients.
    pub(crate) bytes_out: AtomicU64,
    /// Frame errors that closed a connection, by kind.
    pub(crate) frame_errors: [AtomicU64; FrameError::ALL.len()],
    /// Requests and connections refused by the connection layer, by reason.
    pub(crate) refused: [AtomicU64; NetRefusal::ALL.len()],
}

/// A frame error that closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// A body that does not decode.
    Malformed,
    /// A frame over `--max-frame-len`.
    TooLarge,
    /// A frame not finished within `--frame-timeout`.
    Timeout,
    /// No `Hello` within `--handshake-timeout`.
    HandshakeTimeout,
    /// A first frame that is not a `Hello`.
    ExpectedHello,
    /// A `Hello` of another protocol version.
    VersionMismatch,
    /// A TLS handshake that failed (a client certificate refused, no TLS at all).
    TlsHandshake,
    /// A TLS handshake not finished within `--handshake-timeout`.
    TlsHandshakeTimeout,
}

impl FrameError {
    /// Every kind, in label order.
    pub(crate) const ALL: [FrameError; 8] = [
        FrameError::Malformed,
        FrameError::TooLarge,
        FrameError::Timeout,
        FrameError::HandshakeTimeout,
        FrameError::ExpectedHello,
        FrameError::VersionMismatch,
        FrameError::TlsHandshake,
        FrameError::TlsHandshakeTimeout,
    ];

    /// The `kind` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            FrameError::Malformed => "malformed",
            FrameError::TooLarge => "too_large",
            FrameError::Timeout => "frame_timeout",
            FrameError::HandshakeTimeout => "handshake_timeout",
            FrameError::ExpectedHello => "expected_hello",
            FrameError::VersionMismatch => "version_mismatch",
            FrameError::TlsHandshake => "tls_handshake",
            FrameError::TlsHandshakeTimeout => "tls_handshake_timeout",
        }
    }
}

/// A refusal answered by the connection layer, without the core task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NetRefusal {
    /// A request over the connection's `--max-request-rate`.
    Overloaded,
    /// A connection over `--max-connections`.
    TooManyConnections,
    /// A connection over `--max-connections-per-peer`.
    TooManyConnectionsFromPeer,
    /// A second `Hello` on a connection.
    UnexpectedHello,
    /// A `Hello` without a valid token (`--auth-file`).
    Unauthenticated,
}

impl NetRefusal {
    /// Every reason, in label order.
    pub(crate) const ALL: [NetRefusal; 5] = [
        NetRefusal::Overloaded,
        NetRefusal::TooManyConnections,
        NetRefusal::TooManyConnectionsFromPeer,
        NetRefusal::UnexpectedHello,
        NetRefusal::Unauthenticated,
    ];

    /// The `reason` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            NetRefusal::Overloaded => "overloaded",
            NetRefusal::TooManyConnections => "too_many_connections",
            NetRefusal::TooManyConnectionsFromPeer => "too_many_connections_from_peer",
            NetRefusal::UnexpectedHello => "unexpected_hello",
            NetRefusal::Unauthenticated => "unauthenticated",
        }
    }
}

impl NetMetrics {
    /// Counts a frame error.
    pub(crate) fn frame_error(&self, e: FrameError) {
        self.frame_errors[e as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refusal.
    pub(crate) fn refused(&self, r: NetRefusal) {
        self.refused[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds to the bytes read.
    pub(crate) fn read(&self, n: u64) {
        if n > 0 {
            self.bytes_in.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Adds to the bytes written.
    pub(crate) fn written(&self, n: u64) {
        if n > 0 {
            self.bytes_out.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// A connection admitted: counted open until the guard is dropped.
    pub(crate) fn opened(self: &std::sync::Arc<Self>) -> OpenConnection {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.clone())
    }

    /// Reads a counter.
    pub(crate) fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// One open connection in [`NetMetrics::open`].
#[derive(Debug)]
pub(crate) struct OpenConnection(std::sync::Arc<NetMetrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Upper bounds (seconds) of the histogram buckets: 50 µs to 60 s, roughly ×2.5 apart.
pub(crate) const BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0, 15.0, 60.0,
];

/// A latency histogram owned by one task (no sharing, no atomics): counts per bucket of
/// [`BUCKETS`] plus one for larger values, the sum and the count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Hist {
    /// Observations per bucket (not cumulative); the last is above every bound.
    pub(crate) buckets: [u64; BUCKETS.len() + 1],
    /// Sum of the observations, in nanoseconds.
    pub(crate) sum_ns: u64,
    /// Number of observations.
    pub(crate) count: u64,
}

impl Hist {
    /// Records one observation.
    pub(crate) fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i] += 1;
        self.sum_ns = self
            .sum_ns
            .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hist_puts_each_observation_in_its_bucket() {
        let mut h = Hist::default();
        h.observe(Duration::from_micros(50)); // on a bound: that bucket
        h.observe(Duration::from_micros(51));
        h.observe(Duration::from_secs(61)); // above every bound
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[BUCKETS.len()], 1);
        assert_eq!(h.count, 3);
        assert_eq!(h.sum_ns, 50_000 + 51_000 + 61_000_000_000);
    }

    #[test]
    fn open_connections_are_counted_until_dropped() {
        let m = std::sync::Arc::new(NetMetrics::default());
        let a = m.opened();
        let b = m.opened();
        drop(a);
        assert_eq!(
            (NetMetrics::get(&m.open), NetMetrics::get(&m.accepted)),
            (1, 2)
        );
        drop(b);
        assert_eq!(NetMetrics::get(&m.open), 0);
    }
}
