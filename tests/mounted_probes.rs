//! The probes mounted in the program's own server answer as `serve_health`'s port does:
//! a `ProbeService` under hyper alone and under axum's `nest_service`, and the axum
//! router nested under a prefix and merged at the root, each checked with a real HTTP
//! client against its port. One health cache serves them all, at the supervisor's
//! detail level, and readiness is 503 on every one from the moment shutdown begins.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get as route_get;
use http_client::{PATIENCE, Reply, address_of, exchange, get, until};
use hyper::{HeaderMap, Method, StatusCode};
use service_runtime::{
    HealthDetail, Managed, Service, ShowDetails, Supervisor, SupervisorHandle, lifecycle,
};
use tokio::sync::Notify;

mod http_client;
mod mounted;

#[derive(Service)]
struct Desk {
    /// Cleanup waits for this before finishing.
    cleanup_gate: Arc<Notify>,
    checks_run: Arc<AtomicU32>,
}

#[lifecycle]
impl Desk {
    #[cleanup]
    async fn close(&mut self) -> Result<(), std::io::Error> {
        self.cleanup_gate.notified().await;
        Ok(())
    }

    #[health(name = "exchange", optional)]
    async fn exchange(&self) -> HealthDetail {
        self.checks_run.fetch_add(1, Ordering::SeqCst);
        HealthDetail::degraded("quotes from 10.0.0.7 are slow")
    }
}

/// Where one endpoint serves the probes: its address and the prefix of their paths.
#[derive(Clone, Copy, Debug)]
struct Endpoint {
    name: &'static str,
    address: SocketAddr,
    prefix: &'static str,
}

/// The probes of `handle` on every kind of endpoint, `serve_health`'s port first.
async fn endpoints(handle: &SupervisorHandle) -> Vec<Endpoint> {
    let own = address_of(handle).await;
    let hyper = mounted::serve_with_hyper(handle.probe_service()).await;
    let nested = mounted::serve_with_axum(
        Router::new()
            .route("/orders", route_get(|| async { "[]" }))
            .nest("/ops", handle.probe_router()),
    )
    .await;
    let merged = mounted::serve_with_axum(
        Router::new()
            .route("/orders", route_get(|| async { "[]" }))
            .merge(handle.probe_router()),
    )
    .await;
    let nested_service =
        mounted::serve_with_axum(Router::new().nest_service("/svc", handle.probe_service())).await;
    vec![
        Endpoint {
            name: "serve_health",
            address: own,
            prefix: "",
        },
        Endpoint {
            name: "hyper + ProbeService",
            address: hyper,
            prefix: "",
        },
        Endpoint {
            name: "axum nest",
            address: nested,
            prefix: "/ops",
        },
        Endpoint {
            name: "axum merge",
            address: merged,
            prefix: "",
        },
        Endpoint {
            name: "axum nest_service",
            address: nested_service,
            prefix: "/svc",
        },
    ]
}

/// What two endpoints must agree on: the status, the body and the headers probes set.
fn answer(reply: &Reply, headers: &HeaderMap) -> (StatusCode, String, Vec<Option<String>>) {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    (
        reply.status,
        reply.body.clone(),
        [
            "content-type",
            "cache-control",
            "allow",
            "vary",
            "x-content-type-options",
        ]
        .into_iter()
        .map(header)
        .collect(),
    )
}

/// A request's headers.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// What Prometheus servers send when scraping.
const OPENMETRICS: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";

async fn ask(
    at: Endpoint,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String, Vec<Option<String>>) {
    let (reply, response_headers) =
        exchange(at.address, method, &format!("{}{path}", at.prefix), headers).await;
    answer(&reply, &response_headers)
}

#[tokio::test]
async fn every_mounted_endpoint_answers_as_the_probe_port_at_each_detail_level() {
    for level in [
        ShowDetails::Never,
        ShowDetails::Statuses,
        ShowDetails::Always,
    ] {
        let checks_run = Arc::new(AtomicU32::new(0));
        let cleanup_gate = Arc::new(Notify::new());
        let supervisor = Supervisor::new().add(Managed::new(Desk {
            cleanup_gate: cleanup_gate.clone(),
            checks_run: checks_run.clone(),
        }));
        // Mounted before the settings are made: they apply all the same.
        let handle = supervisor.handle();
        let early = mounted::serve_with_hyper(handle.probe_service()).await;
        let supervisor = supervisor
            .serve_health("127.0.0.1:0")
            .health_cache_ttl(Duration::from_secs(3600))
            .show_details(level);
        let run = tokio::spawn(supervisor.run_until(std::future::pending()));
        let endpoints = endpoints(&handle).await;
        handle.started().await.unwrap();

        let requests: &[(Method, &str, Headers)] = &[
            (Method::GET, "/livez", &[]),
            (Method::GET, "/readyz", &[]),
            (Method::HEAD, "/readyz", &[]),
            (Method::GET, "/startupz", &[]),
            (Method::GET, "/health", &[]),
            (Method::GET, "/health?service=desk", &[]),
            (Method::GET, "/health?service=no%20such", &[]),
            (Method::POST, "/readyz", &[]),
            (Method::DELETE, "/health", &[]),
            (Method::GET, "/metrics", &[]),
            (Method::GET, "/metrics", &[("accept", OPENMETRICS)]),
            (Method::GET, "/metrics", &[("accept", "*/*")]),
        ];
        let own = endpoints[0];
        for (method, path, headers) in requests {
            let expected = ask(own, method.clone(), path, headers).await;
            for &at in &endpoints[1..] {
                let got = ask(at, method.clone(), path, headers).await;
                assert_eq!(got, expected, "{level:?} {method} {path} on {}", at.name);
            }
            let early = Endpoint {
                name: "early",
                address: early,
                prefix: "",
            };
            assert_eq!(ask(early, method.clone(), path, headers).await, expected);
        }
        // One cache for every endpoint: the checks ran once for all those requests.
        assert_eq!(checks_run.load(Ordering::SeqCst), 1, "{level:?}");
        let health = get(own.address, "/health").await;
        assert_eq!(
            health.body.contains("10.0.0.7"),
            level == ShowDetails::Always,
            "{level:?}: {}",
            health.body
        );

        // A path that is no probe: the probes' own 404 where they route by path, the
        // program's router's elsewhere.
        let not_found = ask(own, Method::GET, "/nope", &[]).await;
        assert_eq!(not_found.0, StatusCode::NOT_FOUND);
        assert!(
            not_found
                .1
                .starts_with("no such probe: /nope; try one of /livez")
        );
        for &at in &endpoints[1..] {
            let got = ask(at, Method::GET, "/nope", &[]).await;
            assert_eq!(got.0, StatusCode::NOT_FOUND, "{}", at.name);
            if at.name.contains("ProbeService") || at.name.contains("nest_service") {
                assert_eq!(got, not_found, "{}", at.name);
            }
        }
        for at in [endpoints[2], endpoints[3]] {
            let (reply, _) = exchange(at.address, Method::GET, "/orders", &[]).await;
            assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "[]"));
        }

        handle.shutdown();
        until("the shutdown", || handle.is_stopping()).await;
        cleanup_gate.notify_one();
        let report = tokio::time::timeout(PATIENCE, run).await.unwrap().unwrap();
        assert!(report.is_success(), "{report:?}");
    }
}

#[tokio::test]
async fn readiness_is_503_on_every_endpoint_from_the_moment_shutdown_begins() {
    let cleanup_gate = Arc::new(Notify::new());
    let supervisor = Supervisor::new()
        .add(Managed::new(Desk {
            cleanup_gate: cleanup_gate.clone(),
            checks_run: Arc::default(),
        }))
        .serve_health("127.0.0.1:0");
    let handle = supervisor.handle();
    let run = tokio::spawn(supervisor.run_until(std::future::pending()));
    let endpoints = endpoints(&handle).await;
    handle.started().await.unwrap();
    for &at in &endpoints {
        let (status, ..) = ask(at, Method::GET, "/readyz", &[]).await;
        // Degraded is ready.
        assert_eq!(status, StatusCode::OK, "{}", at.name);
    }

    // The cleanup is held: the shutdown has begun, no service has stopped yet.
    handle.shutdown();
    until("the shutdown", || handle.is_stopping()).await;
    for &at in &endpoints {
        let (status, body, _) = ask(at, Method::GET, "/readyz", &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{}", at.name);
        assert_eq!(
            body, "{\"status\":\"stopping\",\"reason\":\"shutdown in progress\"}\n",
            "{}",
            at.name
        );
        let (status, ..) = ask(at, Method::GET, "/livez", &[]).await;
        assert_eq!(status, StatusCode::OK, "{}", at.name);
    }
    cleanup_gate.notify_one();
    let report = tokio::time::timeout(PATIENCE, run).await.unwrap().unwrap();
    assert!(report.is_success(), "{report:?}");
}
