//! The probe endpoint, with a real HTTP client against the served port.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use http_client::{PATIENCE, address_of, get, request, until};
use hyper::{Method, StatusCode};
use service_runtime::{
    HealthDetail, Managed, Service, ServiceStatus, ShowDetails, Supervisor, lifecycle,
};
use tokio::net::TcpStream;
use tokio::sync::Notify;

mod http_client;

#[derive(Service)]
#[service(health_timeout = "200ms")]
struct Desk {
    /// Init waits for this before finishing.
    init_gate: Option<Arc<Notify>>,
    /// Cleanup waits for this before finishing.
    cleanup_gate: Option<Arc<Notify>>,
    cleanup_done: Arc<AtomicBool>,
    check: Check,
    checks_run: Arc<AtomicU32>,
}

#[derive(Clone, Copy, PartialEq)]
enum Check {
    Healthy,
    Degraded,
    Hangs,
}

#[lifecycle]
impl Desk {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        if let Some(gate) = &self.init_gate {
            gate.notified().await;
        }
        Ok(())
    }

    #[cleanup]
    async fn close(&mut self) -> Result<(), std::io::Error> {
        if let Some(gate) = &self.cleanup_gate {
            gate.notified().await;
        }
        self.cleanup_done.store(true, Ordering::SeqCst);
        Ok(())
    }

    #[health(name = "exchange")]
    async fn exchange(&self) -> HealthDetail {
        self.checks_run.fetch_add(1, Ordering::SeqCst);
        match self.check {
            Check::Healthy => HealthDetail::healthy(),
            Check::Degraded => HealthDetail::degraded("slow quotes"),
            Check::Hangs => std::future::pending().await,
        }
    }
}

fn desk(name: &'static str) -> Managed<Desk> {
    Managed::with_config(
        Desk {
            init_gate: None,
            cleanup_gate: None,
            cleanup_done: Arc::default(),
            check: Check::Healthy,
            checks_run: Arc::default(),
        },
        Desk::config().name(name),
    )
}

fn with(name: &'static str, change: impl FnOnce(&mut Desk)) -> Managed<Desk> {
    let mut desk = Desk {
        init_gate: None,
        cleanup_gate: None,
        cleanup_done: Arc::default(),
        check: Check::Healthy,
        checks_run: Arc::default(),
    };
    change(&mut desk);
    Managed::with_config(desk, Desk::config().name(name))
}

#[tokio::test]
async fn probes_before_start_while_running_and_during_shutdown() {
    let init_gate = Arc::new(Notify::new());
    let cleanup_gate = Arc::new(Notify::new());
    let cleanup_done = Arc::new(AtomicBool::new(false));
    let supervisor = Supervisor::new()
        .add(desk("feed"))
        .add(with("gateway", |d| {
            d.init_gate = Some(init_gate.clone());
            d.cleanup_gate = Some(cleanup_gate.clone());
            d.cleanup_done = cleanup_done.clone();
        }))
        .serve_health("127.0.0.1:0");
    let handle = supervisor.handle();
    let run = tokio::spawn(supervisor.run_until(std::future::pending()));
    let address = address_of(&handle).await;

    // Starting: alive, not started, not ready.
    until("gateway starting", || {
        handle.statuses()[1].1 == ServiceStatus::Starting
    })
    .await;
    let live = get(address, "/livez").await;
    assert_eq!(live.status, StatusCode::OK);
    assert_eq!(live.json(), serde_json::json!({ "status": "alive" }));
    assert_eq!(live.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        get(address, "/startupz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let ready = get(address, "/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        ready.json(),
        serde_json::json!({ "status": "not ready", "reason": "gateway is starting" })
    );
    let health = get(address, "/health").await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        health.json()["services"]["gateway"]["reason"],
        "Service status: starting"
    );

    // Running: everything passes.
    init_gate.notify_one();
    until("every service running", || handle.has_started()).await;
    assert_eq!(get(address, "/startupz").await.status, StatusCode::OK);
    assert_eq!(
        get(address, "/readyz").await.json(),
        serde_json::json!({ "status": "ready" })
    );
    let health = get(address, "/health").await;
    assert_eq!(health.status, StatusCode::OK);
    let json = health.json();
    assert_eq!(json["status"], "healthy");
    assert_eq!(
        json["services"]["feed"]["dependencies"]["exchange"],
        "healthy"
    );
    assert_eq!(json["services"]["feed"]["service_name"], "feed");
    let one = get(address, "/health?service=gateway").await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json()["service_name"], "gateway");
    assert_eq!(one.json()["status"], "healthy");

    // Shutdown: readiness turns false before the first cleanup finishes.
    handle.shutdown();
    until("gateway stopping", || {
        handle.statuses()[1].1 == ServiceStatus::Stopping
    })
    .await;
    let ready = get(address, "/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        ready.json(),
        serde_json::json!({ "status": "stopping", "reason": "shutdown in progress" })
    );
    assert!(
        !cleanup_done.load(Ordering::SeqCst),
        "no cleanup has finished yet"
    );
    assert_eq!(
        get(address, "/livez").await.status,
        StatusCode::OK,
        "still alive while stopping"
    );
    cleanup_gate.notify_one();
    let report = tokio::time::timeout(PATIENCE, run).await.unwrap().unwrap();
    assert!(report.is_success(), "{:?}", report.errors());
    assert!(cleanup_done.load(Ordering::SeqCst));
    // The endpoint ends with the run.
    assert!(TcpStream::connect(address).await.is_err());
}

#[tokio::test]
async fn degraded_passes_and_a_hung_check_is_answered_within_its_timeout() {
    let supervisor = Supervisor::new()
        .add(with("slow", |d| d.check = Check::Degraded))
        .add(with("stuck", |d| d.check = Check::Hangs))
        .serve_health("127.0.0.1:0")
        // The checks' texts are asserted below: shown only when asked for.
        .show_details(ShowDetails::Always)
        .health_cache_ttl(Duration::ZERO);
    let handle = supervisor.handle();
    let run = tokio::spawn(supervisor.run_until(std::future::pending()));
    let address = address_of(&handle).await;
    until("started", || handle.has_started()).await;

    let slow = get(address, "/health?service=slow").await;
    assert_eq!(slow.status, StatusCode::OK, "degraded still passes");
    assert_eq!(slow.json()["status"], "degraded");
    assert_eq!(slow.json()["details"]["exchange"], "slow quotes");

    let stuck = get(address, "/health?service=stuck").await;
    assert_eq!(stuck.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        stuck.json()["details"]["exchange"],
        "check timed out after 200ms"
    );
    let ready = get(address, "/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["reason"], "unhealthy: stuck");
    assert_eq!(
        get(address, "/livez").await.status,
        StatusCode::OK,
        "liveness ignores dependencies"
    );

    handle.shutdown();
    let report = tokio::time::timeout(PATIENCE, run).await.unwrap().unwrap();
    assert!(report.is_success());
}

#[tokio::test]
async fn a_probe_storm_runs_the_checks_once_per_ttl() {
    let checks_run = Arc::new(AtomicU32::new(0));
    let supervisor = Supervisor::new()
        .add(with("feed", |d| d.checks_run = checks_run.clone()))
        .serve_health("127.0.0.1:0")
        .health_cache_ttl(Duration::from_secs(60));
    let handle = supervisor.handle();
    let run = tokio::spawn(supervisor.run_until(std::future::pending()));
    let address = address_of(&handle).await;
    until("started", || handle.has_started()).await;
    let storm: Vec<_> = (0..20)
        .map(|i| {
            tokio::spawn(async move {
                let path = if i % 2 == 0 { "/health" } else { "/readyz" };
                get(address, path).await.status
            })
        })
        .collect();
    for probe in storm {
        assert_eq!(probe.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        checks_run.load(Ordering::SeqCst),
        1,
        "one computation served every probe"
    );
    handle.shutdown();
    assert!(
        tokio::time::timeout(PATIENCE, run)
            .await
            .unwrap()
            .unwrap()
            .is_success()
    );
}

#[tokio::test]
async fn bad_paths_methods_and_requests_get_errors_not_panics() {
    let supervisor = Supervisor::new()
        .add(desk("feed"))
        .serve_health("127.0.0.1:0");
    let handle = supervisor.handle();
    let run = tokio::spawn(supervisor.run_until(std::future::pending()));
    let address = address_of(&handle).await;
    until("started", || handle.has_started()).await;

    let missing = get(address, "/metrics/../etc/passwd").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(
        missing
            .body
            .contains("try one of /livez, /readyz, /startupz, /health")
    );
    assert_eq!(get(address, "/").await.status, StatusCode::NOT_FOUND);
    let post = request(address, Method::POST, "/readyz").await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.allow.as_deref(), Some("GET, HEAD"));
    assert_eq!(
        request(address, Method::DELETE, "/health").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let head = request(address, Method::HEAD, "/livez").await;
    assert_eq!((head.status, head.body.as_str()), (StatusCode::OK, ""));
    let unknown = get(address, "/health?service=%6Eope").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body, "no service named `nope`\n");

    // Garbage on the wire: the server answers 400 or closes, and keeps serving.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut raw = TcpStream::connect(address).await.unwrap();
        raw.write_all(b"\x00\x01GARBAGE\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, raw.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "{answer}"
        );
    }
    assert_eq!(get(address, "/livez").await.status, StatusCode::OK);

    handle.shutdown();
    assert!(
        tokio::time::timeout(PATIENCE, run)
            .await
            .unwrap()
            .unwrap()
            .is_success()
    );
}

#[tokio::test]
async fn an_address_in_use_is_a_clear_error_before_anything_starts() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let feed = desk("feed");
    let report = Supervisor::new()
        .add(feed.clone())
        .serve_health(address.clone())
        .run_until(std::future::pending())
        .await;
    assert_eq!(report.code(), 1);
    assert!(
        report.errors()[0].to_string().starts_with(&format!(
            "could not serve the probe endpoint on {address}: "
        )),
        "{}",
        report.errors()[0]
    );
    assert_eq!(feed.status(), ServiceStatus::Stopped, "nothing started");
}
