//! How a start or stop runs: driven by the calls that wait for it, handed over to a
//! spawned task when a caller goes away, abandoned (ending in `error`) only when its
//! runtime shuts down.

mod common;

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;

use common::{DropFlag, block_on_without_tokio, start_then_stop_in_a_task};
use service_runtime::Service;
use service_runtime::{Managed, ServiceError, ServiceStatus, lifecycle};

#[derive(Service, Default)]
#[service(name = "slow", start_timeout = "1h", stop_timeout = "1h")]
struct Slow {
    inits: Arc<AtomicUsize>,
    cleanups: Arc<AtomicUsize>,
    init_for: Duration,
    cleanup_for: Duration,
}

#[lifecycle]
impl Slow {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        tokio::time::sleep(self.init_for).await;
        self.inits.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    #[cleanup]
    async fn close(&mut self) -> Result<(), std::io::Error> {
        tokio::time::sleep(self.cleanup_for).await;
        self.cleanups.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn slow(init_ms: u64, cleanup_ms: u64) -> Slow {
    Slow {
        init_for: Duration::from_millis(init_ms),
        cleanup_for: Duration::from_millis(cleanup_ms),
        ..Slow::default()
    }
}

const MS: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn a_start_whose_future_is_dropped_still_finishes() {
    let service = Managed::new(slow(10, 0));
    tokio::select! {
        _ = service.start() => panic!("the init takes 10 ms"),
        () = tokio::time::sleep(MS) => {}
    }
    assert_eq!(service.status(), ServiceStatus::Starting);
    tokio::time::sleep(20 * MS).await;
    assert_eq!(service.status(), ServiceStatus::Running);
    assert_eq!(service.read().await.inits.load(Ordering::SeqCst), 1);
    service.start().await.unwrap();
    assert_eq!(service.read().await.inits.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stop_whose_future_is_dropped_still_finishes() {
    let service = Managed::new(slow(0, 10));
    service.start().await.unwrap();
    tokio::select! {
        _ = service.stop() => panic!("the cleanup takes 10 ms"),
        () = tokio::time::sleep(MS) => {}
    }
    assert_eq!(service.status(), ServiceStatus::Stopping);
    tokio::time::sleep(20 * MS).await;
    assert_eq!(service.status(), ServiceStatus::Stopped);
    assert_eq!(service.read().await.cleanups.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_start_kept_but_no_longer_polled_does_not_block_a_stop() {
    let service = Managed::new(slow(10, 0));
    let mut start = pin!(service.start());
    // Polled once (it begins the operation and parks), then kept without being polled.
    tokio::select! {
        _ = start.as_mut() => panic!("the init takes 10 ms"),
        () = tokio::time::sleep(MS) => {}
    }
    let stopped = tokio::time::timeout(Duration::from_secs(1), service.stop()).await;
    stopped
        .expect("the stop must not wait for a caller that stopped polling")
        .unwrap();
    assert_eq!(service.status(), ServiceStatus::Stopped);
    assert!(matches!(
        start.await,
        Err(ServiceError::StartCancelled { .. })
    ));
    assert_eq!(service.read().await.inits.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_hands_the_work_over_and_both_get_the_result() {
    let service = Managed::new(slow(10, 0));
    let mut first = pin!(service.start());
    tokio::select! {
        _ = first.as_mut() => panic!("the init takes 10 ms"),
        () = tokio::time::sleep(MS) => {}
    }
    // The second call hands the parked work to a task and waits for it; the first,
    // polled again later, finds its work gone and returns the same outcome.
    service.start().await.unwrap();
    assert_eq!(service.status(), ServiceStatus::Running);
    first.await.unwrap();
    assert_eq!(service.read().await.inits.load(Ordering::SeqCst), 1);
}

/// A service whose init hook stops the service itself, re-entering its own operation
/// while the caller is polling it.
#[derive(Service, Default)]
#[service(name = "quitter")]
struct Quitter {
    me: Arc<OnceLock<Managed<Quitter>>>,
}

#[lifecycle]
impl Quitter {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        let me = self.me.get().expect("set before start").clone();
        me.stop().await.map_err(std::io::Error::other)
    }
}

#[tokio::test(start_paused = true)]
async fn an_init_hook_that_stops_its_own_service_cancels_the_start() {
    let me = Arc::new(OnceLock::new());
    let service = Managed::new(Quitter { me: me.clone() });
    me.set(service.clone()).ok().unwrap();
    let result = tokio::time::timeout(Duration::from_secs(1), service.start())
        .await
        .expect("no deadlock");
    assert!(
        matches!(result, Err(ServiceError::StartCancelled { .. })),
        "{result:?}"
    );
    assert_eq!(service.status(), ServiceStatus::Stopped);
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

#[test]
fn a_start_handed_over_to_a_task_ends_in_error_when_its_runtime_shuts_down() {
    let runtime = current_thread();
    let service = Managed::new(slow(3_600_000, 0));
    runtime.block_on(async {
        tokio::select! {
            _ = service.start() => panic!("the init takes an hour"),
            () = tokio::time::sleep(MS) => {}
        }
    });
    assert_eq!(service.status(), ServiceStatus::Starting);
    drop(runtime);
    assert_eq!(service.status(), ServiceStatus::Error);
    let error = service.last_error().unwrap().to_string();
    assert_eq!(
        error,
        "service `slow`: start abandoned before it finished (its runtime shut down); \
         start it again on a running runtime"
    );
}

#[test]
fn a_start_dropped_outside_any_runtime_ends_in_error_and_can_start_again() {
    let runtime = current_thread();
    let service = Managed::new(slow(10, 0));
    let mut start = Box::pin(service.start());
    runtime.block_on(std::future::poll_fn(|cx| {
        assert!(start.as_mut().poll(cx).is_pending());
        Poll::Ready(())
    }));
    drop(runtime);
    assert_eq!(service.status(), ServiceStatus::Starting);
    drop(start); // no runtime to hand the work over to
    assert_eq!(service.status(), ServiceStatus::Error);
    assert!(matches!(
        service.last_error(),
        Some(ServiceError::Abandoned {
            operation: "start",
            ..
        })
    ));

    let runtime = current_thread();
    runtime.block_on(async {
        service.start().await.unwrap();
        assert_eq!(service.read().await.inits.load(Ordering::SeqCst), 1);
        service.stop().await.unwrap();
    });
}

#[test]
fn many_callers_on_many_threads_agree_on_one_state_machine() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Hooks that yield, so operations are in flight while other threads call in.
        #[derive(Service, Default)]
        #[service(name = "busy")]
        struct Busy {
            inits: Arc<AtomicUsize>,
            cleanups: Arc<AtomicUsize>,
        }

        #[lifecycle]
        impl Busy {
            #[init]
            async fn open(&mut self) -> Result<(), std::io::Error> {
                tokio::task::yield_now().await;
                self.inits.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }

            #[cleanup]
            async fn close(&mut self) -> Result<(), std::io::Error> {
                tokio::task::yield_now().await;
                self.cleanups.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }

        let inits = Arc::new(AtomicUsize::new(0));
        let cleanups = Arc::new(AtomicUsize::new(0));
        let service = Managed::new(Busy {
            inits: inits.clone(),
            cleanups: cleanups.clone(),
        });
        let callers: Vec<_> = (0..8)
            .map(|caller| {
                let service = service.clone();
                tokio::spawn(async move {
                    for round in 0..300_usize {
                        // Some calls are dropped half-way: their operations must still end.
                        let drop_it = (round + caller) % 7 == 0;
                        if (round * 31 + caller * 17) % 2 == 0 {
                            let start = service.start();
                            if drop_it {
                                let _ = tokio::time::timeout(Duration::ZERO, start).await;
                            } else {
                                // `Err` only when a concurrent stop cancelled this start.
                                if let Err(error) = start.await {
                                    assert!(matches!(error, ServiceError::StartCancelled { .. }));
                                }
                            }
                        } else {
                            let stop = service.stop();
                            if drop_it {
                                let _ = tokio::time::timeout(Duration::ZERO, stop).await;
                            } else {
                                stop.await.unwrap();
                            }
                        }
                    }
                })
            })
            .collect();
        for caller in callers {
            tokio::time::timeout(Duration::from_secs(60), caller)
                .await
                .expect("no caller hangs")
                .unwrap();
        }
        tokio::time::timeout(Duration::from_secs(60), service.stop())
            .await
            .expect("the last stop does not hang")
            .unwrap();
        assert_eq!(service.status(), ServiceStatus::Stopped);
        // Every completed init was cleaned up exactly once.
        assert_eq!(
            inits.load(Ordering::SeqCst),
            cleanups.load(Ordering::SeqCst)
        );
        assert!(inits.load(Ordering::SeqCst) > 0);
    });
}

#[tokio::test(start_paused = true)]
async fn read_is_not_blocked_by_a_start_kept_but_no_longer_polled() {
    let service = Managed::new(slow(10, 0));
    let mut start = pin!(service.start());
    tokio::select! {
        _ = start.as_mut() => panic!("the init takes 10 ms"),
        () = tokio::time::sleep(MS) => {}
    }
    // The init holds the write lock; `read()` hands the start to a task, which finishes it.
    let inits = tokio::time::timeout(Duration::from_secs(1), service.read())
        .await
        .expect("read must not wait for a caller that stopped polling")
        .inits
        .load(Ordering::SeqCst);
    assert_eq!(inits, 1);
    assert_eq!(service.status(), ServiceStatus::Running);
    start.await.unwrap();
}

/// The run hook of the blockers below: waits for the shutdown request, then blocks its
/// worker thread well past the stop timeout.
async fn block_after_the_request(
    shutdown: service_runtime::Shutdown,
    finished: &std::sync::atomic::AtomicBool,
) -> Result<(), std::io::Error> {
    shutdown.requested().await;
    std::thread::sleep(Duration::from_millis(1_500));
    finished.store(true, Ordering::SeqCst);
    Ok(())
}

/// A run loop alone: its stop is ended by the run task (or its waiter, at the deadline).
#[derive(Service, Default)]
#[service(name = "blocker", stop_timeout = "50ms")]
struct Blocker {
    finished: Arc<std::sync::atomic::AtomicBool>,
}

#[lifecycle]
impl Blocker {
    #[run]
    async fn spin(&self, shutdown: service_runtime::Shutdown) -> Result<(), std::io::Error> {
        block_after_the_request(shutdown, &self.finished).await
    }
}

/// A run loop and a cleanup hook: the stop runs as an operation that awaits the loop's
/// task.
#[derive(Service, Default)]
#[service(name = "blocker", stop_timeout = "50ms")]
struct CleanBlocker {
    finished: Arc<std::sync::atomic::AtomicBool>,
}

#[lifecycle]
impl CleanBlocker {
    #[run]
    async fn spin(&self, shutdown: service_runtime::Shutdown) -> Result<(), std::io::Error> {
        block_after_the_request(shutdown, &self.finished).await
    }

    #[cleanup]
    async fn close(&mut self) -> Result<(), std::io::Error> {
        Ok(())
    }
}

/// A task that always has work: spins ~50 µs per poll and wakes itself, until `done`.
fn busy(done: Arc<std::sync::atomic::AtomicBool>) -> impl Future<Output = ()> + Send {
    std::future::poll_fn(move |cx| {
        if done.load(Ordering::Relaxed) {
            return Poll::Ready(());
        }
        let began = std::time::Instant::now();
        while began.elapsed() < Duration::from_micros(50) {
            std::hint::spin_loop();
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
}

/// Starts `service` on a multi-thread runtime and stops it from a spawned task (not
/// `block_on`'s own thread, which is not a worker the loop could block); returns the
/// stop's error, checking it came before the blocked loop finished. With `busy_workers`,
/// tasks that always have work keep every worker's queue full meanwhile (so none is
/// idle to steal from the blocked one).
fn stop_a_blocked_loop<S: Service>(
    service: S,
    finished: &std::sync::atomic::AtomicBool,
    busy_workers: bool,
) -> String {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let service = Managed::new(service);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let error = runtime.block_on(async {
        if busy_workers {
            for _ in 0..4 {
                tokio::spawn(busy(done.clone()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        start_then_stop_in_a_task(&service).await
    });
    done.store(true, Ordering::SeqCst);
    assert!(
        !finished.load(Ordering::SeqCst),
        "the stop returned before the blocked loop did"
    );
    assert_eq!(service.status(), ServiceStatus::Error);
    runtime.shutdown_background();
    error.to_string()
}

/// A run loop that blocks its thread (ignoring the shutdown signal) cannot be cancelled,
/// but the stop still returns after the stop timeout, reporting it.
#[test]
fn a_stop_returns_after_its_timeout_even_when_the_run_loop_blocks_its_thread() {
    let finished = Arc::default();
    let error = stop_a_blocked_loop(
        Blocker {
            finished: Arc::clone(&finished),
        },
        &finished,
        false,
    );
    assert_eq!(
        error,
        "service `blocker`: run hook `spin` timed out after 50ms"
    );
}

/// As above, with every worker busy: none is idle to steal the stop's task from the
/// blocked worker, so the deadline must not depend on it being stolen.
#[test]
fn a_stop_with_busy_workers_returns_after_its_timeout_even_when_the_run_loop_blocks_its_thread() {
    for with_cleanup in [false, true] {
        let finished = Arc::default();
        let error = if with_cleanup {
            let service = CleanBlocker {
                finished: Arc::clone(&finished),
            };
            stop_a_blocked_loop(service, &finished, true)
        } else {
            let service = Blocker {
                finished: Arc::clone(&finished),
            };
            stop_a_blocked_loop(service, &finished, true)
        };
        assert!(
            error.contains("run hook `spin` timed out after 50ms"),
            "{error}"
        );
    }
}

/// As above, for a service with a cleanup hook.
#[test]
fn a_full_stop_returns_after_its_timeout_even_when_the_run_loop_blocks_its_thread() {
    let finished = Arc::default();
    let error = stop_a_blocked_loop(
        CleanBlocker {
            finished: Arc::clone(&finished),
        },
        &finished,
        false,
    );
    assert_eq!(
        error,
        "service `blocker`: 2 errors: \
         [1] service `blocker`: run hook `spin` timed out after 50ms; \
         [2] service `blocker`: cleanup hook `close` failed: no cleanup hook ran: a \
         `Managed::read()` guard or a health check still held the service after 50ms",
        "the blocked loop keeps its read guard until its thread is released: the cleanup \
         cannot take the service either, and says so"
    );
}

/// A run loop that holds a large buffer across an `.await`: its future is boxed inside
/// its task rather than carried in the task (built on the stack of `start()`), and it
/// runs and stops as any other.
#[test]
fn a_run_loop_with_a_large_future_runs_and_stops() {
    #[derive(Service, Default)]
    #[service(name = "hoarder")]
    struct Hoarder {
        sum: Arc<AtomicUsize>,
    }

    #[lifecycle]
    impl Hoarder {
        #[run]
        async fn fill(&self, shutdown: service_runtime::Shutdown) -> Result<(), std::io::Error> {
            let mut buffer = [1u8; 256 * 1024];
            shutdown.requested().await;
            buffer[0] = 2;
            let sum = buffer.iter().map(|&b| usize::from(b)).sum();
            self.sum.store(sum, Ordering::SeqCst);
            Ok(())
        }
    }

    // A thread with a small stack: the 256 KiB future must not be built on it.
    let sum = Arc::new(AtomicUsize::new(0));
    let service = Managed::new(Hoarder { sum: sum.clone() });
    std::thread::Builder::new()
        .stack_size(192 * 1024)
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_stack_size(4 * 1024 * 1024)
                .enable_time()
                .build()
                .unwrap();
            runtime.block_on(async {
                service.start().await.unwrap();
                service.stop().await.unwrap();
            });
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(sum.load(Ordering::SeqCst), 256 * 1024 + 1);
}

/// A run loop whose large future (boxed inside its task) panics: the panic is caught and
/// reported as the run hook's, as for any loop.
#[tokio::test(start_paused = true)]
async fn a_large_run_future_that_panics_is_reported_as_a_panic() {
    #[derive(Service)]
    #[service(name = "hoarder")]
    struct Hoarder;

    #[lifecycle]
    impl Hoarder {
        #[run]
        async fn fill(&self, shutdown: service_runtime::Shutdown) -> Result<(), std::io::Error> {
            let buffer = [7u8; 4 * 1024];
            shutdown.requested().await;
            if buffer[0] == 7 {
                panic!("flush exploded");
            }
            Ok(())
        }
    }

    let service = Managed::new(Hoarder);
    service.start().await.unwrap();
    let error = service.stop().await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "service `hoarder`: run hook `fill` panicked: flush exploded"
    );
    assert_eq!(service.status(), ServiceStatus::Error);
}

/// Without a tokio runtime, starting a service with a run loop fails with an error that
/// says so, and leaves a state machine that later calls can still use.
#[test]
fn a_start_without_a_runtime_leaves_a_usable_state_machine() {
    #[derive(Service)]
    #[service(name = "looper")]
    struct Looper;

    #[lifecycle]
    impl Looper {
        #[run]
        async fn spin(&self, shutdown: service_runtime::Shutdown) -> Result<(), std::io::Error> {
            shutdown.requested().await;
            Ok(())
        }
    }

    let service = Managed::new(Looper);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let Poll::Ready(Err(error)) = pin!(service.start()).poll(&mut cx) else {
        panic!("a start without a runtime for its loop fails at once");
    };
    assert_eq!(
        error.to_string(),
        "service `looper`: run hook `spin` failed: there is no tokio runtime to spawn it on: \
         start the service from within one"
    );
    assert_eq!(service.status(), ServiceStatus::Error);
    // No spinning on a `starting` left without an operation: the stop completes at once.
    assert!(matches!(
        pin!(service.stop()).poll(&mut cx),
        Poll::Ready(Ok(()))
    ));
    assert_eq!(service.status(), ServiceStatus::Stopped);
}

/// A service that owes nothing but its run loop, whose stop the run task ends itself.
/// `ignores` makes the loop ignore the shutdown request; `fails` makes it return `Err`
/// once asked to stop.
#[derive(Service, Default)]
#[service(name = "looper", stop_timeout = "2s")]
struct Looper {
    ignores: bool,
    fails: bool,
    dropped: Arc<std::sync::atomic::AtomicBool>,
}

#[lifecycle]
impl Looper {
    #[run]
    async fn spin(&self, shutdown: service_runtime::Shutdown) -> Result<(), std::io::Error> {
        let _on_drop = DropFlag(self.dropped.clone());
        if self.ignores {
            std::future::pending::<()>().await;
        }
        shutdown.requested().await;
        if self.fails {
            return Err(std::io::Error::other("flush failed"));
        }
        Ok(())
    }
}

fn looper(ignores: bool, fails: bool) -> Looper {
    Looper {
        ignores,
        fails,
        ..Looper::default()
    }
}

const TIMED_OUT: &str = "service `looper`: run hook `spin` timed out after 2s";

#[tokio::test(start_paused = true)]
async fn a_run_loop_that_ignores_shutdown_is_dropped_at_the_stop_deadline() {
    let service = Managed::new(looper(true, false));
    service.start().await.unwrap();
    let began = tokio::time::Instant::now();
    let error = service.stop().await.unwrap_err();
    assert_eq!(began.elapsed(), Duration::from_secs(2), "stop_timeout");
    assert_eq!(error.to_string(), TIMED_OUT);
    assert_eq!(service.status(), ServiceStatus::Error);
    tokio::task::yield_now().await;
    assert!(service.read().await.dropped.load(Ordering::SeqCst));
    // The service can start again.
    service.start().await.unwrap();
    assert_eq!(service.status(), ServiceStatus::Running);
}

#[tokio::test(start_paused = true)]
async fn a_run_stop_whose_future_is_dropped_still_ends_at_its_deadline() {
    let service = Managed::new(looper(true, false));
    service.start().await.unwrap();
    tokio::select! {
        _ = service.stop() => panic!("the loop ignores the request"),
        () = tokio::time::sleep(MS) => {}
    }
    assert_eq!(service.status(), ServiceStatus::Stopping);
    tokio::time::sleep(Duration::from_millis(1_998)).await;
    assert_eq!(service.status(), ServiceStatus::Stopping);
    tokio::time::sleep(2 * MS).await;
    assert_eq!(service.status(), ServiceStatus::Error);
    assert_eq!(service.last_error().unwrap().to_string(), TIMED_OUT);
}

#[tokio::test(start_paused = true)]
async fn a_run_stop_kept_but_no_longer_polled_is_ended_by_the_next_waiter() {
    let service = Managed::new(looper(true, false));
    service.start().await.unwrap();
    let mut first = pin!(service.stop());
    tokio::select! {
        _ = first.as_mut() => panic!("the loop ignores the request"),
        () = tokio::time::sleep(MS) => {}
    }
    // The first stop is never polled again before its deadline; the second call's wait
    // enforces it.
    let error = service.stop().await.unwrap_err();
    assert_eq!(error.to_string(), TIMED_OUT);
    assert_eq!(service.status(), ServiceStatus::Error);
    assert_eq!(first.await.unwrap_err().to_string(), TIMED_OUT);
}

#[tokio::test(start_paused = true)]
async fn every_waiter_of_a_run_stop_gets_the_loops_error() {
    let service = Managed::new(looper(false, true));
    service.start().await.unwrap();
    let (a, b) = tokio::join!(service.stop(), service.stop());
    let expected = "service `looper`: run hook `spin` failed: flush failed";
    assert_eq!(a.unwrap_err().to_string(), expected);
    assert_eq!(b.unwrap_err().to_string(), expected);
    assert_eq!(service.status(), ServiceStatus::Error);
    // A start during the stop waits for it, then starts again.
    let service = Managed::new(looper(false, false));
    service.start().await.unwrap();
    let (stopped, started) = tokio::join!(service.stop(), service.start());
    stopped.unwrap();
    started.unwrap();
    assert_eq!(service.status(), ServiceStatus::Running);
}

/// A loop whose first stop fails and whose later stops succeed.
#[derive(Service, Default)]
#[service(name = "flaky", stop_timeout = "1h")]
struct Flaky {
    stops: AtomicUsize,
}

#[lifecycle]
impl Flaky {
    #[run]
    async fn pump(&self, shutdown: service_runtime::Shutdown) -> Result<(), std::io::Error> {
        shutdown.requested().await;
        match self.stops.fetch_add(1, Ordering::SeqCst) {
            0 => Err(std::io::Error::other("first flush failed")),
            _ => Ok(()),
        }
    }
}

/// Polls `future` once.
fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(future).poll(&mut cx)
}

/// Checks `error` is the first stop's failure of a [`Flaky`] loop, then that the service
/// starts and stops cleanly again.
async fn first_flush_failed_then_a_clean_cycle(service: &Managed<Flaky>, error: ServiceError) {
    assert_eq!(
        error.to_string(),
        "service `flaky`: run hook `pump` failed: first flush failed"
    );
    service.start().await.unwrap();
    service.stop().await.unwrap();
    assert_eq!(service.status(), ServiceStatus::Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_run_stops_outcome_waits_for_its_caller_across_later_stops() {
    let service = Managed::new(Flaky::default());
    service.start().await.unwrap();
    // Begun, then not polled while its loop ends the stop, a restart and a second stop.
    let mut first = Box::pin(service.stop());
    assert!(poll_once(&mut first).is_pending());
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    assert_eq!(service.status(), ServiceStatus::Error);
    service.start().await.unwrap();
    let mut second = Box::pin(service.stop());
    assert!(poll_once(&mut second).is_pending());
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    assert_eq!(service.status(), ServiceStatus::Stopped);
    // A third, begun and dropped after its end: its outcome goes with it.
    service.start().await.unwrap();
    let mut third = Box::pin(service.stop());
    assert!(poll_once(&mut third).is_pending());
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    drop(third);
    // Each caller gets its own stop's outcome, whatever the order it looks in.
    second.await.unwrap();
    let error = first.await.unwrap_err();
    first_flush_failed_then_a_clean_cycle(&service, error).await;
}

#[tokio::test(start_paused = true)]
async fn a_run_stop_joined_then_left_by_its_caller_reaches_the_joiner() {
    let service = Managed::new(Flaky::default());
    service.start().await.unwrap();
    let mut first = Box::pin(service.stop());
    assert!(poll_once(&mut first).is_pending());
    // A second call joins before the loop had its turn; the first goes away.
    let mut second = Box::pin(service.stop());
    assert!(poll_once(&mut second).is_pending());
    drop(first);
    let error = second.await.unwrap_err();
    // The next stop has its own outcome.
    first_flush_failed_then_a_clean_cycle(&service, error).await;
}

#[tokio::test(start_paused = true)]
async fn a_stop_after_the_loop_returned_on_its_own_does_not_wait_for_it() {
    #[derive(Service)]
    #[service(name = "oneshot", stop_timeout = "1h")]
    struct Oneshot;

    #[lifecycle]
    impl Oneshot {
        #[run]
        async fn once(&self, _shutdown: service_runtime::Shutdown) -> Result<(), std::io::Error> {
            Ok(())
        }
    }

    for _ in 0..3 {
        let service = Managed::new(Oneshot);
        service.start().await.unwrap();
        // The loop returns at its first poll; the stop races the one it begins.
        tokio::task::yield_now().await;
        let began = tokio::time::Instant::now();
        service.stop().await.unwrap();
        assert_eq!(
            began.elapsed(),
            Duration::ZERO,
            "no wait for a returned loop"
        );
        assert_eq!(service.status(), ServiceStatus::Stopped);
    }
}

#[test]
fn a_run_stop_ends_in_error_when_the_runtime_of_its_loop_shuts_down() {
    let loops = current_thread();
    let service = Managed::new(looper(true, false));
    loops.block_on(async {
        service.start().await.unwrap();
        tokio::task::yield_now().await;
    });
    let waiter = current_thread();
    let error = waiter.block_on(async {
        let mut stop = pin!(service.stop());
        let first = std::future::poll_fn(|cx| Poll::Ready(stop.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "the loop ignores the request");
        // The loop's runtime goes away (dropped on another thread: not from within a
        // runtime), dropping the loop's task.
        std::thread::spawn(move || drop(loops)).join().unwrap();
        stop.await.unwrap_err()
    });
    assert!(
        matches!(
            error,
            ServiceError::Abandoned {
                operation: "stop",
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(service.status(), ServiceStatus::Error);
}

#[test]
fn a_running_loop_dropped_with_its_runtime_leaves_error_and_a_stop_that_returns() {
    let loops = current_thread();
    let service = Managed::new(looper(false, false));
    loops.block_on(async {
        service.start().await.unwrap();
        tokio::task::yield_now().await;
    });
    drop(loops);
    assert_eq!(service.status(), ServiceStatus::Error);
    assert_eq!(
        service.last_error().unwrap().to_string(),
        "service `looper`: run hook `spin` failed: its task was dropped before it returned (its tokio runtime shut down)"
    );
    let result = current_thread().block_on(service.stop());
    result.unwrap();
    assert_eq!(service.status(), ServiceStatus::Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_loop_aborted_at_the_deadline_does_not_disturb_the_next_one() {
    let service = Managed::new(looper(true, false));
    service.start().await.unwrap();
    assert_eq!(service.stop().await.unwrap_err().to_string(), TIMED_OUT);
    // Started again before the aborted loop's task is dropped (its abort is processed
    // at the scheduler's next turn): that late drop concerns the old loop only.
    service.start().await.unwrap();
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    assert!(service.read().await.dropped.load(Ordering::SeqCst));
    assert_eq!(service.status(), ServiceStatus::Running);
    assert_eq!(service.last_error().unwrap().to_string(), TIMED_OUT);
}

#[test]
fn a_run_stop_awaited_outside_any_runtime_waits_for_the_loop_on_its_own() {
    let loops = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let service = Managed::new(looper(false, true));
    loops.block_on(service.start()).unwrap();
    let error = block_on_without_tokio(service.stop()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "service `looper`: run hook `spin` failed: flush failed"
    );
    assert_eq!(service.status(), ServiceStatus::Error);
}

#[test]
fn a_run_stop_awaited_outside_any_runtime_still_ends_at_its_deadline() {
    #[derive(Service, Default)]
    #[service(name = "deaf", stop_timeout = "100ms")]
    struct Deaf;

    #[lifecycle]
    impl Deaf {
        #[run]
        async fn spin(&self, _shutdown: service_runtime::Shutdown) -> Result<(), std::io::Error> {
            std::future::pending::<()>().await;
            Ok(())
        }
    }

    let loops = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let service = Managed::new(Deaf);
    loops.block_on(service.start()).unwrap();
    let error = block_on_without_tokio(service.stop()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "service `deaf`: run hook `spin` timed out after 100ms"
    );
    assert_eq!(service.status(), ServiceStatus::Error);
}

/// A loop aborted at a stop's deadline while it blocked its thread returns later, during
/// the next start: its exit must not be taken for the new loop's.
#[test]
fn a_stale_loop_returning_during_the_next_start_does_not_fail_it() {
    #[derive(Service, Default)]
    #[service(name = "flusher", stop_timeout = "50ms")]
    struct Flusher {
        starts: Arc<AtomicUsize>,
        stale_returned: Arc<std::sync::atomic::AtomicBool>,
    }

    #[lifecycle]
    impl Flusher {
        #[init]
        async fn open(&mut self) -> Result<(), std::io::Error> {
            if self.starts.fetch_add(1, Ordering::SeqCst) == 1 {
                // The second start waits until the first loop has returned.
                while !self.stale_returned.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            Ok(())
        }

        #[run]
        async fn flush(&self, shutdown: service_runtime::Shutdown) -> Result<(), std::io::Error> {
            shutdown.requested().await;
            if self.stale_returned.load(Ordering::SeqCst) {
                return Ok(());
            }
            // A synchronous flush that blocks the worker past the stop timeout.
            std::thread::sleep(Duration::from_millis(300));
            self.stale_returned.store(true, Ordering::SeqCst);
            Err(std::io::Error::other("stale loop"))
        }
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let service = Managed::new(Flusher::default());
    runtime.block_on(async {
        service.start().await.unwrap();
        let stopper = service.clone();
        let stopped = tokio::spawn(async move { stopper.stop().await })
            .await
            .unwrap();
        assert_eq!(
            stopped.unwrap_err().to_string(),
            "service `flusher`: run hook `flush` timed out after 50ms"
        );
        let starter = service.clone();
        tokio::spawn(async move { starter.start().await })
            .await
            .unwrap()
            .expect("the old loop's error belongs to the stop that timed out");
        assert_eq!(service.status(), ServiceStatus::Running);
    });
    runtime.shutdown_background();
}

/// A service whose start takes 10 ms, with a run loop: tells when the loop's future and
/// the service itself are dropped.
#[derive(Service, Default)]
#[service(name = "held")]
struct Held {
    loop_dropped: Arc<std::sync::atomic::AtomicBool>,
    _freed: Option<DropFlag>,
}

#[lifecycle]
impl Held {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        tokio::time::sleep(10 * MS).await;
        Ok(())
    }

    #[run]
    async fn serve(&self, shutdown: service_runtime::Shutdown) -> Result<(), std::io::Error> {
        let _on_drop = DropFlag(self.loop_dropped.clone());
        shutdown.requested().await;
        Ok(())
    }
}

/// A `Held` service, and flags set when its loop and when the service are dropped.
fn held() -> (
    Managed<Held>,
    Arc<std::sync::atomic::AtomicBool>,
    Arc<std::sync::atomic::AtomicBool>,
) {
    let loop_dropped = Arc::default();
    let freed = Arc::default();
    let service = Managed::new(Held {
        loop_dropped: Arc::clone(&loop_dropped),
        _freed: Some(DropFlag(Arc::clone(&freed))),
    });
    (service, loop_dropped, freed)
}

#[tokio::test(start_paused = true)]
async fn the_last_handle_ends_the_loop_and_frees_the_service_and_clones_are_handles() {
    let (service, loop_dropped, freed) = held();
    service.start().await.unwrap();
    let clone = service.clone();
    drop(service);
    tokio::time::sleep(MS).await;
    assert!(
        !loop_dropped.load(Ordering::SeqCst),
        "a clone still holds it"
    );
    assert_eq!(clone.status(), ServiceStatus::Running);
    drop(clone);
    tokio::time::sleep(MS).await;
    assert!(loop_dropped.load(Ordering::SeqCst));
    assert!(
        freed.load(Ordering::SeqCst),
        "the loop's task no longer holds it"
    );
}

#[tokio::test(start_paused = true)]
async fn the_last_handle_dropped_while_a_start_finishes_ends_the_loop_it_spawns() {
    let (service, loop_dropped, freed) = held();
    tokio::select! {
        _ = service.start() => panic!("the init takes 10 ms"),
        () = tokio::time::sleep(MS) => {}
    }
    assert_eq!(service.status(), ServiceStatus::Starting);
    drop(service);
    // The start finishes in its task and spawns the loop, which is ended at once
    // (before its first poll, so its body never ran: the flag its body sets on drop
    // stays unset), and the service is freed.
    tokio::time::sleep(20 * MS).await;
    assert!(!loop_dropped.load(Ordering::SeqCst));
    assert!(
        freed.load(Ordering::SeqCst),
        "no task holds the service any more"
    );
}

#[tokio::test(start_paused = true)]
async fn a_supervisor_holds_a_handle_on_each_service_it_was_given() {
    let (service, loop_dropped, freed) = held();
    service.start().await.unwrap();
    let supervisor = service_runtime::Supervisor::new().add(service.clone());
    drop(service);
    tokio::time::sleep(MS).await;
    assert!(
        !loop_dropped.load(Ordering::SeqCst),
        "the supervisor holds it"
    );
    drop(supervisor);
    tokio::time::sleep(MS).await;
    assert!(loop_dropped.load(Ordering::SeqCst));
    assert!(freed.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn start_and_stop_do_nothing_until_polled_and_their_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    let service = Managed::new(slow(1, 1));
    let start = service.start();
    send_sync(&start);
    drop(start);
    tokio::time::sleep(10 * MS).await;
    assert_eq!(
        service.status(),
        ServiceStatus::Stopped,
        "an unpolled start"
    );
    assert_eq!(service.read().await.inits.load(Ordering::SeqCst), 0);
    service.start().await.unwrap();
    let stop = service.stop();
    send_sync(&stop);
    drop(stop);
    tokio::time::sleep(10 * MS).await;
    assert_eq!(service.status(), ServiceStatus::Running, "an unpolled stop");
    service.stop().await.unwrap();
    assert_eq!(service.read().await.cleanups.load(Ordering::SeqCst), 1);
}

/// Arms `ARMED_AT_INIT` at the end of its init hook: the next exit of the service's span
/// (the operation's last poll, after its final transition) panics in the subscriber.
#[derive(Service, Default)]
#[service(name = "armed", start_timeout = "1h")]
struct ArmsAtInit;

static ARMED_AT_INIT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[lifecycle]
impl ArmsAtInit {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        tokio::time::sleep(10 * MS).await;
        ARMED_AT_INIT.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// A tracing layer whose `on_exit` of a `service` span panics once armed.
struct PanicsOnServiceExit;

impl<S> tracing_subscriber::Layer<S> for PanicsOnServiceExit
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_exit(&self, id: &tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let is_service = ctx.span(id).is_some_and(|span| span.name() == "service");
        if is_service && ARMED_AT_INIT.swap(false, Ordering::SeqCst) {
            panic!("a subscriber panicked leaving the service's span");
        }
    }
}

#[test]
fn an_operation_unwinding_after_its_last_transition_still_answers_its_waiters() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let subscriber = tracing_subscriber::registry().with(PanicsOnServiceExit);
    let runtime = current_thread();
    let service = Managed::new(ArmsAtInit);
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            // The caller that began the start, and one that joins it (the work moves to
            // a spawned task, whose poll then panics in the subscriber).
            let mut first = Box::pin(service.start());
            assert!(poll_once(&mut first).is_pending());
            let joiner = tokio::spawn({
                let service = service.clone();
                async move { service.start().await }
            });
            let both = async { (first.await, joiner.await.expect("the joiner's task")) };
            let (first, joined) = tokio::time::timeout(Duration::from_secs(60), both)
                .await
                .expect("both callers get an answer, not a hang");
            for result in [first, joined] {
                assert!(
                    matches!(
                        result,
                        Err(ServiceError::Abandoned {
                            operation: "start",
                            ..
                        })
                    ),
                    "{result:?}"
                );
            }
        });
    });
    assert_eq!(service.status(), ServiceStatus::Error);
    // The state machine is usable: a stop clears the error, a start succeeds.
    runtime.block_on(async {
        service.stop().await.unwrap();
        service.start().await.unwrap();
        assert_eq!(service.status(), ServiceStatus::Running);
    });
}
