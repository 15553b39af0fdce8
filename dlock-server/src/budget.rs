//! The memory budget: one total (`--memory-budget`, by default half the memory this machine
//! or container has) that every limit costing memory is fitted into at start.
//!
//! Each limit has a worst-case cost per unit, and each family of limits a share of the
//! budget:
//!
//! | share | what | worst case per unit |
//! |---|---|---|
//! | 35% | connections (`--max-connections`; a per-address cap above it never binds) | [`CONNECTION_BASE`] + 2 × frame + 2 × [`OUTBOX_RESERVE`], plus [`TLS_CONNECTION`] with TLS |
//! | 10% | outboxes beyond their reserve (a pool shared by all connections) | counted twice: queued and being written |
//! | 40% | locks (`--max-locks`; resources never outnumber locks, so `--max-resources` above it never binds) | [`LOCK_BASE`] + name + value block |
//! | 10% | sessions (`--max-sessions`) | [`SESSION_BASE`] + session name, plus [`EXACTLY_ONCE_RECORD`] in a cluster |
//! | 5% | replay buffers of all sessions (a pool; over it, the session holding the most is closed) | an event is about 100 B |
//!
//! A limit whose worst case does not fit its share is lowered at start (and the server says
//! so in its log); a limit is never raised. The costs are upper bounds of what `benches/`
//! measured (an idle connected session: about 5.6 KB; a held lock with a short name: about
//! 250–300 B), so the budget is an upper bound of what the limits can cost, not a measurement
//! of what is in use.

use std::fmt;
use std::str::FromStr;

use crate::Config;

/// A connection's fixed worst case besides its buffers: its task, socket halves, codec state
/// and bookkeeping.
pub const CONNECTION_BASE: usize = 48 * 1024;

/// What TLS adds to a connection at worst: rustls's buffers (an incoming record of up to
/// 16 KiB plus its header and tag while it is decrypted, up to 16 KiB of decrypted data not
/// yet read, up to 64 KiB of encrypted data not yet written), the handshake's state and
/// certificates while it lasts, and the 4 KiB read buffer a TLS connection keeps while idle
/// (its frame reader cannot wait for readiness without one, see `stream.rs`).
pub const TLS_CONNECTION: usize = 128 * 1024;

/// Bytes of each outbox that are its own; beyond them an outbox draws on the shared pool.
pub const OUTBOX_RESERVE: usize = 64 * 1024;

/// A lock's worst case besides its name and value block: the lock, a resource of its own,
/// their index entries and queue links.
pub const LOCK_BASE: usize = 512;

/// A session's worst case besides its name: the engine's session, the server's, the maps.
pub const SESSION_BASE: usize = 2 * 1024;

/// What a session's record of its answers costs at worst in a cluster member, whose engine
/// runs with `exactly_once`: [`dlock_core::REMEMBERED_ANSWERS`] answers of at most 64 bytes
/// each (56 measured, plus the ring's slack).
pub const EXACTLY_ONCE_RECORD: usize = dlock_core::REMEMBERED_ANSWERS * 64;

/// What `--memory-budget` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MemoryBudget {
    /// Half the memory of the machine or of the container's memory limit, whichever is
    /// lower (2 GiB if neither can be read).
    #[default]
    Auto,
    /// This many bytes.
    Bytes(u64),
}

impl fmt::Display for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryBudget::Auto => f.write_str("auto"),
            MemoryBudget::Bytes(b) => write!(f, "{}", bytesize::ByteSize(*b).display().iec()),
        }
    }
}

impl FromStr for MemoryBudget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(MemoryBudget::Auto);
        }
        let size: bytesize::ByteSize = s
            .parse()
            .map_err(|e| format!("expected `auto` or a size such as 2GiB: {e}"))?;
        if size.as_u64() == 0 {
            return Err("a memory budget must be more than 0".into());
        }
        Ok(MemoryBudget::Bytes(size.as_u64()))
    }
}

/// Budget when the machine's memory cannot be read.
const FALLBACK: u64 = 2 << 30;

impl MemoryBudget {
    /// The budget in bytes on this machine.
    pub fn bytes(self) -> u64 {
        match self {
            MemoryBudget::Bytes(b) => b,
            MemoryBudget::Auto => available_memory().map_or(FALLBACK, |m| m / 2),
        }
    }
}

/// The memory this process may use: the machine's (`MemTotal`), or the cgroup's limit if
/// lower. `None` if neither can be read (not Linux, say).
pub fn available_memory() -> Option<u64> {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| parse_meminfo(&s));
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .and_then(|s| s.trim().parse::<u64>().ok());
    match (machine, cgroup) {
        (Some(m), Some(c)) => Some(m.min(c)),
        (m, c) => m.or(c),
    }
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// One limit lowered to fit the budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lowered {
    /// The flag.
    pub limit: &'static str,
    /// What was asked.
    pub from: usize,
    /// What fits.
    pub to: usize,
}

/// What [`fit`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fitted {
    /// The budget in bytes.
    pub budget: u64,
    /// The limits it lowered.
    pub lowered: Vec<Lowered>,
}

/// The worst case of one connection under `config`.
pub fn connection_cost(config: &Config) -> usize {
    let tls = if config.tls.is_some() {
        TLS_CONNECTION
    } else {
        0
    };
    CONNECTION_BASE
        + 2 * config.max_frame_len
        + 2 * OUTBOX_RESERVE.min(config.outbox_max_bytes)
        + tls
}

/// The worst case of one lock under `config`.
pub fn lock_cost(config: &Config) -> usize {
    LOCK_BASE + config.engine.max_name_len + config.engine.lvb_len
}

/// The worst case of one session under `config` (in a cluster member, with its record of
/// answers).
pub fn session_cost(config: &Config) -> usize {
    let once = if config.cluster.is_some() || config.engine.exactly_once {
        EXACTLY_ONCE_RECORD
    } else {
        0
    };
    SESSION_BASE + config.engine.max_session_name_len + once
}

/// Fits `config`'s limits into `budget` bytes (see the module docs): lowers what does not
/// fit, and the outbox and replay pools to their shares.
pub fn fit(config: &mut Config, budget: u64) -> Fitted {
    let budget_bytes = usize::try_from(budget).unwrap_or(usize::MAX);
    let share = |percent: usize| budget_bytes / 100 * percent;
    let mut lowered = Vec::new();
    let mut lower = |limit: &'static str, value: &mut usize, most: usize| {
        let most = most.max(1);
        if *value > most {
            lowered.push(Lowered {
                limit,
                from: *value,
                to: most,
            });
            *value = most;
        }
    };

    let conns = share(35) / connection_cost(config);
    lower("--max-connections", &mut config.max_connections, conns);
    // Queued and being written: each pooled byte can be held twice.
    config.outbox_pool_bytes = config.outbox_pool_bytes.min(share(10) / 2);

    let locks = share(40) / lock_cost(config);
    lower("--max-locks", &mut config.engine.max_locks, locks);

    let sessions = share(10) / session_cost(config);
    lower("--max-sessions", &mut config.engine.max_sessions, sessions);
    config.replay_pool_bytes = config.replay_pool_bytes.min(share(5));

    Fitted { budget, lowered }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_connections_cost_their_buffers_and_fit_fewer() {
        let plain = Config::default();
        let tls = Config {
            tls: Some(crate::TlsConfig {
                cert: "c".into(),
                key: "k".into(),
                client_ca: None,
            }),
            ..Config::default()
        };
        assert_eq!(
            connection_cost(&tls),
            connection_cost(&plain) + TLS_CONNECTION
        );
        let budget = 256 << 20;
        let (mut a, mut b) = (plain, tls);
        fit(&mut a, budget);
        fit(&mut b, budget);
        assert!(
            b.max_connections < a.max_connections,
            "{} vs {}",
            b.max_connections,
            a.max_connections
        );
    }

    #[test]
    fn parses_auto_and_sizes() {
        assert_eq!("auto".parse(), Ok(MemoryBudget::Auto));
        assert_eq!("512MiB".parse(), Ok(MemoryBudget::Bytes(512 << 20)));
        assert_eq!("2GiB".parse(), Ok(MemoryBudget::Bytes(2 << 30)));
        assert!("0".parse::<MemoryBudget>().is_err());
        assert!("lots".parse::<MemoryBudget>().is_err());
    }

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let text = "MemTotal:       24576000 kB\nMemFree:        1000 kB\n";
        assert_eq!(parse_meminfo(text), Some(24_576_000 * 1024));
        assert_eq!(parse_meminfo("nothing here"), None);
    }

    #[test]
    fn the_defaults_fit_a_large_budget_untouched() {
        let mut config = Config::default();
        let before = config.clone();
        let fitted = fit(&mut config, 64 << 30);
        assert!(fitted.lowered.is_empty(), "{:?}", fitted.lowered);
        assert_eq!(config.max_connections, before.max_connections);
        assert_eq!(config.engine.max_locks, before.engine.max_locks);
    }

    #[test]
    fn a_small_budget_lowers_every_family_to_its_share() {
        let mut config = Config::default();
        let budget: u64 = 256 << 20;
        let fitted = fit(&mut config, budget);
        let b = budget as usize;
        // Every family's worst case fits its share, and the shares add up to the budget.
        let conns = config.max_connections * connection_cost(&config);
        let locks = config.engine.max_locks * lock_cost(&config);
        let sessions = config.engine.max_sessions * session_cost(&config);
        let pools = 2 * config.outbox_pool_bytes + config.replay_pool_bytes;
        assert!(conns <= b / 100 * 35, "{conns}");
        assert!(locks <= b / 100 * 40, "{locks}");
        assert!(sessions <= b / 100 * 10, "{sessions}");
        assert!(conns + locks + sessions + pools <= b);
        let names: Vec<_> = fitted.lowered.iter().map(|l| l.limit).collect();
        assert!(names.contains(&"--max-connections"), "{names:?}");
        assert!(names.contains(&"--max-locks"), "{names:?}");
        for l in &fitted.lowered {
            assert!(l.to < l.from, "{l:?}");
        }
    }

    #[test]
    fn a_cluster_members_sessions_cost_their_record_of_answers() {
        let single = Config::default();
        let mut member = Config::default();
        member.engine.exactly_once = true;
        assert_eq!(
            session_cost(&member),
            session_cost(&single) + EXACTLY_ONCE_RECORD
        );
        let (mut a, mut b) = (single, member);
        fit(&mut a, 256 << 20);
        fit(&mut b, 256 << 20);
        assert!(b.engine.max_sessions < a.engine.max_sessions);
        assert!(b.engine.max_sessions * session_cost(&b) <= (256 << 20) / 100 * 10);
    }

    #[test]
    fn limits_are_never_raised() {
        let mut config = Config {
            max_connections: 3,
            ..Config::default()
        };
        config.engine.max_locks = 10;
        fit(&mut config, 64 << 30);
        assert_eq!(config.max_connections, 3);
        assert_eq!(config.engine.max_locks, 10);
    }
}
