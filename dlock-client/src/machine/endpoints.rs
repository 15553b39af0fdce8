//! Which server the next connection attempt goes to.
//!
//! The client knows a list of endpoints (the members of a cluster, or one server). It tries
//! them in turn: a failed attempt moves on to the next one at once, and only a full round of
//! failures waits out a backoff delay. A follower that refuses with the leader's address
//! ([`Refusal::NotLeader`](dlock_proto::Refusal::NotLeader)) sends the next attempt there;
//! such redirects are bounded per round ([`MAX_REDIRECTS`]) so that servers pointing at each
//! other cannot keep the client from backing off.
//!
//! With several endpoints, one attempt does not get the whole connect timeout: a member that
//! accepts connections but does not answer (a stopped process, whose kernel still completes
//! the TCP handshake) or a machine that is gone (SYNs unanswered) would otherwise hold every
//! new client for that long before the next member is asked. An attempt gets its share of
//! the timeout ([`Endpoints::attempt_timeout`]), at least [`MIN_ATTEMPT`]; the share doubles
//! with each round that failed in a row, so a member that is only slow to answer is waited
//! for in full by the third round.

use std::time::Duration;

/// Redirects followed in one round of attempts; beyond them a `NotLeader` counts as an
/// ordinary failure.
pub(crate) const MAX_REDIRECTS: u32 = 3;

/// The least time one attempt is given when the connect timeout is shared among several
/// endpoints (a dlock server answers a `Hello` within milliseconds; a cluster's leader after
/// one commit).
pub(crate) const MIN_ATTEMPT: Duration = Duration::from_secs(1);

/// The endpoint list and where the client stands in it.
#[derive(Debug)]
pub(crate) struct Endpoints {
    list: Vec<String>,
    /// The list entry tried next (when no redirect is pending).
    next: usize,
    /// Failed attempts in the current round (at list entries or redirects).
    failed_in_round: usize,
    /// The address a follower named as the leader, tried next.
    redirect: Option<String>,
    /// Redirects followed in the current round.
    redirects: u32,
    /// Whether the current attempt follows a redirect (its failure does not move `next`).
    redirected: bool,
    /// Rounds that failed in a row since the last session was established.
    rounds_failed: u32,
}

impl Endpoints {
    /// The endpoints `list`, tried from the first; an empty list is not allowed.
    pub(crate) fn new(list: Vec<String>) -> Endpoints {
        assert!(!list.is_empty(), "at least one endpoint");
        Endpoints {
            list,
            next: 0,
            failed_in_round: 0,
            redirect: None,
            redirects: 0,
            redirected: false,
            rounds_failed: 0,
        }
    }

    /// How long the next attempt may take to connect and be answered, out of `timeout` (the
    /// connect timeout): all of it with one endpoint; with `n`, a share of `timeout / n` (at
    /// least [`MIN_ATTEMPT`]) that doubles with each round that failed in a row.
    pub(crate) fn attempt_timeout(&self, timeout: Duration) -> Duration {
        let n = u32::try_from(self.list.len()).unwrap_or(u32::MAX);
        if n <= 1 {
            return timeout;
        }
        let share = (timeout / n).saturating_mul(1 << self.rounds_failed.min(16));
        share.max(MIN_ATTEMPT).min(timeout)
    }

    /// The address of the next attempt: a pending redirect, or the current list entry.
    pub(crate) fn target(&mut self) -> String {
        match self.redirect.take() {
            Some(addr) => {
                self.redirected = true;
                addr
            }
            None => {
                self.redirected = false;
                self.list[self.next].clone()
            }
        }
    }

    /// The current attempt failed: move on to the next entry. `true` when that completed a
    /// full round of failures, so the next attempt waits out a backoff delay.
    pub(crate) fn failed(&mut self) -> bool {
        if !self.redirected {
            self.next = (self.next + 1) % self.list.len();
        }
        self.failed_in_round += 1;
        self.redirected = false;
        if self.failed_in_round >= self.list.len() {
            self.failed_in_round = 0;
            self.redirects = 0;
            self.rounds_failed = self.rounds_failed.saturating_add(1);
            true
        } else {
            false
        }
    }

    /// The current attempt was refused by a follower naming `leader`: try it next, unless
    /// this round has followed [`MAX_REDIRECTS`] already (`false`: count a failure instead).
    pub(crate) fn redirect(&mut self, leader: String) -> bool {
        if self.redirects >= MAX_REDIRECTS {
            return false;
        }
        self.redirects += 1;
        if !self.redirected {
            // Past the follower: if the leader cannot be reached, the next member is asked.
            self.next = (self.next + 1) % self.list.len();
        }
        self.redirect = Some(leader);
        true
    }

    /// A session was established: the next loss starts a fresh round from this entry.
    pub(crate) fn succeeded(&mut self) {
        self.failed_in_round = 0;
        self.redirects = 0;
        self.rounds_failed = 0;
    }
}

/// The endpoints in a comma-separated list (`a:7420,b:7420`), blanks around each trimmed and
/// empty entries skipped.
pub(crate) fn parse_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(list: &str) -> Endpoints {
        Endpoints::new(parse_list(list))
    }

    #[test]
    fn a_list_is_split_at_commas_and_trimmed() {
        assert_eq!(parse_list(" a:1, b:2 ,,c:3,"), ["a:1", "b:2", "c:3"]);
        assert_eq!(parse_list("a:1"), ["a:1"]);
        assert!(parse_list(" , ").is_empty());
    }

    #[test]
    fn failures_rotate_and_a_full_round_asks_for_backoff() {
        let mut e = endpoints("a,b,c");
        let mut seen = Vec::new();
        let mut rounds = Vec::new();
        for _ in 0..6 {
            seen.push(e.target());
            rounds.push(e.failed());
        }
        assert_eq!(seen, ["a", "b", "c", "a", "b", "c"]);
        assert_eq!(rounds, [false, false, true, false, false, true]);
    }

    #[test]
    fn a_redirect_is_tried_next_and_its_failure_moves_on_past_the_follower() {
        let mut e = endpoints("a,b,c");
        assert_eq!(e.target(), "a");
        assert!(e.redirect("x".into()));
        assert_eq!(e.target(), "x");
        assert!(!e.failed());
        assert_eq!(e.target(), "b");
    }

    #[test]
    fn redirects_are_bounded_per_round() {
        let mut e = endpoints("a");
        let mut followed = 0;
        for _ in 0..10 {
            e.target();
            if e.redirect("x".into()) {
                followed += 1;
            } else {
                break;
            }
        }
        assert_eq!(followed, MAX_REDIRECTS);
        // The refusal that was not followed is a failure that completes the round.
        assert!(e.failed());
        assert_eq!(e.target(), "a");
        assert!(
            e.redirect("x".into()),
            "a new round follows redirects again"
        );
    }

    #[test]
    fn an_attempt_gets_a_share_of_the_timeout_that_doubles_with_each_failed_round() {
        let secs = Duration::from_secs;
        let ms = Duration::from_millis;
        // One endpoint: the whole timeout, whatever happened before.
        let mut one = endpoints("a");
        assert_eq!(one.attempt_timeout(secs(5)), secs(5));
        one.target();
        assert!(one.failed());
        assert_eq!(one.attempt_timeout(secs(5)), secs(5));

        let mut e = endpoints("a,b,c");
        let mut shares = vec![e.attempt_timeout(secs(6))];
        for _ in 0..3 {
            for _ in 0..3 {
                e.target();
                e.failed();
            }
            shares.push(e.attempt_timeout(secs(6)));
        }
        assert_eq!(shares, [secs(2), secs(4), secs(6), secs(6)]);
        // Never less than the floor (unless the timeout itself is shorter).
        assert_eq!(
            endpoints("a,b,c,d,e,f").attempt_timeout(secs(3)),
            MIN_ATTEMPT
        );
        assert_eq!(endpoints("a,b").attempt_timeout(ms(300)), ms(300));
        // A session established starts over from the share.
        e.succeeded();
        assert_eq!(e.attempt_timeout(secs(6)), secs(2));
    }
}
