//! What the server checks and sets up before it serves: the configuration's consistency,
//! limits fitted to the memory budget and the open-file limit, the data directory's lock,
//! the restart grace, warnings about an exposed listener, and, in a cluster, this member's
//! Raft node.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    Config, Security, ServerError, audit_replica, budget, cluster, core_task, floor, grace,
    replay_capacity_for,
};

/// The shortest value block a server may be configured with (R24: at least 32 bytes).
pub const MIN_VALUE_LEN: usize = 32;

/// The shortest name limit a server may be configured with (R1: at least 64 bytes).
pub const MIN_NAME_LEN: usize = 64;

/// Room a frame needs besides the longest name and value block (or session name) a client
/// may send: ids, mode, flags, timeout, the encoding, a `Hello`'s token.
pub const FRAME_HEADROOM: usize = 1024;

/// Descriptors kept for what is not a client connection: the listeners, the data directory's
/// files and the audit log, a cluster member's peer connections (at most
/// [`dlock_raft::accept::MAX_PEER_CONNECTIONS`] accepted, and a few of its own to each peer),
/// HTTP connections (64 by default), standard streams.
pub(crate) const FD_RESERVE: u64 = 256;

/// The process's open-file limit (`ulimit -n`), if it has one.
pub(crate) fn open_file_limit() -> Option<u64> {
    let (soft, _) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).ok()?;
    (soft != nix::sys::resource::RLIM_INFINITY).then_some(soft)
}

/// Lowers [`Config::max_connections`] (and the per-address limit with it) so that every
/// connection it admits gets a descriptor, [`FD_RESERVE`] kept aside: over the open-file
/// limit, a newcomer would hang unaccepted instead of being refused with
/// `TooManyConnections`. Returns the new limit if it was lowered.
pub(crate) fn fit_to_open_files(config: &mut Config, limit: Option<u64>) -> Option<usize> {
    let room = usize::try_from(limit?.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
    if config.max_connections <= room {
        return None;
    }
    config.max_connections = room.max(1);
    config.max_connections_per_peer = config.max_connections_per_peer.min(config.max_connections);
    Some(config.max_connections)
}

/// Takes the data directory for this server, waiting up to two seconds for a previous server
/// on it (one just stopped in the same process, or still exiting) to let go.
pub(crate) async fn lock_data_dir(dir: &std::path::Path) -> Result<floor::DirLock, ServerError> {
    for _ in 0..100 {
        if let Some(file) = floor::lock_dir(dir)? {
            return Ok(file);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Err(ServerError::DataDirInUse {
        path: dir.to_owned(),
    })
}

/// Logs a warning if the directory `dir`, which holds `what`, gives its group or others any
/// access: the server creates its directories 0700 and its files 0600, but leaves the mode
/// of a directory that exists already as it is.
pub(crate) fn warn_if_open(dir: &std::path::Path, what: &str) {
    if let Some(mode) = floor::open_to_others(dir) {
        warn!(
            dir = %dir.display(),
            mode = %format!("{mode:04o}"),
            "directory open to other users: it holds {what}; the server creates its directories \
             0700 but does not change the mode of one that exists"
        );
    }
}

/// Checks a configuration before anything is bound or opened: every limit at least 1, the
/// value block and name limits at least what the rule book asks, every request the limits
/// allow fitting in a frame, and lease bounds that hold the default lease.
pub(crate) fn validate(config: &Config) -> Result<(), ServerError> {
    // Each limit is named by its flag (and its `Config` field): a limit of 0 would leave a
    // server that refuses every client, which is never what was meant.
    let e = &config.engine;
    let positive = [
        (
            "--max-connections (max_connections)",
            config.max_connections,
        ),
        (
            "--max-connections-per-peer (max_connections_per_peer)",
            config.max_connections_per_peer,
        ),
        ("--max-sessions (engine.max_sessions)", e.max_sessions),
        (
            "--max-sessions-per-peer (max_sessions_per_peer)",
            config.max_sessions_per_peer,
        ),
        ("--max-locks (engine.max_locks)", e.max_locks),
        (
            "--max-locks-per-session (engine.max_locks_per_session)",
            e.max_locks_per_session,
        ),
        (
            "--max-locks-per-peer (max_locks_per_peer)",
            config.max_locks_per_peer.unwrap_or(1),
        ),
        ("--max-resources (engine.max_resources)", e.max_resources),
        (
            "--max-deadlock-search (engine.max_deadlock_search)",
            e.max_deadlock_search,
        ),
        ("--max-frame-len (max_frame_len)", config.max_frame_len),
        (
            "--outbox-max-bytes (outbox_max_bytes)",
            config.outbox_max_bytes,
        ),
        (
            "--grace-queue-capacity (grace_queue_capacity)",
            config.grace_queue_capacity,
        ),
        (
            "--http-max-connections (http_max_connections)",
            config.http_max_connections,
        ),
        ("inbox_capacity", config.inbox_capacity),
        ("max_batch", config.max_batch),
        ("replay_capacity", config.replay_capacity),
        ("max_query_resources", config.max_query_resources),
    ];
    for (name, value) in positive {
        if value == 0 {
            return Err(ServerError::Config(format!("{name} must be at least 1")));
        }
    }
    let timeouts = [
        (
            "--handshake-timeout (handshake_timeout)",
            config.handshake_timeout,
        ),
        ("--frame-timeout (frame_timeout)", config.frame_timeout),
        (
            "--slow-reader-timeout (slow_reader_timeout)",
            config.slow_reader_timeout,
        ),
    ];
    for (name, value) in timeouts {
        if value.is_zero() {
            return Err(ServerError::Config(format!(
                "{name} must be longer than 0: with none, every client would be cut off at once"
            )));
        }
    }
    if config.max_frame_len > u32::MAX as usize {
        return Err(ServerError::Config("max_frame_len must fit in u32".into()));
    }
    if let Some(cc) = &config.cluster {
        cc.raft_listen().map_err(ServerError::Config)?;
    }
    // R24: a value block of a fixed length of at least 32 bytes; R1: names of at least 64.
    if e.lvb_len < MIN_VALUE_LEN {
        return Err(ServerError::Config(format!(
            "value block length {} bytes is below the minimum of {MIN_VALUE_LEN}",
            e.lvb_len
        )));
    }
    if e.max_name_len < MIN_NAME_LEN {
        return Err(ServerError::Config(format!(
            "maximum name length {} bytes is below the minimum of {MIN_NAME_LEN}",
            e.max_name_len
        )));
    }
    // Every request the limits allow must fit in a frame, or a client could not send it.
    let needed = (e.max_name_len.saturating_add(e.lvb_len))
        .max(e.max_session_name_len)
        .saturating_add(FRAME_HEADROOM);
    if config.max_frame_len < needed {
        return Err(ServerError::Config(format!(
            "maximum frame length {} bytes cannot carry a request with a name of {} bytes \
             and a value block of {} bytes: it must be at least {needed}",
            config.max_frame_len, e.max_name_len, e.lvb_len
        )));
    }
    let max_lease = grace::MAX_LEASE;
    if u128::from(e.max_ttl_ms) > max_lease.as_millis() {
        return Err(ServerError::Config(format!(
            "--max-lease-ttl {} ms is longer than a day: a crashed client's locks would be held \
             that long, and a restart would wait that long",
            e.max_ttl_ms
        )));
    }
    if let grace::RestartGrace::Fixed(d) = config.restart_grace
        && d > max_lease
    {
        return Err(ServerError::Config(format!(
            "--restart-grace {} is longer than a day, the longest lease a server grants",
            humantime::format_duration(d)
        )));
    }
    if e.min_ttl_ms > e.max_ttl_ms {
        return Err(ServerError::Config(format!(
            "--min-lease-ttl {} ms exceeds --max-lease-ttl {} ms",
            e.min_ttl_ms, e.max_ttl_ms
        )));
    }
    let default_ms = config.default_lease_ttl.as_millis();
    if default_ms < u128::from(e.min_ttl_ms) || default_ms > u128::from(e.max_ttl_ms) {
        return Err(ServerError::Config(format!(
            "--lease-ttl (the default lease) {default_ms} ms is outside --min-lease-ttl {} ms \
             .. --max-lease-ttl {} ms",
            e.min_ttl_ms, e.max_ttl_ms
        )));
    }
    Ok(())
}
/// Lowers the limits that do not fit the memory budget or the open-file limit, saying so,
/// and warns of a replay capacity below a session's burst. Returns the budget in bytes.
pub(crate) fn fit_limits(config: &mut Config) -> u64 {
    let budget_bytes = config.memory_budget.bytes();
    let fitted = budget::fit(config, budget_bytes);
    for l in &fitted.lowered {
        let (limit, asked, fits) = (l.limit, l.from, l.to);
        let what = "limit lowered to fit the memory budget (see --memory-budget)";
        match config.memory_budget {
            // Defaults sized to the machine are news, not a problem.
            budget::MemoryBudget::Auto => info!(limit, asked, fits, "{what}"),
            budget::MemoryBudget::Bytes(_) => warn!(limit, asked, fits, "{what}"),
        }
    }
    if let Some(fits) = fit_to_open_files(config, open_file_limit()) {
        warn!(
            limit = "--max-connections",
            fits,
            "limit lowered to fit the open-file limit (raise `ulimit -n`, or LimitNOFILE= in a systemd unit)"
        );
    }
    let burst = replay_capacity_for(config.engine.max_locks_per_session);
    if config.replay_capacity < burst {
        warn!(
            replay_capacity = config.replay_capacity,
            max_locks_per_session = config.engine.max_locks_per_session,
            needs = burst,
            "the replay capacity is below twice the locks a session may hold: a session \
             within its limits can be closed by one burst of grants and notifications"
        );
    }
    fitted.budget
}

/// The recovery grace of `grace_len` from `start` (none if zero), with warnings when it
/// cannot cover every lease the previous run may have granted: `lease_record` holds the
/// longest it recorded, `assume_ms` what is assumed when it recorded none (`previous`).
pub(crate) fn restart_grace(
    grace_len: Duration,
    lease_record: &grace::LeaseRecord,
    previous: grace::Previous,
    assume_ms: u64,
    start: Instant,
) -> Option<core_task::Grace> {
    if grace_len.is_zero() {
        if previous != grace::Previous::None {
            warn!(
                recorded_lease_ttl_ms = lease_record.persisted(),
                "restart grace disabled: clients of the previous run may still believe they \
                 hold locks that are granted again now"
            );
        }
        return None;
    }
    if previous == grace::Previous::Unrecorded {
        warn!(
            assumed_lease_ttl_ms = assume_ms,
            "the previous run did not record its longest lease; assuming the configured \
             maximum (set --restart-grace to override)"
        );
    }
    let recorded = Duration::from_millis(lease_record.persisted());
    if grace_len < recorded {
        warn!(
            grace = ?grace_len,
            recorded_lease_ttl = ?recorded,
            "restart grace is shorter than the longest lease of the previous run"
        );
    }
    let wall = std::time::SystemTime::now() + grace_len;
    info!(
        grace = ?grace_len,
        "recovery grace until {}: waiting out leases of the previous run",
        humantime::format_rfc3339_millis(wall)
    );
    Some(core_task::Grace::new(
        start + grace_len,
        grace_len >= recorded,
    ))
}

/// What to say of a rules file (`has_rules`) on a server that authenticates nobody: every
/// client is anonymous, so only the rules' `*` entry applies, and no named identity or
/// admin ever matches. `None` when that is not the case.
pub(crate) fn rules_warning(has_rules: bool, authenticates: bool) -> Option<&'static str> {
    (has_rules && !authenticates).then_some(
        "--auth-rules without --auth-file or --tls-client-ca: no client is authenticated, so \
         every one is anonymous and only the rules' \"*\" entry applies to it; the identities \
         and admins the rules name never match, and the HTTP API answers without a token",
    )
}

/// Warns, loudly, of a listener on a non-loopback address without authentication or TLS.
pub(crate) fn warn_if_exposed(listener: &TcpListener, security: &Security) {
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    if addr.ip().is_loopback() {
        return;
    }
    if !security.authenticates() {
        warn!(
            listen = %addr,
            "LISTENING ON A NON-LOOPBACK ADDRESS WITHOUT AUTHENTICATION: anyone who can \
             reach this port can take and inspect every lock and read every value block; \
             see --auth-file, --tls-client-ca and --auth-rules"
        );
    }
    if !security.tls() {
        warn!(
            listen = %addr,
            "LISTENING ON A NON-LOOPBACK ADDRESS WITHOUT TLS: tokens, resume secrets, lock \
             names and value blocks cross the network in clear text; see --tls-cert"
        );
    }
}

/// Opens this member's Raft node in `<data dir>/raft`, listens for its peers, forms the
/// cluster if asked to, and starts the leader's duties and the proposer.
pub(crate) async fn start_cluster(
    cc: &cluster::ClusterConfig,
    config: &Config,
    tasks: &mut JoinSet<()>,
    token: CancellationToken,
) -> Result<(core_task::ClusterLink, dlock_raft::Raft), ServerError> {
    let raft_addr = cc.raft_listen().map_err(ServerError::Config)?;
    let raft_listener = TcpListener::bind(raft_addr).await.map_err(|e| {
        ServerError::Config(format!(
            "cannot listen for peers on {raft_addr} (--raft-listen or --peers, node {}): {e}",
            cc.node_id
        ))
    })?;
    let (feed_tx, feed_rx) = mpsc::channel(config.inbox_capacity);
    // A new leader knows nothing of what its predecessor answered: the engine recognises
    // re-sent requests itself (HA rule 5).
    let engine = dlock_core::Config {
        exactly_once: true,
        ..config.engine.clone()
    };
    let raft_dir = config.data_dir.join("raft");
    warn_if_open(
        &raft_dir,
        "this member's Raft log and snapshot, with every session's resume secret (files an \
         earlier version of the server created in it may be readable too: chmod -R go= it)",
    );
    // Opened before the node, which creates the log: a directory without one is guarded.
    let guard = dlock_raft::RejoinGuard::open(&raft_dir)
        .map_err(|e| ServerError::Config(format!("cannot write to {}: {e}", raft_dir.display())))?;
    let mut options = dlock_raft::NodeOptions::new(cc.node_id, &raft_dir);
    options.rejoin = guard.clone();
    options.engine = engine.clone();
    options.feed = Some(feed_tx);
    options.peer_addrs = cluster::peer_addresses(cc);
    options.peer_secret = match &cc.secret_file {
        Some(path) => Some(
            dlock_raft::PeerSecret::from_file(path)
                .map_err(|e| ServerError::Config(format!("--cluster-secret-file: {e}")))?,
        ),
        None => {
            warn!(
                raft_listen = %raft_addr,
                "the peer port has no authentication: anyone who reaches it can take part in \
                 the cluster (give every member the same --cluster-secret-file)"
            );
            None
        }
    };
    if let Some(n) = cc.snapshot_every {
        dlock_raft::snapshot_every(&mut options.raft, n);
    }
    if let Some(audit) = &config.audit_log {
        // Every member records what it applies (see `audit_replica`).
        let audit = audit_replica::ReplicaAudit::open(audit.clone(), cc.node_id)?;
        options.auditor = Some(std::sync::Arc::new(std::sync::Mutex::new(audit)));
    }
    let peer_secret = options.peer_secret.clone();
    let (raft, replica) = dlock_raft::open_node(options)
        .await
        .map_err(|e| ServerError::Config(format!("cannot open the Raft node: {e}")))?;
    let peer_port = std::sync::Arc::new(dlock_raft::PeerPortStats::default());
    tasks.spawn(guard.clone().watch(raft.clone(), token.clone()));
    tasks.spawn(dlock_raft::serve_peers_counted(
        raft_listener,
        raft.clone(),
        guard.clone(),
        peer_secret,
        peer_port.clone(),
        token.clone(),
    ));
    // A node with a log or a vote belongs to a cluster already: `--init` is then ignored,
    // without asking openraft (which would log its refusal as an error).
    let initialized = raft.is_initialized().await.unwrap_or(false);
    if cc.init && initialized {
        info!("--init: ignored, this node already belongs to a cluster");
    } else if cc.init {
        match raft.initialize(cc.members.clone()).await {
            Ok(()) => info!(members = cc.members.len(), "cluster formed"),
            Err(e) => {
                info!(reason = %e, "--init: not forming the cluster (this node already belongs to one)")
            }
        }
    }
    let sequencer =
        dlock_raft::Sequencer::new(cc.node_id, raft.clone(), replica, cc.failover_grace)
            .with_config(engine)
            .with_peer_port(peer_port)
            .with_rejoin_guard(guard.clone());
    tasks.spawn(sequencer.clone().run(token.clone(), |_| {}));
    // A member taken out of the membership keeps running: it says so, once, at WARN.
    tasks.spawn(dlock_raft::watch_standing(
        cc.node_id,
        raft.clone(),
        guard,
        token.clone(),
    ));
    let (proposals, proposals_rx) = mpsc::channel(config.inbox_capacity);
    tasks.spawn(cluster::propose(sequencer.clone(), proposals_rx, token));
    info!(
        node_id = cc.node_id,
        peers = %cc.members.iter().map(|(id, m)| format!("{id}={m}")).collect::<Vec<_>>().join(","),
        failover_grace = ?cc.failover_grace,
        "cluster member starting"
    );
    let link = core_task::ClusterLink {
        sequencer,
        proposals,
        feed: feed_rx,
    };
    Ok((link, raft))
}

#[cfg(test)]
mod tests {
    use super::rules_warning;

    #[test]
    fn rules_on_a_server_that_authenticates_nobody_are_warned_of() {
        let warning = rules_warning(true, false).expect("a warning");
        assert!(warning.contains("no client is authenticated"), "{warning}");
        assert_eq!(rules_warning(true, true), None);
        assert_eq!(rules_warning(false, false), None);
    }
}
