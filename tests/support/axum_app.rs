//! A shop's HTTP API on axum whose own server also serves the supervisor's probes and
//! metrics. Shared by `examples/axum_app.rs` (which runs it) and `tests/axum_app.rs`
//! (which shuts it down under a request).
//!
//! ```text
//! orders   init: open the book   health "book" (critical)   cleanup: close the book
//! http     init: bind            run: axum::serve(..).with_graceful_shutdown(..)
//!          depends on orders: started after it, stopped before it
//! ```
//!
//! The server is a supervised service like any other: its `#[run]` loop is the axum
//! server, and the run loop's [`Shutdown`] is its graceful-shutdown signal. When the
//! supervisor's shutdown begins, readiness turns 503 at once (on `/readyz` of this very
//! server); the server is stopped before the order book it uses, keeps serving for its
//! `drain` (so that load balancers polling readiness stop sending), then stops accepting
//! and finishes the requests in flight, within its stop timeout.
#![allow(dead_code)] // the example and the test each use their own subset

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use service_runtime::prometheus_client::metrics::counter::Counter;
use service_runtime::prometheus_client::metrics::gauge::Gauge;
use service_runtime::prometheus_client::registry::Registry;
use service_runtime::{HealthDetail, Service, Shutdown, lifecycle};
use tokio::net::TcpListener;

/// The shop's orders, shared by the `orders` service and the HTTP handlers.
#[derive(Default)]
pub struct OrderBook {
    open: AtomicBool,
    orders: Mutex<Vec<String>>,
}

impl OrderBook {
    fn orders(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.orders.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The shop's own metrics, served on `/metrics` after the supervisor's.
#[derive(Clone, Default)]
pub struct ShopMetrics {
    placed: Counter,
    in_book: Gauge,
}

impl ShopMetrics {
    /// The registry to give `Supervisor::metrics_registry`: `shop_orders_placed_total`
    /// and `shop_orders_in_book`.
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("shop");
        registry.register("orders_placed", "Orders placed", self.placed.clone());
        registry.register("orders_in_book", "Orders in the book", self.in_book.clone());
        registry
    }
}

/// The order book as a service: opened before the server starts, closed after it stops.
#[derive(Service)]
#[service(name = "orders")]
pub struct Orders {
    book: Arc<OrderBook>,
}

impl Orders {
    pub fn new(book: Arc<OrderBook>) -> Self {
        Orders { book }
    }
}

#[lifecycle]
impl Orders {
    #[init]
    async fn open(&mut self) -> Result<(), std::io::Error> {
        self.book.open.store(true, Ordering::SeqCst);
        Ok(())
    }

    #[cleanup]
    async fn close(&mut self) -> Result<(), std::io::Error> {
        self.book.open.store(false, Ordering::SeqCst);
        println!(
            "orders: book closed with {} orders",
            self.book.orders().len()
        );
        Ok(())
    }

    #[health(name = "book", critical)]
    async fn book(&self) -> HealthDetail {
        if self.book.open.load(Ordering::SeqCst) {
            HealthDetail::healthy()
        } else {
            HealthDetail::unhealthy("the order book is closed")
        }
    }
}

#[derive(Clone)]
struct Shop {
    book: Arc<OrderBook>,
    metrics: ShopMetrics,
}

/// The shop's own routes: `GET /orders` lists the orders, `POST /orders/{item}` places one.
pub fn routes(book: Arc<OrderBook>, metrics: ShopMetrics) -> Router {
    Router::new()
        .route("/orders", get(list))
        .route("/orders/{item}", post(place))
        .with_state(Shop { book, metrics })
}

async fn list(State(shop): State<Shop>) -> Json<Vec<String>> {
    Json(shop.book.orders().clone())
}

async fn place(State(shop): State<Shop>, Path(item): Path<String>) -> (StatusCode, String) {
    let mut orders = shop.book.orders();
    orders.push(item);
    shop.metrics.placed.inc();
    shop.metrics.in_book.set(orders.len() as i64);
    (
        StatusCode::CREATED,
        format!("order {} placed\n", orders.len()),
    )
}

/// The program's HTTP server, serving whatever router it is given.
#[derive(Service)]
#[service(name = "http", stop_timeout = "20s")]
pub struct HttpServer {
    address: String,
    router: Router,
    /// How long it keeps serving once its stop begins, readiness already 503.
    drain: Duration,
    /// Bound by `bind`, taken by `serve`.
    listener: Mutex<Option<TcpListener>>,
    local_addr: Option<SocketAddr>,
}

impl HttpServer {
    /// A server of `router` on `address` (port 0: any free port, see
    /// [`local_addr`](Self::local_addr)) that drains for `drain` before it stops.
    pub fn new(address: impl Into<String>, router: Router, drain: Duration) -> Self {
        HttpServer {
            address: address.into(),
            router,
            drain,
            listener: Mutex::new(None),
            local_addr: None,
        }
    }

    /// Where it listens, once started.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }
}

#[lifecycle]
impl HttpServer {
    /// Binds at start, so a port in use fails the start and names this service.
    #[init]
    async fn bind(&mut self) -> Result<(), std::io::Error> {
        let listener = TcpListener::bind(&self.address).await?;
        self.local_addr = Some(listener.local_addr()?);
        *self
            .listener
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = Some(listener);
        Ok(())
    }

    #[run]
    async fn serve(&self, shutdown: Shutdown) -> Result<(), std::io::Error> {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| std::io::Error::other("not bound"))?;
        let drain = self.drain;
        axum::serve(listener, self.router.clone())
            .with_graceful_shutdown(async move {
                shutdown.requested().await;
                // Readiness has answered 503 since the supervisor's shutdown began.
                tokio::time::sleep(drain).await;
            })
            .await
    }
}
