//! Several endpoints: rotation on failure, redirects to the leader, backoff between rounds.

use std::time::Duration;

use dlock_core::{LockId, SessionId};
use dlock_proto::{Refusal, Resume};

use super::*;
use crate::machine::ELECTION_RETRY_CAP;
use crate::machine::conn_state::ConnState;

fn cluster() -> Settings {
    Settings {
        endpoints: ["a:1", "b:2", "c:3"].map(String::from).to_vec(),
        ..settings(Duration::from_secs(10))
    }
}

/// The address of the one `Connect` among `actions`, after a `Disconnect` if any.
fn connect_to(actions: &[Action]) -> &str {
    match actions {
        [Action::Connect { addr }] | [Action::Disconnect { .. }, Action::Connect { addr }] => addr,
        other => panic!("expected a connect, got {other:?}"),
    }
}

fn refused() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::ConnectionRefused)
}

/// A harness on [`cluster`] whose first `Connect` (to `a:1`) is already taken.
fn harness() -> Harness {
    let view = Arc::new(SessionView::default());
    let now = Instant::now();
    let (tx, ops) = mpsc::unbounded_channel();
    let mut h = Harness {
        m: SessionMachine::new(cluster(), view.clone(), 1, now),
        now,
        view,
        seq: 1,
        tx: OpSender::new(tx, None),
        ops,
    };
    assert_eq!(connect_to(&h.actions()), "a:1");
    h
}

#[test]
fn connect_failures_rotate_through_the_endpoints_at_once() {
    let mut h = harness();
    let start = h.now;
    h.m.handle_connect_failed(refused(), h.now);
    assert_eq!(connect_to(&h.actions()), "b:2");
    // A handshake that times out counts the same. With three endpoints it is given a third
    // of the connect timeout (5 s), not all of it.
    h.up();
    h.advance(Duration::from_millis(1_666));
    assert!(h.actions().is_empty());
    h.advance(MS);
    assert_eq!(connect_to(&h.actions()), "c:3");
    assert_eq!(h.now, start + Duration::from_millis(1_667));
    h.up();
    h.frame(welcome(false, SESSION, 10_000));
    assert!(matches!(h.actions()[..], [Action::Established]));
    assert_eq!(h.view.session(), SESSION);
}

#[test]
fn members_that_never_answer_are_given_a_share_of_the_timeout_that_grows_each_round() {
    // Every member accepts the connection and never answers (stopped processes).
    let mut h = harness();
    let third = Duration::from_secs(5) / 3;
    let mut shares = Vec::new();
    let mut order = Vec::new();
    for round in 0..3u32 {
        for i in 0..3 {
            h.up();
            let deadline = h.m.poll_timeout().expect("the handshake's deadline");
            shares.push(deadline - h.now);
            h.advance(deadline - h.now - MS);
            assert!(h.actions().is_empty(), "given up early");
            h.advance(MS);
            let actions = h.actions();
            if i < 2 {
                order.push(connect_to(&actions).to_owned());
                continue;
            }
            // Nobody answered in this round: it is reported, and the next round starts after
            // the backoff.
            match &actions[..] {
                [Action::Disconnect { .. }, Action::ConnectFailed(e)] => {
                    assert!(e.to_string().contains("no dlock handshake answer"), "{e}")
                }
                other => panic!("round {round}: {other:?}"),
            }
            let retry = h.m.poll_timeout().expect("a retry is due");
            h.advance(retry - h.now);
            order.push(connect_to(&h.actions()).to_owned());
        }
    }
    // A third of the connect timeout (5 s), doubled each round, at most all of it.
    let expected = [third, third * 2, Duration::from_secs(5)]
        .map(|d| [d; 3])
        .concat();
    assert_eq!(shares, expected);
    assert_eq!(order, ["b:2", "c:3", "a:1"].repeat(3));
}

#[test]
fn the_backoff_applies_between_full_rounds_only() {
    let mut h = harness();
    let mut order = Vec::new();
    for round in 0..3u32 {
        for i in 0..3 {
            h.m.handle_connect_failed(refused(), h.now);
            let actions = h.actions();
            if i < 2 {
                // Within a round: the next endpoint at once, no error reported.
                order.push(connect_to(&actions).to_owned());
                continue;
            }
            // The round is over: the error is reported and a backoff delay starts.
            assert!(
                matches!(
                    actions[..],
                    [
                        Action::Disconnect { graceful: false },
                        Action::ConnectFailed(Error::Connect(_))
                    ]
                ),
                "{actions:?}"
            );
            let ConnState::Backoff { retry_at } = h.m.state else {
                panic!("not backing off: {:?}", h.m.state);
            };
            let window = MS * 100 * 2u32.pow(round);
            assert!(retry_at - h.now <= window, "round {round}");
            // Nothing happens before the delay is over.
            if let Some(early) = (retry_at - h.now).checked_sub(Duration::from_micros(1)) {
                h.advance(early);
                assert!(h.actions().is_empty());
            }
            h.advance(retry_at - h.now);
            order.push(connect_to(&h.actions()).to_owned());
        }
    }
    assert_eq!(
        order,
        [
            "b:2", "c:3", "a:1", "b:2", "c:3", "a:1", "b:2", "c:3", "a:1"
        ]
    );
}

#[test]
fn not_leader_with_a_hint_goes_to_the_leader_and_resumes() {
    let mut h = harness();
    h.up();
    h.frame(welcome(false, SESSION, 10_000));
    assert!(matches!(h.actions()[..], [Action::Established]));
    let l = h.grant(LockId(1));

    // The server steps down: the client comes back to it and is told who leads now.
    let hello = h.reconnect();
    assert!(hello.resume.is_some());
    let leader = Some("leader:9".to_owned());
    h.frame(ServerMessage::Refused(Refusal::NotLeader { leader }));
    assert_eq!(connect_to(&h.actions()), "leader:9");
    // No delay: the leader is asked at once, with the same session.
    let hello = h.up();
    assert_eq!(
        hello.resume,
        Some(Resume {
            session: SESSION,
            secret: SECRET,
            last_seq: 1,
        })
    );
    h.frame(welcome(true, SESSION, 10_000));
    assert!(matches!(h.actions()[..], [Action::Established]));
    assert_eq!(h.view.session(), SESSION);
    assert_eq!(l.shared.lost_reason(), None, "the lock survives the move");
}

#[test]
fn a_server_that_stops_answering_renewals_is_left_for_the_next_endpoint_at_once() {
    let mut h = harness();
    h.up();
    h.frame(welcome(false, SESSION, 12_000));
    assert!(matches!(h.actions()[..], [Action::Established]));
    assert_eq!(h.view.endpoint(), "a:1");
    let l = h.grant(LockId(1));
    let opened = h.now;
    // The renewal at TTL/3 goes unanswered for TTL/6 (a leader cut off from its majority,
    // a machine gone): the client moves to b:2 without a backoff, and resumes there.
    let renewed = h.next_deadline();
    assert_renewal_due(renewed, opened, Duration::from_secs(12));
    assert!(h.actions().is_empty());
    assert_eq!(h.next_deadline(), renewed + Duration::from_secs(2));
    assert_eq!(connect_to(&h.actions()), "b:2");
    let hello = h.up();
    assert_eq!(hello.resume.map(|r| r.session), Some(SESSION));
    h.frame(welcome(true, SESSION, 12_000));
    assert!(matches!(h.actions()[..], [Action::Established]));
    assert_eq!(h.view.endpoint(), "b:2");
    assert_eq!(l.shared.lost_reason(), None, "the lock survives the move");
}

#[test]
fn not_leader_without_a_hint_goes_to_the_next_endpoint() {
    let mut h = harness();
    h.up();
    h.frame(ServerMessage::Refused(Refusal::NotLeader { leader: None }));
    assert_eq!(connect_to(&h.actions()), "b:2");
    // Requests waiting for the first session are not failed by a follower's refusal.
    let mut rx = h.call(What::Ping);
    assert!(answer(&mut rx).is_none());
    h.up();
    h.frame(welcome(false, SessionId(3), 10_000));
    assert!(matches!(h.actions()[..], [Action::Established]));
    assert_eq!(h.view.session(), SessionId(3));
}

#[test]
fn an_unreachable_leader_sends_the_client_past_the_follower_that_named_it() {
    let mut h = harness();
    h.up();
    let leader = Some("gone:9".to_owned());
    h.frame(ServerMessage::Refused(Refusal::NotLeader { leader }));
    assert_eq!(connect_to(&h.actions()), "gone:9");
    h.m.handle_connect_failed(refused(), h.now);
    assert_eq!(connect_to(&h.actions()), "b:2");
}

#[test]
fn followers_naming_each_other_cannot_stop_the_backoff() {
    let mut h = harness();
    let mut attempts = 0;
    // Every server answers NotLeader naming another: redirects are followed a few times,
    // then the refusals count as failures until a round is over and the client backs off.
    while !matches!(h.m.state, ConnState::Backoff { .. }) {
        attempts += 1;
        assert!(attempts < 20, "never backs off");
        h.up();
        let leader = Some(format!("x:{attempts}"));
        h.frame(ServerMessage::Refused(Refusal::NotLeader { leader }));
        h.actions();
    }
    assert!(attempts <= 3 + 3, "{attempts} attempts in one round");
}

/// The connect timeout of [`cluster`]: how long members may answer `NotLeader` before a
/// round is reported.
const WAIT: Duration = Duration::from_secs(5);

/// How many `ConnectFailed` are among `actions`.
fn reported(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::ConnectFailed(_)))
        .count()
}

/// One round against a cluster whose leader `a:1` was SIGKILLed and whose followers still
/// name it: `a:1` refuses the connection, `b:2` and `c:3` answer `NotLeader` naming it, and
/// the client follows each hint to the dead leader. Returns how many rounds were reported.
fn round_with_a_dead_leader(h: &mut Harness) -> usize {
    let mut n = 0;
    let mut targets = Vec::new();
    for _ in 0..3 {
        // The dead leader refuses, then a follower names it.
        h.m.handle_connect_failed(refused(), h.now);
        let actions = h.actions();
        n += reported(&actions);
        if matches!(h.m.state, ConnState::Backoff { .. }) {
            break;
        }
        targets.push(connect_to(&actions).to_owned());
        h.up();
        let leader = Some("a:1".to_owned());
        h.frame(ServerMessage::Refused(Refusal::NotLeader { leader }));
        let actions = h.actions();
        n += reported(&actions);
        assert_eq!(connect_to(&actions), "a:1", "the hint is followed");
    }
    assert_eq!(targets, ["b:2", "c:3"], "every member is asked in a round");
    n
}

#[test]
fn followers_naming_a_dead_leader_are_retried_until_a_new_one_leads() {
    let mut h = harness();
    // Right after the kill: one round ends with the dead leader's refused connection, but
    // the followers answered, so the first connect is not failed: it retries soon.
    assert_eq!(round_with_a_dead_leader(&mut h), 0);
    let ConnState::Backoff { retry_at } = h.m.state else {
        panic!("not backing off: {:?}", h.m.state);
    };
    assert!(retry_at <= h.now + ELECTION_RETRY_CAP);
    h.advance(retry_at - h.now);
    assert_eq!(connect_to(&h.actions()), "a:1");
    // A second round like the first, still not reported.
    h.m.handle_connect_failed(refused(), h.now);
    assert_eq!(connect_to(&h.actions()), "b:2");
    h.up();
    let leader = Some("a:1".to_owned());
    h.frame(ServerMessage::Refused(Refusal::NotLeader { leader }));
    assert_eq!(connect_to(&h.actions()), "a:1");
    h.m.handle_connect_failed(refused(), h.now);
    assert_eq!(connect_to(&h.actions()), "c:3");
    // c:3 has won the election meanwhile.
    h.up();
    h.frame(welcome(false, SESSION, 10_000));
    assert!(matches!(h.actions()[..], [Action::Established]));
    assert_eq!(h.view.endpoint(), "c:3");
}

#[test]
fn followers_naming_a_dead_leader_for_a_whole_connect_timeout_are_reported_as_no_leader() {
    let mut h = harness();
    let start = h.now;
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 1000, "never reported");
        let n = round_with_a_dead_leader(&mut h);
        if n > 0 {
            assert_eq!(n, 1);
            break;
        }
        let ConnState::Backoff { retry_at } = h.m.state else {
            panic!("not backing off: {:?}", h.m.state);
        };
        assert!(retry_at <= h.now + ELECTION_RETRY_CAP);
        h.advance(retry_at - h.now);
        assert_eq!(connect_to(&h.actions()), "a:1");
    }
    // Reported at the end of the first round that began a connect timeout after the first
    // NotLeader, with an error that says what the members answered.
    assert!(h.now >= start + WAIT, "reported after {:?}", h.now - start);
    assert!(
        h.now < start + WAIT + ELECTION_RETRY_CAP,
        "reported after {:?}",
        h.now - start
    );
    assert!(rounds > 1);
}

#[test]
fn the_no_leader_error_names_the_not_leader_answers() {
    let mut h = harness();
    let mut last = None;
    while last.is_none() {
        for _ in 0..3 {
            h.up();
            h.frame(ServerMessage::Refused(Refusal::NotLeader { leader: None }));
            last = h.actions().into_iter().find_map(|a| match a {
                Action::ConnectFailed(e) => Some(e),
                _ => None,
            });
        }
        h.advance(ELECTION_RETRY_CAP);
        h.actions();
    }
    let err = last.expect("reported");
    assert!(matches!(err, Error::NoLeader), "{err:?}");
    assert_eq!(
        err.to_string(),
        "no leader: members answered NotLeader and no leader could be reached \
         (an election in progress, or no majority?)"
    );
}

#[test]
fn a_round_nobody_answers_fails_at_once() {
    // Every member refuses the connection: the first round is reported with the refusal,
    // at once, as for a single server that is down.
    let mut h = harness();
    h.m.handle_connect_failed(refused(), h.now);
    assert_eq!(connect_to(&h.actions()), "b:2");
    h.m.handle_connect_failed(refused(), h.now);
    assert_eq!(connect_to(&h.actions()), "c:3");
    h.m.handle_connect_failed(refused(), h.now);
    assert!(matches!(
        h.actions()[..],
        [
            Action::Disconnect { graceful: false },
            Action::ConnectFailed(Error::Connect(_))
        ]
    ));
    // The same after rounds that heard NotLeader: the whole cluster went down since.
    h.advance(MS * 800);
    assert_eq!(connect_to(&h.actions()), "a:1");
    assert_eq!(round_with_a_dead_leader(&mut h), 0);
    h.advance(ELECTION_RETRY_CAP);
    assert_eq!(connect_to(&h.actions()), "a:1");
    for _ in 0..2 {
        h.m.handle_connect_failed(refused(), h.now);
        assert_eq!(reported(&h.actions()), 0);
    }
    h.m.handle_connect_failed(refused(), h.now);
    assert!(matches!(
        h.actions()[..],
        [
            Action::Disconnect { graceful: false },
            Action::ConnectFailed(Error::Connect(_))
        ]
    ));
}

#[test]
fn a_refusal_other_than_not_leader_is_reported_at_once() {
    // A follower says NotLeader, but the leader refuses this client's credential: that is
    // the answer, not an election.
    let mut h = harness();
    h.up();
    let leader = Some("a:1".to_owned());
    h.frame(ServerMessage::Refused(Refusal::NotLeader { leader }));
    assert_eq!(connect_to(&h.actions()), "a:1");
    h.up();
    h.frame(ServerMessage::Refused(Refusal::Unauthenticated));
    assert_eq!(connect_to(&h.actions()), "b:2");
    h.m.handle_connect_failed(refused(), h.now);
    assert_eq!(connect_to(&h.actions()), "c:3");
    h.m.handle_connect_failed(refused(), h.now);
    assert_eq!(reported(&h.actions()), 1);
}

#[test]
fn a_cluster_electing_a_leader_is_retried_soon_however_long_it_takes() {
    // Every member answers NotLeader without a hint, round after round: the wait between
    // rounds stays under the election cap instead of growing to the backoff maximum.
    let mut h = harness();
    let start = h.now;
    let mut reported_at = None;
    for round in 0..100 {
        for _ in 0..3 {
            h.up();
            h.frame(ServerMessage::Refused(Refusal::NotLeader { leader: None }));
            let n = reported(&h.actions());
            if n > 0 && reported_at.is_none() {
                reported_at = Some(h.now);
            }
        }
        let ConnState::Backoff { retry_at } = h.m.state else {
            panic!("round {round}: not backing off");
        };
        assert!(
            retry_at <= h.now + ELECTION_RETRY_CAP,
            "round {round}: waits {:?}",
            retry_at - h.now
        );
        h.advance(retry_at - h.now);
        h.actions();
    }
    // An election is not a failed attempt (a first connect waits for it) until it has
    // lasted a connect timeout.
    let reported_at = reported_at.expect("reported in the end");
    assert!(reported_at >= start + WAIT, "{:?}", reported_at - start);
    // Members that cannot be reached are backed off from as usual: after enough rounds the
    // wait grows past the cap.
    let mut longest = Duration::ZERO;
    for _ in 0..12 {
        for _ in 0..3 {
            h.m.handle_connect_failed(refused(), h.now);
            h.actions();
        }
        let ConnState::Backoff { retry_at } = h.m.state else {
            panic!("not backing off");
        };
        longest = longest.max(retry_at - h.now);
        h.advance(retry_at - h.now);
        h.actions();
    }
    assert!(longest > ELECTION_RETRY_CAP, "{longest:?}");
}

#[test]
fn a_session_to_resume_is_looked_for_within_a_tenth_of_its_lease_however_often_it_failed() {
    // Connected with a 4 s lease, then every member refuses (a whole cluster restarting).
    let mut h = harness();
    h.up();
    h.frame(welcome(false, SESSION, 4_000));
    h.actions();
    h.m.handle_connection_lost(Error::Disconnected, h.now);
    h.actions();
    let cap = Duration::from_millis(400);
    let mut longest = Duration::ZERO;
    let mut attempts = 0;
    while h.m.session.is_some() {
        h.m.handle_connect_failed(refused(), h.now);
        h.actions();
        if let ConnState::Backoff { retry_at } = h.m.state {
            longest = longest.max(retry_at - h.now);
            h.advance(retry_at - h.now);
        }
        h.actions();
        attempts += 1;
        assert!(attempts < 1_000, "the lease never lapsed");
    }
    // Without the cap the waits grow to the backoff's maximum (800 ms here).
    assert!(longest <= cap, "waited {longest:?} between attempts");
    assert!(
        longest > cap / 2,
        "the backoff did not grow to the cap: {longest:?}"
    );
}
