//! `/metrics`: the core task's counters and census and the connection layer's counters,
//! encoded with prometheus-client in the OpenMetrics text format (which Prometheus reads).
//!
//! A registry is built per scrape from a snapshot: the hot path only adds to integers it
//! owns or to relaxed atomics, and scrapes are rare.
//!
//! Two scrapes list everything in the same order, so that a diff of them shows only what
//! changed: metrics in the order registered, a family's series sorted by their labels
//! ([`Sorted`]), and the labels of a series sorted by name.
//!
//! On a cluster member, the `dlock_cluster_*` gauges say what this member knows of the
//! cluster, read from openraft's metrics at the scrape ([`register_cluster`]); a server
//! that runs alone has none of them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use dlock_core::Mode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

use super::{HttpError, HttpState};
use crate::core_task::{CORE_REJECT_LABELS, REQUEST_KINDS};
use crate::metrics::{BUCKETS, FrameError, Hist, NetMetrics, NetRefusal};
use crate::msg::{CoreSnapshot, StatusAnswer, StatusQuery};
use dlock_proto::status::Role;
use dlock_raft::{ClusterStatus, PeerClose};

/// The content type of the OpenMetrics text format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `/metrics`.
pub(super) async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    match state.ask(StatusQuery::Metrics).await {
        Ok(StatusAnswer::Metrics(snap)) => {
            let cluster = state.cluster.as_ref().map(dlock_raft::Sequencer::status);
            match encode(&snap, &state.net, cluster.as_ref()) {
                Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
                Err(e) => HttpError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal error: the metrics could not be encoded: {e}"),
                )
                .into_response(),
            }
        }
        Ok(_) => HttpError::unexpected_answer().into_response(),
        Err(e) => e.into_response(),
    }
}

/// A histogram snapshot, encoded as a Prometheus histogram.
#[derive(Debug)]
struct HistSnapshot(Hist);

impl EncodeMetric for HistSnapshot {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let h = &self.0;
        // Bucket counts as observed (not cumulative): the encoder adds them up.
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(h.buckets.iter().copied())
            .collect();
        let sum = h.sum_ns as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, h.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

fn gauge(v: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    g
}

/// `dlock_cluster_leader_id` when the member knows no leader (node ids are never negative).
const NO_LEADER: i64 = -1;

type Labels = Vec<(&'static str, String)>;

/// A family of series by label set, written in label order. prometheus-client's `Family`
/// keeps its series in a hash map, whose order differs from one scrape (one `Family`) to
/// the next.
#[derive(Debug)]
struct Sorted<M>(BTreeMap<Labels, M>);

impl<M: Default> Sorted<M> {
    fn new() -> Sorted<M> {
        Sorted(BTreeMap::new())
    }

    /// The series of `labels` (in any order: they are sorted by name), created at its
    /// default if new.
    fn get_or_create(&mut self, mut labels: Labels) -> &M {
        labels.sort_unstable();
        self.0.entry(labels).or_default()
    }
}

impl<M> EncodeMetric for Sorted<M>
where
    M: EncodeMetric + TypedMetric + std::fmt::Debug,
{
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (labels, metric) in &self.0 {
            metric.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The metrics text for one scrape; `cluster`: what this member knows of its cluster, `None`
/// on a server that runs alone.
pub(crate) fn encode(
    snap: &CoreSnapshot,
    net: &NetMetrics,
    cluster: Option<&ClusterStatus>,
) -> Result<String, std::fmt::Error> {
    let get = NetMetrics::get;
    let s = &snap.stats;
    let c = &snap.census;
    let mut r = Registry::with_prefix("dlock");

    r.register(
        "ready",
        "1 when locks are granted, 0 during the restart grace",
        gauge(u64::from(snap.unready.is_none())),
    );
    r.register(
        "connections",
        "Open client connections",
        gauge(get(&net.open)),
    );
    r.register(
        "connections_accepted",
        "Client connections admitted since start",
        counter(get(&net.accepted)),
    );
    r.register("sessions", "Live sessions", gauge(c.sessions));
    r.register(
        "resources",
        "Resources with at least one lock",
        gauge(c.resources),
    );
    let mut locks = Sorted::<Gauge>::new();
    for (state, counts) in [
        ("granted", &c.granted),
        ("converting", &c.converting),
        ("waiting", &c.waiting),
    ] {
        for m in Mode::ALL {
            let labels = vec![("state", state.to_owned()), ("mode", m.to_string())];
            locks
                .get_or_create(labels)
                .set(i64::try_from(counts[m.index()]).unwrap_or(i64::MAX));
        }
    }
    r.register(
        "locks",
        "Locks by state and mode (granted mode; requested mode when converting or waiting)",
        locks,
    );
    r.register(
        "waiters",
        "Queued requests: converting and waiting locks",
        gauge(c.queued()),
    );

    r.register(
        "grants",
        "Locks and conversions granted, at once or after queueing",
        counter(s.grants),
    );
    r.register(
        "converts",
        "Conversion requests received",
        counter(s.requests[1]),
    );
    r.register("unlocks", "Locks released by unlock", counter(s.unlocks));
    r.register("cancels", "Queued requests cancelled", counter(s.cancels));
    r.register(
        "timeouts",
        "Queued requests that timed out",
        counter(s.timeouts),
    );
    r.register(
        "deadlocks",
        "Requests refused as deadlock victims",
        counter(s.deadlocks),
    );
    r.register(
        "not_queued",
        "NOQUEUE requests not granted at once",
        counter(s.not_queued),
    );
    r.register(
        "lease_expiries",
        "Sessions ended because their lease ran out",
        counter(s.lease_expiries),
    );
    r.register(
        "sessions_opened",
        "Sessions opened since start",
        counter(s.sessions_opened),
    );
    let mut requests = Sorted::<Counter>::new();
    for (kind, n) in REQUEST_KINDS.iter().zip(s.requests) {
        requests
            .get_or_create(vec![("kind", (*kind).to_owned())])
            .inc_by(n);
    }
    r.register(
        "requests",
        "Client requests received by the lock engine, by kind",
        requests,
    );

    r.register_with_unit(
        "queue_wait",
        "Time from a request being queued to its grant",
        Unit::Seconds,
        HistSnapshot(s.queue_wait.clone()),
    );
    r.register_with_unit(
        "core_wakeup",
        "Time the lock engine's task spent on one wake-up: handling what was ready, the due tick, and delivering what it produced (every other client waits meanwhile)",
        Unit::Seconds,
        HistSnapshot(s.wakeup.clone()),
    );
    r.register_with_unit(
        "request_service",
        "Time from a request's arrival on its connection to the end of its handling by the lock engine",
        Unit::Seconds,
        HistSnapshot(s.service.clone()),
    );

    let mut frame_errors = Sorted::<Counter>::new();
    for e in FrameError::ALL {
        let n = get(&net.frame_errors[e as usize]);
        frame_errors
            .get_or_create(vec![("kind", e.label().to_owned())])
            .inc_by(n);
    }
    r.register(
        "frame_errors",
        "Frames or handshakes that closed a connection, by kind",
        frame_errors,
    );

    let mut rejected = Sorted::<Counter>::new();
    for why in NetRefusal::ALL {
        let n = get(&net.refused[why as usize]);
        rejected
            .get_or_create(vec![("reason", why.label().to_owned())])
            .inc_by(n);
    }
    for why in CORE_REJECT_LABELS {
        rejected
            .get_or_create(vec![("reason", why.to_owned())])
            .inc_by(0);
    }
    for (why, n) in &s.rejected {
        rejected
            .get_or_create(vec![("reason", (*why).to_owned())])
            .inc_by(*n);
    }
    r.register(
        "rejected_requests",
        "Requests, sessions and connections refused, by reason",
        rejected,
    );

    r.register_with_unit(
        "received",
        "Bytes read from clients",
        Unit::Bytes,
        counter(get(&net.bytes_in)),
    );
    r.register_with_unit(
        "sent",
        "Bytes written to clients",
        Unit::Bytes,
        counter(get(&net.bytes_out)),
    );
    r.register(
        "floor_write_failures",
        "Failed writes of the fencing-token floor (a full or failing disk under --data-dir)",
        counter(snap.floor_write_failures),
    );
    r.register(
        "deadlock_search_steps",
        "Queued requests and holders examined by deadlock detection (its cost; each search is bounded)",
        counter(snap.deadlock_search_steps),
    );
    let busy = Counter::<f64, AtomicU64>::default();
    busy.inc_by(s.busy_ns as f64 / 1e9);
    r.register_with_unit(
        "core_busy",
        "Time the lock engine's task spent working",
        Unit::Seconds,
        busy,
    );
    if let Some(c) = cluster {
        register_cluster(r.sub_registry_with_prefix("cluster"), c);
    }

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &r)?;
    Ok(text)
}

/// The `dlock_cluster_*` gauges of a member whose openraft metrics say `c`, in `r` (the
/// `dlock_cluster` prefix).
///
/// Everything is as this member knows it: a partitioned old leader still says it leads until
/// it hears of a higher term, which is why [`Role::Leader`] is reported with the term (a
/// newer leader has a higher one). The applied index trails the commit index by the entries
/// on their way to the state machine, and the last log index leads it by those not yet on a
/// majority. The per-follower lag is there on the leader only (only
/// it tracks what the others hold), one series per other member: it grows as entries are
/// written that the follower does not acknowledge, so an unreachable follower of an idle
/// cluster shows no lag until something is written.
fn register_cluster(r: &mut Registry, c: &ClusterStatus) {
    r.register(
        "term",
        "The Raft term this member is in (it rises with every election)",
        gauge(c.term),
    );
    r.register(
        "leader",
        "1 if this member is the leader of its term, 0 otherwise",
        gauge(u64::from(c.role == Role::Leader)),
    );
    let leader_id: Gauge = Gauge::default();
    leader_id.set(
        c.leader
            .map_or(NO_LEADER, |id| i64::try_from(id).unwrap_or(i64::MAX)),
    );
    r.register(
        "leader_id",
        "Node id of the leader as this member knows it, -1 while it knows none",
        leader_id,
    );
    r.register(
        "members",
        "Voting members in this member's membership configuration",
        gauge(c.voters as u64),
    );
    r.register(
        "last_log_index",
        "Index of the last entry in this member's Raft log",
        gauge(c.last_log_index),
    );
    r.register(
        "commit_index",
        "Index of the last entry this member knows to be held by a majority",
        gauge(c.committed_index),
    );
    r.register(
        "applied_index",
        "Index of the last entry this member applied to its lock table",
        gauge(c.applied_index),
    );
    r.register(
        "peer_connections",
        "Peer connections this member answers now (it takes at most 64 at once)",
        gauge(c.peer_port.open),
    );
    let mut closed = Sorted::<Counter>::new();
    for why in PeerClose::ALL {
        closed
            .get_or_create(vec![("reason", why.label().to_owned())])
            .inc_by(c.peer_port.closed(why));
    }
    r.register(
        "peer_connections_closed",
        "Peer connections this member closed, by reason: limit (over the most it answers at \
         once, closed unread), refused (a failed greeting or proof of the cluster secret, or a \
         frame the peer protocol does not allow), idle (silent for 60 s)",
        closed,
    );
    if c.role == Role::Leader {
        let mut lag = Sorted::<Gauge>::new();
        for (id, matched) in c.matched.iter().filter(|(id, _)| **id != c.id) {
            let behind = c.last_log_index.saturating_sub(matched.unwrap_or(0));
            lag.get_or_create(vec![("node", id.to_string())])
                .set(i64::try_from(behind).unwrap_or(i64::MAX));
        }
        r.register_with_unit(
            "follower_lag",
            "On the leader: entries of its log each other member is not known to hold",
            Unit::Other("entries".to_owned()),
            lag,
        );
        let mut silence = Sorted::<Gauge<f64, AtomicU64>>::new();
        for (id, heard) in c.heard.iter().filter(|(id, _)| **id != c.id) {
            if let Some(d) = heard {
                silence
                    .get_or_create(vec![("node", id.to_string())])
                    .set(d.as_secs_f64());
            }
        }
        r.register_with_unit(
            "follower_silence",
            "On the leader: how long ago each other member last answered a heartbeat or an \
             append (no sample: not yet in this term); over a second, it is down or cut off, whatever \
             its lag says",
            Unit::Seconds,
            silence,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    fn text(c: &ClusterStatus) -> String {
        let mut r = Registry::with_prefix("dlock");
        register_cluster(r.sub_registry_with_prefix("cluster"), c);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).expect("encodes");
        text
    }

    fn status(role: Role, leader: Option<u64>) -> ClusterStatus {
        ClusterStatus {
            id: 1,
            members: BTreeMap::new(),
            voters: 3,
            learners: std::collections::BTreeSet::new(),
            role,
            standing: dlock_proto::status::Standing::Voter,
            leader,
            term: 4,
            leading: role == Role::Leader,
            last_log_index: 20,
            committed_index: 19,
            applied_index: 18,
            matched: BTreeMap::new(),
            heard: BTreeMap::new(),
            peer_port: dlock_raft::PeerPortCounts {
                open: 2,
                closed: [5, 1, 0],
            },
        }
    }

    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn a_leader_reports_each_followers_lag() {
        let mut c = status(Role::Leader, Some(1));
        c.matched = BTreeMap::from([(1, Some(20)), (2, Some(17)), (3, None)]);
        c.heard = BTreeMap::from([(2, Some(Duration::from_millis(40))), (3, None)]);
        let t = text(&c);
        assert_eq!(
            samples(&t),
            [
                "dlock_cluster_term 4",
                "dlock_cluster_leader 1",
                "dlock_cluster_leader_id 1",
                "dlock_cluster_members 3",
                "dlock_cluster_last_log_index 20",
                "dlock_cluster_commit_index 19",
                "dlock_cluster_applied_index 18",
                "dlock_cluster_peer_connections 2",
                r#"dlock_cluster_peer_connections_closed_total{reason="idle"} 0"#,
                r#"dlock_cluster_peer_connections_closed_total{reason="limit"} 5"#,
                r#"dlock_cluster_peer_connections_closed_total{reason="refused"} 1"#,
                r#"dlock_cluster_follower_lag_entries{node="2"} 3"#,
                r#"dlock_cluster_follower_lag_entries{node="3"} 20"#,
                r#"dlock_cluster_follower_silence_seconds{node="2"} 0.04"#,
            ]
        );
        assert!(t.contains("# TYPE dlock_cluster_follower_lag_entries gauge\n"));
        assert!(t.contains("# UNIT dlock_cluster_follower_lag_entries entries\n"));
    }

    #[test]
    fn a_follower_without_a_leader_says_minus_one_and_has_no_lag() {
        let t = text(&status(Role::Candidate, None));
        assert_eq!(
            samples(&t),
            [
                "dlock_cluster_term 4",
                "dlock_cluster_leader 0",
                "dlock_cluster_leader_id -1",
                "dlock_cluster_members 3",
                "dlock_cluster_last_log_index 20",
                "dlock_cluster_commit_index 19",
                "dlock_cluster_applied_index 18",
                "dlock_cluster_peer_connections 2",
                r#"dlock_cluster_peer_connections_closed_total{reason="idle"} 0"#,
                r#"dlock_cluster_peer_connections_closed_total{reason="limit"} 5"#,
                r#"dlock_cluster_peer_connections_closed_total{reason="refused"} 1"#,
            ]
        );
        assert!(!t.contains("lag"));
    }

    /// The samples of family `name` (each line up to its value).
    fn series<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        samples(text)
            .into_iter()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .collect()
    }

    #[test]
    fn scrapes_list_series_and_labels_in_sorted_order() {
        let snap = CoreSnapshot {
            stats: crate::core_task::stats::CoreStats::default(),
            census: dlock_core::Census::default(),
            unready: None,
            floor_write_failures: 0,
            deadlock_search_steps: 0,
        };
        let net = NetMetrics::default();
        let first = encode(&snap, &net, None).expect("encodes");
        // Every scrape builds its families anew: the same text each time.
        for _ in 0..5 {
            assert_eq!(encode(&snap, &net, None).expect("encodes"), first);
        }
        // One series per refusal reason (more than 20): in label order.
        let rejected = series(&first, "dlock_rejected_requests_total");
        assert!(rejected.len() > 20, "{rejected:?}");
        let mut sorted = rejected.clone();
        sorted.sort_unstable();
        assert_eq!(rejected, sorted);
        // Labels within a series by name: mode before state; series by mode, then state.
        let locks = series(&first, "dlock_locks");
        assert_eq!(locks.len(), 18, "{locks:?}");
        assert_eq!(locks[0], r#"dlock_locks{mode="CR",state="converting"} 0"#);
        assert_eq!(locks[1], r#"dlock_locks{mode="CR",state="granted"} 0"#);
        let mut sorted = locks.clone();
        sorted.sort_unstable();
        assert_eq!(locks, sorted);
    }
}
