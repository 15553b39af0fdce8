//! What a check found: counts of what was judged, the margins by which timed properties
//! held, and the violations with their counterexamples.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::property::{Property, Violation};

/// What the checker checked and found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// Audit lines applied (inputs).
    pub inputs: u64,
    /// Server lifetimes seen (start lines).
    pub lifetimes: u64,
    /// The history begins in the middle of a server lifetime (its first line is not a
    /// `Start`: older rotated files were deleted or not given). Locks and sessions from
    /// before are unknown: events about them are not judged, and the no-lost-wake-up check
    /// (which needs every holder) is off until the next server start.
    pub partial_start: bool,
    /// Distinct resources that lock requests named.
    pub resources: u64,
    /// Grants checked (new locks and conversions).
    pub grants: u64,
    /// Completions checked (grant, refusal, cancel, timeout, deadlock, unlock).
    pub completions: u64,
    /// Session expiries checked.
    pub expiries: u64,
    /// Re-sent requests a cluster's engine answered again without applying them (exactly
    /// once across fail-over), not judged.
    #[serde(default)]
    pub retransmissions: u64,
    /// Workload operations checked, by kind.
    pub ops: BTreeMap<String, u64>,
    /// Workload operations by outcome (errors by name).
    pub outcomes: BTreeMap<String, u64>,
    /// Client-side `lost()` reports checked against the server's later grants.
    pub lost_checked: u64,
    /// Abruptly dropped sessions checked.
    pub dropped_checked: u64,
    /// Violations counted per property.
    pub violations: BTreeMap<Property, u64>,
    /// The first counterexamples.
    pub examples: Vec<Violation>,
    /// Property 5 cases where the competing grant came from a restarted server, counted
    /// here instead of as violations when
    /// [`CheckConfig::restart_grace`](crate::CheckConfig::restart_grace) is `false`.
    pub restart_gaps: u64,
    /// The first of those, as counterexamples.
    pub restart_gap_examples: Vec<Violation>,
    /// Property 6 margin: the latest expiry seen, in microseconds after `last renewal +
    /// TTL` (negative: before it).
    pub max_expiry_lateness_us: i64,
    /// Property 5 margin: the smallest time by which a `lost()` preceded the next
    /// incompatible grant to another session within one server lifetime, in microseconds.
    pub min_lost_lead_us: Option<i64>,
    /// The `lost()` report with that smallest lead, and the grant after it.
    pub min_lost_lead_example: Option<String>,
}

impl CheckReport {
    /// Whether no property was violated.
    pub fn is_ok(&self) -> bool {
        self.violations.values().all(|&n| n == 0)
    }

    /// Total number of violations.
    pub fn violation_count(&self) -> u64 {
        self.violations.values().sum()
    }

    /// Total number of workload operations.
    pub fn op_count(&self) -> u64 {
        self.ops.values().sum()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checked {} server inputs over {} server lifetime(s) on {} resource(s): {} grants, {} completions, {} lease expiries",
            self.inputs,
            self.lifetimes,
            self.resources,
            self.grants,
            self.completions,
            self.expiries
        )?;
        if self.retransmissions > 0 {
            writeln!(
                f,
                "{} re-sent requests answered again without being applied (exactly once)",
                self.retransmissions
            )?;
        }
        writeln!(
            f,
            "checked {} workload operations {:?} with outcomes {:?}, {} lost() reports, {} dropped sessions",
            self.op_count(),
            self.ops,
            self.outcomes,
            self.lost_checked,
            self.dropped_checked
        )?;
        writeln!(
            f,
            "margins: latest expiry {} after its lease; smallest lead of lost() over the next incompatible grant {}",
            if self.expiries == 0 {
                "n/a".into()
            } else {
                format!("{:.1} ms", self.max_expiry_lateness_us as f64 / 1000.0)
            },
            match self.min_lost_lead_us {
                Some(us) => format!("{:.1} ms", us as f64 / 1000.0),
                None => "n/a".into(),
            }
        )?;
        if self.partial_start {
            writeln!(
                f,
                "the history begins in the middle of a server lifetime: locks and sessions from before are not judged"
            )?;
        }
        if self.restart_gaps > 0 {
            writeln!(
                f,
                "known gap (not counted as violations): {} lost() reports came after a restarted server granted the lock to another session (no restart grace period)",
                self.restart_gaps
            )?;
            for v in &self.restart_gap_examples {
                writeln!(f, "  {v}")?;
            }
        }
        if self.is_ok() {
            writeln!(f, "violations: none")?;
        } else {
            writeln!(
                f,
                "violations: {} {:?}",
                self.violation_count(),
                self.violations
            )?;
            for v in &self.examples {
                writeln!(f, "  {v}")?;
            }
        }
        Ok(())
    }
}
