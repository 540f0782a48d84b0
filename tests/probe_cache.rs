//! The probes' cached health report goes stale at the first status change the supervisor
//! observes, however long its TTL; readiness follows the statuses.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use http_client::{PATIENCE, address_of, get, until};
use hyper::StatusCode;
use service_runtime::{
    HealthStatus, Managed, Restart, RestartPolicy, Service, ServiceStatus, Shutdown, Supervisor,
    lifecycle,
};
use tokio::sync::Notify;

mod http_client;

#[derive(Service)]
struct Feed {
    /// The run loop fails when this is notified.
    fail: Arc<Notify>,
    checks_run: Arc<AtomicU32>,
}

#[lifecycle]
impl Feed {
    #[run]
    async fn work(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        tokio::select! {
            () = shutdown.requested() => Ok(()),
            () = self.fail.notified() => Err(std::io::Error::other("feed lost")),
        }
    }

    #[health]
    async fn alive(&self) -> HealthStatus {
        self.checks_run.fetch_add(1, Ordering::SeqCst);
        HealthStatus::Healthy
    }
}

fn feed(name: &'static str, fail: &Arc<Notify>, checks_run: &Arc<AtomicU32>) -> Managed<Feed> {
    Managed::with_config(
        Feed {
            fail: fail.clone(),
            checks_run: checks_run.clone(),
        },
        Feed::config().name(name),
    )
}

#[tokio::test]
async fn a_status_change_invalidates_the_cached_report() {
    let fail = Arc::new(Notify::new());
    let checks_run = Arc::new(AtomicU32::new(0));
    let steady = Arc::new(Notify::new());
    let supervisor = Supervisor::new()
        .add(feed("feed", &fail, &checks_run))
        .restart(RestartPolicy::new(Restart::Temporary))
        .add(feed("steady", &steady, &Arc::default()))
        .serve_health("127.0.0.1:0")
        .health_cache_ttl(Duration::from_secs(3600));
    let handle = supervisor.handle();
    let run = tokio::spawn(supervisor.run_until(std::future::pending()));
    let address = address_of(&handle).await;
    until("started", || handle.has_started()).await;

    let health = get(address, "/health").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["services"]["feed"]["status"], "healthy");
    assert_eq!(get(address, "/readyz").await.status, StatusCode::OK);
    // Served from the cache: the checks do not run again.
    let runs = checks_run.load(Ordering::SeqCst);
    assert_eq!(get(address, "/health").await.status, StatusCode::OK);
    assert_eq!(checks_run.load(Ordering::SeqCst), runs);

    // The feed fails and, temporary, is not restarted.
    fail.notify_one();
    until("feed failed", || {
        handle.statuses()[0].1 != ServiceStatus::Running
    })
    .await;
    // Readiness reads the statuses at once.
    let ready = get(address, "/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["status"], "not ready");
    // The report is recomputed at once (the cache compares the statuses themselves),
    // not when the hour-long TTL runs out nor when the supervisor gets to the change.
    let health = get(address, "/health").await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.json()["services"]["feed"]["status"], "unhealthy");
    assert_eq!(health.json()["services"]["steady"]["status"], "healthy");

    handle.shutdown();
    let report = tokio::time::timeout(PATIENCE, run).await.unwrap().unwrap();
    assert_eq!(report.errors().len(), 1, "{:?}", report.errors());
}
