//! The probes and metrics in the program's own axum server: one port serves the shop's
//! routes and, nested under `/ops` (and merged at the root, where a Kubernetes probe
//! looks by default), `/livez`, `/readyz`, `/startupz`, `/health` and `/metrics`, the
//! shop's own metrics included. The server is itself a supervised service, stopped
//! gracefully by the supervisor.
//!
//! The services are in `tests/support/axum_app.rs`, shared with the integration test
//! that shuts the server down under a request (`tests/axum_app.rs`).
//!
//! ```sh
//! cargo run --example axum_app                        # stop with Ctrl-C
//! curl -i localhost:3000/ops/readyz
//! curl -i -X POST localhost:3000/orders/tea
//! curl localhost:3000/orders
//! curl localhost:3000/ops/metrics                     # service_* then shop_* families
//! APP_ADDR=127.0.0.1:0 cargo run --example axum_app   # any free port (printed)
//! DRAIN_MS=5000 cargo run --example axum_app          # drain 5 s before stopping
//! ```
//!
//! On Ctrl-C (SIGINT) or SIGTERM, `/readyz` answers 503 at once; the server keeps
//! serving for the drain (1 s unless `DRAIN_MS` says otherwise), stops accepting,
//! finishes the requests in flight and stops; then the order book closes.

#[path = "../tests/support/axum_app.rs"]
mod shop;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use service_runtime::{Managed, Report, StatusChange, Supervisor};
use shop::{HttpServer, OrderBook, Orders, ShopMetrics};

/// The line printed once every service runs, followed by the address.
const BANNER: &str = "shop open on";

#[tokio::main]
async fn main() -> Report {
    let address = std::env::var("APP_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let drain = std::env::var("DRAIN_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_secs(1), Duration::from_millis);

    let book = Arc::new(OrderBook::default());
    let metrics = ShopMetrics::default();
    let supervisor = Supervisor::new().metrics_registry(metrics.registry());
    let handle = supervisor.handle();

    // The shop's routes, the probes under /ops, and the probes at the root as well.
    let app: Router = shop::routes(book.clone(), metrics)
        .nest("/ops", handle.probe_router())
        .merge(handle.probe_router());
    let server = Managed::new(HttpServer::new(address, app, drain));

    let mut changes = handle.subscribe();
    let mut run = tokio::spawn(
        supervisor
            .add(Orders::new(book))
            .add(server.clone())
            .depends_on("orders")
            .run_until_signal(),
    );
    let mut open = false;
    let report = loop {
        tokio::select! {
            Some(change) = changes.recv() => print(&change),
            Ok(()) = handle.started(), if !open => {
                open = true;
                if let Some(address) = server.read().await.local_addr() {
                    println!("{BANNER} http://{address} (probes under /ops); Ctrl-C to stop");
                }
            }
            report = &mut run => break report.expect("the supervisor's task"),
        }
    };
    // The changes of the last moments, before the report.
    while let Some(change) = changes.try_recv() {
        print(&change);
    }
    if report.is_success() {
        println!("every service stopped cleanly");
    }
    report
}

fn print(change: &StatusChange) {
    println!("{} {} -> {}", change.service, change.from, change.to);
}
