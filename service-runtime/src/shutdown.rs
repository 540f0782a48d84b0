//! [`Shutdown`]: the signal a run loop watches to know when to return, over tokio-util's
//! [`CancellationToken`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// A cloneable, one-way shutdown signal.
///
/// A `#[run]` hook receives one and returns once it is requested:
///
/// ```
/// # use service_runtime::Shutdown;
/// # async fn next_tick() {}
/// async fn pump(shutdown: Shutdown) {
///     loop {
///         tokio::select! {
///             () = shutdown.requested() => break,
///             () = next_tick() => { /* one unit of work */ }
///         }
///     }
/// }
/// # let shutdown = Shutdown::new();
/// # shutdown.request();
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(pump(shutdown));
/// ```
///
/// Every clone observes the same signal; requesting it twice is harmless.
#[derive(Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A signal that has not been requested yet.
    pub fn new() -> Self {
        Shutdown::default()
    }

    /// Requests shutdown: wakes every task waiting in [`requested`](Self::requested).
    pub fn request(&self) {
        self.token.cancel();
    }

    /// Whether shutdown has been requested.
    pub fn is_requested(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown has been requested (at once if it already was).
    /// Cancel-safe: use it in `tokio::select!`.
    pub fn requested(&self) -> ShutdownRequested<'_> {
        ShutdownRequested {
            inner: self.token.cancelled(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Shutdown::requested`]: resolves once shutdown has been requested.
    ///
    /// Cancel-safe; dropping it before it resolves gives its place in the signal back.
    #[must_use = "futures do nothing unless polled"]
    pub struct ShutdownRequested<'a> {
        #[pin]
        inner: WaitForCancellationFuture<'a>,
    }
}

// A named type rather than `impl Future`, so that users can store it in their own
// structs; it only forwards to tokio-util's future.
impl Future for ShutdownRequested<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().inner.poll(cx)
    }
}

impl fmt::Debug for ShutdownRequested<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownRequested").finish_non_exhaustive()
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("requested", &self.is_requested())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::task::{Context, Poll, Wake, Waker};

    use super::Shutdown;

    #[tokio::test]
    async fn every_clone_wakes_and_late_waiters_return_at_once() {
        let shutdown = Shutdown::new();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let s = shutdown.clone();
                tokio::spawn(async move { s.requested().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(!shutdown.is_requested());
        shutdown.request();
        shutdown.request();
        for waiter in waiters {
            waiter.await.unwrap();
        }
        shutdown.clone().requested().await;
        assert!(shutdown.is_requested());
    }

    /// A waker that counts its wakes.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn a_dropped_wait_is_not_woken_and_the_others_are() {
        let shutdown = Shutdown::new();
        let counts: Vec<_> = (0..3)
            .map(|_| Arc::new(Count(AtomicUsize::new(0))))
            .collect();
        let wakers: Vec<Waker> = counts.iter().map(|c| Waker::from(c.clone())).collect();
        let mut waits: Vec<_> = (0..3).map(|_| Box::pin(shutdown.requested())).collect();
        for (wait, waker) in waits.iter_mut().zip(&wakers) {
            assert_eq!(
                wait.as_mut().poll(&mut Context::from_waker(waker)),
                Poll::Pending
            );
        }
        drop(waits.remove(1));
        shutdown.request();
        let woken: Vec<_> = counts.iter().map(|c| c.0.load(SeqCst)).collect();
        assert_eq!(woken, [1, 0, 1]);
        for (wait, waker) in waits.iter_mut().zip([&wakers[0], &wakers[2]]) {
            assert_eq!(
                wait.as_mut().poll(&mut Context::from_waker(waker)),
                Poll::Ready(())
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_request_is_missed_by_waits_racing_it() {
        for _ in 0..200 {
            let shutdown = Shutdown::new();
            let waiters: Vec<_> = (0..4)
                .map(|_| {
                    let s = shutdown.clone();
                    tokio::spawn(async move { s.requested().await })
                })
                .collect();
            shutdown.request();
            for waiter in waiters {
                tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
                    .await
                    .expect("every wait sees the request")
                    .unwrap();
            }
        }
    }
}
