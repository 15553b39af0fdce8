//! [`Dormant`]: a future polled only after it has woken its task.
//!
//! A connection's task waits for its frames, its outbox and its cancellation at once, and a
//! `select!` polls every branch on every wake-up. Cancellation almost never fires, but
//! polling a [`CancellationToken`](tokio_util::sync::CancellationToken)'s future takes the
//! token's lock and its `Notify`'s lock each time: in the per-request profile that was 5 %
//! of the server's CPU. A `Dormant` future gives the inner future a waker of its own, and
//! polls it again only once that waker has been woken (or the first time); every other poll
//! costs an atomic swap and a comparison of the task's waker with the one it holds.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// A future that polls `F` only when `F` has asked to be polled (see the module docs).
pub(crate) struct Dormant<F> {
    inner: Pin<Box<F>>,
    woken: Arc<Woken>,
    /// The waker handed to the inner future (made once).
    waker: Waker,
    /// The task's waker as last registered in `woken`: registered again only when the task
    /// polls with another one (a task's waker does not change, so that is almost never).
    task: Option<Waker>,
}

/// Whether the inner future has woken, and the task to wake then.
struct Woken {
    flag: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.flag.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(task) = task {
            task.wake();
        }
    }
}

impl<F: Future> Dormant<F> {
    /// Wraps `inner`, which is polled at the first poll and then whenever it has woken.
    pub(crate) fn new(inner: F) -> Dormant<F> {
        let woken = Arc::new(Woken {
            flag: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Dormant {
            inner: Box::pin(inner),
            waker: Waker::from(woken.clone()),
            woken,
            task: None,
        }
    }
}

impl<F: Future> Future for Dormant<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        // Registered before the flag is read: a wake between the two finds this task.
        if !this.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            let task = cx.waker().clone();
            *this.woken.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.clone());
            this.task = Some(task);
        }
        if !this.woken.flag.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.inner
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio_util::sync::CancellationToken;

    use super::*;

    /// Counts its polls; ready once `ready` is set, waking through the waker it last got.
    struct Counted {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
    }

    impl Future for Counted {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.ready.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn the_inner_future_is_polled_only_after_it_woke() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let waker = Arc::new(std::sync::Mutex::new(None::<Waker>));
        let mut fut = Box::pin(Dormant::new(Counted {
            polls: polls.clone(),
            ready: ready.clone(),
            waker: waker.clone(),
        }));
        let task = Arc::new(Flag::default());
        let task_waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&task_waker);

        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1, "polled the first time");
        for _ in 0..10 {
            assert!(fut.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1, "not polled again unwoken");
        assert!(!task.0.load(Ordering::SeqCst));

        ready.store(true, Ordering::SeqCst);
        waker.lock().unwrap().take().unwrap().wake();
        assert!(
            task.0.load(Ordering::SeqCst),
            "the inner wake woke the task"
        );
        assert!(fut.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_cancellation_still_ends_the_wait() {
        let token = CancellationToken::new();
        let mut cancelled = Box::pin(Dormant::new(token.clone().cancelled_owned()));
        assert!(futures_util::poll!(cancelled.as_mut()).is_pending());
        assert!(futures_util::poll!(cancelled.as_mut()).is_pending());
        token.cancel();
        assert!(futures_util::poll!(cancelled.as_mut()).is_ready());
    }

    /// A task waker that records that it was woken.
    #[derive(Default)]
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}
