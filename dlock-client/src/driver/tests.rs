//! The handles' side of the driver: ops handled and written in place, in order, and the
//! driver woken only when something is left for it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Wake;

use dlock_core::{LockFlags, Mode};
use dlock_proto::{LockRequest, Request};
use futures_util::FutureExt;
use tokio::io::DuplexStream;
use tokio::sync::oneshot;

use super::*;
use crate::op::{Call, Key, What};

/// Counts the driver's wake-ups.
struct Wakes(AtomicUsize);

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Wakes {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

type Server = FramedRead<DuplexStream, FrameCodec<ClientMessage, ServerMessage>>;

/// A machine with an open session that writes into a pipe, as the driver would leave it
/// between wake-ups (its timer armed for the machine's deadline); a TLS connection with
/// `tls`. Returns the handles' sender, the server's end of the pipe and the count of the
/// driver's wake-ups.
fn running(tls: bool) -> (Arc<Shared>, OpSender, Server, Arc<Wakes>) {
    let machine = crate::machine::tests::connected_machine(Duration::from_secs(10));
    let (tx, ops) = mpsc::unbounded_channel();
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
    let now = Instant::now();
    let armed = machine.poll_timeout();
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            machine: Some(machine),
            ops,
            out: Out {
                writer: Some(Box::new(ours)),
                wbuf: BytesMut::new(),
                write_progress: now,
                unflushed: false,
                tls,
            },
            actions: VecDeque::new(),
            armed,
            waker: Some(Waker::from(wakes.clone())),
        }),
    });
    let sender = OpSender::new(tx, Some(shared.clone()));
    let server = FramedRead::new(theirs, FrameCodec::new(1 << 20));
    (shared, sender, server, wakes)
}

fn ping() -> Op {
    Op::Call(Call::new(What::Ping, oneshot::channel().0))
}

fn lock() -> Op {
    let req = LockRequest {
        resource: b"r".to_vec(),
        mode: Mode::EX,
        flags: LockFlags::empty(),
        value: None,
        timeout_ms: None,
    };
    let what = What::Lock {
        req,
        key: Key::next(),
        queued: None,
    };
    Op::Call(Call::new(what, oneshot::channel().0))
}

/// The requests the server has received so far.
fn received(server: &mut Server) -> Vec<Request> {
    std::iter::from_fn(|| server.next().now_or_never().flatten())
        .map(|frame| match frame {
            Ok(Ok(ClientMessage::Request { body, .. })) => body,
            other => panic!("expected a request, got {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn an_op_is_handled_and_written_by_the_callers_task_without_waking_the_driver() {
    let (shared, tx, mut server, wakes) = running(false);
    tx.send(ping()).expect("running");
    assert!(matches!(received(&mut server)[..], [Request::Ping]));
    assert_eq!(wakes.count(), 0);
    assert!(shared.lock().out.wbuf.is_empty());
}

#[tokio::test]
async fn an_op_that_found_the_machine_busy_goes_before_the_next_one() {
    let (shared, tx, mut server, _) = running(false);
    {
        // Busy: the ping waits in the channel.
        let _busy = shared.lock();
        tx.send(ping()).expect("running");
    }
    assert!(received(&mut server).is_empty());
    tx.send(lock()).expect("running");
    assert!(matches!(
        received(&mut server)[..],
        [Request::Ping, Request::Lock(_)]
    ));
}

#[tokio::test]
async fn what_a_tls_stream_would_hold_back_is_left_to_the_driver() {
    let (shared, tx, mut server, wakes) = running(true);
    tx.send(ping()).expect("running");
    assert!(received(&mut server).is_empty());
    assert_eq!(wakes.count(), 1);
    assert!(!shared.lock().out.wbuf.is_empty());
}

#[tokio::test]
async fn an_op_after_the_machine_stopped_is_refused() {
    let (shared, tx, _server, _) = running(false);
    stop(&mut shared.lock());
    assert!(tx.send(ping()).is_err());
}
