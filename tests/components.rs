//! A component that fails while its parent runs: a critical one fails its parent (and a
//! supervisor restarts the parent with its components), an optional one is restarted by
//! the parent under its own restart policy while the parent's health shows it degraded.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Log, history, settle, watched};
use service_runtime::ServiceStatus::{Error, Running, Starting, Stopped, Stopping};
use service_runtime::{
    HealthStatus, HookKind, Managed, Restart, RestartPolicy, Service, ServiceError, Shutdown,
    Supervisor, lifecycle,
};
use tokio::sync::Notify;

/// A stream consumer: its run loop fails with "broker connection lost" each time `cut`
/// is notified, or returns `Ok` when `finish` is.
#[derive(Service)]
#[service(
    name = "consumer",
    backoff = "1s",
    max_restarts = 2,
    restart_within = "1m"
)]
struct Consumer {
    log: Log,
    cut: Arc<Notify>,
    finish: Arc<Notify>,
}

#[lifecycle]
impl Consumer {
    #[init]
    async fn connect(&mut self) -> Result<(), std::io::Error> {
        self.log.push("connect");
        Ok(())
    }

    #[cleanup]
    async fn disconnect(&mut self) -> Result<(), std::io::Error> {
        self.log.push("disconnect");
        Ok(())
    }

    #[run]
    async fn consume(&self, shutdown: Shutdown) -> Result<(), String> {
        tokio::select! {
            () = shutdown.requested() => Ok(()),
            () = self.cut.notified() => Err("broker connection lost".to_owned()),
            () = self.finish.notified() => Ok(()),
        }
    }
}

/// A producer that only logs its start and stop.
#[derive(Service)]
#[service(name = "producer")]
struct Producer {
    log: Log,
}

#[lifecycle]
impl Producer {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        self.log.push("producer:open");
        Ok(())
    }

    #[cleanup]
    async fn close(&mut self) -> Result<(), std::io::Error> {
        self.log.push("producer:close");
        Ok(())
    }
}

/// The design note's stream-processing service: a consumer and a producer as components.
#[derive(Service)]
#[service(name = "pipeline")]
struct Pipeline {
    log: Log,
    #[service(component)]
    consumer: Managed<Consumer>,
    #[service(component)]
    producer: Managed<Producer>,
}

#[lifecycle]
impl Pipeline {
    #[cleanup]
    async fn flush(&mut self) -> Result<(), std::io::Error> {
        self.log.push("pipeline:flush");
        Ok(())
    }

    #[run]
    async fn process(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        shutdown.requested().await;
        self.log.push("pipeline:loop returned");
        Ok(())
    }
}

/// The same, with the consumer optional.
#[derive(Service)]
#[service(name = "pipeline")]
struct TolerantPipeline {
    #[service(component, optional)]
    consumer: Managed<Consumer>,
    #[service(component)]
    producer: Managed<Producer>,
}

#[lifecycle]
impl TolerantPipeline {}

struct Switches {
    log: Log,
    cut: Arc<Notify>,
    finish: Arc<Notify>,
}

fn switches() -> Switches {
    Switches {
        log: Log::default(),
        cut: Arc::new(Notify::new()),
        finish: Arc::new(Notify::new()),
    }
}

fn consumer(switches: &Switches) -> Managed<Consumer> {
    Managed::new(Consumer {
        log: switches.log.clone(),
        cut: switches.cut.clone(),
        finish: switches.finish.clone(),
    })
}

fn pipeline(switches: &Switches) -> Pipeline {
    Pipeline {
        log: switches.log.clone(),
        consumer: consumer(switches),
        producer: Managed::new(Producer {
            log: switches.log.clone(),
        }),
    }
}

fn tolerant(switches: &Switches) -> TolerantPipeline {
    TolerantPipeline {
        consumer: consumer(switches),
        producer: Managed::new(Producer {
            log: switches.log.clone(),
        }),
    }
}

const CAUSE: &str = "service `pipeline`: component `consumer`: service `consumer`: run hook `consume` failed: broker connection lost";

#[tokio::test(start_paused = true)]
async fn a_critical_component_that_fails_while_running_stops_its_parent_in_error() {
    let switches = switches();
    let (service, mut changes) = watched(pipeline(&switches));
    service.start().await.unwrap();
    assert_eq!(
        history(&mut changes),
        [(Stopped, Starting), (Starting, Running)]
    );

    switches.cut.notify_one();
    settle().await;
    assert_eq!(service.status(), Error);
    let error = service.last_error().expect("the parent records its cause");
    assert_eq!(error.to_string(), CAUSE);
    assert_eq!(error.hook(), Some((HookKind::Run, "consume")));
    assert_eq!(
        history(&mut changes),
        [(Running, Stopping), (Stopping, Error)],
        "the parent stopped what it ran, then failed"
    );
    assert_eq!(
        switches.log.entries(),
        [
            "connect",
            "producer:open",
            "pipeline:loop returned",
            "producer:close",
            "disconnect",
            "pipeline:flush"
        ],
        "its run loop, its components (in reverse) and its cleanup were stopped"
    );
    {
        let parent = service.read().await;
        assert_eq!(parent.consumer.status(), Stopped);
        assert_eq!(parent.producer.status(), Stopped);
    }
    let report = service.health().await;
    assert_eq!(report.status, HealthStatus::Unhealthy);

    // A start from `error` starts everything afresh.
    service.start().await.unwrap();
    assert_eq!(service.status(), Running);
    service.stop().await.unwrap();
    assert_eq!(service.status(), Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_supervisor_restarts_the_parent_of_a_failed_critical_component() {
    let switches = switches();
    let supervisor = Supervisor::new().add(pipeline(&switches));
    let handle = supervisor.handle();
    let mut changes = handle.subscribe();
    let cut = switches.cut.clone();
    let report = supervisor
        .run_until(async move {
            handle.started().await.unwrap();
            cut.notify_one();
            // Restarted after the default backoff (100 ms, jittered by 10 %).
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(handle.statuses(), [("pipeline".to_owned(), Running)]);
        })
        .await;
    let pipeline: Vec<_> = std::iter::from_fn(|| changes.try_recv())
        .filter(|change| &*change.service == "pipeline")
        .map(|change| (change.from, change.to))
        .collect();
    assert_eq!(
        pipeline,
        [
            (Stopped, Starting),
            (Starting, Running),
            (Running, Stopping),
            (Stopping, Error),
            (Error, Stopped),
            (Stopped, Starting),
            (Starting, Running),
            (Running, Stopping),
            (Stopping, Stopped),
        ]
    );
    assert_eq!(
        switches
            .log
            .entries()
            .iter()
            .filter(|entry| *entry == "connect")
            .count(),
        2,
        "restarting the parent restarted its components"
    );
    assert!(report.is_success(), "the restart healed it: {report:?}");
    assert!(report.errors().is_empty(), "{report:?}");
    let record = report
        .restarts_of("pipeline")
        .expect("the failure is counted");
    assert_eq!(record.count, 1);
    assert_eq!(record.last_cause.to_string(), CAUSE);
    assert!(matches!(record.last_cause, ServiceError::Component { .. }));
}

#[tokio::test(start_paused = true)]
async fn an_optional_component_is_restarted_by_its_parent_under_its_own_policy() {
    let switches = switches();
    let (service, mut changes) = watched(tolerant(&switches));
    service.start().await.unwrap();
    assert_eq!(
        history(&mut changes),
        [(Stopped, Starting), (Starting, Running)]
    );
    let mut consumer_changes = service.read().await.consumer.subscribe();

    switches.cut.notify_one();
    settle().await;
    assert_eq!(
        service.status(),
        Running,
        "an optional failure does not fail the parent"
    );
    assert_eq!(service.read().await.consumer.status(), Error);
    let report = service.health().await;
    assert_eq!(report.status, HealthStatus::Degraded);
    assert_eq!(report.dependencies["consumer"], HealthStatus::Unhealthy);

    // The consumer's `backoff = "1s"` (jittered by 10 %).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(service.read().await.consumer.status(), Running);
    assert_eq!(service.health().await.status, HealthStatus::Healthy);
    assert_eq!(
        history(&mut consumer_changes),
        [
            (Running, Error),
            (Error, Stopping),
            (Stopping, Stopped),
            (Stopped, Starting),
            (Starting, Running)
        ],
        "its cleanup ran before it started again"
    );
    assert_eq!(
        switches.log.entries(),
        ["connect", "producer:open", "disconnect", "connect"]
    );

    // `max_restarts = 2` within a minute: the second failure is restarted (after 2 s),
    // the third is left in `error`.
    switches.cut.notify_one();
    settle().await;
    tokio::time::sleep(Duration::from_millis(2400)).await;
    assert_eq!(service.read().await.consumer.status(), Running);
    switches.cut.notify_one();
    settle().await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        service.read().await.consumer.status(),
        Error,
        "past its limit"
    );
    assert_eq!(service.status(), Running);
    assert_eq!(service.health().await.status, HealthStatus::Degraded);
    assert_eq!(
        history(&mut changes),
        [],
        "the parent's status did not move"
    );

    service.stop().await.unwrap();
    let parent = service.read().await;
    assert_eq!(parent.consumer.status(), Stopped, "stopped with its parent");
    assert_eq!(parent.producer.status(), Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_parent_stopped_during_a_components_backoff_does_not_restart_it() {
    let switches = switches();
    let service = Managed::new(tolerant(&switches));
    service.start().await.unwrap();
    switches.cut.notify_one();
    settle().await;
    service.stop().await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let parent = service.read().await;
    assert_eq!(parent.consumer.status(), Stopped);
    assert_eq!(
        switches.log.entries(),
        ["connect", "producer:open", "producer:close", "disconnect"],
        "stopped with its parent (in reverse), and no restart after"
    );
}

#[tokio::test(start_paused = true)]
async fn a_component_that_finishes_its_work_is_left_stopped_under_transient() {
    let switches = switches();
    let (service, mut changes) = watched(pipeline(&switches));
    service.start().await.unwrap();
    let _ = history(&mut changes);
    switches.finish.notify_one();
    settle().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(service.status(), Running, "a clean exit is no failure");
    assert_eq!(service.read().await.consumer.status(), Stopped);
    assert_eq!(history(&mut changes), []);
    service.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_permanent_component_that_stops_by_itself_is_restarted() {
    let switches = switches();
    let mut parent = pipeline(&switches);
    parent.consumer = Managed::with_config(
        Consumer {
            log: switches.log.clone(),
            cut: switches.cut.clone(),
            finish: switches.finish.clone(),
        },
        Consumer::config().restart(
            Consumer::config()
                .restart
                .restart(service_runtime::Restart::Permanent),
        ),
    );
    let service = Managed::new(parent);
    service.start().await.unwrap();
    switches.finish.notify_one();
    settle().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(service.read().await.consumer.status(), Running);
    assert_eq!(
        switches.log.entries(),
        ["connect", "producer:open", "disconnect", "connect"]
    );
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_failure_is_never_missed_on_the_multi_thread_runtime() {
    for _ in 0..100 {
        let switches = switches();
        let service = Managed::new(pipeline(&switches));
        let mut changes = service.subscribe();
        service.start().await.unwrap();
        switches.cut.notify_one();
        let failed = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(change) = changes.recv().await {
                if change.to == Error {
                    return change.error;
                }
            }
            None
        })
        .await
        .expect("the parent fails");
        assert_eq!(failed.expect("with its cause").to_string(), CAUSE);
        service.start().await.unwrap();
        service.stop().await.unwrap();
    }
}

/// A supervised tolerant pipeline whose consumer fails `cuts` times, `apart` apart.
async fn supervised_tolerant_run(cuts: u32, apart: Duration) -> service_runtime::Report {
    let switches = switches();
    let supervisor = Supervisor::new().add(tolerant(&switches));
    let handle = supervisor.handle();
    supervisor
        .run_until(async {
            handle.started().await.unwrap();
            for _ in 0..cuts {
                switches.cut.notify_one();
                settle().await;
                tokio::time::sleep(apart).await;
            }
        })
        .await
}

#[tokio::test(start_paused = true)]
async fn a_supervisor_report_counts_an_optional_components_healed_failures_as_restarts() {
    // Two failures, each restarted (after 1 s, then 2 s): healed, exit 0.
    let report = supervised_tolerant_run(2, Duration::from_secs(5)).await;

    assert!(report.is_success(), "{:?}", report.errors());
    assert_eq!(report.code(), 0);
    let record = report
        .restarts_of("consumer")
        .expect("the consumer's restarts are in the report");
    assert_eq!(record.count, 2);
    assert_eq!(
        record.last_cause.to_string(),
        "service `consumer`: run hook `consume` failed: broker connection lost"
    );
}

#[tokio::test(start_paused = true)]
async fn a_supervisor_report_fails_for_an_optional_component_left_in_error() {
    // `max_restarts = 2` within a minute: the third failure is left in `error`.
    let report = supervised_tolerant_run(3, Duration::from_secs(5)).await;

    assert!(!report.is_success());
    assert_eq!(report.code(), 1);
    let error = report
        .error_of("pipeline")
        .expect("the pipeline's component failure is in the report");
    assert_eq!(error.to_string(), CAUSE);
    assert_eq!(report.restarts_of("consumer").map(|r| r.count), Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_temporary_optional_component_is_not_restarted_and_its_failure_fails_the_run() {
    let switches = switches();
    let temporary = Consumer::config().restart(RestartPolicy::new(Restart::Temporary));
    let pipeline = TolerantPipeline {
        consumer: Managed::with_config(
            Consumer {
                log: switches.log.clone(),
                cut: switches.cut.clone(),
                finish: switches.finish.clone(),
            },
            temporary,
        ),
        producer: Managed::new(Producer {
            log: switches.log.clone(),
        }),
    };
    let pipeline = Managed::new(pipeline);
    let supervisor = Supervisor::new().add(pipeline.clone());
    let handle = supervisor.handle();
    let report = supervisor
        .run_until(async {
            handle.started().await.unwrap();
            switches.cut.notify_one();
            settle().await;
            tokio::time::sleep(Duration::from_secs(10)).await;
            assert_eq!(pipeline.read().await.consumer.status(), Error);
            assert_eq!(pipeline.status(), Running);
        })
        .await;

    assert_eq!(report.code(), 1);
    assert_eq!(
        report
            .error_of("pipeline")
            .map(|e| e.to_string())
            .as_deref(),
        Some(CAUSE)
    );
    assert!(report.restarts_of("consumer").is_none());
    // Connected once: never restarted.
    assert_eq!(switches.log.count("connect"), 1);
}
