//! A service whose run loop finishes its work (a migration that runs once): under
//! `transient` or `temporary` it has completed, and no longer counts against readiness or
//! health; under `permanent` it is restarted. Probed with a real HTTP client.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use http_client::{address_of, get, until};
use hyper::StatusCode;
use service_runtime::{
    HealthStatus, Managed, Restart, RestartPolicy, Service, ServiceStatus, Shutdown, Supervisor,
    lifecycle,
};
use tokio::sync::Notify;

mod http_client;

/// Runs its migration once the gate opens, then returns.
#[derive(Service)]
#[service(name = "migrator")]
struct Migrator {
    gate: Arc<Notify>,
    runs: Arc<AtomicU32>,
}

#[lifecycle]
impl Migrator {
    #[run]
    async fn migrate(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        tokio::select! {
            () = self.gate.notified() => {
                self.runs.fetch_add(1, Ordering::SeqCst);
            }
            () = shutdown.requested() => {}
        }
        Ok(())
    }
}

/// Serves until shutdown; depends on the migrator.
#[derive(Service)]
#[service(name = "api")]
struct Api;

#[lifecycle]
impl Api {
    #[run]
    async fn serve(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        shutdown.requested().await;
        Ok(())
    }
}

fn migrator(gate: &Arc<Notify>, runs: &Arc<AtomicU32>) -> Migrator {
    Migrator {
        gate: gate.clone(),
        runs: runs.clone(),
    }
}

#[tokio::test]
async fn a_completed_migrator_leaves_the_process_ready_and_healthy() {
    let gate = Arc::new(Notify::new());
    let runs = Arc::new(AtomicU32::new(0));
    let supervisor = Supervisor::new()
        .add(migrator(&gate, &runs))
        .add(Api)
        .depends_on("migrator")
        .serve_health("127.0.0.1:0");
    let handle = supervisor.handle();
    let run = tokio::spawn(supervisor.run_until(std::future::pending()));
    let address = address_of(&handle).await;
    handle.started().await.unwrap();
    assert_eq!(get(address, "/readyz").await.status, StatusCode::OK);

    gate.notify_one();
    until("the migrator completed", || {
        handle
            .stats()
            .iter()
            .any(|s| s.name == "migrator" && s.completed)
    })
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        handle.statuses(),
        [
            ("migrator".to_owned(), ServiceStatus::Stopped),
            ("api".to_owned(), ServiceStatus::Running)
        ]
    );
    let ready = get(address, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    let health = get(address, "/health").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    let health = health.json();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["services"]["migrator"]["status"], "healthy");
    assert_eq!(health["services"]["migrator"]["reason"], "completed");
    assert_eq!(handle.health().await.status, HealthStatus::Healthy);

    // Still ready a while later: nothing restarts it, nothing counts it against readiness.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(address, "/readyz").await.status, StatusCode::OK);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "not restarted (transient)");

    handle.shutdown();
    let report = run.await.unwrap();
    assert!(report.is_success(), "{report:?}");
}

#[tokio::test]
async fn a_completed_service_started_again_counts_again() {
    let gate = Arc::new(Notify::new());
    let runs = Arc::new(AtomicU32::new(0));
    let migrator = Managed::new(migrator(&gate, &runs));
    let supervisor = Supervisor::new()
        .add(migrator.clone())
        .serve_health("127.0.0.1:0");
    let handle = supervisor.handle();
    let run = tokio::spawn(supervisor.run_until(std::future::pending()));
    let address = address_of(&handle).await;
    handle.started().await.unwrap();
    gate.notify_one();
    until("completed", || handle.stats()[0].completed).await;
    assert_eq!(get(address, "/readyz").await.status, StatusCode::OK);

    // Started again by the program: running, then completing again.
    migrator.start().await.unwrap();
    until("not completed any more", || !handle.stats()[0].completed).await;
    assert_eq!(get(address, "/readyz").await.status, StatusCode::OK);
    gate.notify_one();
    until("completed again", || handle.stats()[0].completed).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(get(address, "/readyz").await.status, StatusCode::OK);
    handle.shutdown();
    assert!(run.await.unwrap().is_success());
}

#[tokio::test(start_paused = true)]
async fn a_permanent_service_that_returns_is_restarted_not_completed() {
    let gate = Arc::new(Notify::new());
    let runs = Arc::new(AtomicU32::new(0));
    let supervisor = Supervisor::new()
        .add(migrator(&gate, &runs))
        .restart(RestartPolicy::new(Restart::Permanent));
    let handle = supervisor.handle();
    let report = supervisor
        .run_until(async {
            handle.started().await.unwrap();
            gate.notify_one();
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(handle.statuses()[0].1, ServiceStatus::Running);
            assert!(!handle.stats()[0].completed);
            assert_eq!(handle.stats()[0].restarts, 1);
        })
        .await;
    assert!(report.is_success(), "{report:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// Fails its run loop when `cut` is notified.
#[derive(Service)]
#[service(name = "db")]
struct Db {
    cut: Arc<Notify>,
    starts: Arc<AtomicU32>,
}

#[lifecycle]
impl Db {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    #[run]
    async fn serve(&self, shutdown: Shutdown) -> Result<(), String> {
        tokio::select! {
            () = shutdown.requested() => Ok(()),
            () = self.cut.notified() => Err("disk full".to_owned()),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_completed_dependent_is_not_run_again_when_its_dependency_restarts() {
    let gate = Arc::new(Notify::new());
    let runs = Arc::new(AtomicU32::new(0));
    let cut = Arc::new(Notify::new());
    let starts = Arc::new(AtomicU32::new(0));
    let supervisor = Supervisor::new()
        .add(Db {
            cut: cut.clone(),
            starts: starts.clone(),
        })
        .add(migrator(&gate, &runs))
        .depends_on("db")
        .add(Api)
        .depends_on("db");
    let handle = supervisor.handle();
    let report = supervisor
        .run_until(async {
            handle.started().await.unwrap();
            gate.notify_one();
            while !handle.stats()[1].completed {
                tokio::task::yield_now().await;
            }
            cut.notify_one();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let statuses: Vec<_> = handle.statuses().into_iter().map(|(_, s)| s).collect();
            assert_eq!(
                statuses,
                [
                    ServiceStatus::Running,
                    ServiceStatus::Stopped,
                    ServiceStatus::Running
                ]
            );
            assert!(handle.stats()[1].completed, "still completed");
            assert_eq!(handle.stats()[2].restarts, 1, "api restarted with db");
        })
        .await;
    assert_eq!(starts.load(Ordering::SeqCst), 2, "db restarted");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the migration ran once");
    assert!(report.is_success(), "{report:?}");
}
