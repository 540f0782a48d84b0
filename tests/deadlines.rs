//! Stop deadlines of run loops on a multi-thread runtime (and outside any runtime): many
//! stops in a row end cleanly, and a stop nobody waits for any more, one awaited outside
//! any runtime and one with a cleanup hook still end at their deadline.
//!
//! The deadlines are long enough (300 ms) that a test thread held up on a busy machine
//! still sees a stop in flight where it expects one.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use common::{DropFlag, block_on_without_tokio, start_then_stop_in_a_task};
use service_runtime::{Managed, Service, ServiceStatus, Shutdown, lifecycle};

#[derive(Service, Default)]
#[service(name = "looper", stop_timeout = "300ms")]
struct Looper {
    ignores: bool,
    dropped: Arc<AtomicBool>,
}

#[lifecycle]
impl Looper {
    #[run]
    async fn spin(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        let _on_drop = DropFlag(self.dropped.clone());
        if self.ignores {
            std::future::pending::<()>().await;
        }
        shutdown.requested().await;
        Ok(())
    }
}

/// The same loop with a cleanup hook, which its stops run after the loop.
#[derive(Service, Default)]
#[service(name = "clean_looper", stop_timeout = "300ms")]
struct CleanLooper {
    ignores: bool,
    cleanups: Arc<std::sync::atomic::AtomicUsize>,
}

#[lifecycle]
impl CleanLooper {
    #[run]
    async fn spin(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        if self.ignores {
            std::future::pending::<()>().await;
        }
        shutdown.requested().await;
        Ok(())
    }

    #[cleanup]
    async fn close(&mut self) -> Result<(), std::io::Error> {
        self.cleanups.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

/// Starts and stops each of `services` in turn, from a task on one of the runtime's
/// workers.
fn cycle_one_by_one_on_a_worker<S: Service>(
    runtime: &tokio::runtime::Runtime,
    services: &[Managed<S>],
) {
    let all = services.to_vec();
    runtime
        .block_on(runtime.spawn(async move {
            for service in &all {
                service.start().await.unwrap();
                service.stop().await.unwrap();
            }
        }))
        .unwrap();
}

/// Polls `stop` once and drops it: nobody waits for the stop any more.
fn poll_once_and_drop<F: std::future::Future>(stop: F) {
    let mut stop = std::pin::pin!(stop);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(matches!(stop.as_mut().poll(&mut cx), Poll::Pending));
}

/// Waits (real time: a multi-thread runtime's clock cannot be paused) until `done`.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let began = Instant::now();
    while !done() {
        assert!(began.elapsed() < Duration::from_secs(10), "never: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn run_stop_deadlines_hold_on_a_multi_thread_runtime_and_outside_any() {
    let runtime = multi_thread();

    // Stops that end as their loops return, one by one and all at once, from a worker and
    // from `block_on`'s thread.
    let services: Vec<_> = (0..200).map(|_| Managed::new(Looper::default())).collect();
    cycle_one_by_one_on_a_worker(&runtime, &services);
    runtime.block_on(async {
        for service in &services {
            service.start().await.unwrap();
        }
        let stops = services.iter().map(|service| service.stop());
        for result in futures_util::future::join_all(stops).await {
            result.unwrap();
        }
    });

    // A loop that ignores the request, its stop dropped after one poll: the stop still
    // ends at its deadline, although no one waits for it.
    let service = Managed::new(Looper {
        ignores: true,
        ..Looper::default()
    });
    runtime.block_on(service.start()).unwrap();
    let began = Instant::now();
    runtime.block_on(async { poll_once_and_drop(service.stop()) });
    assert_eq!(service.status(), ServiceStatus::Stopping);
    eventually("the stop ends at its deadline", || {
        service.status() == ServiceStatus::Error
    });
    assert!(began.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        service.last_error().unwrap().to_string(),
        "service `looper`: run hook `spin` timed out after 300ms"
    );
    let dropped = runtime.block_on(async { service.read().await.dropped.clone() });
    eventually("the aborted loop's future is dropped", || {
        dropped.load(Ordering::SeqCst)
    });

    // Waited for outside any runtime (the loop runs on the runtime's workers): the stop
    // ends at its deadline too.
    runtime.block_on(service.start()).unwrap();
    let began = Instant::now();
    let error = block_on_without_tokio(service.stop()).unwrap_err();
    assert!(began.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        error.to_string(),
        "service `looper`: run hook `spin` timed out after 300ms"
    );

    // With a cleanup hook: stops whose loops return; a loop that ignores the request is
    // abandoned at the deadline, and the cleanup still runs.
    let cleanups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let services: Vec<_> = (0..100)
        .map(|_| {
            Managed::new(CleanLooper {
                cleanups: cleanups.clone(),
                ..CleanLooper::default()
            })
        })
        .collect();
    cycle_one_by_one_on_a_worker(&runtime, &services);
    assert_eq!(cleanups.load(Ordering::SeqCst), 100);
    let service = Managed::new(CleanLooper {
        ignores: true,
        cleanups: cleanups.clone(),
    });
    let began = Instant::now();
    let error = runtime.block_on(async {
        service.start().await.unwrap();
        let stopper = service.clone();
        let stop = tokio::spawn(async move { stopper.stop().await });
        stop.await.unwrap().unwrap_err()
    });
    assert!(began.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        error.to_string(),
        "service `clean_looper`: run hook `spin` timed out after 300ms"
    );
    assert_eq!(cleanups.load(Ordering::SeqCst), 101);
    assert_eq!(service.status(), ServiceStatus::Error);

    // The loop is aborted at the deadline: reported as the timeout it is, every time.
    for _ in 0..40 {
        let service = Managed::new(QuickCleanLooper);
        let error = runtime.block_on(start_then_stop_in_a_task(&service));
        assert!(error.is_timeout(), "{error}");
        assert_eq!(
            error.to_string(),
            "service `quick`: run hook `spin` timed out after 5ms"
        );
    }
}

/// A loop that ignores the request, with a cleanup hook and a short deadline.
#[derive(Service)]
#[service(name = "quick", stop_timeout = "5ms")]
struct QuickCleanLooper;

#[lifecycle]
impl QuickCleanLooper {
    #[run]
    async fn spin(&self, _shutdown: Shutdown) -> Result<(), std::io::Error> {
        std::future::pending::<()>().await;
        Ok(())
    }

    #[cleanup]
    async fn close(&mut self) -> Result<(), std::io::Error> {
        Ok(())
    }
}

#[test]
fn a_run_stop_whose_loop_runtime_shuts_down_is_finished_by_its_waiting_call() {
    let loops = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let service = Managed::new(CleanLooper {
        ignores: true,
        ..CleanLooper::default()
    });
    loops.block_on(service.start()).unwrap();
    let cleanups = loops.block_on(async { service.read().await.cleanups.clone() });

    // The stop waits on another runtime; the loop's runtime then shuts down, dropping
    // the loop's task before its loop returned.
    let waiting = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut stop = Box::pin(service.stop());
    waiting.block_on(std::future::poll_fn(|cx| {
        assert!(stop.as_mut().poll(cx).is_pending());
        Poll::Ready(())
    }));
    drop(loops);
    let error = waiting.block_on(stop).unwrap_err();
    assert_eq!(
        error.to_string(),
        "service `clean_looper`: stop abandoned before it finished (its runtime shut down); \
         start it again on a running runtime"
    );
    assert_eq!(service.status(), ServiceStatus::Error);
    assert_eq!(
        cleanups.load(Ordering::SeqCst),
        1,
        "the waiting call ran the rest of the stop"
    );
}
