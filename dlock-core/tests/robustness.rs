//! `apply` is total: arbitrary commands (unknown flag bits, bad names and values, random
//! ids, tiny limits, clock jumps) never panic, and the counts stay consistent with the
//! queries.

use dlock_core::{
    Command, Config, Core, EventKind, Input, LockFlags, LockId, Mode, Reject, RequestId, SessionId,
};
use dlock_core::{ConvertRequest, LockRequest, UnlockRequest};
use proptest::prelude::*;

fn command() -> impl Strategy<Value = Command> {
    let session = (0u64..40).prop_map(SessionId);
    let lock = (0u64..200).prop_map(LockId);
    let mode = prop::sample::select(Mode::ALL.to_vec());
    let flags = prop_oneof![
        3 => (0u32..16).prop_map(LockFlags::from_bits_retain),
        1 => any::<u32>().prop_map(LockFlags::from_bits_retain),
    ];
    let name = prop::collection::vec(prop::sample::select(vec![b'a', b'b', b'c']), 0..20);
    let value = prop::option::of(prop::collection::vec(any::<u8>(), 0..40));
    let timeout = prop::option::of(0u64..500);
    prop_oneof![
        2 => (prop::collection::vec(any::<char>(), 0..10), 0u64..5_000)
            .prop_map(|(n, ttl_ms)| Command::OpenSession {
                name: n.into_iter().collect(),
                ttl_ms,
                secret: 9,
            }),
        1 => (session.clone(), any::<u64>()).prop_map(|(session, r)| Command::Renew {
            session,
            request: RequestId(r),
        }),
        1 => session.clone().prop_map(|session| Command::CloseSession {
            session,
            request: RequestId(0),
        }),
        6 => (session.clone(), name, mode.clone(), flags.clone(), value.clone(), timeout.clone())
            .prop_map(|(session, resource, mode, flags, value, timeout_ms)| Command::Lock { session, request: RequestId(1), args: LockRequest { resource, mode, flags, value, timeout_ms } }),
        4 => (session.clone(), lock.clone(), mode, flags.clone(), value.clone(), timeout)
            .prop_map(|(session, lock, mode, flags, value, timeout_ms)| Command::Convert { session, request: RequestId(2), args: ConvertRequest { lock, mode, flags, value, timeout_ms } }),
        3 => (session.clone(), lock.clone(), flags, value).prop_map(|(session, lock, flags, value)| {
            Command::Unlock { session, request: RequestId(3), args: UnlockRequest { lock, flags, value } }
        }),
        2 => (session, lock).prop_map(|(session, lock)| Command::Cancel {
            session,
            request: RequestId(4),
            lock,
        }),
        2 => Just(Command::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_inputs_never_panic(
        steps in prop::collection::vec((command(), 0u64..3, 0u64..400), 1..120),
    ) {
        let mut core = Core::new(Config {
            lvb_len: 32,
            max_name_len: 16,
            max_session_name_len: 8,
            max_sessions: 4,
            max_resources: 4,
            max_locks_per_session: 4,
            max_locks: 12,
            max_waiters_per_resource: 3,
            min_ttl_ms: 100,
            max_ttl_ms: 2_000,
            max_deadlock_search: 20,
            exactly_once: false,
        });
        let mut index = 0u64;
        let mut now = 0u64;
        for (command, gap, dt) in steps {
            // Gaps and repeats of indices; time that sometimes runs backwards.
            index = if gap == 0 { index } else { index + gap };
            now = if dt > 350 { now.saturating_sub(dt) } else { now + dt };
            // R55: what `check_arguments` finds is the engine's answer, whatever the table.
            let static_check = core.check_arguments(&command);
            let asked = match &command {
                Command::Lock { session, request, .. }
                | Command::Convert { session, request, .. }
                | Command::Unlock { session, request, .. } => Some((*session, *request)),
                _ => None,
            };
            let events = core.apply(Input { index, now_ms: now, command });
            // (An input whose index is not above the last one is ignored: no events at all.)
            if let (Err(invalid), Some((session, request)), false) =
                (static_check, asked, events.is_empty())
            {
                let answers: Vec<_> = events
                    .iter()
                    .filter(|e| e.session == session && e.request == Some(request))
                    .map(|e| e.kind.clone())
                    .collect();
                prop_assert!(
                    answers == vec![EventKind::Rejected { reason: Reject::Invalid(invalid.clone()) }]
                        || answers == vec![EventKind::Rejected { reason: Reject::UnknownSession }],
                    "{:?} answered {:?}", invalid, answers
                );
            }
            for e in &events {
                if let EventKind::Granted { value: Some(v), .. } = &e.kind {
                    prop_assert_eq!(v.len(), 32);
                }
            }
            let resources = core.resources(b"", usize::MAX);
            prop_assert_eq!(resources.len(), core.resource_count());
            let locks: usize = resources
                .iter()
                .map(|r| r.granted.len() + r.converting.len() + r.waiting.len())
                .sum();
            prop_assert_eq!(locks, core.lock_count());
            prop_assert!(core.session_count() <= 4);
            prop_assert!(core.next_deadline().is_some() || core.session_count() == 0);
            for r in &resources {
                prop_assert!(!r.granted.is_empty() || !r.converting.is_empty() || !r.waiting.is_empty());
                prop_assert!(r.converting.len() + r.waiting.len() <= 3);
            }
        }
    }
}

#[test]
fn indices_near_the_top_of_u64_do_not_overflow() {
    let mut core = Core::new(Config::default());
    let mut index = u64::MAX - 10;
    let mut apply = |core: &mut Core, command| {
        index += 1;
        core.apply(Input {
            index,
            now_ms: u64::MAX - 1,
            command,
        })
    };
    let mut sessions = Vec::new();
    for _ in 0..3 {
        apply(
            &mut core,
            Command::OpenSession {
                name: String::new(),
                ttl_ms: 1_000,
                secret: 0,
            },
        );
        sessions.push(SessionId(u64::MAX - 10 + sessions.len() as u64 + 1));
    }
    let lock = |session, mode| Command::Lock {
        session,
        request: RequestId(0),
        args: LockRequest {
            resource: b"r".to_vec(),
            mode,
            flags: LockFlags::empty(),
            value: None,
            timeout_ms: Some(u64::MAX),
        },
    };
    apply(&mut core, lock(sessions[0], Mode::EX));
    apply(&mut core, lock(sessions[1], Mode::PR));
    apply(&mut core, lock(sessions[2], Mode::PR));
    assert_eq!(core.lock_count(), 3);
    for _ in 0..3 {
        apply(
            &mut core,
            Command::Renew {
                session: sessions[0],
                request: RequestId(2),
            },
        );
    }
    // Index u64::MAX: the unlock's pass grants two locks; the tokens saturate.
    let events = apply(
        &mut core,
        Command::Unlock {
            session: sessions[0],
            request: RequestId(1),
            args: UnlockRequest {
                lock: LockId(u64::MAX - 6),
                flags: LockFlags::empty(),
                value: None,
            },
        },
    );
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(core.last_token().0, u64::MAX);
    assert_eq!(core.last_index(), u64::MAX);
}
