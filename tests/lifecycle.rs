//! Behaviour of one managed service: hooks, faults, timeouts, concurrency and observers.

mod common;

use std::time::Duration;

use common::{CLEAN_CYCLE, DropFlag, Fault, Log, history, settle, watched};
use service_runtime::ServiceStatus::{Error, Running, Starting, Stopped, Stopping};
use service_runtime::{
    HealthDetail, HealthReport, HealthStatus, HookKind, Managed, Service, ServiceError, Shutdown,
    StatusChanges, lifecycle,
};
use tokio::time::Instant;

/// A service whose every hook logs itself and can be told to fail.
#[derive(Service, Default)]
#[service(
    name = "probe",
    version = "9.9.9",
    start_timeout = "10s",
    stop_timeout = "5s",
    health_timeout = "1s"
)]
struct Probe {
    log: Log,
    init_fault: Fault,
    second_init_fault: Fault,
    cleanup_faults: [Fault; 3],
    run_fault: Fault,
    run_returns: bool,
    check_fault: Fault,
}

#[lifecycle]
impl Probe {
    #[init]
    async fn connect(&mut self) -> Result<(), std::io::Error> {
        self.log.push("init:connect");
        self.init_fault.act("connect").await
    }

    #[init]
    async fn subscribe(&mut self) -> Result<(), std::io::Error> {
        self.log.push("init:subscribe");
        self.second_init_fault.act("subscribe").await
    }

    #[cleanup]
    async fn close_a(&mut self) -> Result<(), std::io::Error> {
        self.log.push("cleanup:a");
        self.cleanup_faults[0].act("close_a").await
    }

    #[cleanup]
    async fn close_b(&mut self) -> Result<(), std::io::Error> {
        self.log.push("cleanup:b");
        self.cleanup_faults[1].act("close_b").await
    }

    #[cleanup]
    async fn close_c(&mut self) -> Result<(), std::io::Error> {
        self.log.push("cleanup:c");
        self.cleanup_faults[2].act("close_c").await
    }

    #[health(name = "upstream", critical)]
    async fn upstream(&self) -> Result<(), std::io::Error> {
        self.check_fault.act("upstream").await
    }

    #[health(name = "cache", optional)]
    async fn cache(&self) -> HealthStatus {
        HealthStatus::Healthy
    }

    #[run]
    async fn pump(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        self.log.push("run:start");
        if self.run_returns {
            return Ok(());
        }
        tokio::select! {
            () = shutdown.requested() => {}
            result = self.run_fault.act("pump"), if self.run_fault != Fault::None => result?,
        }
        self.log.push("run:end");
        Ok(())
    }
}

fn probe(log: &Log) -> Probe {
    Probe {
        log: log.clone(),
        ..Probe::default()
    }
}

#[tokio::test(start_paused = true)]
async fn clean_start_and_stop_run_every_hook_in_order() {
    let log = Log::default();
    let (service, mut changes) = watched(probe(&log));
    assert_eq!(service.name(), "probe");
    assert_eq!(service.version(), "9.9.9");
    service.start().await.unwrap();
    assert_eq!(service.status(), Running);
    settle().await;
    service.stop().await.unwrap();
    assert_eq!(service.status(), Stopped);
    assert_eq!(
        log.entries(),
        [
            "init:connect",
            "init:subscribe",
            "run:start",
            "run:end",
            "cleanup:c",
            "cleanup:b",
            "cleanup:a"
        ]
    );
    assert_eq!(history(&mut changes), CLEAN_CYCLE);
}

async fn failed_start(
    fault: Fault,
) -> (
    ServiceError,
    Log,
    Vec<(
        service_runtime::ServiceStatus,
        service_runtime::ServiceStatus,
    )>,
) {
    let log = Log::default();
    let (service, mut changes) = watched(Probe {
        second_init_fault: fault,
        ..probe(&log)
    });
    let error = service.start().await.unwrap_err();
    assert_eq!(service.status(), Error);
    assert_eq!(service.last_error().unwrap().to_string(), error.to_string());
    // No cleanup is owed after a failed init: stopping goes straight to `stopped`.
    service.stop().await.unwrap();
    assert_eq!(service.status(), Stopped);
    (error, log, history(&mut changes))
}

#[tokio::test(start_paused = true)]
async fn init_error_ends_in_error_without_cleanup() {
    let (error, log, history) = failed_start(Fault::Err).await;
    assert_eq!(error.service(), "probe");
    assert_eq!(error.hook(), Some((HookKind::Init, "subscribe")));
    assert_eq!(
        error.to_string(),
        "service `probe`: init hook `subscribe` failed: subscribe refused"
    );
    assert!(
        error
            .hook_cause()
            .unwrap()
            .downcast_ref::<std::io::Error>()
            .is_some()
    );
    assert_eq!(log.entries(), ["init:connect", "init:subscribe"]);
    assert_eq!(
        history,
        [(Stopped, Starting), (Starting, Error), (Error, Stopped)]
    );
}

#[tokio::test(start_paused = true)]
async fn init_panic_is_caught_and_ends_in_error() {
    let (error, log, history) = failed_start(Fault::Panic).await;
    assert!(error.is_panic());
    assert_eq!(
        error.to_string(),
        "service `probe`: init hook `subscribe` panicked: subscribe exploded"
    );
    assert_eq!(log.entries(), ["init:connect", "init:subscribe"]);
    assert_eq!(
        history,
        [(Stopped, Starting), (Starting, Error), (Error, Stopped)]
    );
}

#[tokio::test(start_paused = true)]
async fn init_timeout_drops_the_hung_hook_after_start_timeout() {
    let began = Instant::now();
    let (error, log, history) = failed_start(Fault::Hang).await;
    assert_eq!(
        began.elapsed(),
        Duration::from_secs(10),
        "start_timeout = \"10s\""
    );
    assert!(error.is_timeout());
    assert_eq!(
        error.to_string(),
        "service `probe`: init hook `subscribe` timed out after 10s"
    );
    assert_eq!(log.entries(), ["init:connect", "init:subscribe"]);
    assert_eq!(
        history,
        [(Stopped, Starting), (Starting, Error), (Error, Stopped)]
    );
}

#[tokio::test(start_paused = true)]
async fn every_cleanup_runs_and_every_failure_is_reported() {
    let log = Log::default();
    let (service, mut changes) = watched(Probe {
        cleanup_faults: [Fault::Err, Fault::Hang, Fault::Panic],
        ..probe(&log)
    });
    service.start().await.unwrap();
    let began = Instant::now();
    let error = service.stop().await.unwrap_err();
    assert_eq!(
        began.elapsed(),
        Duration::from_secs(5),
        "only the hung cleanup waits, for stop_timeout"
    );
    assert_eq!(service.status(), Error);
    let errors = error.errors();
    assert_eq!(errors.len(), 3, "{error}");
    assert!(errors[0].is_panic() && errors[0].hook() == Some((HookKind::Cleanup, "close_c")));
    assert!(errors[1].is_timeout() && errors[1].hook() == Some((HookKind::Cleanup, "close_b")));
    assert_eq!(errors[2].hook(), Some((HookKind::Cleanup, "close_a")));
    assert_eq!(
        error.to_string(),
        "service `probe`: 3 errors: [1] service `probe`: cleanup hook `close_c` panicked: close_c exploded; \
         [2] service `probe`: cleanup hook `close_b` timed out after 5s; \
         [3] service `probe`: cleanup hook `close_a` failed: close_a refused"
    );
    assert_eq!(
        log.count("cleanup:a") + log.count("cleanup:b") + log.count("cleanup:c"),
        3
    );
    // The cleanup was done (badly); a second stop does not run it again.
    service.stop().await.unwrap();
    assert_eq!(log.count("cleanup:a"), 1);
    assert_eq!(
        history(&mut changes),
        [
            (Stopped, Starting),
            (Starting, Running),
            (Running, Stopping),
            (Stopping, Error),
            (Error, Stopped)
        ]
    );
}

/// Starts `service` in a task and stops it while it is `starting`, as every test of a
/// cancelled start does: the stop succeeds, the start fails with `StartCancelled`, and
/// the service goes `stopped → starting → stopping → stopped`, never `running`.
async fn stop_while_starting<S: Service>(service: &Managed<S>, changes: &mut StatusChanges) {
    let starting = tokio::spawn({
        let service = service.clone();
        async move { service.start().await }
    });
    settle().await;
    assert_eq!(service.status(), Starting);
    service.stop().await.unwrap();
    assert_eq!(service.status(), Stopped);
    let error = starting.await.unwrap().unwrap_err();
    assert!(
        matches!(error, ServiceError::StartCancelled { .. }),
        "{error}"
    );
    assert_eq!(
        history(changes),
        [
            (Stopped, Starting),
            (Starting, Stopping),
            (Stopping, Stopped)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn stop_while_starting_cancels_init_and_never_reports_running() {
    let log = Log::default();
    let (service, mut changes) = watched(Probe {
        second_init_fault: Fault::Hang,
        ..probe(&log)
    });
    stop_while_starting(&service, &mut changes).await;
    assert_eq!(
        log.entries(),
        ["init:connect", "init:subscribe"],
        "no cleanup is owed"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_starts_share_one_init() {
    let log = Log::default();
    let (service, mut changes) = watched(probe(&log));
    let (a, b, c) = tokio::join!(service.start(), service.start(), service.start());
    a.unwrap();
    b.unwrap();
    c.unwrap();
    service.start().await.unwrap();
    assert_eq!(log.count("init:connect"), 1);
    assert_eq!(
        history(&mut changes),
        [(Stopped, Starting), (Starting, Running)]
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_starts_share_one_failure() {
    let log = Log::default();
    let (service, _changes) = watched(Probe {
        init_fault: Fault::SlowErr,
        ..probe(&log)
    });
    let (a, b) = tokio::join!(service.start(), service.start());
    assert_eq!(a.unwrap_err().to_string(), b.unwrap_err().to_string());
    assert_eq!(log.count("init:connect"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_start_after_a_finished_failure_is_a_restart() {
    // The first start fails within its first poll, in the caller's task, so the second
    // call of the `join!` begins after it ended: it sees `error` and starts again.
    let log = Log::default();
    let (service, mut changes) = watched(Probe {
        init_fault: Fault::Err,
        ..probe(&log)
    });
    let (a, b) = tokio::join!(service.start(), service.start());
    assert!(a.is_err() && b.is_err());
    assert_eq!(log.count("init:connect"), 2);
    assert_eq!(
        history(&mut changes),
        [
            (Stopped, Starting),
            (Starting, Error),
            (Error, Starting),
            (Starting, Error)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_stops_run_cleanup_once() {
    let log = Log::default();
    let (service, mut changes) = watched(probe(&log));
    service.start().await.unwrap();
    let (a, b, c) = tokio::join!(service.stop(), service.stop(), service.stop());
    a.unwrap();
    b.unwrap();
    c.unwrap();
    assert_eq!(log.count("cleanup:a"), 1);
    assert_eq!(history(&mut changes), CLEAN_CYCLE);
}

#[tokio::test(start_paused = true)]
async fn stopping_a_never_started_service_does_nothing() {
    let log = Log::default();
    let (service, mut changes) = watched(probe(&log));
    service.stop().await.unwrap();
    service.stop().await.unwrap();
    assert_eq!(service.status(), Stopped);
    assert!(log.entries().is_empty());
    assert!(history(&mut changes).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_hung_health_check_is_unhealthy_after_its_timeout() {
    let log = Log::default();
    let service = Managed::new(Probe {
        check_fault: Fault::Hang,
        ..probe(&log)
    });
    service.start().await.unwrap();
    let began = Instant::now();
    let report = service.health().await;
    assert_eq!(
        began.elapsed(),
        Duration::from_secs(1),
        "health_timeout = \"1s\""
    );
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert_eq!(report.dependencies["upstream"], HealthStatus::Unhealthy);
    assert_eq!(report.dependencies["cache"], HealthStatus::Healthy);
    assert_eq!(report.details["upstream"], "check timed out after 1s");
    // The hung check held shared access only until its timeout: stopping is not blocked.
    service.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn failing_and_panicking_checks_fail_alone() {
    for (fault, detail) in [
        (Fault::Err, "upstream refused"),
        (Fault::Panic, "check panicked: upstream exploded"),
    ] {
        let service = Managed::new(Probe {
            check_fault: fault,
            ..probe(&Log::default())
        });
        service.start().await.unwrap();
        let report = service.health().await;
        assert_eq!(report.status, HealthStatus::Unhealthy);
        assert_eq!(report.details["upstream"], detail);
        assert_eq!(report.dependencies["cache"], HealthStatus::Healthy);
        assert_eq!(
            report.reason.as_deref(),
            Some(format!("critical dependency `upstream` is unhealthy: {detail}").as_str())
        );
        assert_eq!(
            service.status(),
            Running,
            "a failing check does not change the status"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn health_report_has_the_notes_shape_and_counts_uptime() {
    let service = Managed::new(probe(&Log::default()));
    let report = service.health().await;
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert_eq!(report.reason.as_deref(), Some("Service status: stopped"));
    assert_eq!(service.uptime(), Duration::ZERO);

    service.start().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(service.uptime(), Duration::from_secs(3600));
    let report = service.health().await;
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "status": "healthy", "uptime": 3600, "service_name": "probe", "version": "9.9.9",
            "dependencies": { "upstream": "healthy", "cache": "healthy" }
        })
    );
    // Byte for byte (field order, names sorted), and read back with owned names.
    let text = serde_json::to_string(&report).unwrap();
    assert_eq!(
        text,
        r#"{"status":"healthy","uptime":3600,"service_name":"probe","version":"9.9.9","dependencies":{"cache":"healthy","upstream":"healthy"}}"#
    );
    let back: HealthReport = serde_json::from_str(&text).unwrap();
    assert_eq!(back, report);
    assert_eq!(back.dependencies["upstream"], HealthStatus::Healthy);
    assert_eq!(back.service_name, "probe");
    service.stop().await.unwrap();
    assert_eq!(service.uptime(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn health_and_status_answer_at_once_while_init_runs() {
    let service = Managed::new(Probe {
        second_init_fault: Fault::Hang,
        ..probe(&Log::default())
    });
    let starting = tokio::spawn({
        let service = service.clone();
        async move { service.start().await }
    });
    settle().await;
    let began = Instant::now();
    assert_eq!(service.status(), Starting);
    let report = service.health().await;
    assert_eq!(began.elapsed(), Duration::ZERO);
    assert_eq!(report.reason.as_deref(), Some("Service status: starting"));
    service.stop().await.unwrap();
    assert!(starting.await.unwrap().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_failing_run_loop_ends_in_error_and_cleanup_runs_on_stop() {
    for fault in [Fault::Err, Fault::Panic] {
        let log = Log::default();
        let (service, mut changes) = watched(Probe {
            run_fault: fault,
            ..probe(&log)
        });
        let mut status = service.watch();
        service.start().await.unwrap();
        status.wait_for(|s| *s == Error).await.unwrap();
        let error = service.last_error().unwrap();
        assert_eq!(error.hook(), Some((HookKind::Run, "pump")));
        assert_eq!(error.is_panic(), fault == Fault::Panic);
        assert_eq!(log.count("cleanup:a"), 0, "cleanup waits for stop()");
        service.stop().await.unwrap();
        assert_eq!(log.count("cleanup:a"), 1);
        assert_eq!(
            history(&mut changes),
            [
                (Stopped, Starting),
                (Starting, Running),
                (Running, Error),
                (Error, Stopping),
                (Stopping, Stopped)
            ]
        );
    }
}

#[tokio::test(start_paused = true)]
async fn restart_after_a_run_failure_cleans_up_first() {
    let log = Log::default();
    let (service, mut changes) = watched(Probe {
        run_fault: Fault::Err,
        ..probe(&log)
    });
    let mut status = service.watch();
    service.start().await.unwrap();
    status.wait_for(|s| *s == Error).await.unwrap();
    service.start().await.unwrap();
    assert_eq!(
        log.entries()[..8],
        [
            "init:connect",
            "init:subscribe",
            "run:start",
            "cleanup:c",
            "cleanup:b",
            "cleanup:a",
            "init:connect",
            "init:subscribe"
        ]
    );
    assert_eq!(
        history(&mut changes)[2..7],
        [
            (Running, Error),
            (Error, Stopping),
            (Stopping, Stopped),
            (Stopped, Starting),
            (Starting, Running)
        ],
        "the second incarnation fails again later; its first transitions are what matters"
    );
    status.wait_for(|s| *s == Error).await.unwrap();
    service.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_run_loop_that_returns_stops_the_service() {
    let log = Log::default();
    let (service, mut changes) = watched(Probe {
        run_returns: true,
        ..probe(&log)
    });
    let mut status = service.watch();
    service.start().await.unwrap();
    status.wait_for(|s| *s == Stopped).await.unwrap();
    assert_eq!(log.count("cleanup:a"), 1);
    assert_eq!(history(&mut changes), CLEAN_CYCLE);
}

#[tokio::test(start_paused = true)]
async fn dropped_and_slow_subscribers_do_not_affect_the_lifecycle() {
    let log = Log::default();
    let service = Managed::new(probe(&log));
    drop(service.subscribe());
    let mut slow = service.subscribe();
    for _ in 0..3 {
        service.start().await.unwrap();
        service.stop().await.unwrap();
    }
    assert_eq!(log.count("cleanup:a"), 3);
    // The slow subscriber lost nothing.
    assert_eq!(history(&mut slow).len(), 12);
    // One subscribed later, the earlier one dropped: the later one gets every change.
    let mut later = service.subscribe();
    drop(slow);
    service.start().await.unwrap();
    service.stop().await.unwrap();
    let changes: Vec<_> = history(&mut later).into_iter().map(|(_, to)| to).collect();
    assert_eq!(changes, [Starting, Running, Stopping, Stopped]);
    let late = service.watch();
    assert_eq!(
        *late.borrow(),
        Stopped,
        "a late watcher sees the current status"
    );
}

#[tokio::test(start_paused = true)]
async fn status_changes_carry_time_duration_and_error() {
    let (service, mut changes) = watched(Probe {
        init_fault: Fault::Err,
        ..probe(&Log::default())
    });
    let _ = service.start().await;
    let starting = changes.recv().await.unwrap();
    assert_eq!(&*starting.service, "probe");
    assert!(starting.error.is_none());
    let failed = changes.recv().await.unwrap();
    assert_eq!((failed.from, failed.to), (Starting, Error));
    assert_eq!(
        failed.error.unwrap().hook(),
        Some((HookKind::Init, "connect"))
    );
    assert!(failed.at <= std::time::SystemTime::now());
}

// ---- components ----

#[derive(Service)]
struct Child {
    log: Log,
    label: &'static str,
    fault: Fault,
    health: HealthStatus,
}

#[lifecycle]
impl Child {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        self.log.push(format!("init:{}", self.label));
        self.fault.act(self.label).await
    }

    #[cleanup]
    async fn close(&mut self) -> Result<(), std::io::Error> {
        self.log.push(format!("cleanup:{}", self.label));
        Ok(())
    }

    #[health]
    async fn ok(&self) -> HealthDetail {
        match self.health {
            HealthStatus::Healthy => HealthDetail::healthy(),
            other => HealthDetail {
                reason: Some(format!("{} is {other}", self.label)),
                ..HealthDetail::new(other)
            },
        }
    }
}

fn child(log: &Log, label: &'static str) -> Managed<Child> {
    Managed::with_config(
        Child {
            log: log.clone(),
            label,
            fault: Fault::None,
            health: HealthStatus::Healthy,
        },
        Child::config().name(label),
    )
}

#[derive(Service)]
#[service(name = "parent")]
struct Parent {
    log: Log,
    #[service(component)]
    first: Managed<Child>,
    #[service(component, optional)]
    second: Managed<Child>,
    #[service(component)]
    third: Managed<Child>,
}

#[lifecycle]
impl Parent {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        self.log.push("init:parent");
        Ok(())
    }

    #[cleanup]
    async fn close(&mut self) -> Result<(), std::io::Error> {
        self.log.push("cleanup:parent");
        Ok(())
    }
}

fn parent(log: &Log) -> Parent {
    Parent {
        log: log.clone(),
        first: child(log, "first"),
        second: child(log, "second"),
        third: child(log, "third"),
    }
}

/// What [`parent_whose_third_fails`] logs when its third component's start does not
/// complete: every init hook up to the third's, then the started ones undone in reverse.
const UNDONE_AFTER_THE_THIRD: [&str; 7] = [
    "init:parent",
    "init:first",
    "init:second",
    "init:third",
    "cleanup:second",
    "cleanup:first",
    "cleanup:parent",
];

/// [`parent`] whose third component's init hook does `fault`; the component keeps its
/// type's name, `child`.
fn parent_whose_third_fails(log: &Log, fault: Fault) -> Parent {
    Parent {
        third: Managed::new(Child {
            log: log.clone(),
            label: "third",
            fault,
            health: HealthStatus::Healthy,
        }),
        ..parent(log)
    }
}

#[tokio::test(start_paused = true)]
async fn components_start_after_init_and_stop_before_cleanup() {
    let log = Log::default();
    let service = Managed::new(parent(&log));
    service.start().await.unwrap();
    assert_eq!(
        log.entries(),
        ["init:parent", "init:first", "init:second", "init:third"]
    );
    let report = service.health().await;
    assert_eq!(report.status, HealthStatus::Healthy);
    assert_eq!(report.dependencies.len(), 3);
    service.stop().await.unwrap();
    assert_eq!(
        log.entries()[4..],
        [
            "cleanup:third",
            "cleanup:second",
            "cleanup:first",
            "cleanup:parent"
        ]
    );
    let children = service.read().await;
    assert_eq!(children.first.status(), Stopped);
    assert_eq!(children.third.status(), Stopped);
}

#[tokio::test(start_paused = true)]
async fn stop_while_a_component_starts_cancels_the_start_and_undoes_it() {
    let log = Log::default();
    let (service, mut changes) = watched(parent_whose_third_fails(&log, Fault::Hang));
    stop_while_starting(&service, &mut changes).await;
    assert_eq!(
        log.entries(),
        UNDONE_AFTER_THE_THIRD,
        "the hanging component's start is cancelled; what started is undone"
    );
    let children = service.read().await;
    assert_eq!(children.third.status(), Stopped);
    assert_eq!(children.first.status(), Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_failing_component_stops_the_started_ones_and_fails_the_start() {
    let log = Log::default();
    let (service, mut changes) = watched(parent_whose_third_fails(&log, Fault::Err));
    let error = service.start().await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "service `parent`: component `third`: service `child`: init hook `open` failed: third refused"
    );
    assert_eq!(error.hook(), Some((HookKind::Init, "open")));
    assert_eq!(
        log.entries(),
        UNDONE_AFTER_THE_THIRD,
        "every init hook completed, so the failed start cleans up after itself"
    );
    assert_eq!(
        history(&mut changes),
        [(Stopped, Starting), (Starting, Error)]
    );
}

#[tokio::test(start_paused = true)]
async fn component_health_nests_critical_and_optional() {
    let log = Log::default();
    let parent = parent(&log);
    let service = Managed::new(Parent {
        second: Managed::with_config(
            Child {
                log: log.clone(),
                label: "second",
                fault: Fault::None,
                health: HealthStatus::Unhealthy,
            },
            Child::config().name("second"),
        ),
        ..parent
    });
    service.start().await.unwrap();
    let report = service.health().await;
    assert_eq!(
        report.status,
        HealthStatus::Degraded,
        "the failing component is optional"
    );
    assert_eq!(report.dependencies["second"], HealthStatus::Unhealthy);
    assert_eq!(
        report.details["second"],
        "critical dependency `ok` is unhealthy: second is unhealthy"
    );
    service.stop().await.unwrap();
}

// ---- run loops that do not listen, per-hook timeouts, dropped handles ----

#[derive(Service)]
#[service(start_timeout = "10s", stop_timeout = "2s")]
struct Stubborn {
    log: Log,
    init_hangs: bool,
    run_dropped: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[lifecycle]
impl Stubborn {
    #[init(timeout = "1s")]
    async fn quick(&mut self) -> Result<(), std::io::Error> {
        if self.init_hangs {
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    #[cleanup]
    async fn close(&mut self) -> Result<(), std::io::Error> {
        self.log.push("cleanup");
        Ok(())
    }

    /// Takes the shutdown signal and ignores it.
    #[run]
    async fn spin(&self, _shutdown: Shutdown) -> Result<(), std::io::Error> {
        let _flag = DropFlag(self.run_dropped.clone());
        std::future::pending().await
    }
}

fn stubborn(log: &Log) -> Stubborn {
    Stubborn {
        log: log.clone(),
        init_hangs: false,
        run_dropped: Default::default(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_loop_that_ignores_shutdown_is_dropped_after_stop_timeout() {
    let log = Log::default();
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (service, mut changes) = watched(Stubborn {
        run_dropped: flag.clone(),
        ..stubborn(&log)
    });
    service.start().await.unwrap();
    let began = Instant::now();
    let error = service.stop().await.unwrap_err();
    assert_eq!(
        began.elapsed(),
        Duration::from_secs(2),
        "stop_timeout = \"2s\""
    );
    assert_eq!(
        error.to_string(),
        "service `stubborn`: run hook `spin` timed out after 2s"
    );
    settle().await;
    assert!(
        flag.load(std::sync::atomic::Ordering::SeqCst),
        "the run loop's future was dropped"
    );
    assert_eq!(log.entries(), ["cleanup"], "cleanup still ran");
    assert_eq!(
        history(&mut changes),
        [
            (Stopped, Starting),
            (Starting, Running),
            (Running, Stopping),
            (Stopping, Error)
        ]
    );
}

/// A run loop with no `Shutdown` argument: it cannot hear a stop.
#[derive(Service)]
#[service(stop_timeout = "2s")]
struct Deaf {
    log: Log,
    run_dropped: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[lifecycle]
impl Deaf {
    #[cleanup]
    async fn close(&mut self) -> Result<(), std::io::Error> {
        self.log.push("cleanup");
        Ok(())
    }

    #[run]
    async fn spin(&self) -> Result<(), std::io::Error> {
        let _flag = DropFlag(self.run_dropped.clone());
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_loop_without_a_shutdown_argument_is_dropped_at_once_and_stops_cleanly() {
    let log = Log::default();
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (service, mut changes) = watched(Deaf {
        log: log.clone(),
        run_dropped: flag.clone(),
    });
    service.start().await.unwrap();
    settle().await;
    assert!(
        !flag.load(std::sync::atomic::Ordering::SeqCst),
        "the loop runs"
    );
    let began = Instant::now();
    service.stop().await.unwrap();
    assert_eq!(
        began.elapsed(),
        Duration::ZERO,
        "no wait for the stop timeout"
    );
    assert!(
        flag.load(std::sync::atomic::Ordering::SeqCst),
        "the run loop's future was dropped"
    );
    assert_eq!(log.entries(), ["cleanup"]);
    assert_eq!(history(&mut changes), CLEAN_CYCLE);
    // A second cycle works the same way.
    service.start().await.unwrap();
    service.stop().await.unwrap();
    assert_eq!(service.status(), Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_hook_timeout_overrides_the_services() {
    let (service, _changes) = watched(Stubborn {
        init_hangs: true,
        ..stubborn(&Log::default())
    });
    let began = Instant::now();
    let error = service.start().await.unwrap_err();
    assert_eq!(
        began.elapsed(),
        Duration::from_secs(1),
        "#[init(timeout = \"1s\")] beats start_timeout"
    );
    assert_eq!(
        error.to_string(),
        "service `stubborn`: init hook `quick` timed out after 1s"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_cancels_the_run_loop() {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let service = Managed::new(Stubborn {
        run_dropped: flag.clone(),
        ..stubborn(&Log::default())
    });
    service.start().await.unwrap();
    settle().await;
    assert!(!flag.load(std::sync::atomic::Ordering::SeqCst));
    drop(service);
    settle().await;
    assert!(flag.load(std::sync::atomic::Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn a_read_guard_held_too_long_fails_the_start_at_its_timeout() {
    let service = Managed::new(stubborn(&Log::default()));
    let guard = service.read().await;
    let began = Instant::now();
    let error = service.start().await.unwrap_err();
    assert_eq!(
        began.elapsed(),
        Duration::from_secs(10),
        "start_timeout = \"10s\""
    );
    assert_eq!(
        error.to_string(),
        "service `stubborn`: init hook `quick` failed: no init hook ran: a `Managed::read()` guard still held the service after 10s"
    );
    drop(guard);
    service.start().await.unwrap();
    service.stop().await.unwrap_err();
}

#[tokio::test(start_paused = true)]
async fn stop_while_init_waits_for_a_read_guard_cancels_the_start() {
    let log = Log::default();
    let (service, mut changes) = watched(probe(&log));
    let guard = service.read().await;
    stop_while_starting(&service, &mut changes).await;
    drop(guard);
    assert!(log.entries().is_empty(), "no init hook ran");
}

#[derive(Debug)]
struct Wrapped {
    message: &'static str,
    source: std::io::Error,
}

impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message)
    }
}

impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

#[derive(Service)]
struct Chained {
    repeat: bool,
}

#[lifecycle]
impl Chained {
    #[init]
    async fn connect(&mut self) -> Result<(), Wrapped> {
        let source = std::io::Error::other("connection refused");
        let message = if self.repeat {
            "connection refused"
        } else {
            "could not reach the broker"
        };
        Err(Wrapped { message, source })
    }
}

#[tokio::test(start_paused = true)]
async fn error_messages_carry_the_whole_chain_once() {
    let chained = Managed::new(Chained { repeat: false })
        .start()
        .await
        .unwrap_err();
    assert_eq!(
        chained.to_string(),
        "service `chained`: init hook `connect` failed: could not reach the broker: connection refused"
    );
    let repeated = Managed::new(Chained { repeat: true })
        .start()
        .await
        .unwrap_err();
    assert_eq!(
        repeated.to_string(),
        "service `chained`: init hook `connect` failed: connection refused"
    );
}

/// A generic service: every instantiation shares one configuration, which does not
/// depend on the type parameter.
#[derive(Service)]
#[service(name = "slot", stop_timeout = "3s")]
struct Slot<T: Send + Sync + 'static> {
    value: T,
}

#[lifecycle]
impl<T: Send + Sync + 'static> Slot<T> {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_time_configuration_is_kept_whole_and_the_attributes_otherwise() {
    // The attribute's configuration, for two instantiations of a generic type.
    let words = Managed::new(Slot { value: "w" });
    let numbers = Managed::new(Slot { value: 7_u32 });
    for config in [words.config(), numbers.config()] {
        assert_eq!(config, Slot::<u8>::config());
        assert_eq!(config.name, "slot");
        assert_eq!(config.stop_timeout, Duration::from_secs(3));
    }
    assert_eq!(numbers.read().await.value, 7);

    // A run-time name alone, and a run-time name with other settings.
    let named = Managed::with_config(Slot { value: 1_u8 }, Slot::<u8>::config().name("slot-1"));
    assert_eq!(named.name(), "slot-1");
    assert_eq!(named.config(), Slot::<u8>::config().name("slot-1"));
    let custom = Slot::<u8>::config()
        .name(format!("slot-{}", 2))
        .version("2.0.0")
        .stop_timeout(Duration::from_millis(250));
    let tuned = Managed::with_config(Slot { value: 2_u8 }, custom.clone());
    assert_eq!(tuned.config(), custom);
    assert_eq!(tuned.name(), "slot-2");
    assert_eq!(tuned.version(), "2.0.0");
    tuned.start().await.unwrap();
    assert_eq!(tuned.health().await.version, "2.0.0");
    tuned.stop().await.unwrap();
    // The derived configuration is unchanged by the instances' own.
    assert_eq!(words.config().stop_timeout, Duration::from_secs(3));
}
