//! What the checker judges ([`Property`]), how ([`CheckConfig`]), and what it reports when a
//! property does not hold ([`Violation`], cited by [`Location`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The properties the checker judges; see the [crate docs](crate) for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Property {
    /// 1: no two incompatible granted locks on one resource at once (R7).
    Compatibility,
    /// 2: fencing tokens strictly increase per resource, also across restarts.
    Fencing,
    /// 3: every accepted request completes exactly once; none hangs.
    Completion,
    /// 4: FIFO grant order and grant passes (R10–R13).
    Fifo,
    /// 5: `lost()` is seen before an incompatible lock is granted to another session.
    LostBeforeGrant,
    /// 6: a dead client's locks are released within its lease plus an allowance.
    DeadRelease,
    /// The history itself is complete: the audit log dropped no lines (a full disk).
    History,
}

impl Property {
    /// Whether the server's audit log alone decides this property. [`LostBeforeGrant`]
    /// compares the server's grants with what clients saw, so it needs client records;
    /// the others are judged on the log (their client-side parts, such as the tokens
    /// clients saw or operations that hung, also need the records).
    ///
    /// [`LostBeforeGrant`]: Property::LostBeforeGrant
    pub fn decided_by_server_log(self) -> bool {
        !matches!(self, Property::LostBeforeGrant)
    }
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Property::Compatibility => "1 compatibility (R7)",
            Property::Fencing => "2 fencing tokens",
            Property::Completion => "3 completion exactly once",
            Property::Fifo => "4 FIFO (R10-R13)",
            Property::LostBeforeGrant => "5 lost() before another grant",
            Property::DeadRelease => "6 dead client released within lease",
            Property::History => "complete history (no audit lines dropped)",
        })
    }
}

/// Where an audit line is: the file it was read from, when the checker was told (see
/// [`Checker::begin_file`](crate::Checker::begin_file)), and its 1-based line number.
/// Shown as `FILE:LINE`, or `audit line LINE` without a file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Location {
    /// The file, if known.
    pub file: Option<String>,
    /// The line number, from 1.
    pub line: u64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{file}:{}", self.line),
            None => write!(f, "audit line {}", self.line),
        }
    }
}

/// One violation, with its counterexample.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Which property.
    pub property: Property,
    /// The audit line where it was detected; `None` for a violation found in the client
    /// records.
    pub at: Option<Location>,
    /// Wall clock of the detection, microseconds since the epoch.
    pub ts_us: u64,
    /// The counterexample, in words.
    pub detail: String,
    /// The earlier audit lines the counterexample rests on (the grants in conflict, the
    /// grant of the previous token, ...), oldest first.
    pub cites: Vec<Location>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] ", self.property)?;
        match &self.at {
            Some(at) => write!(f, "{at}")?,
            None => f.write_str("client records")?,
        }
        write!(f, " (t={}us): {}", self.ts_us, self.detail)?;
        if !self.cites.is_empty() {
            f.write_str(" [see")?;
            for c in &self.cites {
                write!(f, " {c}")?;
            }
            f.write_str("]")?;
        }
        Ok(())
    }
}

/// Settings of the checker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckConfig {
    /// Property 6: how long after `last renewal + TTL` an expiry may come (timer wake-up and
    /// scheduling on a loaded host), in microseconds.
    pub expiry_allowance_us: u64,
    /// Property 6: how much before `last renewal + TTL` an expiry may come (millisecond
    /// rounding of the server's clock), in microseconds.
    pub early_tolerance_us: u64,
    /// Property 3: the run ended with every client closed or expired, so no request may be
    /// left pending at the end of the log.
    pub expect_quiescent: bool,
    /// How many counterexamples to keep (all violations are counted).
    pub max_examples: usize,
    /// Property 5 across a restart: the restarted server must not grant a lock that a
    /// client of the previous server lifetime may still believe it holds (it must wait out
    /// the old leases). With `false`, such cases are not violations but are counted in
    /// [`CheckReport::restart_gaps`](crate::CheckReport::restart_gaps), with
    /// counterexamples in
    /// [`CheckReport::restart_gap_examples`](crate::CheckReport::restart_gap_examples), for a
    /// server run without a restart grace period.
    pub restart_grace: bool,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            expiry_allowance_us: 250_000,
            early_tolerance_us: 5_000,
            expect_quiescent: false,
            max_examples: 50,
            restart_grace: true,
        }
    }
}
