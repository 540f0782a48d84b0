//! `examples/axum_app.rs`: the shop's axum server serving its own routes and the probes
//! (under `/ops` and at the root) on one port, checked with a real HTTP client: the
//! probes and the app routes, the app's metrics on `/metrics` (promtool), and a
//! shutdown under a request in flight (readiness 503 from the moment it begins, the
//! request finished after the server stopped accepting, every service stopped). The
//! example binary itself is run too, stopped by a real SIGTERM.

#[path = "support/axum_app.rs"]
mod shop;

mod example_binary;
mod http_client;
mod metric_tools;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http_client::{PATIENCE, exchange, get_accepting, until};
use hyper::{Method, StatusCode};
use metric_tools::promtool;
use service_runtime::{
    Managed, Report, Service, ServiceStatus, Supervisor, SupervisorHandle, lifecycle,
};
use shop::{HttpServer, OrderBook, Orders, ShopMetrics};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// The shop as the example composes it, with `extra` routes merged in, and `after` (if
/// given) depending on the server, so stopped before it.
struct Shop {
    handle: SupervisorHandle,
    address: SocketAddr,
    run: tokio::task::JoinHandle<Report>,
}

async fn open_shop(extra: Router, after: Option<Managed<Outbox>>) -> Shop {
    let book = Arc::new(OrderBook::default());
    let metrics = ShopMetrics::default();
    let supervisor = Supervisor::new().metrics_registry(metrics.registry());
    let handle = supervisor.handle();
    let app: Router = shop::routes(book.clone(), metrics)
        .merge(extra)
        .nest("/ops", handle.probe_router())
        .merge(handle.probe_router());
    let server = Managed::new(HttpServer::new("127.0.0.1:0", app, Duration::ZERO));
    let mut supervisor = supervisor
        .add(Orders::new(book))
        .add(server.clone())
        .depends_on("orders");
    if let Some(after) = after {
        supervisor = supervisor.add(after).depends_on("http");
    }
    let run = tokio::spawn(supervisor.run_until(std::future::pending()));
    tokio::time::timeout(PATIENCE, handle.started())
        .await
        .expect("started in time")
        .expect("started");
    let address = server.read().await.local_addr().expect("bound");
    Shop {
        handle,
        address,
        run,
    }
}

async fn send(address: SocketAddr, method: Method, path: &str) -> (StatusCode, String) {
    let (reply, _) = exchange(address, method, path, &[]).await;
    (reply.status, reply.body)
}

#[tokio::test]
async fn one_server_serves_the_shop_and_the_probes_under_a_prefix() {
    let shop = open_shop(Router::new(), None).await;
    let at = shop.address;

    assert_eq!(send(at, Method::GET, "/ops/livez").await.0, StatusCode::OK);
    assert_eq!(
        send(at, Method::GET, "/ops/startupz").await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(at, Method::GET, "/ops/readyz").await,
        (StatusCode::OK, "{\"status\":\"ready\"}\n".to_owned())
    );
    assert_eq!(send(at, Method::GET, "/readyz").await.0, StatusCode::OK);
    let (status, health) = send(at, Method::GET, "/ops/health").await;
    assert_eq!(status, StatusCode::OK);
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(
        health["services"]["orders"]["dependencies"]["book"],
        "healthy"
    );
    assert_eq!(health["services"]["http"]["status"], "healthy");
    let (status, _) = send(at, Method::POST, "/ops/readyz").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        send(at, Method::GET, "/ops/nope").await.0,
        StatusCode::NOT_FOUND
    );

    assert_eq!(
        send(at, Method::GET, "/orders").await,
        (StatusCode::OK, "[]".to_owned())
    );
    assert_eq!(
        send(at, Method::POST, "/orders/tea").await,
        (StatusCode::CREATED, "order 1 placed\n".to_owned())
    );
    assert_eq!(
        send(at, Method::POST, "/orders/jam").await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        send(at, Method::GET, "/orders").await,
        (StatusCode::OK, "[\"tea\",\"jam\"]".to_owned())
    );

    // The shop's metrics after the supervisor's, in one order scrape after scrape.
    let (metrics, _) = get_accepting(at, "/ops/metrics", None).await;
    assert_eq!(
        metrics.content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = &metrics.body;
    assert!(text.contains("\nshop_orders_placed_total 2\n"), "{text}");
    assert!(text.contains("\nshop_orders_in_book 2\n"), "{text}");
    assert!(
        text.contains("\nservice_up{service=\"http\"} 1\n"),
        "{text}"
    );
    let families = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        families(text).last().map(String::as_str),
        Some("shop_orders_in_book gauge")
    );
    send(at, Method::POST, "/orders/bread").await;
    let (again, _) = get_accepting(at, "/metrics", None).await;
    assert_eq!(families(&again.body), families(text));
    assert!(again.body.contains("\nshop_orders_placed_total 3\n"));
    if let Some((ok, output)) = promtool(text) {
        assert!(ok, "promtool check metrics failed:\n{output}\n{text}");
    }

    shop.handle.shutdown();
    let report = tokio::time::timeout(PATIENCE, shop.run)
        .await
        .unwrap()
        .unwrap();
    assert!(report.is_success(), "{report:?}");
}

/// A service that depends on the server (a relay of what its handlers record, say), so
/// stopped before it: its cleanup waits for the test, holding the shutdown open while
/// the server still serves.
#[derive(Service)]
#[service(name = "outbox")]
struct Outbox {
    flushed: Arc<Notify>,
}

#[lifecycle]
impl Outbox {
    #[cleanup]
    async fn flush(&mut self) -> Result<(), std::io::Error> {
        self.flushed.notified().await;
        Ok(())
    }
}

#[tokio::test]
async fn shutdown_answers_503_at_once_and_finishes_the_request_in_flight() {
    // `/slow` answers once the test lets it.
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let slow = {
        let (entered, release) = (entered.clone(), release.clone());
        Router::new().route(
            "/slow",
            get(move || async move {
                entered.notify_one();
                release.notified().await;
                "slow but done"
            }),
        )
    };
    let flushed = Arc::new(Notify::new());
    let outbox = Managed::new(Outbox {
        flushed: flushed.clone(),
    });
    let shop = open_shop(slow, Some(outbox)).await;
    let at = shop.address;
    let in_flight = tokio::spawn(async move { send(at, Method::GET, "/slow").await });
    tokio::time::timeout(PATIENCE, entered.notified())
        .await
        .expect("the slow request reached its handler");

    // The shutdown begins: readiness is 503 at once, on this very server, which still
    // serves while the outbox stops.
    shop.handle.shutdown();
    until("the shutdown", || shop.handle.is_stopping()).await;
    let stopping = "{\"status\":\"stopping\",\"reason\":\"shutdown in progress\"}\n";
    for path in ["/ops/readyz", "/readyz"] {
        assert_eq!(
            send(at, Method::GET, path).await,
            (StatusCode::SERVICE_UNAVAILABLE, stopping.to_owned())
        );
    }
    assert_eq!(send(at, Method::GET, "/ops/livez").await.0, StatusCode::OK);
    assert_eq!(send(at, Method::GET, "/orders").await.0, StatusCode::OK);

    // The outbox stopped, the server's stop begins: it stops accepting, and the request
    // in flight still completes.
    flushed.notify_one();
    let refused = async {
        while TcpStream::connect(at).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(PATIENCE, refused)
        .await
        .expect("the server stopped accepting");
    assert!(!in_flight.is_finished());
    assert_eq!(
        shop.handle
            .statuses()
            .into_iter()
            .find(|(name, _)| name == "http")
            .map(|(_, status)| status),
        Some(ServiceStatus::Stopping)
    );
    release.notify_one();
    let answer = tokio::time::timeout(PATIENCE, in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, (StatusCode::OK, "slow but done".to_owned()));

    let report = tokio::time::timeout(PATIENCE, shop.run)
        .await
        .unwrap()
        .unwrap();
    assert!(report.is_success(), "{report:?}");
    for (name, status) in shop.handle.statuses() {
        assert_eq!(status, ServiceStatus::Stopped, "{name}");
    }
}

#[cfg(unix)]
#[test]
fn the_example_serves_its_metrics_and_exits_0_on_sigterm() {
    let mut example = example_binary::Example::start("axum_app", |app| {
        app.env("APP_ADDR", "127.0.0.1:0").env("DRAIN_MS", "0");
    });
    let banner = example.wait_for("the banner", |line| line.starts_with("shop open on"));
    let address: SocketAddr = banner
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|address| address.parse().ok())
        .unwrap_or_else(|| panic!("no address in {banner}"));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        assert_eq!(
            send(address, Method::GET, "/ops/readyz").await.0,
            StatusCode::OK
        );
        assert_eq!(
            send(address, Method::POST, "/orders/tea").await.0,
            StatusCode::CREATED
        );
        let (metrics, _) = get_accepting(address, "/ops/metrics", None).await;
        let text = &metrics.body;
        assert!(text.contains("\nshop_orders_placed_total 1\n"), "{text}");
        if let Some((ok, output)) = promtool(text) {
            assert!(ok, "promtool check metrics failed:\n{output}\n{text}");
        }
    });

    example.signal("TERM");
    let status = example.wait_exit();
    let stderr = example.stderr();
    let output = example.output();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}\nstdout:\n{output}\nstderr:\n{stderr}"
    );
    assert!(stderr.is_empty(), "unexpected stderr:\n{stderr}");
    // The server stopped before the book it uses.
    let at = |line: &str| {
        example
            .lines()
            .iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("no `{line}` in:\n{output}"))
    };
    assert!(at("http stopping -> stopped") < at("orders running -> stopping"));
    assert!(
        output.contains("orders: book closed with 1 orders"),
        "{output}"
    );
    assert!(
        output.ends_with("every service stopped cleanly"),
        "{output}"
    );
}
