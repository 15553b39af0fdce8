//! Letting the connections' tasks run before the core task takes its inbox, while that
//! gathers more requests.
//!
//! The core task is woken by the first request in its inbox and, run at once, handles it
//! alone: with many clients, about one request per wake-up, each paying the wake-up's fixed
//! work (timers, delivery, metrics). If it first yields once, the connections' tasks that
//! are ready run before it and put their requests in, and one wake-up handles them all. With
//! few clients nothing comes in meanwhile and the yield only costs (the runtime wakes an
//! idle worker for the yielded task), so after a yield that gathered nothing the task
//! skips yielding for 2, then 4, ... up to [`MAX_SKIP`] wake-ups; one that gathered
//! something makes it yield every time again.
//!
//! Measured against the build before it, two servers side by side and the load generator
//! alternating between them (3 s points, 3 pairs; the figures in
//! `docs/performance-history.md`): 64 clients 85,351 / 84,863 / 80,562 cycles/s against
//! 77,536 / 77,080 / 83,236, server CPU per cycle 1.2 and 1.3 µs less in two pairs and
//! 0.3 µs more in the third; 4 clients 73,811–74,159 cycles/s against 65,866–72,038, a
//! cycle p50 of 43–44 µs against 41–45 µs and a p999 of 2.0–2.2 ms against 3.8–4.0 ms;
//! 1 client unchanged within the spread of the runs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The most wake-ups skipped between two yields that gathered nothing.
const MAX_SKIP: u32 = 64;

/// Whether the next wake-up yields before taking the inbox (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Gather {
    /// Wake-ups left to skip.
    skip: u32,
    /// Wake-ups to skip after the next yield that gathers nothing.
    next_skip: u32,
}

impl Gather {
    /// Whether this wake-up yields (`false`: one fewer to skip).
    pub(super) fn should_yield(&mut self) -> bool {
        if self.skip == 0 {
            return true;
        }
        self.skip -= 1;
        false
    }

    /// How a yield went: whether requests came in meanwhile.
    pub(super) fn yielded(&mut self, gathered: bool) {
        if gathered {
            self.next_skip = 0;
        } else {
            self.next_skip = (self.next_skip * 2).clamp(2, MAX_SKIP);
            self.skip = self.next_skip;
        }
    }
}

/// Yields to the tasks that are ready once: woken at once, the task goes to the back of its
/// worker's queue (unlike `tokio::task::yield_now`, which also waits for the worker's next
/// look at the sockets).
pub(super) fn yield_once() -> YieldOnce {
    YieldOnce { yielded: false }
}

/// See [`yield_once`].
#[derive(Debug)]
pub(super) struct YieldOnce {
    yielded: bool,
}

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use super::*;

    /// Which of the next `n` wake-ups yield, none of them gathering anything.
    fn pattern(g: &mut Gather, n: usize) -> String {
        (0..n)
            .map(|_| {
                if g.should_yield() {
                    g.yielded(false);
                    'y'
                } else {
                    '.'
                }
            })
            .collect()
    }

    #[test]
    fn yields_that_gather_keep_it_yielding_and_empty_ones_back_off_to_a_cap() {
        let mut g = Gather::default();
        for _ in 0..10 {
            assert!(g.should_yield());
            g.yielded(true);
        }
        assert_eq!(pattern(&mut g, 18), "y..y....y........y");
        // Capped: after 64 skipped wake-ups it tries again, and again after 64 more.
        let long = pattern(&mut g, 400);
        let yields: Vec<usize> = long.match_indices('y').map(|(i, _)| i).collect();
        let gaps: Vec<usize> = yields.windows(2).map(|w| w[1] - w[0] - 1).collect();
        assert_eq!(gaps.last(), Some(&64));
        assert!(gaps.iter().all(|&g| g <= 64), "{gaps:?}");
        // One that gathers brings back a yield on every wake-up.
        while !g.should_yield() {}
        g.yielded(true);
        assert!(g.should_yield());
        g.yielded(true);
        assert!(g.should_yield());
    }

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn yield_once_wakes_itself_and_is_ready_the_second_time() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut y = std::pin::pin!(yield_once());
        assert!(y.as_mut().poll(&mut cx).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(y.as_mut().poll(&mut cx).is_ready());
    }
}
