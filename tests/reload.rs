//! `#[reload]` hooks: `Managed::reload` runs them in order under their timeouts while the
//! service keeps running, and a supervisor reloads its services in dependency order
//! through `SupervisorHandle::reload`. (SIGHUP itself: tests/signals.rs and tests/demo.rs.)

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use common::{Fault, Log};
use service_runtime::{
    HookKind, Managed, ReloadError, Service, ServiceError, ServiceStatus, Shutdown, Supervisor,
    lifecycle,
};

/// A service with two reload hooks, the first of which can fail.
#[derive(Service)]
#[service(start_timeout = "1s")]
struct Settings {
    log: Log,
    label: &'static str,
    first: Fault,
    generation: AtomicU32,
}

#[lifecycle]
impl Settings {
    #[init]
    async fn load(&mut self) -> Result<(), std::io::Error> {
        self.log.push(format!("init:{}", self.label));
        Ok(())
    }

    #[reload]
    async fn reread_file(&self) -> Result<(), std::io::Error> {
        self.log.push(format!("reload-file:{}", self.label));
        self.first.act("the settings file").await
    }

    #[reload(timeout = "50ms")]
    async fn rotate_certificate(&self) -> Result<(), std::io::Error> {
        self.log.push(format!("reload-cert:{}", self.label));
        self.generation.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    #[run]
    async fn serve(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        shutdown.requested().await;
        Ok(())
    }
}

fn settings(log: &Log, label: &'static str, first: Fault) -> Managed<Settings> {
    let service = Settings {
        log: log.clone(),
        label,
        first,
        generation: AtomicU32::new(0),
    };
    let config = Settings::config().name(label);
    Managed::with_config(service, config)
}

/// A parent whose component reloads after it.
#[derive(Service)]
struct Gateway {
    log: Log,
    #[service(component)]
    settings: Managed<Settings>,
}

#[lifecycle]
impl Gateway {
    #[reload]
    async fn reread_routes(&self) -> Result<(), std::io::Error> {
        self.log.push("reload-routes:gateway");
        Ok(())
    }
}

/// A service without reload hooks.
#[derive(Service)]
struct Plain;

#[lifecycle]
impl Plain {}

#[tokio::test(start_paused = true)]
async fn reload_runs_every_hook_in_source_order_while_the_service_keeps_running() {
    let log = Log::default();
    let service = settings(&log, "quotes", Fault::None);
    service.start().await.unwrap();
    let mut changes = service.subscribe();

    service.reload().await.unwrap();
    service.reload().await.unwrap();

    assert_eq!(
        log.entries(),
        [
            "init:quotes",
            "reload-file:quotes",
            "reload-cert:quotes",
            "reload-file:quotes",
            "reload-cert:quotes"
        ]
    );
    assert_eq!(service.read().await.generation.load(Ordering::Relaxed), 2);
    assert_eq!(service.status(), ServiceStatus::Running);
    assert!(changes.try_recv().is_none(), "a reload changes no status");
    service.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failed_reload_hook_names_the_service_and_hook_and_the_others_still_run() {
    for (fault, expected) in [
        (Fault::Err, "failed: the settings file refused"),
        (Fault::Panic, "panicked: the settings file exploded"),
        (Fault::Hang, "timed out after 1s"),
    ] {
        let log = Log::default();
        let service = settings(&log, "quotes", fault);
        service.start().await.unwrap();

        let error = service.reload().await.unwrap_err();

        assert_eq!(
            error.hook(),
            Some((HookKind::Reload, "reread_file")),
            "{error}"
        );
        assert_eq!(
            error.to_string(),
            format!("service `quotes`: reload hook `reread_file` {expected}")
        );
        // The second hook ran all the same, and the service is still running.
        assert_eq!(log.count("reload-cert:quotes"), 1, "{fault:?}");
        assert_eq!(service.status(), ServiceStatus::Running, "{fault:?}");
        assert!(service.last_error().is_none(), "{fault:?}");
        service.stop().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_service_that_is_not_running_has_nothing_to_reload() {
    let log = Log::default();
    let service = settings(&log, "quotes", Fault::None);

    service.reload().await.unwrap();

    assert!(log.entries().is_empty(), "{:?}", log.entries());
    assert_eq!(service.status(), ServiceStatus::Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_parent_reloads_before_its_components_and_reports_their_failures() {
    let log = Log::default();
    let gateway = Managed::new(Gateway {
        log: log.clone(),
        settings: settings(&log, "routes_file", Fault::Err),
    });
    gateway.start().await.unwrap();

    let error = gateway.reload().await.unwrap_err();

    assert_eq!(
        log.entries()[1..],
        [
            "reload-routes:gateway",
            "reload-file:routes_file",
            "reload-cert:routes_file"
        ]
    );
    match &error {
        ServiceError::Component {
            service, component, ..
        } => {
            assert_eq!((&**service, &**component), ("gateway", "settings"));
        }
        other => panic!("expected a component error, got {other:?}"),
    }
    assert_eq!(error.hook(), Some((HookKind::Reload, "reread_file")));
    assert_eq!(gateway.status(), ServiceStatus::Running);
    gateway.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_supervisor_reloads_in_dependency_order_and_reports_every_failure() {
    let log = Log::default();
    let supervisor = Supervisor::new()
        .add(settings(&log, "feed", Fault::None))
        .add(settings(&log, "strategy", Fault::Err))
        .depends_on("feed")
        .add(settings(&log, "gateway", Fault::None))
        .depends_on("strategy")
        .add(Plain);
    let handle = supervisor.handle();
    let program = async {
        handle.started().await.unwrap();
        let first = handle.reload().await;
        let second = handle.reload().await;
        handle.shutdown();
        (first, second)
    };

    let (report, (first, second)) =
        tokio::join!(supervisor.run_until(std::future::pending()), program);

    let reloads: Vec<String> = log
        .entries()
        .into_iter()
        .filter(|entry| entry.starts_with("reload-file"))
        .collect();
    assert_eq!(
        reloads,
        [
            "reload-file:feed",
            "reload-file:strategy",
            "reload-file:gateway",
            "reload-file:feed",
            "reload-file:strategy",
            "reload-file:gateway"
        ]
    );
    for outcome in [first, second] {
        match outcome {
            Err(ReloadError::Failed(errors)) => {
                assert_eq!(errors.len(), 1, "{errors:?}");
                assert_eq!(errors[0].service(), "strategy");
            }
            other => panic!("expected the strategy's failure, got {other:?}"),
        }
    }
    // A failed reload is no failure of the run: every service kept running until the
    // shutdown, and the exit is clean.
    assert!(report.is_success(), "{:?}", report.errors());
}

#[tokio::test(start_paused = true)]
async fn a_reload_asked_for_during_startup_waits_for_it_and_none_after_the_run() {
    let log = Log::default();
    let supervisor = Supervisor::new().add(settings(&log, "feed", Fault::None));
    let handle = supervisor.handle();
    // Asked before the supervisor runs: carried out once every service runs.
    let early = tokio::spawn({
        let handle = handle.clone();
        async move { handle.reload().await }
    });
    tokio::task::yield_now().await;
    let program = async {
        handle.started().await.unwrap();
        let outcome = early.await.unwrap();
        handle.shutdown();
        outcome
    };

    let (report, early) = tokio::join!(supervisor.run_until(std::future::pending()), program);

    early.unwrap();
    assert_eq!(log.count("reload-file:feed"), 1);
    assert!(report.is_success(), "{:?}", report.errors());
    assert!(matches!(
        handle.reload().await,
        Err(ReloadError::NotRunning)
    ));
}

#[tokio::test(start_paused = true)]
async fn without_reload_hooks_a_reload_does_nothing_and_succeeds() {
    let supervisor = Supervisor::new().add(Plain);
    let handle = supervisor.handle();
    let program = async {
        handle.started().await.unwrap();
        let outcome = handle.reload().await;
        handle.shutdown();
        outcome
    };

    let (report, outcome) = tokio::join!(supervisor.run_until(std::future::pending()), program);

    outcome.unwrap();
    assert!(report.is_success());
}
