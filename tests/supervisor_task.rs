//! The supervisor on the multi-thread runtime, where it runs in a task of its own while
//! the `run_until` future stays in the caller's task. No timing is asserted: the
//! timeouts only turn a hang into a failure.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::Poll;
use std::time::Duration;

use service_runtime::{Managed, Service, ServiceStatus, Shutdown, Supervisor, lifecycle};
use tokio::sync::Notify;

use common::DropFlag;

/// Only a hang guard.
const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Service)]
struct Worker {
    /// Set when the run loop's future is dropped.
    dropped: Arc<AtomicBool>,
    inits: Arc<AtomicU32>,
}

#[lifecycle]
impl Worker {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        self.inits.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    #[run]
    async fn work(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        let _flag = DropFlag(self.dropped.clone());
        shutdown.requested().await;
        Ok(())
    }
}

fn worker(name: &'static str) -> (Managed<Worker>, Arc<AtomicBool>) {
    let dropped = Arc::new(AtomicBool::new(false));
    let worker = Managed::with_config(
        Worker {
            dropped: dropped.clone(),
            inits: Arc::default(),
        },
        Worker::config().name(name),
    );
    (worker, dropped)
}

async fn until(what: &str, condition: impl Fn() -> bool) {
    tokio::time::timeout(PATIENCE, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("waited too long for: {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_until_may_borrow_from_the_caller_and_ends_with_its_future() {
    let (a, _) = worker("a");
    let (b, _) = worker("b");
    let supervisor = Supervisor::new()
        .add(a.clone())
        .add(b.clone())
        .depends_on("a");
    let handle = supervisor.handle();
    // Borrowed, not moved: the future is not `'static`.
    let stop = Notify::new();
    let polled = AtomicU32::new(0);
    let stopper = {
        let handle = handle.clone();
        async move {
            until("every service started", || handle.has_started()).await;
        }
    };
    let run = supervisor.run_until(async {
        polled.fetch_add(1, Ordering::SeqCst);
        stop.notified().await;
    });
    let report = tokio::time::timeout(PATIENCE, async {
        tokio::join!(run, async {
            stopper.await;
            stop.notify_one();
        })
        .0
    })
    .await
    .expect("the run ends");
    assert!(report.is_success(), "{:?}", report.errors());
    assert!(polled.load(Ordering::SeqCst) >= 1);
    assert_eq!(a.status(), ServiceStatus::Stopped);
    assert_eq!(b.status(), ServiceStatus::Stopped);
    let stats = handle.stats();
    assert_eq!(stats.len(), 2);
    assert!(stats.iter().all(|s| s.last_start_duration.is_some()
        && s.last_stop_duration.is_some()
        && s.restarts == 0));
}

/// A future that checks a condition when polled but never arranges a wake-up (as the
/// benchmark's does) is still polled once every service has started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_without_a_waker_is_polled_again_once_started() {
    let mut supervisor = Supervisor::new();
    for name in ["a", "b", "c"] {
        supervisor = supervisor.add(worker(name).0);
    }
    let handle = supervisor.handle();
    let until = std::future::poll_fn(move |_| {
        if handle.has_started() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    let report = tokio::time::timeout(PATIENCE, supervisor.run_until(until))
        .await
        .expect("the run ends once every service started");
    assert!(report.is_success(), "{:?}", report.errors());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_through_the_handle_ends_the_supervisors_task() {
    let (a, _) = worker("a");
    let supervisor = Supervisor::new().add(a.clone());
    let handle = supervisor.handle();
    let run = tokio::spawn(supervisor.run_until(std::future::pending()));
    until("a running", || a.status() == ServiceStatus::Running).await;
    handle.shutdown();
    let report = tokio::time::timeout(PATIENCE, run)
        .await
        .expect("the run ends")
        .unwrap();
    assert!(report.is_success(), "{:?}", report.errors());
    assert!(handle.is_stopping());
    assert_eq!(a.status(), ServiceStatus::Stopped);
}

/// Dropping the `run_until` future ends the supervisor's own task, which drops the last
/// handles of the services and so cancels their run loops, as when the supervisor ran in
/// the caller's task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_run_until_ends_the_supervisors_task() {
    let (a, dropped) = worker("a");
    let supervisor = Supervisor::new().add(a);
    let handle = supervisor.handle();
    let task = tokio::spawn(supervisor.run_until(std::future::pending()));
    until("a running", || {
        handle.statuses()[0].1 == ServiceStatus::Running
    })
    .await;
    assert!(!dropped.load(Ordering::SeqCst));
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    drop(handle);
    until("the run loop cancelled", || dropped.load(Ordering::SeqCst)).await;
}

/// A future that is complete at its first poll ends the run before any service starts,
/// as when the supervisor ran in the caller's task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_complete_at_once_starts_nothing() {
    let inits = Arc::new(AtomicU32::new(0));
    let mut supervisor = Supervisor::new();
    for name in ["a", "b", "c"] {
        supervisor = supervisor.add(Managed::with_config(
            Worker {
                dropped: Arc::default(),
                inits: inits.clone(),
            },
            Worker::config().name(name),
        ));
    }
    let report = tokio::time::timeout(PATIENCE, supervisor.run_until(async {}))
        .await
        .expect("the run ends");
    assert!(report.is_success(), "{:?}", report.errors());
    assert_eq!(inits.load(Ordering::SeqCst), 0, "no init hook ran");
}

/// What the `run_until` future holds is released as soon as it completes, not when the
/// whole shutdown has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_until_future_is_dropped_when_it_completes() {
    #[derive(Service)]
    #[service(stop_timeout = "1h")]
    struct SlowStop {
        released: Arc<AtomicBool>,
    }

    #[lifecycle]
    impl SlowStop {
        #[cleanup]
        async fn close(&mut self) -> Result<(), std::io::Error> {
            // The shutdown waits here until the caller's guard is released.
            until("the guard released", || {
                self.released.load(Ordering::SeqCst)
            })
            .await;
            Ok(())
        }
    }

    let released = Arc::new(AtomicBool::new(false));
    let supervisor = Supervisor::new().add(SlowStop {
        released: released.clone(),
    });
    let handle = supervisor.handle();
    let guard = DropFlag(released.clone());
    let run = supervisor.run_until(async move {
        let _guard = guard;
        until("every service started", || handle.has_started()).await;
    });
    let report = tokio::time::timeout(PATIENCE, run)
        .await
        .expect("the cleanup sees the guard released, so the run ends");
    assert!(report.is_success(), "{:?}", report.errors());
}
