//! What a round of failed connection attempts heard, and how long a client waits for a
//! cluster to name a leader.
//!
//! A round (one attempt at each endpoint, see [`Endpoints`](super::endpoints::Endpoints))
//! that failed is one of three things:
//!
//! - **Nobody answered**: every attempt failed to connect, timed out, lost its connection or
//!   heard `ShuttingDown` (a member going away). The server or the cluster is down, and the
//!   round is reported at once (a single server that is down is a quick error).
//! - **A member answered `NotLeader`** (with a leader's address or without): the cluster is
//!   up and between leaders, typically because the old one died and its followers still name
//!   it for an election's time (200–400 ms). Other attempts of the round may have failed,
//!   the named leader among them. Such rounds are not reported until the members have said
//!   `NotLeader` for a whole connect timeout ([`Settings::connect_timeout`]), then with
//!   [`Error::NoLeader`].
//! - **A member refused for another reason** (a version mismatch, no credential, too many
//!   connections): that is the answer, and the round is reported with it at once, as a
//!   round nobody answered.
//!
//! [`Settings::connect_timeout`]: crate::settings::Settings::connect_timeout
//! [`Error::NoLeader`]: crate::Error::NoLeader

use std::time::Duration;

use dlock_proto::Refusal;
use tokio::time::Instant;

use crate::error::Error;

/// How a round of failed attempts ended (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RoundEnd {
    /// Members answered `NotLeader` and the wait for a leader is not over: retry soon, and
    /// do not report the round.
    Electing,
    /// Members have answered `NotLeader` for longer than the wait: report
    /// [`Error::NoLeader`], and keep retrying soon.
    NoLeader,
    /// Nobody answered, or a member refused for another reason: report the round's last
    /// error.
    Failed,
}

/// What the current round of attempts heard, and since when members say `NotLeader`.
#[derive(Debug, Default)]
pub(crate) struct Election {
    /// A member answered `NotLeader` in the current round.
    heard_not_leader: bool,
    /// A member refused in the current round for a reason other than `NotLeader` or
    /// `ShuttingDown`.
    refused: bool,
    /// When the first `NotLeader` of the current run of rounds that heard one arrived.
    since: Option<Instant>,
}

impl Election {
    /// A member answered `NotLeader` at `now` (whether or not its hint is followed).
    pub(crate) fn not_leader(&mut self, now: Instant) {
        self.heard_not_leader = true;
        self.since.get_or_insert(now);
    }

    /// An attempt of the current round failed with `err`, at `now`.
    pub(crate) fn attempt_failed(&mut self, err: &Error, now: Instant) {
        match err {
            Error::Refused(Refusal::NotLeader { .. }) => self.not_leader(now),
            // A member going away answers no more than one that is gone.
            Error::Refused(Refusal::ShuttingDown) => {}
            Error::Refused(_) => self.refused = true,
            _ => {}
        }
    }

    /// The current round is over at `now`; `wait` is how long members may say `NotLeader`
    /// before that is reported. The next round starts afresh.
    pub(crate) fn round_over(&mut self, now: Instant, wait: Duration) -> RoundEnd {
        let heard = std::mem::take(&mut self.heard_not_leader);
        let refused = std::mem::take(&mut self.refused);
        if !heard || refused {
            self.since = None;
            return RoundEnd::Failed;
        }
        match self.since {
            Some(since) if now.saturating_duration_since(since) >= wait => RoundEnd::NoLeader,
            _ => RoundEnd::Electing,
        }
    }

    /// A session was established: a leader was found.
    pub(crate) fn leader_found(&mut self) {
        *self = Election::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    fn refused() -> Error {
        Error::Connect(std::sync::Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )))
    }

    fn not_leader() -> Error {
        Error::Refused(Refusal::NotLeader { leader: None })
    }

    #[test]
    fn a_round_nobody_answered_fails() {
        let mut e = Election::default();
        let now = Instant::now();
        e.attempt_failed(&refused(), now);
        e.attempt_failed(&Error::Refused(Refusal::ShuttingDown), now);
        assert_eq!(e.round_over(now, WAIT), RoundEnd::Failed);
    }

    #[test]
    fn a_not_leader_among_refused_connections_is_an_election_until_the_wait_is_over() {
        let mut e = Election::default();
        let start = Instant::now();
        // A follower names the dead leader, whose connection is refused.
        e.not_leader(start);
        e.attempt_failed(&refused(), start);
        assert_eq!(e.round_over(start, WAIT), RoundEnd::Electing);
        e.attempt_failed(&not_leader(), start + WAIT / 2);
        assert_eq!(e.round_over(start + WAIT / 2, WAIT), RoundEnd::Electing);
        // Measured from the first NotLeader, not from the last.
        e.attempt_failed(&not_leader(), start + WAIT);
        assert_eq!(e.round_over(start + WAIT, WAIT), RoundEnd::NoLeader);
        // A round nobody answers starts the wait over.
        assert_eq!(e.round_over(start + WAIT, WAIT), RoundEnd::Failed);
        e.attempt_failed(&not_leader(), start + WAIT);
        assert_eq!(e.round_over(start + WAIT, WAIT), RoundEnd::Electing);
    }

    #[test]
    fn another_refusal_is_the_answer() {
        let mut e = Election::default();
        let now = Instant::now();
        e.not_leader(now);
        e.attempt_failed(&Error::Refused(Refusal::Unauthenticated), now);
        assert_eq!(e.round_over(now, WAIT), RoundEnd::Failed);
    }

    #[test]
    fn a_leader_found_ends_the_wait() {
        let mut e = Election::default();
        let start = Instant::now();
        e.not_leader(start);
        e.leader_found();
        let later = start + WAIT * 2;
        e.not_leader(later);
        assert_eq!(e.round_over(later, WAIT), RoundEnd::Electing);
    }
}
