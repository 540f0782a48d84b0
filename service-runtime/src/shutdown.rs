//! [`Shutdown`]: the signal a run loop watches to know when to return.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

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
    notify: Notify,
}

impl Shutdown {
    /// A signal that has not been requested yet.
    pub fn new() -> Self {
        Shutdown::default()
    }

    /// Requests shutdown: wakes every task waiting in [`requested`](Self::requested).
    pub fn request(&self) {
        if !self.inner.requested.swap(true, Ordering::AcqRel) {
            self.inner.notify.notify_waiters();
        }
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
    pub async fn requested(&self) {
        loop {
            // Registered before the flag is read: `notify_waiters` reaches every
            // `Notified` created before it, polled or not, so no request is missed.
            let notified = self.inner.notify.notified();
            if self.is_requested() {
                return;
            }
            notified.await;
        }
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
}
