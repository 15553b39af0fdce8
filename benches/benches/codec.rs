//! Criterion benchmarks of the wire codec: encoding and decoding the frames that dominate
//! traffic (a lock request, a grant event, a query reply).
#![allow(missing_docs)]

use dlock_proto::LockRequest;
use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dlock_proto::{
    ClientMessage, Event, EventKind, FencingToken, FrameCodec, LockFlags, LockId, LockInfo,
    LockState, Mode, Reply, Request, RequestId, ResourceInfo, ServerMessage, SessionId,
};
use tokio_util::codec::{Decoder, Encoder};

/// A typical lock request: a short resource name, EX, no flags.
fn lock_request() -> ClientMessage {
    ClientMessage::Request {
        id: RequestId(123_456),
        body: Request::Lock(LockRequest {
            resource: b"orders/customer-42/invoice".to_vec(),
            mode: Mode::EX,
            flags: LockFlags::empty(),
            value: None,
            timeout_ms: Some(30_000),
        }),
    }
}

/// A typical grant event pushed to a client.
fn granted_event() -> ServerMessage {
    ServerMessage::Event {
        seq: 98_765,
        event: Event {
            session: SessionId(4_242),
            request: Some(RequestId(123_456)),
            lock: Some(LockId(1_000_001)),
            kind: EventKind::Granted {
                mode: Mode::EX,
                token: FencingToken(1_000_002),
                value: None,
                value_valid: true,
            },
        },
    }
}

/// A query reply: one resource with a holder, a converter and a few waiters.
fn query_reply() -> ServerMessage {
    let lock = |n: u64, state: LockState| LockInfo {
        lock: LockId(1_000 + n),
        session: SessionId(10 + n),
        session_name: format!("worker@host-{n}:{}", 4000 + n),
        state,
        token: state.granted_mode().map(|_| FencingToken(500 + n)),
        since_ms: 1_700_000 + n,
    };
    ServerMessage::Reply {
        id: RequestId(77),
        body: Reply::Resources {
            now_ms: 1_234,
            more: true,
            resources: vec![ResourceInfo {
                name: b"orders/customer-42/invoice".to_vec(),
                value: vec![0xAB; 32],
                value_valid: true,
                granted: vec![lock(0, LockState::Granted { mode: Mode::PR })],
                converting: vec![lock(
                    1,
                    LockState::Converting {
                        from: Mode::PR,
                        to: Mode::EX,
                    },
                )],
                waiting: (2..6)
                    .map(|n| lock(n, LockState::Waiting { mode: Mode::EX }))
                    .collect(),
                omitted: 0,
            }],
        },
    }
}

/// Encodes `msg` once to learn its frame and measures encode and decode of it. `In` is what
/// the sending side receives (the other direction's message type).
fn bench_pair<In, Out>(c: &mut Criterion, name: &str, msg: Out)
where
    In: serde::Serialize,
    Out: serde::Serialize + serde::de::DeserializeOwned + Clone,
{
    let mut frame = BytesMut::new();
    FrameCodec::<In, Out>::default()
        .encode(msg.clone(), &mut frame)
        .expect("encode");
    let frame = frame.freeze();

    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function("encode", |b| {
        let mut codec = FrameCodec::<In, Out>::default();
        let mut buf = BytesMut::with_capacity(4096);
        b.iter(|| {
            buf.clear();
            codec
                .encode(black_box(msg.clone()), &mut buf)
                .expect("encode");
            buf.len()
        })
    });
    group.bench_function("decode", |b| {
        // The receiving side: decodes what the other side encodes.
        let mut codec = FrameCodec::<Out, In>::default();
        b.iter(|| {
            let mut src = BytesMut::from(black_box(&frame[..]));
            match codec.decode(&mut src) {
                Ok(Some(Ok(m))) => m,
                _ => panic!("frame did not decode"),
            }
        })
    });
    group.finish();
}

fn codec(c: &mut Criterion) {
    bench_pair::<ServerMessage, ClientMessage>(c, "lock_request", lock_request());
    bench_pair::<ClientMessage, ServerMessage>(c, "granted_event", granted_event());
    bench_pair::<ClientMessage, ServerMessage>(c, "query_reply", query_reply());
}

criterion_group!(benches, codec);
criterion_main!(benches);
