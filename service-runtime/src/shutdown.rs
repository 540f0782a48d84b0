//! [`Shutdown`]: the signal a run loop watches to know when to return.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use crate::util::WakerSlots;

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
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    requested: AtomicBool,
    /// The wakers of the [`ShutdownRequested`] futures waiting: a waiting future is a
    /// reference and a slot number (24 bytes), where an `async fn` around a tokio
    /// `Notified` took 88, and that future sits in nearly every run loop's state.
    waiters: Mutex<WakerSlots>,
}

impl Shutdown {
    /// A signal that has not been requested yet.
    pub fn new() -> Self {
        Shutdown::default()
    }

    /// Requests shutdown: wakes every task waiting in [`requested`](Self::requested).
    pub fn request(&self) {
        if self.inner.requested.swap(true, Ordering::AcqRel) {
            return;
        }
        let waiters = self.inner.lock().take_all();
        // Woken once the lock is released: a waker may run the executor's code.
        waiters.wake_all();
    }

    /// Whether shutdown has been requested.
    pub fn is_requested(&self) -> bool {
        self.inner.requested.load(Ordering::Acquire)
    }

    /// Whether `other` is a clone of this signal.
    pub(crate) fn is_same(&self, other: &Shutdown) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Resolves once shutdown has been requested (at once if it already was).
    /// Cancel-safe: use it in `tokio::select!`.
    pub fn requested(&self) -> ShutdownRequested<'_> {
        ShutdownRequested {
            inner: &self.inner,
            slot: None,
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, WakerSlots> {
        // Never held while user code runs: poisoning cannot leave the list inconsistent.
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The future of [`Shutdown::requested`]: resolves once shutdown has been requested.
///
/// Cancel-safe; dropping it before it resolves gives its place in the signal back.
#[must_use = "futures do nothing unless polled"]
pub struct ShutdownRequested<'a> {
    inner: &'a Inner,
    /// The slot holding this future's waker, once it waited.
    slot: Option<usize>,
}

impl Future for ShutdownRequested<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.inner.requested.load(Ordering::Acquire) {
            self.slot = None;
            return Poll::Ready(());
        }
        let mut waiters = self.inner.lock();
        // Checked again under the lock: a request sets the flag before it takes the
        // wakers under this lock, so either it is seen here or it finds this waker.
        if self.inner.requested.load(Ordering::Acquire) {
            self.slot = None;
            return Poll::Ready(());
        }
        let mut slot = self.slot;
        let replaced = waiters.register(&mut slot, cx.waker());
        drop(waiters);
        // Dropped once the lock is released: a waker's drop may run the executor's code.
        drop(replaced);
        self.slot = slot;
        Poll::Pending
    }
}

impl Drop for ShutdownRequested<'_> {
    fn drop(&mut self) {
        let Some(slot) = self.slot else {
            return;
        };
        let waker = {
            let mut waiters = self.inner.lock();
            // A request took every waker and emptied the list: nothing to give back.
            if self.inner.requested.load(Ordering::Acquire) {
                return;
            }
            waiters.vacate(slot)
        };
        drop(waker);
    }
}

impl fmt::Debug for ShutdownRequested<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownRequested")
            .field("requested", &self.inner.requested.load(Ordering::Acquire))
            .finish_non_exhaustive()
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
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn counting_waker() -> (std::task::Waker, std::sync::Arc<Count>) {
        let count = std::sync::Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
        (std::task::Waker::from(count.clone()), count)
    }

    #[test]
    fn a_dropped_wait_gives_its_slot_back_and_the_others_are_woken_once() {
        use std::future::Future;
        use std::sync::atomic::Ordering::SeqCst;
        use std::task::{Context, Poll};
        let shutdown = Shutdown::new();
        let wakers: Vec<_> = (0..4).map(|_| counting_waker()).collect();
        let mut waits: Vec<_> = (0..4).map(|_| Box::pin(shutdown.requested())).collect();
        for (wait, (waker, _)) in waits.iter_mut().zip(&wakers) {
            assert_eq!(
                wait.as_mut().poll(&mut Context::from_waker(waker)),
                Poll::Pending
            );
        }
        // Polled again with the same waker: no second slot, no clone kept twice.
        assert_eq!(
            waits[3]
                .as_mut()
                .poll(&mut Context::from_waker(&wakers[3].0)),
            Poll::Pending
        );
        assert_eq!(shutdown.inner.lock().allocated(), 3);
        // Dropping the first and a middle wait frees their slots, which new waits reuse.
        drop(waits.remove(0));
        drop(waits.remove(1));
        let late = counting_waker();
        let mut again: Vec<_> = (0..2).map(|_| Box::pin(shutdown.requested())).collect();
        for wait in &mut again {
            assert_eq!(
                wait.as_mut().poll(&mut Context::from_waker(&late.0)),
                Poll::Pending
            );
        }
        assert_eq!(shutdown.inner.lock().allocated(), 3, "slots reused");
        shutdown.request();
        shutdown.request();
        let woken: Vec<_> = wakers
            .iter()
            .map(|(_, count)| count.0.load(SeqCst))
            .collect();
        assert_eq!(woken, [0, 1, 0, 1], "the dropped waits are not woken");
        assert_eq!(late.1.0.load(SeqCst), 2);
        for wait in waits.iter_mut().chain(&mut again) {
            assert_eq!(
                wait.as_mut().poll(&mut Context::from_waker(&late.0)),
                Poll::Ready(())
            );
        }
        // Dropped after the request emptied the list: nothing to give back, no panic.
        drop(waits);
        let mut after = Box::pin(shutdown.requested());
        assert_eq!(
            after.as_mut().poll(&mut Context::from_waker(&late.0)),
            Poll::Ready(())
        );
    }

    #[test]
    fn a_wait_moved_to_another_task_is_woken_there() {
        use std::future::Future;
        use std::sync::atomic::Ordering::SeqCst;
        use std::task::{Context, Poll};
        let shutdown = Shutdown::new();
        let (first, first_count) = counting_waker();
        let (second, second_count) = counting_waker();
        let mut wait = Box::pin(shutdown.requested());
        assert_eq!(
            wait.as_mut().poll(&mut Context::from_waker(&first)),
            Poll::Pending
        );
        assert_eq!(
            wait.as_mut().poll(&mut Context::from_waker(&second)),
            Poll::Pending
        );
        shutdown.request();
        assert_eq!(
            (first_count.0.load(SeqCst), second_count.0.load(SeqCst)),
            (0, 1)
        );
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
