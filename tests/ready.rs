//! A `#[run]` hook that takes a `Ready`: its service is `running` only once the hook
//! signals it, so `start()`, a supervisor's dependents and its startup wait for it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Log;
use service_runtime::ServiceStatus::{Error, Running, Starting, Stopped, Stopping};
use service_runtime::{
    HealthStatus, HookKind, Managed, Ready, Service, ServiceError, ServiceStatus, Shutdown,
    StatusChanges, Supervisor, lifecycle,
};
use tokio::sync::broadcast;

/// What the run hook does before and instead of signalling ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    /// Subscribes, then signals ready after `setup`.
    Notify,
    /// Never signals and never returns.
    Never,
    /// Returns `Err` before signalling.
    Fail,
    /// Returns `Ok` before signalling.
    Done,
    /// Drops its `Ready` unnotified and keeps running.
    Drop,
}

/// A consumer of a broadcast that must subscribe before anyone sends.
#[derive(Service)]
#[service(start_timeout = "1s", stop_timeout = "1s")]
struct Consumer {
    log: Log,
    label: &'static str,
    ticks: broadcast::Sender<u32>,
    received: Arc<std::sync::Mutex<Vec<u32>>>,
    behaviour: Behaviour,
    /// How long the loop takes to get ready (a connection, a catch-up read).
    setup: Duration,
}

#[lifecycle]
impl Consumer {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        self.log.push(format!("init:{}", self.label));
        Ok(())
    }

    #[cleanup]
    async fn close(&mut self) -> Result<(), std::io::Error> {
        self.log.push(format!("cleanup:{}", self.label));
        Ok(())
    }

    #[health]
    async fn alive(&self) -> HealthStatus {
        HealthStatus::Healthy
    }

    #[run]
    async fn consume(&self, ready: Ready, shutdown: Shutdown) -> Result<(), std::io::Error> {
        tokio::time::sleep(self.setup).await;
        let mut ticks = self.ticks.subscribe();
        match self.behaviour {
            Behaviour::Notify => {
                self.log.push(format!("ready:{}", self.label));
                ready.notify();
            }
            Behaviour::Never => {}
            Behaviour::Fail => {
                return Err(std::io::Error::other("the broker refused the subscription"));
            }
            Behaviour::Done => return Ok(()),
            Behaviour::Drop => drop(ready),
        }
        loop {
            tokio::select! {
                () = shutdown.requested() => {
                    self.log.push(format!("loop-stopped:{}", self.label));
                    return Ok(());
                }
                tick = ticks.recv() => match tick {
                    Ok(tick) => self.received.lock().unwrap().push(tick),
                    Err(_) => return Ok(()),
                },
            }
        }
    }
}

fn consumer(log: &Log, label: &'static str, behaviour: Behaviour) -> Managed<Consumer> {
    let service = Consumer {
        log: log.clone(),
        label,
        ticks: broadcast::channel(1024).0,
        received: Arc::default(),
        behaviour,
        setup: Duration::from_millis(20),
    };
    let config = Consumer::config().name(label);
    Managed::with_config(service, config)
}

fn drain(changes: &mut StatusChanges) -> Vec<(ServiceStatus, ServiceStatus)> {
    std::iter::from_fn(|| changes.try_recv())
        .map(|change| (change.from, change.to))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_broadcast_subscriber_that_signals_ready_misses_nothing_sent_after_start() {
    let log = Log::default();
    let service = consumer(&log, "strategy", Behaviour::Notify);
    let ticks = service.read().await.ticks.clone();
    let received = service.read().await.received.clone();

    service.start().await.unwrap();
    // Right after `start()`: the loop has subscribed, so every tick reaches it.
    for tick in 0..100 {
        ticks.send(tick).expect("the run loop is subscribed");
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    service.stop().await.unwrap();

    assert_eq!(*received.lock().unwrap(), (0..100).collect::<Vec<_>>());
    assert_eq!(
        log.entries(),
        [
            "init:strategy",
            "ready:strategy",
            "loop-stopped:strategy",
            "cleanup:strategy"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_service_is_starting_until_its_run_hook_signals_ready() {
    let log = Log::default();
    let service = consumer(&log, "strategy", Behaviour::Notify);
    let mut changes = service.subscribe();

    let start = tokio::spawn({
        let service = service.clone();
        async move { service.start().await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(service.status(), Starting);
    assert_eq!(service.health().await.status, HealthStatus::Unhealthy);
    assert!(
        log.entries()
            .iter()
            .all(|entry| !entry.starts_with("ready"))
    );

    start.await.unwrap().unwrap();
    assert_eq!(service.status(), Running);
    assert_eq!(log.entries(), ["init:strategy", "ready:strategy"]);
    assert_eq!(
        drain(&mut changes),
        [(Stopped, Starting), (Starting, Running)]
    );
    service.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_run_hook_that_never_signals_fails_the_start_at_its_timeout_and_is_stopped() {
    let log = Log::default();
    let service = consumer(&log, "strategy", Behaviour::Never);
    let mut changes = service.subscribe();

    let error = service.start().await.unwrap_err();

    assert_eq!(error.hook(), Some((HookKind::Run, "consume")), "{error}");
    assert_eq!(
        error.to_string(),
        "service `strategy`: run hook `consume` failed: did not signal ready (`ready.notify()`) within the start timeout of 1s"
    );
    // The loop was told to return before the cleanup ran: nothing is left behind.
    assert_eq!(
        log.entries(),
        ["init:strategy", "loop-stopped:strategy", "cleanup:strategy"]
    );
    assert_eq!(service.status(), Error);
    assert_eq!(
        drain(&mut changes),
        [(Stopped, Starting), (Starting, Error)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_hook_that_drops_its_ready_unnotified_fails_the_start_with_a_message_that_says_so() {
    let log = Log::default();
    let service = consumer(&log, "strategy", Behaviour::Drop);

    let error = service.start().await.unwrap_err();

    assert!(
        error.to_string().ends_with(
            "run hook `consume` failed: dropped its `Ready` without calling `notify()`, and had not returned after the start timeout of 1s"
        ),
        "{error}"
    );
    assert_eq!(log.count("loop-stopped:strategy"), 1);
    assert_eq!(log.count("cleanup:strategy"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_run_hook_that_fails_before_ready_fails_the_start_with_its_error() {
    let log = Log::default();
    let service = consumer(&log, "strategy", Behaviour::Fail);
    let mut changes = service.subscribe();

    let error = service.start().await.unwrap_err();

    assert_eq!(
        error.to_string(),
        "service `strategy`: run hook `consume` failed: the broker refused the subscription"
    );
    assert_eq!(log.entries(), ["init:strategy", "cleanup:strategy"]);
    assert_eq!(
        drain(&mut changes),
        [(Stopped, Starting), (Starting, Error)]
    );
    // A start again runs the whole sequence again.
    assert!(service.start().await.is_err());
    assert_eq!(log.count("init:strategy"), 2);
}

#[tokio::test(start_paused = true)]
async fn a_run_hook_that_returns_ok_before_ready_did_its_work_and_the_service_stops() {
    let log = Log::default();
    let service = consumer(&log, "migrator", Behaviour::Done);
    let mut changes = service.subscribe();

    service.start().await.unwrap();
    let mut watch = service.watch();
    watch.wait_for(|status| *status == Stopped).await.unwrap();

    assert_eq!(
        drain(&mut changes),
        [
            (Stopped, Starting),
            (Starting, Running),
            (Running, Stopping),
            (Stopping, Stopped)
        ]
    );
    assert_eq!(log.entries(), ["init:migrator", "cleanup:migrator"]);
}

#[tokio::test(start_paused = true)]
async fn stop_during_the_wait_cancels_the_start_stops_the_loop_and_never_reports_running() {
    let log = Log::default();
    let service = consumer(&log, "strategy", Behaviour::Never);
    let mut changes = service.subscribe();

    let start = tokio::spawn({
        let service = service.clone();
        async move { service.start().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    service.stop().await.unwrap();

    assert!(matches!(
        start.await.unwrap(),
        Err(ServiceError::StartCancelled { .. })
    ));
    assert_eq!(
        log.entries(),
        ["init:strategy", "loop-stopped:strategy", "cleanup:strategy"]
    );
    assert_eq!(
        drain(&mut changes),
        [
            (Stopped, Starting),
            (Starting, Stopping),
            (Stopping, Stopped)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_supervisor_starts_the_dependents_of_a_service_once_it_signalled_ready() {
    let log = Log::default();
    let supervisor = Supervisor::new()
        .add(consumer(&log, "feed", Behaviour::Notify))
        .add(consumer(&log, "strategy", Behaviour::Notify))
        .depends_on("feed");
    let handle = supervisor.handle();
    let program = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(!handle.has_started(), "nothing is ready yet");
        assert_eq!(handle.statuses()[0].1, Starting);
        handle.started().await.unwrap();
        handle.shutdown();
    };

    let (report, ()) = tokio::join!(supervisor.run_until(std::future::pending()), program);

    assert!(report.is_success(), "{:?}", report.errors());
    let entries = log.entries();
    let position = |entry: &str| entries.iter().position(|e| e == entry).unwrap();
    assert!(
        position("ready:feed") < position("init:strategy"),
        "the dependent started before its dependency was ready: {entries:?}"
    );
}

/// Signals ready and fails at once: the loop's end races the start's adoption.
#[derive(Service)]
#[service(start_timeout = "5s")]
struct Flaky;

#[lifecycle]
impl Flaky {
    #[run]
    async fn run(&self, ready: Ready) -> Result<(), std::io::Error> {
        ready.notify();
        Err(std::io::Error::other("lost the connection"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_that_fails_right_after_its_signal_is_reported_once_whichever_side_wins() {
    for round in 0..200 {
        let service = Managed::new(Flaky);
        let mut changes = service.subscribe();
        let started = tokio::time::timeout(Duration::from_secs(10), service.start())
            .await
            .unwrap_or_else(|_| panic!("round {round}: the start hung"));
        let mut watch = service.watch();
        tokio::time::timeout(Duration::from_secs(10), watch.wait_for(|s| *s == Error))
            .await
            .unwrap_or_else(|_| panic!("round {round}: never reached error"))
            .unwrap();
        let changes = drain(&mut changes);
        // Adopted first: running, then the loop's failure; else the start's failure.
        match started {
            Ok(()) => assert_eq!(
                changes,
                [(Stopped, Starting), (Starting, Running), (Running, Error)],
                "round {round}"
            ),
            Err(error) => {
                assert!(error.to_string().contains("lost the connection"), "{error}");
                assert_eq!(
                    changes,
                    [(Stopped, Starting), (Starting, Error)],
                    "round {round}"
                );
            }
        }
        assert!(
            service
                .last_error()
                .unwrap()
                .to_string()
                .contains("lost the connection")
        );
    }
}

/// A start that waits for the ready signal while the runtime its loop was spawned on
/// shuts down (a test's runtime ending, a program's runtime dropped) fails with a
/// message that says so, and the service's cleanup still runs; it does not wait out its
/// start timeout for a signal that cannot come.
#[test]
fn a_start_whose_loop_task_is_dropped_with_its_runtime_fails_and_cleans_up() {
    let log = Log::default();
    let service = consumer(&log, "strategy", Behaviour::Never);
    let mut start = Box::pin(service.start());
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a runtime")
    };

    let first = runtime();
    first.block_on(async {
        // The start runs its init hook and spawns the loop, then waits for its signal.
        for _ in 0..8 {
            assert!(futures_util::poll!(start.as_mut()).is_pending());
            tokio::task::yield_now().await;
        }
    });
    assert_eq!(service.status(), Starting);
    assert_eq!(log.entries(), ["init:strategy"]);
    // Shutting the runtime down drops the loop's task before it signalled.
    drop(first);

    let error = runtime().block_on(start).unwrap_err();

    assert!(
        error.to_string().ends_with(
            "run hook `consume` failed: its task was dropped before it signalled ready (its tokio runtime shut down)"
        ),
        "{error}"
    );
    assert_eq!(service.status(), Error);
    assert_eq!(log.entries(), ["init:strategy", "cleanup:strategy"]);
}
