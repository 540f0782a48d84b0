//! Orchestration of many services: order, parallelism, failures, restarts, shutdown.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use common::{CLEAN_CYCLE, DropFlag, Fault, Log, history};
use service_runtime::ServiceStatus::{Running, Starting, Stopped, Stopping};
use service_runtime::{
    EXIT_CONFIG, EXIT_SHUTDOWN_TIMEOUT, HealthDetail, HealthStatus, Managed, Restart,
    RestartPolicy, Service, ServiceError, ServiceStatus, Shutdown, StartupError, Supervisor,
    SupervisorError, lifecycle,
};
use tokio::time::Instant;

/// A pipeline stage whose hooks log themselves with the paused clock's time.
#[derive(Service)]
#[service(stop_timeout = "60s")]
struct Node {
    log: Log,
    label: &'static str,
    epoch: Instant,
    init_delay: Duration,
    init_fault: Fault,
    cleanup_fault: Fault,
    /// The run loop fails this long after it starts (every incarnation).
    run_fails_after: Option<Duration>,
    /// Set when the run loop's future is dropped.
    run_dropped: Arc<AtomicBool>,
    active: Arc<AtomicU32>,
}

#[lifecycle]
impl Node {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        self.log.push(format!(
            "init:{}@{}",
            self.label,
            self.epoch.elapsed().as_millis()
        ));
        tokio::time::sleep(self.init_delay).await;
        self.init_fault.act(self.label).await?;
        assert_eq!(
            self.active.fetch_add(1, Ordering::SeqCst),
            0,
            "init while active"
        );
        self.log.push(format!("ready:{}", self.label));
        Ok(())
    }

    #[cleanup]
    async fn close(&mut self) -> Result<(), std::io::Error> {
        self.log.push(format!("cleanup:{}", self.label));
        assert_eq!(
            self.active.fetch_sub(1, Ordering::SeqCst),
            1,
            "cleanup while inactive"
        );
        self.cleanup_fault.act(self.label).await
    }

    #[health]
    async fn alive(&self) -> HealthStatus {
        HealthStatus::Healthy
    }

    #[run]
    async fn work(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        let _flag = DropFlag(self.run_dropped.clone());
        match self.run_fails_after {
            Some(after) => tokio::select! {
                () = shutdown.requested() => Ok(()),
                () = tokio::time::sleep(after) => Err(std::io::Error::other(format!("{} lost its feed", self.label))),
            },
            None => {
                shutdown.requested().await;
                Ok(())
            }
        }
    }
}

fn node(log: &Log, label: &'static str) -> Node {
    Node {
        log: log.clone(),
        label,
        epoch: Instant::now(),
        init_delay: Duration::ZERO,
        init_fault: Fault::None,
        cleanup_fault: Fault::None,
        run_fails_after: None,
        run_dropped: Arc::default(),
        active: Arc::default(),
    }
}

/// The log without the `ready:` marks (only the stress test needs those).
fn hooks(log: &Log) -> Vec<String> {
    log.entries()
        .into_iter()
        .filter(|e| !e.starts_with("ready:"))
        .collect()
}

fn managed(node: Node) -> Managed<Node> {
    let name = node.label;
    Managed::with_config(node, Node::config().name(name))
}

/// A shutdown trigger that fires after startup (which takes no time on the paused clock
/// here); `async {}` would interrupt the startup itself.
async fn after_startup() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

fn exact(restart: Restart) -> RestartPolicy {
    RestartPolicy::new(restart)
        .max_restarts(3, Duration::from_secs(10))
        .backoff(Duration::from_millis(100), Duration::from_secs(5))
        .jitter(0.0)
}

#[tokio::test(start_paused = true)]
async fn levels_start_in_parallel_and_in_order() {
    let log = Log::default();
    let slow = |label| {
        managed(Node {
            init_delay: Duration::from_secs(1),
            ..node(&log, label)
        })
    };
    let supervisor = Supervisor::new()
        .add(slow("feed"))
        .add(slow("strategy"))
        .depends_on("feed")
        .add(slow("audit"))
        .add(slow("risk"))
        .depends_on("strategy")
        .depends_on("audit");
    let handle = supervisor.handle();
    let began = Instant::now();
    let report = supervisor
        .run_until(async {
            // Runs once everything started: the supervisor only polls this after startup
            // or concurrently with it; wait for every service to be running.
            loop {
                if handle.statuses().iter().all(|(_, s)| *s == Running) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    assert!(report.is_success(), "{:?}", report.errors());
    let inits: Vec<_> = log
        .entries()
        .into_iter()
        .filter(|e| e.starts_with("init"))
        .collect();
    assert_eq!(
        inits,
        [
            "init:feed@0",
            "init:audit@0",
            "init:strategy@1000",
            "init:risk@2000"
        ]
    );
    assert!(began.elapsed() >= Duration::from_secs(3));
    let cleanups: Vec<_> = log
        .entries()
        .into_iter()
        .filter(|e| e.starts_with("cleanup"))
        .collect();
    assert_eq!(
        cleanups[..2],
        ["cleanup:risk", "cleanup:strategy"],
        "dependents stop first"
    );
    assert_eq!(
        cleanups[2..],
        ["cleanup:feed", "cleanup:audit"],
        "then level 0, in parallel"
    );
}

#[tokio::test(start_paused = true)]
async fn failure_of_service_3_of_5_stops_2_then_1_and_never_starts_4_and_5() {
    let log = Log::default();
    let supervisor = Supervisor::new()
        .add(managed(node(&log, "one")))
        .add(managed(node(&log, "two")))
        .add(managed(Node {
            init_fault: Fault::Err,
            ..node(&log, "three")
        }))
        .add(managed(node(&log, "four")))
        .add(managed(node(&log, "five")));
    let mut changes = supervisor.handle().subscribe();
    let report = supervisor.run_until(std::future::pending()).await;
    let entries = hooks(&log);
    assert_eq!(
        entries,
        [
            "init:one@0",
            "init:two@0",
            "init:three@0",
            "cleanup:two",
            "cleanup:one"
        ]
    );
    assert_eq!(report.code(), 1);
    match &report.errors()[0] {
        SupervisorError::Start(error) => {
            assert_eq!(
                error.to_string(),
                "service `three`: init hook `open` failed: three refused"
            );
        }
        other => panic!("unexpected {other}"),
    }
    let mut seen = Vec::new();
    while let Some(change) = changes.try_recv() {
        seen.push(change.service.to_string());
    }
    assert!(!seen.contains(&"four".to_owned()) && !seen.contains(&"five".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn a_service_whose_start_failed_stays_error_after_the_run_and_only_what_started_is_stopped() {
    let log = Log::default();
    let one = managed(node(&log, "one"));
    let two = managed(Node {
        init_fault: Fault::Err,
        ..node(&log, "two")
    });
    let mut one_changes = one.subscribe();
    let mut two_changes = two.subscribe();
    let supervisor = Supervisor::new().add(one.clone()).add(two.clone());
    let handle = supervisor.handle();
    let report = supervisor.run_until(std::future::pending()).await;
    assert_eq!(report.code(), 1);
    assert_eq!(hooks(&log), ["init:one@0", "init:two@0", "cleanup:one"]);
    assert_eq!(
        handle.statuses(),
        [
            ("one".to_owned(), Stopped),
            ("two".to_owned(), ServiceStatus::Error)
        ]
    );
    assert_eq!(
        two.last_error().map(|error| error.to_string()).as_deref(),
        Some("service `two`: init hook `open` failed: two refused")
    );
    assert_eq!(
        history(&mut two_changes),
        [(Stopped, Starting), (Starting, ServiceStatus::Error)],
        "the failed start is not cleared to stopped by the rollback"
    );
    assert_eq!(history(&mut one_changes), CLEAN_CYCLE);
    // Read per service from the report.
    assert_eq!(report.errors()[0].service(), Some("two"));
    assert_eq!(
        report.error_of("two").map(ToString::to_string).as_deref(),
        Some("service `two`: init hook `open` failed: two refused")
    );
    assert!(report.error_of("one").is_none());
    assert_eq!(report.errors_of("one").count(), 0);
}

#[tokio::test(start_paused = true)]
async fn status_changes_are_a_stream() {
    use futures_util::StreamExt;
    let log = Log::default();
    let service = managed(node(&log, "streamed"));
    let changes = service.subscribe();
    service.start().await.unwrap();
    service.stop().await.unwrap();
    drop(service);
    let seen: Vec<_> = changes
        .map(|change| (change.from, change.to))
        .collect()
        .await;
    assert_eq!(
        seen, CLEAN_CYCLE,
        "and the stream ends once the service is freed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_restarts_exactly_three_times_on_schedule_then_escalates() {
    let log = Log::default();
    let crashing = Node {
        run_fails_after: Some(Duration::from_secs(1)),
        ..node(&log, "flaky")
    };
    let supervisor = Supervisor::new()
        .add(managed(node(&log, "steady")))
        .add(managed(crashing))
        .restart(exact(Restart::Permanent));
    let handle = supervisor.handle();
    let report = supervisor.run_until(std::future::pending()).await;
    let inits: Vec<_> = log
        .entries()
        .into_iter()
        .filter(|e| e.starts_with("init:flaky"))
        .collect();
    // Fails 1 s after each start; backoff 100 ms, 200 ms, 400 ms.
    assert_eq!(
        inits,
        [
            "init:flaky@0",
            "init:flaky@1100",
            "init:flaky@2300",
            "init:flaky@3700"
        ]
    );
    let stats = handle.stats();
    assert_eq!(stats[1].restarts, 3);
    assert_eq!(stats[0].restarts, 0);
    assert_eq!(report.code(), 1);
    let escalated = report
        .errors()
        .iter()
        .find_map(|e| match e {
            SupervisorError::Escalated {
                service, restarts, ..
            } => Some((service.to_string(), *restarts)),
            _ => None,
        })
        .expect("escalation reported");
    assert_eq!(escalated, ("flaky".to_owned(), 3));
    let record = report.restarts_of("flaky").expect("flaky's restart record");
    assert_eq!(record.count, 3, "every healed failure is counted");
    assert!(
        record
            .last_cause
            .to_string()
            .contains("flaky lost its feed")
    );
    assert!(matches!(
        report.errors().last(),
        Some(SupervisorError::Escalated { last_error: Some(error), .. })
            if error.to_string().contains("flaky lost its feed")
    ));
    assert_eq!(
        handle
            .statuses()
            .iter()
            .filter(|(_, s)| *s == Stopped)
            .count(),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn dependents_are_restarted_with_their_dependency() {
    let log = Log::default();
    let supervisor = Supervisor::new()
        .add(managed(node(&log, "feed")))
        .add(managed(Node {
            run_fails_after: Some(Duration::from_secs(5)),
            ..node(&log, "strategy")
        }))
        .depends_on("feed")
        .restart(exact(Restart::Transient).max_restarts(1, Duration::from_secs(60)))
        .add(managed(node(&log, "risk")))
        .depends_on("strategy")
        .add(managed(node(&log, "audit")));
    let handle = supervisor.handle();
    let report = supervisor
        .run_until(tokio::time::sleep(Duration::from_millis(5500)))
        .await;
    let entries = hooks(&log);
    let restart = entries.iter().position(|e| e == "cleanup:risk").unwrap();
    assert_eq!(
        entries[restart..restart + 4],
        [
            "cleanup:risk",
            "cleanup:strategy",
            "init:strategy@5100",
            "init:risk@5100"
        ]
    );
    let stats = handle.stats();
    let restarts: Vec<_> = stats
        .iter()
        .map(|s| (s.name.as_str(), s.restarts))
        .collect();
    assert_eq!(
        restarts,
        [("feed", 0), ("strategy", 1), ("risk", 1), ("audit", 0)]
    );
    assert!(report.errors().is_empty(), "{:?}", report.errors());
    assert_eq!(
        report.restarts().len(),
        1,
        "the one failure: {:?}",
        report.restarts()
    );
    assert_eq!(report.restarts_of("strategy").map(|r| r.count), Some(1));
    assert_eq!(
        hooks(&log).iter().filter(|e| *e == "init:feed@0").count(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_pending_backoff_returns_at_once() {
    let log = Log::default();
    let supervisor = Supervisor::new()
        .add(managed(Node {
            run_fails_after: Some(Duration::from_secs(1)),
            ..node(&log, "flaky")
        }))
        .restart(
            exact(Restart::Permanent).backoff(Duration::from_secs(3600), Duration::from_secs(3600)),
        );
    let handle = supervisor.handle();
    let began = Instant::now();
    let report = supervisor
        .run_until(tokio::time::sleep(Duration::from_secs(2)))
        .await;
    assert_eq!(
        began.elapsed(),
        Duration::from_secs(2),
        "the backoff of an hour is not waited out"
    );
    assert_eq!(
        hooks(&log),
        ["init:flaky@0", "cleanup:flaky"],
        "stopped during the backoff, never restarted"
    );
    assert_eq!(handle.statuses()[0].1, Stopped);
    // Counted when its restart was decided, though the shutdown came first.
    assert!(report.errors().is_empty(), "{:?}", report.errors());
    assert_eq!(report.restarts_of("flaky").map(|r| r.count), Some(1));
    assert!(report.is_success());
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_out_of_budget_cancels_what_it_abandoned_and_lists_it_exactly() {
    let log = Log::default();
    let hung = |label| {
        managed(Node {
            cleanup_fault: Fault::Hang,
            ..node(&log, label)
        })
    };
    let supervisor = Supervisor::new()
        .add(hung("a"))
        .add(hung("b"))
        .add(hung("c"))
        .shutdown_timeout(Duration::from_secs(25));
    let handle = supervisor.handle();
    let began = Instant::now();
    let report = supervisor.run_until(after_startup()).await;
    assert_eq!(
        began.elapsed(),
        Duration::from_secs(26),
        "1 s running, then the 25 s budget"
    );
    assert_eq!(report.code(), EXIT_SHUTDOWN_TIMEOUT);
    match report.errors() {
        [
            SupervisorError::ShutdownTimeout {
                abandoned,
                never_reached,
                budget,
                ..
            },
        ] => {
            // Stopped one by one in reverse (nothing depends on anything): c hangs, the
            // budget runs out, and b and a were never asked to stop.
            assert_eq!(abandoned, &["c"]);
            assert_eq!(never_reached, &["b", "a"]);
            assert_eq!(*budget, Duration::from_secs(25));
        }
        other => panic!("unexpected {other:?}"),
    }
    // Cancelled at the budget, stopping or not: every service ends `error`, saying so, and
    // no cleanup ran but c's (b's and a's were never reached).
    for (name, status) in handle.statuses() {
        assert_eq!(status, ServiceStatus::Error, "{name}");
    }
    assert_eq!(
        hooks(&log)
            .iter()
            .filter(|e| e.starts_with("cleanup"))
            .collect::<Vec<_>>(),
        ["cleanup:c"]
    );

    assert!(
        report.error_of("b").is_none() && report.errors_of("b").count() == 1,
        "the report names b among the cancelled, with no error of its own"
    );
    assert_eq!(
        handle.statuses().len(),
        3,
        "and every service is accounted for"
    );
}

/// A service keeps working, and a subscriber added after the supervisor's run gets every
/// change, once the run that held its first subscription is over.
#[tokio::test(start_paused = true)]
async fn a_service_outlives_its_supervisor_and_a_later_subscriber_sees_every_change() {
    let log = Log::default();
    let service = managed(node(&log, "a"));
    let report = Supervisor::new()
        .add(service.clone())
        .run_until(after_startup())
        .await;
    assert!(report.is_success());
    let mut changes = service.subscribe();
    service.start().await.unwrap();
    service.stop().await.unwrap();
    assert_eq!(history(&mut changes), CLEAN_CYCLE);
}

/// Run-loop services stopped together (one level: both depend on the same service),
/// one failing its stop: its error reaches the report, the others stop cleanly.
#[tokio::test(start_paused = true)]
async fn run_loops_stopped_together_report_each_their_own_outcome() {
    #[derive(Service)]
    #[service(name = "pump")]
    struct Pump {
        fails: bool,
    }

    #[lifecycle]
    impl Pump {
        #[run]
        async fn work(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
            shutdown.requested().await;
            if self.fails {
                return Err(std::io::Error::other("flush failed"));
            }
            Ok(())
        }
    }

    let pump =
        |name: &'static str, fails| Managed::with_config(Pump { fails }, Pump::config().name(name));
    let (source, left, right) = (
        pump("source", false),
        pump("left", true),
        pump("right", false),
    );
    let supervisor = Supervisor::new()
        .add(source.clone())
        .add(left.clone())
        .depends_on("source")
        .add(right.clone())
        .depends_on("source");
    let report = supervisor.run_until(after_startup()).await;
    let errors: Vec<String> = report
        .errors()
        .iter()
        .map(|error| match error {
            SupervisorError::Stop(error) => error.to_string(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        errors,
        ["service `left`: run hook `work` failed: flush failed"]
    );
    assert_eq!(source.status(), Stopped);
    assert_eq!(right.status(), Stopped);
    assert_eq!(left.status(), ServiceStatus::Error);
}

#[tokio::test(start_paused = true)]
async fn a_run_loop_abandoned_at_the_budget_is_cancelled_there() {
    #[derive(Service)]
    #[service(name = "deaf", stop_timeout = "60s")]
    struct Deaf {
        dropped: Arc<AtomicBool>,
    }

    #[lifecycle]
    impl Deaf {
        #[run]
        async fn listen(&self, _shutdown: Shutdown) -> Result<(), std::io::Error> {
            let _dropped = DropFlag(self.dropped.clone());
            std::future::pending().await
        }
    }

    let dropped = Arc::new(AtomicBool::new(false));
    let deaf = Managed::new(Deaf {
        dropped: dropped.clone(),
    });
    let supervisor = Supervisor::new()
        .add(deaf.clone())
        .shutdown_timeout(Duration::from_secs(5));
    let began = Instant::now();
    let report = supervisor.run_until(after_startup()).await;
    assert_eq!(report.code(), EXIT_SHUTDOWN_TIMEOUT);
    assert_eq!(
        began.elapsed(),
        Duration::from_secs(6),
        "1 s running, then the budget"
    );
    // The supervisor gave up at its budget, and cancelled the loop there rather than
    // waiting for the service's own 60 s deadline.
    common::settle().await;
    assert!(
        dropped.load(Ordering::SeqCst),
        "the run loop's future is dropped"
    );
    assert_eq!(deaf.status(), ServiceStatus::Error);
    assert_eq!(
        deaf.last_error().unwrap().to_string(),
        "service `deaf`: cancelled when the shutdown budget of 5s ran out (it was still stopping)"
    );
}

#[tokio::test(start_paused = true)]
async fn ten_failing_cleanups_are_all_reported() {
    let log = Log::default();
    let labels = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"];
    let mut supervisor = Supervisor::new();
    for label in labels {
        supervisor = supervisor.add(managed(Node {
            cleanup_fault: Fault::Err,
            ..node(&log, label)
        }));
    }
    let report = supervisor.run_until(after_startup()).await;
    assert_eq!(report.code(), 1);
    let failed: Vec<String> = report
        .errors()
        .iter()
        .map(|e| match e {
            SupervisorError::Stop(error) => error.service().to_owned(),
            other => panic!("unexpected {other}"),
        })
        .collect();
    let expected: Vec<String> = labels.iter().rev().map(|s| (*s).to_owned()).collect();
    assert_eq!(failed, expected);
    assert_eq!(
        hooks(&log)
            .iter()
            .filter(|e| e.starts_with("cleanup"))
            .count(),
        10
    );
}

#[tokio::test(start_paused = true)]
async fn zero_and_one_service() {
    let report = Supervisor::new().run_until(after_startup()).await;
    assert!(report.is_success());
    assert_eq!(report.code(), 0);

    let log = Log::default();
    let report = Supervisor::new()
        .add(managed(node(&log, "only")))
        .run_until(after_startup())
        .await;
    assert!(report.is_success(), "{:?}", report.errors());
    assert_eq!(hooks(&log), ["init:only@0", "cleanup:only"]);
}

#[tokio::test(start_paused = true)]
async fn invalid_supervisors_start_nothing() {
    let log = Log::default();
    let cases: Vec<(Supervisor, &str)> = vec![
        (
            Supervisor::new()
                .add(managed(node(&log, "a")))
                .depends_on("ghost"),
            "invalid supervisor: service `a` depends on `ghost`, which was not added to the supervisor",
        ),
        (
            Supervisor::new()
                .add(managed(node(&log, "a")))
                .depends_on("c")
                .add(managed(node(&log, "b")))
                .depends_on("a")
                .add(managed(node(&log, "c")))
                .depends_on("b"),
            "invalid supervisor: dependency cycle: `a` -> `c` -> `b` -> `a`",
        ),
        (
            Supervisor::new()
                .add(managed(node(&log, "a")))
                .add(managed(node(&log, "a"))),
            "invalid supervisor: two services are named `a`; give one another name with `ServiceConfig::name`",
        ),
        (
            Supervisor::new().depends_on("a"),
            "invalid supervisor: depends_on(\"a\") was called before any service was added",
        ),
    ];
    for (supervisor, message) in cases {
        let report = supervisor.run_until(after_startup()).await;
        assert_eq!(report.code(), EXIT_CONFIG);
        assert_eq!(report.errors()[0].to_string(), message);
    }
    assert!(hooks(&log).is_empty());
}

#[tokio::test(start_paused = true)]
async fn started_answers_an_invalid_supervisor_instead_of_waiting() {
    let log = Log::default();
    let supervisor = Supervisor::new()
        .add(managed(node(&log, "a")))
        .add(managed(node(&log, "a")))
        .depends_on("ghost");
    let handle = supervisor.handle();
    let waiting = tokio::spawn({
        let handle = handle.clone();
        async move { handle.started().await }
    });
    let report = supervisor.run_until(std::future::pending()).await;
    assert_eq!(report.code(), EXIT_CONFIG);
    let error = waiting.await.unwrap().unwrap_err();
    let StartupError::Invalid(messages) = &error else {
        panic!("not Invalid: {error:?}");
    };
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(
        error.to_string(),
        "invalid supervisor: two services are named `a`; give one another name with \
         `ServiceConfig::name`; service `a` depends on `ghost`, which was not added to the \
         supervisor"
    );
    // Asked after the run, it answers the same at once.
    assert!(matches!(
        handle.started().await,
        Err(StartupError::Invalid(_))
    ));
    assert!(hooks(&log).is_empty());
}

#[tokio::test(start_paused = true)]
async fn dropping_the_supervisor_cancels_every_task() {
    let log = Log::default();
    let dropped = Arc::new(AtomicBool::new(false));
    let supervisor = Supervisor::new().add(Node {
        run_dropped: dropped.clone(),
        ..node(&log, "node")
    });
    let handle = supervisor.handle();
    let task = tokio::spawn(supervisor.run_until(std::future::pending()));
    while handle.statuses()[0].1 != Running {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(!dropped.load(Ordering::SeqCst));
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    drop(handle);
    common::settle().await;
    assert!(dropped.load(Ordering::SeqCst), "the run loop was cancelled");
}

#[tokio::test(start_paused = true)]
async fn handle_reports_health_statuses_stats_and_every_change() {
    let log = Log::default();
    let supervisor = Supervisor::new()
        .add(managed(node(&log, "feed")))
        .add(managed(node(&log, "strategy")))
        .depends_on("feed");
    let handle = supervisor.handle();
    let mut changes = handle.subscribe();
    let probe = handle.clone();
    let report = supervisor
        .run_until(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let health = probe.health().await;
            assert_eq!(health.status, HealthStatus::Healthy);
            assert_eq!(health.uptime, 60);
            let json = serde_json::to_value(&health).unwrap();
            assert_eq!(json["services"]["feed"]["dependencies"]["alive"], "healthy");
            assert_eq!(json["services"]["strategy"]["status"], "healthy");
            // Looked up by `&str`; read back from its JSON with owned names.
            assert_eq!(health.services["feed"].service_name, "feed");
            assert_eq!(
                health.services["feed"].dependencies["alive"],
                HealthStatus::Healthy
            );
            let back: service_runtime::SupervisorHealth = serde_json::from_value(json).unwrap();
            assert_eq!(back, health);
            assert!(!probe.is_stopping());
        })
        .await;
    assert!(report.is_success());
    assert!(handle.is_stopping());
    let seen = history(&mut changes);
    assert_eq!(seen.len(), 8, "4 changes for each of 2 services: {seen:?}");
    assert_eq!(
        seen.iter().filter(|c| **c == (Starting, Running)).count(),
        2
    );
    assert_eq!(
        seen.iter().filter(|c| **c == (Running, Stopping)).count(),
        2
    );
    let stats = handle.stats();
    assert_eq!(stats[0].status, Stopped);
    assert_eq!(stats[0].last_start_duration, Some(Duration::ZERO));
    assert!(stats[1].last_stop_duration.is_some());
    let health = handle.health().await;
    assert_eq!(
        health.status,
        HealthStatus::Unhealthy,
        "stopped services are unhealthy"
    );
}

#[tokio::test(start_paused = true)]
async fn depends_on_accepts_a_handle_and_a_shutdown_request_ends_the_run() {
    let log = Log::default();
    let feed = managed(node(&log, "feed"));
    let supervisor = Supervisor::new()
        .add(feed.clone())
        .add(managed(node(&log, "strategy")))
        .depends_on(&feed);
    let handle = supervisor.handle();
    let run = tokio::spawn(supervisor.run_until(std::future::pending()));
    while feed.status() != Running {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    handle.shutdown();
    let report = run.await.unwrap();
    assert!(report.is_success());
    assert_eq!(feed.status(), Stopped);
    assert_eq!(hooks(&log)[2..], ["cleanup:strategy", "cleanup:feed"]);
}

/// Many tasks start and stop the same services concurrently on the multi-thread
/// runtime: no illegal transition, no hang, never two inits or two cleanups in a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_concurrent_start_and_stop() {
    let log = Log::default();
    let services: Vec<Managed<Node>> = ["a", "b", "c", "d", "e"]
        .into_iter()
        .map(|l| managed(node(&log, l)))
        .collect();
    let mut subscriptions: Vec<_> = services.iter().map(Managed::subscribe).collect();
    let body = async {
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let services = services.clone();
            tasks.push(tokio::spawn(async move {
                let mut seed = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                for _ in 0..250 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let service = &services[(seed % 5) as usize];
                    if seed & 0x100 == 0 {
                        // Another task's stop may cancel this start: that is the contract.
                        if let Err(error) = service.start().await {
                            assert!(
                                matches!(error, ServiceError::StartCancelled { .. }),
                                "{error}"
                            );
                        }
                    } else {
                        service.stop().await.expect("stop");
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        for service in &services {
            service.stop().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), body)
        .await
        .expect("no hang");
    for (service, changes) in services.iter().zip(&mut subscriptions) {
        assert_eq!(service.status(), Stopped);
        let seen = history(changes);
        assert!(
            seen.iter().all(|(_, to)| *to != ServiceStatus::Error),
            "{seen:?}"
        );
    }
    let entries = log.entries();
    for label in ["a", "b", "c", "d", "e"] {
        // Inits cancelled by a concurrent stop owe no cleanup: count completed ones.
        let inits = entries
            .iter()
            .filter(|e| **e == format!("ready:{label}"))
            .count();
        let cleanups = entries
            .iter()
            .filter(|e| **e == format!("cleanup:{label}"))
            .count();
        assert_eq!(
            inits, cleanups,
            "{label}: every init is cleaned up exactly once"
        );
    }
}

/// Every change reaches the supervisor tagged with its entry (its position, not its name):
/// a failing service among quiet ones is the one restarted and counted, and subscribers
/// (a handle's, also one taken before a later `add`, and the service's own) still get
/// every change with all its fields.
#[tokio::test(start_paused = true)]
async fn changes_are_attributed_to_their_entry_and_subscribers_get_every_change() {
    let log = Log::default();
    let flaky = managed(Node {
        run_fails_after: Some(Duration::from_secs(1)),
        ..node(&log, "flaky")
    });
    let mut own = flaky.subscribe();
    let supervisor = Supervisor::new().add(managed(node(&log, "first")));
    let handle = supervisor.handle();
    let mut all = handle.subscribe();
    let supervisor = supervisor
        .add(flaky.clone())
        .restart(exact(Restart::Permanent))
        .add(managed(node(&log, "last")));
    // Fails at 1 s, restarted at 1.1 s, fails at 2.1 s, restarted at 2.3 s.
    let report = supervisor
        .run_until(tokio::time::sleep(Duration::from_millis(2500)))
        .await;
    assert!(report.is_success(), "{:?}", report.errors());
    assert!(report.errors().is_empty(), "{:?}", report.errors());
    assert_eq!(report.restarts_of("flaky").map(|r| r.count), Some(2));

    let stats = handle.stats();
    let restarts: Vec<_> = stats
        .iter()
        .map(|s| (s.name.as_str(), s.restarts))
        .collect();
    assert_eq!(restarts, [("first", 0), ("flaky", 2), ("last", 0)]);
    for stats in &stats {
        assert_eq!(stats.status, Stopped);
        assert_eq!(stats.last_start_duration, Some(Duration::ZERO), "{stats:?}");
        assert!(stats.last_stop_duration.is_some(), "{stats:?}");
    }

    let mut changes = Vec::new();
    while let Some(change) = all.try_recv() {
        changes.push(change);
    }
    let of = |name: &str| -> Vec<_> {
        changes
            .iter()
            .filter(|c| &*c.service == name)
            .map(|c| (c.from, c.to))
            .collect()
    };
    let quiet = [
        (Stopped, Starting),
        (Starting, Running),
        (Running, Stopping),
        (Stopping, Stopped),
    ];
    assert_eq!(of("first"), quiet);
    assert_eq!(of("last"), quiet);
    let flaky_changes = of("flaky");
    assert_eq!(
        flaky_changes,
        history(&mut own),
        "the service's own subscriber"
    );
    assert_eq!(
        flaky_changes
            .iter()
            .filter(|c| **c == (Running, ServiceStatus::Error))
            .count(),
        2
    );
    for change in &changes {
        assert!(change.at > std::time::UNIX_EPOCH);
        assert_eq!(
            change.error.is_some(),
            change.to == ServiceStatus::Error,
            "{change:?}"
        );
        if let Some(error) = &change.error {
            assert!(error.to_string().contains("flaky lost its feed"), "{error}");
        }
    }
}

/// A handle run by one supervisor and then added to another at another position: the
/// second supervisor attributes its changes to its own entry, and the first one, gone,
/// no longer hears of them.
#[tokio::test(start_paused = true)]
async fn a_service_moved_to_another_supervisor_is_known_by_its_new_entry() {
    let log = Log::default();
    let moved = managed(Node {
        run_fails_after: Some(Duration::from_millis(1500)),
        ..node(&log, "moved")
    });
    let first = Supervisor::new().add(moved.clone());
    let first_handle = first.handle();
    assert!(first.run_until(after_startup()).await.is_success());
    let before = first_handle.stats();

    let second = Supervisor::new()
        .add(managed(node(&log, "x")))
        .add(managed(node(&log, "y")))
        .add(moved.clone())
        .restart(exact(Restart::Permanent));
    let handle = second.handle();
    let report = second
        .run_until(tokio::time::sleep(Duration::from_secs(2)))
        .await;
    assert!(report.is_success(), "{:?}", report.errors());
    let restarts: Vec<_> = handle
        .stats()
        .iter()
        .map(|s| (s.name.clone(), s.restarts))
        .collect();
    assert_eq!(
        restarts,
        [
            ("x".to_owned(), 0),
            ("y".to_owned(), 0),
            ("moved".to_owned(), 1)
        ]
    );
    assert_eq!(first_handle.stats(), before, "the first supervisor is done");
}

/// Changes a service makes before its supervisor runs are not the supervisor's: they are
/// neither recorded nor acted on (the supervisor observes from the start of its run).
#[tokio::test(start_paused = true)]
async fn changes_before_the_run_are_not_observed() {
    let log = Log::default();
    let early = managed(node(&log, "early"));
    let supervisor = Supervisor::new().add(early.clone());
    let handle = supervisor.handle();
    early.start().await.unwrap();
    early.stop().await.unwrap();
    early.start().await.unwrap();
    let report = supervisor.run_until(after_startup()).await;
    assert!(report.is_success(), "{:?}", report.errors());
    let stats = handle.stats();
    assert_eq!(stats[0].restarts, 0);
    assert_eq!(
        stats[0].last_start_duration, None,
        "started before the run, by hand"
    );
    assert!(stats[0].last_stop_duration.is_some(), "stopped by the run");
    assert_eq!(early.status(), Stopped);
}

/// A service whose one check answers as told (for aggregations over many services).
#[derive(Service)]
#[service(health_timeout = "1s")]
struct Answering {
    answer: Fault,
    /// The check degrades the service (with this reason) instead of passing.
    degraded: Option<&'static str>,
}

#[lifecycle]
impl Answering {
    #[health(name = "answer")]
    async fn answer(&self) -> HealthDetail {
        if let Err(error) = self.answer.act("answer").await {
            return HealthDetail::unhealthy(error.to_string());
        }
        match self.degraded {
            Some(reason) => HealthDetail::degraded(reason),
            None => HealthDetail::healthy(),
        }
    }
}

/// A service without health checks.
#[derive(Service)]
struct Unchecked;

#[lifecycle]
impl Unchecked {}

fn answering(name: String, answer: Fault, degraded: Option<&'static str>) -> Managed<Answering> {
    Managed::with_config(
        Answering { answer, degraded },
        Answering::config().name(name),
    )
}

/// Every service's report lands under its own name, whatever the order the services were
/// added in (the map's order is not the insertion order: `s10` < `s2`), among checks that
/// pass, degrade, fail, panic and time out, and a service without checks.
#[tokio::test(start_paused = true)]
async fn supervisor_health_files_each_report_under_its_service() {
    let fault = |i: usize| match i {
        3 => Fault::Panic,
        7 => Fault::Hang,
        11 => Fault::Err,
        _ => Fault::None,
    };
    let mut supervisor = Supervisor::new();
    // Added in reverse, with the check-less service in the middle.
    for i in (0..40).rev() {
        supervisor = supervisor.add(answering(
            format!("s{i}"),
            fault(i),
            (i == 20).then_some("lagging"),
        ));
        if i == 25 {
            supervisor = supervisor.add(Managed::with_config(
                Unchecked,
                Unchecked::config().name("m-unchecked"),
            ));
        }
    }
    let handle = supervisor.handle();
    let probe = handle.clone();
    let report = supervisor
        .run_until(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let began = Instant::now();
            let health = probe.health().await;
            assert_eq!(
                began.elapsed(),
                Duration::from_secs(1),
                "the hung check's timeout"
            );
            assert_eq!(health.status, HealthStatus::Unhealthy);
            // Counted once every report is in; each service's, as its checks began.
            assert_eq!(health.uptime, 6);
            assert_eq!(health.services.len(), 41);
            let mut names: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
            names.push("m-unchecked".into());
            names.sort();
            assert_eq!(
                health.services.keys().map(|k| &**k).collect::<Vec<_>>(),
                names
            );
            for (name, report) in &health.services {
                assert_eq!(report.service_name, *name);
                assert_eq!(report.uptime, 5);
            }
            let unchecked = &health.services["m-unchecked"];
            assert_eq!(unchecked.status, HealthStatus::Healthy);
            assert!(unchecked.dependencies.is_empty() && unchecked.reason.is_none());
            for i in 0..40 {
                let report = &health.services[format!("s{i}").as_str()];
                let (status, detail) = match i {
                    3 => (
                        HealthStatus::Unhealthy,
                        Some("check panicked: answer exploded"),
                    ),
                    7 => (HealthStatus::Unhealthy, Some("check timed out after 1s")),
                    11 => (HealthStatus::Unhealthy, Some("answer refused")),
                    20 => (HealthStatus::Degraded, Some("lagging")),
                    _ => (HealthStatus::Healthy, None),
                };
                assert_eq!(report.status, status, "s{i}");
                assert_eq!(report.dependencies["answer"], status, "s{i}");
                assert_eq!(report.details.get("answer").map(String::as_str), detail);
                let kind = if status == HealthStatus::Degraded {
                    "degraded"
                } else {
                    "unhealthy"
                };
                assert_eq!(
                    report.reason,
                    detail.map(|d| format!("critical dependency `answer` is {kind}: {d}")),
                    "s{i}"
                );
            }
        })
        .await;
    assert!(report.is_success(), "{:?}", report.errors());
}

/// Before a run, a supervisor with two services of one name (invalid: its run would
/// refuse to start) reports the one added last under that name, as a map built from the
/// reports in the order added keeps the last of equal keys.
#[tokio::test(start_paused = true)]
async fn supervisor_health_of_a_duplicate_name_is_the_last_added() {
    let version = |v: &'static str| Answering::config().name("dup").version(v);
    let first = Managed::with_config(
        Answering {
            answer: Fault::None,
            degraded: None,
        },
        version("1.0.0"),
    );
    let second = Managed::with_config(
        Answering {
            answer: Fault::None,
            degraded: None,
        },
        version("2.0.0"),
    );
    let handle = Supervisor::new()
        .add(answering("z".into(), Fault::None, None))
        .add(first)
        .add(answering("a".into(), Fault::None, None))
        .add(second)
        .handle();
    let health = handle.health().await;
    assert_eq!(
        health.services.keys().map(|k| &**k).collect::<Vec<_>>(),
        ["a", "dup", "z"]
    );
    assert_eq!(health.services["dup"].version, "2.0.0");
    assert_eq!(
        health.services["dup"].reason.as_deref(),
        Some("Service status: stopped")
    );
    assert_eq!(health.status, HealthStatus::Unhealthy);
}

#[derive(Service, Default)]
struct Quiet;

#[lifecycle]
impl Quiet {}

#[test]
fn a_subscriber_racing_with_add_hears_every_service() {
    const SERVICES: usize = 300;
    // Without the lock order, the first round already loses a subscriber.
    for _ in 0..5 {
        let mut supervisor = Supervisor::new();
        let handle = supervisor.handle();
        let subscribing = std::thread::spawn(move || {
            (0..SERVICES / 3)
                .map(|_| handle.subscribe())
                .collect::<Vec<_>>()
        });
        let mut services = Vec::new();
        for i in 0..SERVICES {
            let service = Managed::with_config(Quiet, Quiet::config().name(format!("q{i}")));
            services.push(service.clone());
            supervisor = supervisor.add(service);
        }
        let mut subscribers = subscribing.join().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            for service in &services {
                service.start().await.unwrap();
            }
        });
        for changes in &mut subscribers {
            let mut heard = std::collections::HashSet::new();
            while let Some(change) = changes.try_recv() {
                heard.insert(change.service.to_string());
            }
            assert_eq!(heard.len(), SERVICES, "a subscriber missed a service");
        }
        drop(supervisor);
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_cleanup_without_a_run_loop_is_dropped_at_the_budget() {
    #[derive(Service)]
    #[service(name = "ledger", stop_timeout = "60s")]
    struct Ledger {
        dropped: Arc<AtomicBool>,
    }

    #[lifecycle]
    impl Ledger {
        #[cleanup]
        async fn flush(&mut self) -> Result<(), std::io::Error> {
            let _dropped = DropFlag(self.dropped.clone());
            std::future::pending().await
        }
    }

    let dropped = Arc::new(AtomicBool::new(false));
    let ledger = Managed::new(Ledger {
        dropped: dropped.clone(),
    });
    let report = Supervisor::new()
        .add(ledger.clone())
        .shutdown_timeout(Duration::from_secs(2))
        .run_until(after_startup())
        .await;
    assert_eq!(report.code(), EXIT_SHUTDOWN_TIMEOUT);
    common::settle().await;
    assert!(
        dropped.load(Ordering::SeqCst),
        "the cleanup's future is dropped"
    );
    assert_eq!(ledger.status(), ServiceStatus::Error);
    assert_eq!(
        ledger.last_error().unwrap().to_string(),
        "service `ledger`: cancelled when the shutdown budget of 2s ran out (it was still stopping)"
    );
    // The cleanup is still owed: a later stop runs it again.
    dropped.store(false, Ordering::SeqCst);
    let again = tokio::time::timeout(Duration::from_secs(1), ledger.stop()).await;
    assert!(again.is_err(), "the owed cleanup runs (and hangs) again");
}

#[tokio::test(start_paused = true)]
async fn started_resolves_when_every_service_started_or_with_why_not() {
    let log = Log::default();
    let epoch = Instant::now();
    let with = |label, change: fn(&mut Node)| {
        let mut node = node(&log, label);
        change(&mut node);
        managed(node)
    };
    // Started: resolves once both run, and at once afterwards.
    let supervisor = Supervisor::new()
        .add(with("a", |_| {}))
        .add(with("b", |n| n.init_delay = Duration::from_secs(2)));
    let handle = supervisor.handle();
    let waiter = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.started().await })
    };
    let report = supervisor
        .run_until(async {
            handle.started().await.unwrap();
            assert!(handle.has_started());
            assert_eq!(epoch.elapsed(), Duration::from_secs(2));
            handle.started().await.unwrap();
        })
        .await;
    assert!(report.is_success());
    waiter.await.unwrap().unwrap();

    // A failed start: the first service that failed.
    let supervisor = Supervisor::new().add(with("c", |n| n.init_fault = Fault::Err));
    let handle = supervisor.handle();
    let report = supervisor.run_until(std::future::pending()).await;
    assert!(!report.is_success());
    match handle.started().await {
        Err(service_runtime::StartupError::Failed(error)) => {
            assert_eq!(error.service(), "c");
        }
        other => panic!("expected a failed start, got {other:?}"),
    }

    // Interrupted by a shutdown before every service started.
    let supervisor = Supervisor::new().add(with("d", |n| n.init_delay = Duration::from_secs(60)));
    let handle = supervisor.handle();
    let report = supervisor
        .run_until(tokio::time::sleep(Duration::from_secs(1)))
        .await;
    let _ = report;
    assert!(matches!(
        handle.started().await,
        Err(service_runtime::StartupError::Interrupted)
    ));
}
