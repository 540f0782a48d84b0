//! Shared fixtures of the integration tests: an event log the hooks write to, faults to
//! inject, and a recorder of status changes.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use service_runtime::{Managed, Service, ServiceStatus, StatusChanges};

/// What a hook does when it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// Succeeds.
    #[default]
    None,
    /// Returns `Err`.
    Err,
    /// Panics.
    Panic,
    /// Returns `Err` after 10 ms.
    SlowErr,
    /// Never finishes.
    Hang,
}

impl Fault {
    /// Acts out the fault; `what` names it in the error or panic.
    pub async fn act(self, what: &str) -> Result<(), std::io::Error> {
        match self {
            Fault::None => Ok(()),
            Fault::Err => Err(std::io::Error::other(format!("{what} refused"))),
            Fault::SlowErr => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                Err(std::io::Error::other(format!("{what} refused")))
            }
            Fault::Panic => panic!("{what} exploded"),
            Fault::Hang => std::future::pending().await,
        }
    }
}

/// An ordered record of what hooks ran, shared between a test and its services.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, entry: impl Into<String>) {
        self.0.lock().unwrap().push(entry.into());
    }

    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn count(&self, entry: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| *e == entry)
            .count()
    }
}

/// The changes of a clean start and stop, as [`history`] gives them.
pub const CLEAN_CYCLE: [(ServiceStatus, ServiceStatus); 4] = [
    (ServiceStatus::Stopped, ServiceStatus::Starting),
    (ServiceStatus::Starting, ServiceStatus::Running),
    (ServiceStatus::Running, ServiceStatus::Stopping),
    (ServiceStatus::Stopping, ServiceStatus::Stopped),
];

/// Drains every status change received so far as `(from, to)` pairs.
pub fn history(changes: &mut StatusChanges) -> Vec<(ServiceStatus, ServiceStatus)> {
    let mut out = Vec::new();
    while let Some(change) = changes.try_recv() {
        assert!(
            change.from.can_transition_to(change.to),
            "illegal transition reported: {} -> {}",
            change.from,
            change.to
        );
        out.push((change.from, change.to));
    }
    out
}

/// Lets spawned tasks run until they block.
pub async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// Subscribes before anything happens.
pub fn watched<S: Service>(service: S) -> (Managed<S>, StatusChanges) {
    let managed = Managed::new(service);
    let changes = managed.subscribe();
    (managed, changes)
}

/// Sets its flag when dropped: held in a run loop's future, it tells the loop was dropped.
pub struct DropFlag(pub Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Runs `future` to its end on this thread without any tokio runtime (as
/// `futures::executor::block_on` would): parks the thread until woken.
pub fn block_on_without_tokio<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

/// Starts `service`, then stops it from a spawned task (on a multi-thread runtime, a
/// worker: not `block_on`'s own thread) and returns the stop's error.
pub async fn start_then_stop_in_a_task<S: Service>(
    service: &Managed<S>,
) -> service_runtime::ServiceError {
    service.start().await.unwrap();
    let stopper = service.clone();
    tokio::spawn(async move { stopper.stop().await })
        .await
        .unwrap()
        .expect_err("the stop fails")
}
