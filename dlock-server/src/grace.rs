//! The restart grace period: after a restart the server waits out the leases of its previous
//! lifetime before it grants anything.
//!
//! A client of the previous lifetime may still believe it holds its locks until its local
//! lease runs out (at most one lease TTL after its last confirmed renewal, which came before
//! the crash). The engine starts empty, so without a grace the restarted server could at once
//! grant such a lock to someone else. To know how long to wait, the server records the
//! longest lease it may have granted in the file `max-lease-ttl` of the data directory (next
//! to the fencing floor), written ahead: the record is raised (fsynced) before a session with
//! a longer lease is confirmed to its client. It is raised a quarter beyond the lease that
//! needs it (never beyond the configured maximum lease), so that clients asking for ever
//! longer leases cause a few dozen writes at most, not one fsync per session on the core
//! task; the grace after a restart is at most that quarter longer than needed.
//!
//! The grace is measured from the new server's start, not from the crash (which it cannot
//! know), so it is conservative by the downtime. The record keeps the previous run's value
//! until a grace that covered it has ended (a crash during the grace must wait as long
//! again); then it drops to the longest lease of the current run, so one run that granted a
//! long lease does not make every later restart wait that long. A data directory with a
//! fencing floor but no record (a server version before the record) is treated as if the
//! previous run granted the configured maximum lease.
//!
//! A first start writes the record (0) next to the floor it creates, so that the next start
//! knows the lifetime recorded its leases; a record of 0 means nothing to wait out.
//!
//! File format: one line with the longest lease TTL in milliseconds (a decimal number).

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::ServerError;
use crate::floor::write_durably;

/// Added to the recorded lease TTL in [`RestartGrace::Auto`]: covers clock-rate differences
/// between the server and its clients and the millisecond rounding of lease times.
pub const GRACE_MARGIN: Duration = Duration::from_millis(100);

/// The longest lease a server grants (`--max-lease-ttl` is refused above it) and so the
/// longest a restart grace waits: a record above it is damage, not a lease.
pub const MAX_LEASE: Duration = Duration::from_secs(24 * 60 * 60);

pub(crate) const FILE_NAME: &str = "max-lease-ttl";
const TEMP_NAME: &str = "max-lease-ttl.tmp";

/// How long a restarted server waits before it grants anything
/// ([`Config::restart_grace`](crate::Config::restart_grace)). A first start on a fresh data
/// directory never waits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestartGrace {
    /// The longest lease the previous lifetime may have granted (as recorded in the data
    /// directory) plus [`GRACE_MARGIN`]. The safe choice.
    #[default]
    Auto,
    /// Exactly this long. `Duration::ZERO` disables the grace: a restarted server grants at
    /// once, so a client of the previous lifetime may still believe it holds a lock that is
    /// granted to another client (fencing tokens still protect resources that check them).
    Fixed(Duration),
}

impl RestartGrace {
    /// No grace: a restarted server grants at once (see [`RestartGrace::Fixed`] for the risk).
    pub const DISABLED: RestartGrace = RestartGrace::Fixed(Duration::ZERO);
}

/// Why a `--restart-grace` value could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected 'auto', '0' or a duration such as '15s': {0}")]
pub struct ParseRestartGraceError(String);

impl FromStr for RestartGrace {
    type Err = ParseRestartGraceError;

    /// `auto`, `0`, or a duration in `humantime` syntax (`15s`, `1m 30s`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Ok(RestartGrace::Auto);
        }
        if s == "0" {
            return Ok(RestartGrace::DISABLED);
        }
        humantime::parse_duration(s)
            .map(RestartGrace::Fixed)
            .map_err(|e| ParseRestartGraceError(e.to_string()))
    }
}

impl fmt::Display for RestartGrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartGrace::Auto => f.write_str("auto"),
            RestartGrace::Fixed(d) if d.is_zero() => f.write_str("0"),
            RestartGrace::Fixed(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

/// The persisted longest lease TTL and this lifetime's view of it.
///
/// Invariant: the persisted value is at least the TTL of every session this lifetime has
/// confirmed, and (until a grace that covered it has ended) every TTL a previous lifetime
/// may have confirmed.
#[derive(Debug)]
pub(crate) struct LeaseRecord {
    dir: PathBuf,
    /// What the file says now.
    persisted: u64,
    /// The longest lease this lifetime has granted.
    granted: u64,
    /// The configured maximum lease: the record is never raised beyond it.
    ceiling: u64,
    /// How many times the record was written (durably) since it was opened.
    writes: u64,
}

/// What the data directory says about the previous lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Previous {
    /// Nothing to wait out: a fresh data directory, or a previous lifetime that granted no
    /// lease still to be waited out (its record is 0).
    None,
    /// A previous lifetime granted leases of at most this many milliseconds.
    Recorded(u64),
    /// A previous lifetime existed (the fencing floor is there) but did not record its
    /// leases (a server version before the record existed).
    Unrecorded,
}

impl LeaseRecord {
    /// Reads the record in `dir` (which [`Floor::open`](crate::floor::Floor::open) has
    /// created). `floor_existed` says whether the fencing floor file was there before this
    /// start. `assume_ms` is the configured maximum lease: for [`Previous::Unrecorded`] it is
    /// written as the record at once, so that a crash during the grace still waits as long,
    /// and the record is never raised ahead beyond it.
    pub(crate) fn open(
        dir: &Path,
        floor_existed: bool,
        assume_ms: u64,
    ) -> Result<(LeaseRecord, Previous), ServerError> {
        let path = dir.join(FILE_NAME);
        let recorded = match fs::read_to_string(&path) {
            Ok(s) => {
                let corrupt = || ServerError::CorruptLeaseRecord {
                    path: path.clone(),
                    content: s.chars().take(64).collect(),
                };
                let ms = s.trim().parse::<u64>().map_err(|_| corrupt())?;
                if u128::from(ms) > MAX_LEASE.as_millis() {
                    return Err(corrupt());
                }
                Some(ms)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => return Err(ServerError::LeaseRecord { path, source }),
        };
        let mut record = LeaseRecord {
            dir: dir.to_owned(),
            persisted: recorded.unwrap_or(0),
            granted: 0,
            ceiling: assume_ms,
            writes: 0,
        };
        let previous = match recorded {
            // No lease of a previous lifetime is left to wait out.
            Some(0) => Previous::None,
            Some(ms) => Previous::Recorded(ms),
            None if floor_existed => {
                record.persist(assume_ms)?;
                Previous::Unrecorded
            }
            None => {
                // Recorded now, since the fencing floor (written at the start) is there from
                // now on: the next start must not take this lifetime for one that predates
                // the record.
                record.persist(0)?;
                Previous::None
            }
        };
        Ok((record, previous))
    }

    /// Whether `dir` holds a record: a server has started on it (see
    /// [`Floor::existed`](crate::floor::Floor::existed)).
    pub(crate) fn exists(dir: &Path) -> bool {
        dir.join(FILE_NAME).exists()
    }

    /// The persisted value in milliseconds.
    pub(crate) fn persisted(&self) -> u64 {
        self.persisted
    }

    /// Call before a session with a lease of `ttl_ms` is confirmed to its client: raises the
    /// record (durably) if it is lower.
    pub(crate) fn granting(&mut self, ttl_ms: u64) -> Result<(), ServerError> {
        self.granted = self.granted.max(ttl_ms);
        if ttl_ms > self.persisted {
            let ahead = ttl_ms.saturating_add(ttl_ms / 4).min(self.ceiling);
            self.persist(ahead.max(ttl_ms))?;
        }
        Ok(())
    }

    /// Call when a grace that covered the previous lifetime's leases has ended: those leases
    /// are over, so the record may drop to what this lifetime has granted.
    pub(crate) fn previous_leases_over(&mut self) -> Result<(), ServerError> {
        if self.granted < self.persisted {
            self.persist(self.granted)?;
        }
        Ok(())
    }

    fn persist(&mut self, ms: u64) -> Result<(), ServerError> {
        write_durably(&self.dir, TEMP_NAME, FILE_NAME, &format!("{ms}\n"))
            .map_err(|(path, source)| ServerError::LeaseRecord { path, source })?;
        self.persisted = ms;
        self.writes += 1;
        Ok(())
    }
}

/// How long to wait after this start, from the configuration and the record.
pub(crate) fn grace_for(setting: RestartGrace, previous: Previous, assume_ms: u64) -> Duration {
    match (previous, setting) {
        (Previous::None, _) => Duration::ZERO,
        (_, RestartGrace::Fixed(d)) => d,
        (Previous::Recorded(ms), RestartGrace::Auto) => Duration::from_millis(ms) + GRACE_MARGIN,
        (Previous::Unrecorded, RestartGrace::Auto) => {
            Duration::from_millis(assume_ms) + GRACE_MARGIN
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_auto_zero_and_durations() {
        assert_eq!("auto".parse(), Ok(RestartGrace::Auto));
        assert_eq!("AUTO".parse(), Ok(RestartGrace::Auto));
        assert_eq!("0".parse(), Ok(RestartGrace::DISABLED));
        assert_eq!("0s".parse(), Ok(RestartGrace::DISABLED));
        assert_eq!(
            "1m 30s".parse(),
            Ok(RestartGrace::Fixed(Duration::from_secs(90)))
        );
        assert!("soon".parse::<RestartGrace>().is_err());
        assert!("-1s".parse::<RestartGrace>().is_err());
        for g in [
            RestartGrace::Auto,
            RestartGrace::DISABLED,
            RestartGrace::Fixed(Duration::from_millis(1500)),
        ] {
            assert_eq!(g.to_string().parse(), Ok(g));
        }
    }

    #[test]
    fn fresh_dir_has_no_previous_lifetime_and_no_grace() {
        let dir = tempfile::tempdir().unwrap();
        let (record, previous) = LeaseRecord::open(dir.path(), false, 5_000).unwrap();
        assert_eq!(previous, Previous::None);
        assert_eq!(record.persisted(), 0);
        for setting in [
            RestartGrace::Auto,
            RestartGrace::Fixed(Duration::from_secs(3)),
        ] {
            assert_eq!(grace_for(setting, previous, 5_000), Duration::ZERO);
        }
        // Recorded at once, so that the next start (which finds the fencing floor the server
        // writes at its start) does not assume the longest lease of an unrecorded lifetime.
        assert_eq!(
            fs::read_to_string(dir.path().join(FILE_NAME)).unwrap(),
            "0\n"
        );
        let (_, again) = LeaseRecord::open(dir.path(), true, 5_000).unwrap();
        assert_eq!(again, Previous::None);
    }

    #[test]
    fn longer_leases_are_recorded_ahead_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut record, _) = LeaseRecord::open(dir.path(), false, 0).unwrap();
        record.granting(2_000).unwrap();
        record.granting(500).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join(FILE_NAME)).unwrap(),
            "2000\n"
        );
        let (record, previous) = LeaseRecord::open(dir.path(), true, 0).unwrap();
        assert_eq!(previous, Previous::Recorded(2_000));
        assert_eq!(record.persisted(), 2_000);
        assert_eq!(
            grace_for(RestartGrace::Auto, previous, 0),
            Duration::from_millis(2_000) + GRACE_MARGIN
        );
        assert_eq!(
            grace_for(RestartGrace::Fixed(Duration::from_secs(7)), previous, 0),
            Duration::from_secs(7)
        );
        assert_eq!(
            grace_for(RestartGrace::DISABLED, previous, 0),
            Duration::ZERO
        );
    }

    #[test]
    fn record_keeps_the_old_maximum_until_the_grace_ends() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), "9000\n").unwrap();
        let (mut record, _) = LeaseRecord::open(dir.path(), true, 0).unwrap();
        // A shorter lease during the grace does not lower the record: a crash now must still
        // wait out the 9 s leases of the lifetime before.
        record.granting(1_000).unwrap();
        assert_eq!(record.persisted(), 9_000);
        record.previous_leases_over().unwrap();
        assert_eq!(record.persisted(), 1_000);
        let (_, previous) = LeaseRecord::open(dir.path(), true, 0).unwrap();
        assert_eq!(previous, Previous::Recorded(1_000));
    }

    #[test]
    fn floor_without_record_assumes_and_records_the_given_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let (record, previous) = LeaseRecord::open(dir.path(), true, 4_000).unwrap();
        assert_eq!(previous, Previous::Unrecorded);
        assert_eq!(record.persisted(), 4_000);
        assert_eq!(
            grace_for(RestartGrace::Auto, previous, 4_000),
            Duration::from_millis(4_000) + GRACE_MARGIN
        );
        let (_, again) = LeaseRecord::open(dir.path(), true, 0).unwrap();
        assert_eq!(again, Previous::Recorded(4_000));
    }

    #[test]
    fn corrupt_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let day = MAX_LEASE.as_millis();
        for (content, corrupt) in [
            ("lots".to_owned(), true),
            (day.to_string(), false),
            // Longer than any lease a server grants: a grace of that would never end.
            ((day + 1).to_string(), true),
            (u64::MAX.to_string(), true),
        ] {
            fs::write(dir.path().join(FILE_NAME), &content).unwrap();
            let open = LeaseRecord::open(dir.path(), true, 0);
            assert_eq!(
                matches!(open, Err(ServerError::CorruptLeaseRecord { .. })),
                corrupt,
                "{content}: {open:?}"
            );
        }
    }

    #[test]
    fn ever_longer_leases_cost_a_few_writes_ahead_never_beyond_the_maximum() {
        let dir = tempfile::tempdir().unwrap();
        let (mut record, _) = LeaseRecord::open(dir.path(), false, 300_000).unwrap();
        for ttl in (100..=300_000).step_by(7) {
            record.granting(ttl).unwrap();
            assert!(record.persisted() >= ttl, "recorded before it is confirmed");
        }
        assert!(record.writes <= 40, "{} writes", record.writes);
        assert_eq!(record.persisted(), 300_000);
        // A lease just above the record raises it a quarter ahead.
        let dir = tempfile::tempdir().unwrap();
        let (mut record, _) = LeaseRecord::open(dir.path(), false, 300_000).unwrap();
        record.granting(10_000).unwrap();
        assert_eq!(record.persisted(), 12_500);
        record.granting(12_000).unwrap();
        // The record written at the first start, then one raise.
        assert_eq!((record.persisted(), record.writes), (12_500, 2));
    }
}
