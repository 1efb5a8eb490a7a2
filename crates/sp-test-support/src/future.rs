//! Polling a future by hand, for the async trials: once ([`poll_once`], a cancellation at once),
//! or until it waits in the reactor ([`until_parked`], so that a trial can act on a peer while
//! the await is known to be asleep). Runtime-agnostic: nothing here names tokio.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

/// Polls `fut` once: its output if that poll is ready, else `Err(())` with `fut` dropped. The
/// async trials cancel receives with it at once, where a timer would wait for its next tick.
pub async fn poll_once<F: Future>(fut: F) -> Result<F::Output, ()> {
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        Poll::Ready(match fut.as_mut().poll(cx) {
            Poll::Ready(out) => Ok(out),
            Poll::Pending => Err(()),
        })
    })
    .await
}

/// Polls `fut` until it returns `Pending` without having woken itself (a future that yields to
/// the runtime wakes itself first; one that waits in the reactor does not): the await is then
/// asleep on a descriptor or a timer. Returns its output instead if it finished. After many polls
/// that each woke themselves it yields to the runtime once, so that a future that spins or yields
/// for long does not hold the thread. The next poll of `fut` must come from the caller's task
/// (`fut.await`), which registers the task's own waker again.
pub async fn until_parked<F: Future>(mut fut: Pin<&mut F>) -> Option<F::Output> {
    poll_fn(|cx| {
        for _ in 0..100_000 {
            let flag = Arc::new(Flag(AtomicBool::new(false)));
            let waker = Waker::from(Arc::clone(&flag));
            match fut.as_mut().poll(&mut Context::from_waker(&waker)) {
                Poll::Ready(out) => return Poll::Ready(Some(out)),
                Poll::Pending if !flag.0.load(Ordering::SeqCst) => return Poll::Ready(None),
                Poll::Pending => {}
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// A waker that only records that it was woken.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}
