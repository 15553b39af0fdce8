//! Round trips of every message through the frame codec, and a property test that feeds
//! random, truncated and mutated frames to the decoder.

use bytes::{BufMut, BytesMut};
use dlock_proto::*;
use dlock_proto::{ConvertRequest, LockRequest, UnlockRequest};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

fn lock_info() -> LockInfo {
    LockInfo {
        lock: LockId(7),
        session: SessionId(3),
        session_name: "alice@host:42".into(),
        state: LockState::Converting {
            from: Mode::PR,
            to: Mode::EX,
        },
        token: Some(FencingToken(99)),
        since_ms: 1234,
    }
}

fn all_client_messages() -> Vec<ClientMessage> {
    let req = |body| ClientMessage::Request {
        id: RequestId(5),
        body,
    };
    vec![
        ClientMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: "c".into(),
            lease_ttl_ms: 10_000,
            resume: None,
            token: None,
        }),
        ClientMessage::Hello(Hello {
            protocol_version: 9,
            client_name: String::new(),
            lease_ttl_ms: 0,
            resume: Some(Resume {
                session: SessionId(u64::MAX),
                secret: u128::MAX,
                last_seq: 17,
            }),
            token: None,
        }),
        ClientMessage::Ack { seq: 3 },
        req(Request::Renew),
        req(Request::Lock(LockRequest {
            resource: b"db/table".to_vec(),
            mode: Mode::EX,
            flags: LockFlags::NOQUEUE | LockFlags::VALBLK,
            value: Some(vec![1, 2, 3]),
            timeout_ms: Some(500),
        })),
        req(Request::Convert(ConvertRequest {
            lock: LockId(8),
            mode: Mode::NL,
            flags: LockFlags::QUECVT,
            value: None,
            timeout_ms: None,
        })),
        req(Request::Unlock(UnlockRequest {
            lock: LockId(8),
            flags: LockFlags::IVVALBLK,
            value: Some(vec![0; 64]),
        })),
        req(Request::Cancel { lock: LockId(1) }),
        req(Request::Query(Query::Resource(b"x".to_vec()))),
        req(Request::Query(Query::Prefix {
            prefix: b"db/".to_vec(),
            limit: 10,
            after: Some(b"db/a".to_vec()),
        })),
        req(Request::Query(Query::Session {
            session: SessionId(2),
            after: Some(LockId(9)),
        })),
        req(Request::Ping),
        req(Request::Goodbye),
    ]
}

fn all_event_kinds() -> Vec<EventKind> {
    vec![
        EventKind::SessionOpened { ttl_ms: 1 },
        EventKind::Renewed { ttl_ms: 2 },
        EventKind::SessionClosed,
        EventKind::SessionExpired,
        EventKind::Granted {
            mode: Mode::PW,
            token: FencingToken(10),
            value: Some(vec![9; 64]),
            value_valid: false,
        },
        EventKind::Queued,
        EventKind::NotQueued,
        EventKind::Deadlock,
        EventKind::Cancelled,
        EventKind::TimedOut,
        EventKind::Unlocked,
        EventKind::Blocking { mode: Mode::CW },
        EventKind::Rejected {
            reason: Reject::Invalid(Invalid::NameTooLong { len: 9, max: 8 }),
        },
        EventKind::Rejected {
            reason: Reject::LimitExceeded(Limit::WaitersPerResource),
        },
        EventKind::Rejected {
            reason: Reject::NotFound,
        },
    ]
}

fn all_server_messages() -> Vec<ServerMessage> {
    let mut v = vec![
        ServerMessage::Welcome(Welcome {
            session: SessionId(1),
            secret: 0xdead_beef,
            lease_ttl_ms: 10_000,
            server_version: "dlock-server 0.1.0".into(),
            protocol_version: PROTOCOL_VERSION,
            resumed: true,
            lvb_len: 64,
            max_frame_len: 65_536,
            now_ms: 5_000,
        }),
        ServerMessage::Refused(Refusal::VersionMismatch {
            server: 1,
            client: 2,
        }),
        ServerMessage::Refused(Refusal::UnknownSession),
        ServerMessage::Refused(Refusal::Rejected(Reject::LimitExceeded(Limit::Sessions))),
        ServerMessage::Refused(Refusal::TooManyConnections),
        ServerMessage::Refused(Refusal::ExpectedHello),
        ServerMessage::Refused(Refusal::ShuttingDown),
        ServerMessage::Refused(Refusal::NotLeader {
            leader: Some("10.0.0.2:7420".into()),
        }),
        ServerMessage::Refused(Refusal::NotLeader { leader: None }),
        ServerMessage::Refused(Refusal::StorageUnavailable),
        ServerMessage::Reply {
            id: RequestId(1),
            body: Reply::Resources {
                now_ms: 1_234,
                more: true,
                resources: vec![ResourceInfo {
                    name: b"r".to_vec(),
                    value: vec![0; 64],
                    value_valid: true,
                    granted: vec![lock_info()],
                    converting: vec![lock_info()],
                    waiting: vec![],
                    omitted: 0,
                }],
            },
        },
        ServerMessage::Reply {
            id: RequestId(2),
            body: Reply::Session {
                now_ms: 1_234,
                more: true,
                session: Some(SessionInfo {
                    session: SessionId(3),
                    name: "s".into(),
                    ttl_ms: 100,
                    expires_at_ms: 200,
                    locks: vec![SessionLockInfo {
                        lock: LockId(4),
                        resource: b"r".to_vec(),
                        state: LockState::Waiting { mode: Mode::CR },
                        token: None,
                    }],
                }),
            },
        },
        ServerMessage::Reply {
            id: RequestId(3),
            body: Reply::Session {
                now_ms: 1_234,
                more: true,
                session: None,
            },
        },
        ServerMessage::Reply {
            id: RequestId(4),
            body: Reply::Pong {
                server_version: "v".into(),
            },
        },
        ServerMessage::ShuttingDown,
    ];
    for e in [
        RequestError::DuplicateRequestId(RequestId(1)),
        RequestError::Overloaded,
        RequestError::UnexpectedHello,
        RequestError::ReplyTooLarge,
    ] {
        v.push(ServerMessage::Reply {
            id: RequestId(9),
            body: Reply::Error(e),
        });
    }
    for e in [
        ProtocolError::FrameTooLarge { len: 1, max: 2 },
        ProtocolError::Malformed("bad".into()),
        ProtocolError::HandshakeTimeout,
        ProtocolError::SlowReader,
        ProtocolError::Superseded,
    ] {
        v.push(ServerMessage::ProtocolError(e));
    }
    for (i, kind) in all_event_kinds().into_iter().enumerate() {
        v.push(ServerMessage::Event {
            seq: i as u64 + 1,
            event: Event {
                session: SessionId(1),
                request: (i % 2 == 0).then_some(RequestId(i as u64)),
                lock: Some(LockId(2)),
                kind,
            },
        });
    }
    v
}

#[test]
fn every_client_message_round_trips() {
    let mut enc = FrameCodec::<ServerMessage, ClientMessage>::default();
    let mut dec = FrameCodec::<ClientMessage, ServerMessage>::default();
    let msgs = all_client_messages();
    let mut buf = BytesMut::new();
    for m in &msgs {
        enc.encode(m.clone(), &mut buf).unwrap();
    }
    for m in msgs {
        let got = dec.decode(&mut buf).unwrap().unwrap().unwrap();
        assert_eq!(got, m);
    }
    assert!(buf.is_empty());
    assert!(dec.decode(&mut buf).unwrap().is_none());
}

#[test]
fn every_server_message_round_trips() {
    let mut enc = FrameCodec::<ClientMessage, ServerMessage>::default();
    let mut dec = FrameCodec::<ServerMessage, ClientMessage>::default();
    for m in all_server_messages() {
        let mut buf = BytesMut::new();
        enc.encode(m.clone(), &mut buf).unwrap();
        let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(len + 4, buf.len(), "length prefix covers the body of {m:?}");
        assert_eq!(dec.decode(&mut buf).unwrap().unwrap().unwrap(), m);
    }
}

#[test]
fn a_frame_arriving_byte_by_byte_decodes_once_complete() {
    let mut enc = FrameCodec::<ServerMessage, ClientMessage>::default();
    let mut dec = FrameCodec::<ClientMessage, ServerMessage>::default();
    let msg = all_client_messages()[4].clone();
    let mut full = BytesMut::new();
    enc.encode(msg.clone(), &mut full).unwrap();
    let mut buf = BytesMut::new();
    for (i, b) in full.iter().enumerate() {
        buf.put_u8(*b);
        let got = dec.decode(&mut buf).unwrap();
        if i + 1 < full.len() {
            assert!(got.is_none(), "decoded early at byte {i}");
        } else {
            assert_eq!(got.unwrap().unwrap(), msg);
        }
    }
}

#[test]
fn oversized_length_prefix_is_frame_too_large() {
    let mut dec = FrameCodec::<ClientMessage, ServerMessage>::new(1024);
    let mut buf = BytesMut::new();
    buf.put_u32(1025);
    buf.put_slice(&[0; 8]);
    match dec.decode(&mut buf) {
        Err(CodecError::FrameTooLarge { len, max }) => {
            assert_eq!(max, 1024);
            assert!(len == 1025 || len == 0);
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
}

#[test]
fn another_protocol_is_named_instead_of_a_length() {
    let cases: [(&[u8], &str); 6] = [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "HTTP port"),
        (b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", "HTTP request"),
        (&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01], "TLS handshake"),
        (b"SSH-2.0-OpenSSH_9.2p1\r\n", "SSH server"),
        (b"-ERR unknown command\r\n", "like Redis"),
        (b"220 mail.example ESMTP\r\n", "SMTP or FTP"),
    ];
    for (bytes, hint) in cases {
        let mut dec = FrameCodec::<ServerMessage, ClientMessage>::new(1 << 16);
        let mut buf = BytesMut::from(bytes);
        match dec.decode(&mut buf) {
            Err(e @ CodecError::ForeignProtocol { len, max, .. }) => {
                assert!(e.to_string().contains(hint), "{e}");
                assert_eq!(max, 1 << 16);
                assert_eq!(
                    len,
                    u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize
                );
            }
            other => panic!("{hint}: {other:?}"),
        }
    }
}

#[test]
fn encoding_a_message_over_the_limit_fails_cleanly() {
    let mut enc = FrameCodec::<ServerMessage, ClientMessage>::new(16);
    let mut buf = BytesMut::new();
    let big = ClientMessage::Request {
        id: RequestId(1),
        body: Request::Lock(LockRequest {
            resource: vec![b'x'; 100],
            mode: Mode::EX,
            flags: LockFlags::empty(),
            value: None,
            timeout_ms: None,
        }),
    };
    assert!(matches!(
        enc.encode(big, &mut buf),
        Err(CodecError::FrameTooLarge { max: 16, .. })
    ));
    assert!(buf.is_empty(), "nothing half-written");
}

fn lock_of(resource_len: usize) -> ClientMessage {
    ClientMessage::Request {
        id: RequestId(resource_len as u64),
        body: Request::Lock(LockRequest {
            resource: vec![b'r'; resource_len],
            mode: Mode::PW,
            flags: LockFlags::empty(),
            value: None,
            timeout_ms: Some(7),
        }),
    }
}

#[test]
fn frames_of_every_size_follow_each_other_in_one_buffer() {
    // Around the room reserved for a frame (256 bytes) and well past it: each frame is cut to
    // its length, and one that did not fit is encoded again in full behind the others.
    let mut enc = FrameCodec::<ServerMessage, ClientMessage>::default();
    let mut dec = FrameCodec::<ClientMessage, ServerMessage>::default();
    let sizes: Vec<usize> = (0..40)
        .chain(230..290)
        .chain([1_000, 5, 20_000, 3])
        .collect();
    let mut buf = BytesMut::new();
    for &n in &sizes {
        enc.encode(lock_of(n), &mut buf).unwrap();
    }
    for &n in &sizes {
        assert_eq!(dec.decode(&mut buf).unwrap().unwrap().unwrap(), lock_of(n));
    }
    assert!(buf.is_empty());
}

#[test]
fn a_frame_over_the_limit_leaves_the_frames_before_it_whole() {
    let mut enc = FrameCodec::<ServerMessage, ClientMessage>::new(600);
    let mut dec = FrameCodec::<ClientMessage, ServerMessage>::default();
    let mut buf = BytesMut::new();
    enc.encode(lock_of(10), &mut buf).unwrap();
    let before = buf.clone();
    assert!(matches!(
        enc.encode(lock_of(2_000), &mut buf),
        Err(CodecError::FrameTooLarge { max: 600, .. })
    ));
    assert_eq!(buf, before, "nothing half-written");
    enc.encode(lock_of(500), &mut buf).unwrap();
    assert_eq!(dec.decode(&mut buf).unwrap().unwrap().unwrap(), lock_of(10));
    assert_eq!(
        dec.decode(&mut buf).unwrap().unwrap().unwrap(),
        lock_of(500)
    );
    assert!(buf.is_empty());
}

#[test]
fn unknown_variant_and_trailing_bytes_are_malformed() {
    let mut dec = FrameCodec::<ClientMessage, ServerMessage>::default();
    let mut buf = BytesMut::new();
    buf.put_u32(1);
    buf.put_u8(200); // no such ClientMessage variant
    assert!(dec.decode(&mut buf).unwrap().unwrap().is_err());

    let mut body = encode_ack();
    body.push(0);
    let mut buf = BytesMut::new();
    buf.put_u32(body.len() as u32);
    buf.put_slice(&body);
    assert!(dec.decode(&mut buf).unwrap().unwrap().is_err());
}

fn encode_ack() -> Vec<u8> {
    dlock_proto::codec::encode_body(&ClientMessage::Ack { seq: 1 }).unwrap()
}

/// Decodes everything in `bytes` until the codec needs more or fails; must never panic.
fn decode_all(bytes: &[u8]) {
    let mut dec = FrameCodec::<ClientMessage, ServerMessage>::new(4096);
    let mut buf = BytesMut::from(bytes);
    for _ in 0..bytes.len() + 1 {
        match dec.decode(&mut buf) {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let mut dec = FrameCodec::<ServerMessage, ClientMessage>::new(4096);
    let mut buf = BytesMut::from(bytes);
    for _ in 0..bytes.len() + 1 {
        match dec.decode(&mut buf) {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
}

fn encoded_stream() -> Vec<u8> {
    let mut enc = FrameCodec::<ServerMessage, ClientMessage>::default();
    let mut buf = BytesMut::new();
    for m in all_client_messages() {
        enc.encode(m, &mut buf).unwrap();
    }
    let mut enc = FrameCodec::<ClientMessage, ServerMessage>::default();
    for m in all_server_messages() {
        enc.encode(m, &mut buf).unwrap();
    }
    buf.to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        decode_all(&bytes);
    }

    #[test]
    fn random_body_with_valid_length_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&body);
        decode_all(&bytes);
    }

    #[test]
    fn truncated_and_mutated_frames_never_panic(
        cut in 0usize..4096,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
    ) {
        let mut bytes = encoded_stream();
        for (pos, val) in flips {
            let i = pos % bytes.len();
            bytes[i] ^= val;
        }
        bytes.truncate(cut.min(bytes.len()));
        decode_all(&bytes);
    }
}

fn arb_lock_info() -> impl Strategy<Value = LockInfo> {
    (
        any::<u64>(),
        any::<u64>(),
        ".{0,40}",
        any::<Option<u64>>(),
        any::<u64>(),
        0usize..6,
        0usize..6,
    )
        .prop_map(|(lock, session, name, token, since_ms, a, b)| LockInfo {
            lock: LockId(lock),
            session: SessionId(session),
            session_name: name,
            state: LockState::Converting {
                from: Mode::ALL[a],
                to: Mode::ALL[b],
            },
            token: token.map(FencingToken),
            since_ms,
        })
}

fn arb_resource() -> impl Strategy<Value = ResourceInfo> {
    let locks = || proptest::collection::vec(arb_lock_info(), 0..4);
    (
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(any::<u8>(), 0..64),
        any::<bool>(),
        locks(),
        locks(),
        locks(),
    )
        .prop_map(
            |(name, value, value_valid, granted, converting, waiting)| ResourceInfo {
                name,
                value,
                value_valid,
                granted,
                converting,
                waiting,
                omitted: 0,
            },
        )
}

/// The size of a reply's envelope around its list: message and reply tags, request id,
/// `now_ms`, the list's length and (for sessions) the option tag.
const ENVELOPE: usize = 1 + 10 + 1 + 10 + 10 + 1 + 1;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The engine builds query pages within a byte budget by `approx_size`; the budget only
    /// keeps replies within a frame if it bounds the real encoding.
    #[test]
    fn approx_sizes_bound_the_encoding(
        resources in proptest::collection::vec(arb_resource(), 0..4),
        session_name in ".{0,40}",
        locks in proptest::collection::vec((any::<u64>(), proptest::collection::vec(any::<u8>(), 0..64), any::<Option<u64>>()), 0..8),
    ) {
        let approx: usize = resources.iter().map(ResourceInfo::approx_size).sum();
        let msg = ServerMessage::Reply {
            id: RequestId(u64::MAX),
            body: Reply::Resources { now_ms: u64::MAX, resources, more: true },
        };
        let len = dlock_proto::codec::encode_body(&msg).unwrap().len();
        prop_assert!(len <= approx + ENVELOPE, "{len} > {approx} + {ENVELOPE}");

        let info = SessionInfo {
            session: SessionId(u64::MAX),
            name: session_name,
            ttl_ms: u64::MAX,
            expires_at_ms: u64::MAX,
            locks: locks
                .into_iter()
                .map(|(lock, resource, token)| SessionLockInfo {
                    lock: LockId(lock),
                    resource,
                    state: LockState::Waiting { mode: Mode::EX },
                    token: token.map(FencingToken),
                })
                .collect(),
        };
        let approx = info.approx_size();
        let msg = ServerMessage::Reply {
            id: RequestId(u64::MAX),
            body: Reply::Session { now_ms: u64::MAX, session: Some(info), more: true },
        };
        let len = dlock_proto::codec::encode_body(&msg).unwrap().len();
        prop_assert!(len <= approx + ENVELOPE, "{len} > {approx} + {ENVELOPE}");
    }
}
