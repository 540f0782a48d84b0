//! `Supervisor::drain_period`: once the shutdown begins, readiness reports not ready
//! while every service keeps running for the drain period; then the stops begin, under
//! the whole budget. (The drain under real signals, with `/readyz` over HTTP, is in
//! `tests/signals.rs`.)

mod common;

use std::time::Duration;

use common::Log;
use service_runtime::ServiceStatus::{Running, Stopped};
use service_runtime::{Managed, Service, Supervisor, lifecycle};
use tokio::time::Instant;

/// A service whose init may fail and whose cleanup takes `cleanup_takes`.
#[derive(Service)]
#[service(stop_timeout = "30s")]
struct Stage {
    log: Log,
    label: &'static str,
    fail_init: bool,
    cleanup_takes: Duration,
}

#[lifecycle]
impl Stage {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        if self.fail_init {
            return Err(std::io::Error::other("refused"));
        }
        Ok(())
    }

    #[cleanup]
    async fn close(&mut self) -> Result<(), std::io::Error> {
        self.log.push(format!("cleanup:{}", self.label));
        tokio::time::sleep(self.cleanup_takes).await;
        Ok(())
    }
}

fn stage(log: &Log, label: &'static str) -> Managed<Stage> {
    let service = Stage {
        log: log.clone(),
        label,
        fail_init: false,
        cleanup_takes: Duration::ZERO,
    };
    Managed::with_config(service, Stage::config().name(label))
}

#[tokio::test(start_paused = true)]
async fn every_service_runs_not_ready_for_the_drain_period_then_stops_in_reverse() {
    let log = Log::default();
    let supervisor = Supervisor::new()
        .drain_period(Duration::from_secs(5))
        .add(stage(&log, "feed"))
        .add(stage(&log, "gateway"))
        .depends_on("feed");
    let handle = supervisor.handle();
    let drive = async {
        handle.started().await.expect("every service starts");
        let requested = Instant::now();
        handle.shutdown();
        tokio::time::sleep_until(requested + Duration::from_millis(4_900)).await;
        // Not ready from the request on, but nothing stopped yet.
        assert!(handle.is_stopping());
        assert!(
            handle
                .statuses()
                .iter()
                .all(|(_, status)| *status == Running),
            "{:?}",
            handle.statuses()
        );
        assert!(log.entries().is_empty(), "{:?}", log.entries());
        requested
    };
    let (report, requested) = tokio::join!(supervisor.run_until(std::future::pending()), drive);

    assert!(report.is_success(), "{:?}", report.errors());
    assert_eq!(log.entries(), ["cleanup:gateway", "cleanup:feed"]);
    assert!(
        handle
            .statuses()
            .iter()
            .all(|(_, status)| *status == Stopped)
    );
    assert!(
        requested.elapsed() >= Duration::from_secs(5),
        "the drain was cut short"
    );
}

#[tokio::test(start_paused = true)]
async fn the_shutdown_budget_begins_when_the_drain_ends() {
    let log = Log::default();
    let slow = Stage {
        log: log.clone(),
        label: "journal",
        fail_init: false,
        cleanup_takes: Duration::from_secs(3),
    };
    // A budget counted from the request would run out in the drain.
    let supervisor = Supervisor::new()
        .drain_period(Duration::from_secs(10))
        .shutdown_timeout(Duration::from_secs(4))
        .add(slow);
    let handle = supervisor.handle();
    let drive = async {
        handle.started().await.expect("starts");
        handle.shutdown();
    };
    let (report, ()) = tokio::join!(supervisor.run_until(std::future::pending()), drive);

    assert!(report.is_success(), "{:?}", report.errors());
    assert_eq!(report.code(), 0);
    assert_eq!(log.entries(), ["cleanup:journal"]);
}

#[tokio::test(start_paused = true)]
async fn a_startup_that_failed_is_not_drained() {
    let log = Log::default();
    let failing = Stage {
        log: log.clone(),
        label: "feed",
        fail_init: true,
        cleanup_takes: Duration::ZERO,
    };
    let supervisor = Supervisor::new()
        .drain_period(Duration::from_secs(60))
        .add(stage(&log, "journal"))
        .add(failing)
        .depends_on("journal");
    let began = Instant::now();

    let report = supervisor.run_until(std::future::pending()).await;

    assert!(!report.is_success());
    assert_eq!(log.entries(), ["cleanup:journal"]);
    // Nothing was ever ready, so nothing waits for traffic to move away.
    assert!(
        began.elapsed() < Duration::from_secs(60),
        "{:?}",
        began.elapsed()
    );
}
