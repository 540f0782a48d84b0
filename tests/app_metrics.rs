//! The program's own metrics on `/metrics` (`Supervisor::metrics_registry`): after the
//! supervisor's families, on `serve_health`'s port and on a mounted `ProbeService` alike,
//! the families in a stable order from scrape to scrape, each text accepted by an
//! independent parser; a family named as one of the supervisor's fails the run.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use http_client::{PATIENCE, address_of, get_accepting, until};
use hyper::StatusCode;
use metric_tools::{promtool, python_parser};
use service_runtime::prometheus_client::metrics::counter::Counter;
use service_runtime::prometheus_client::metrics::family::Family;
use service_runtime::prometheus_client::metrics::gauge::Gauge;
use service_runtime::prometheus_client::metrics::histogram::Histogram;
use service_runtime::prometheus_client::registry::Registry;
use service_runtime::{
    HealthStatus, Managed, Service, Supervisor, SupervisorError, SupervisorHandle, lifecycle,
};

mod http_client;
mod metric_tools;
mod mounted;

#[derive(Service)]
struct Feed;

#[lifecycle]
impl Feed {
    #[health(name = "exchange")]
    async fn exchange(&self) -> HealthStatus {
        HealthStatus::Healthy
    }
}

/// What Prometheus servers send when scraping.
const OPENMETRICS: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The program's metrics, as a shop would keep them.
struct ShopMetrics {
    orders: Family<Vec<(&'static str, String)>, Counter>,
    basket_value: Histogram,
    open_carts: Gauge,
    /// A gauge of floats, registered in a sub-registry with its own prefix.
    stock_ratio: Gauge<f64, AtomicU64>,
}

impl ShopMetrics {
    fn registry() -> (ShopMetrics, Registry) {
        let metrics = ShopMetrics {
            orders: Family::default(),
            basket_value: Histogram::new([10.0, 100.0, 1000.0]),
            open_carts: Gauge::default(),
            stock_ratio: Gauge::default(),
        };
        let mut registry = Registry::with_prefix("shop");
        registry.register("orders", "Orders placed, by kind", metrics.orders.clone());
        registry.register(
            "basket_value",
            "Value of each basket checked out",
            metrics.basket_value.clone(),
        );
        registry.register(
            "open_carts",
            "Carts not checked out",
            metrics.open_carts.clone(),
        );
        registry.sub_registry_with_prefix("warehouse").register(
            "stock_ratio",
            "Stock on hand over target",
            metrics.stock_ratio.clone(),
        );
        (metrics, registry)
    }

    /// Some activity, in many label values so that a hash map's order would show.
    fn trade(&self, round: u64) {
        for kind in ["pickup", "delivery", "express", "gift", "bulk", "return"] {
            self.orders
                .get_or_create(&vec![("kind", kind.to_owned())])
                .inc_by(round + 1);
        }
        self.basket_value.observe(42.0 * round as f64);
        self.open_carts.set(round as i64);
        self.stock_ratio.set(0.5 + round as f64);
    }
}

/// The `# TYPE` names of a text, in order.
fn families(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.split(' ').next())
        .collect()
}

/// The supervisor's own families, as an OpenMetrics scrape of a stopped service declares them.
const SUPERVISOR_FAMILIES: [&str; 9] = [
    "service_status",
    "service_up",
    "service_restarts",
    "service_last_start_duration_seconds",
    "service_last_stop_duration_seconds",
    "service_uptime_seconds",
    "service_health",
    "service_dependency_health",
    "service_health_check_duration_seconds",
];

/// A second registry, as a library would bring its own.
fn payments() -> Registry {
    let mut registry = Registry::with_prefix("payments");
    registry.register("refunds", "Refunds made", Counter::<u64>::default());
    registry
}

async fn serving(
    registry: Registry,
) -> (
    SupervisorHandle,
    tokio::task::JoinHandle<service_runtime::Report>,
) {
    let supervisor = Supervisor::new()
        .add(Managed::new(Feed))
        .serve_health("127.0.0.1:0")
        .health_cache_ttl(Duration::from_secs(3600))
        .metrics_registry(registry)
        .metrics_registry(payments());
    let handle = supervisor.handle();
    let run = tokio::spawn(supervisor.run_until(std::future::pending()));
    until("started", || handle.has_started()).await;
    (handle, run)
}

#[tokio::test]
async fn the_programs_metrics_follow_the_supervisors_on_every_endpoint_in_a_stable_order() {
    let (shop, registry) = ShopMetrics::registry();
    shop.trade(0);
    let (handle, run) = serving(registry).await;
    let own_port = address_of(&handle).await;
    let mounted = mounted::serve_with_hyper(handle.probe_service()).await;

    let (first, _) = get_accepting(own_port, "/metrics", Some(OPENMETRICS)).await;
    assert_eq!(first.status, StatusCode::OK);
    let order = families(&first.body);
    let app_families = [
        "shop_orders",
        "shop_basket_value",
        "shop_open_carts",
        "shop_warehouse_stock_ratio",
        "payments_refunds",
    ];
    // The supervisor's families (no stop yet: no stop duration), then the program's in
    // the order registered, registry after registry.
    let expected: Vec<&str> = SUPERVISOR_FAMILIES
        .iter()
        .copied()
        .filter(|family| *family != "service_last_stop_duration_seconds")
        .chain(app_families)
        .collect();
    assert_eq!(order, expected, "{}", first.body);
    assert!(first.body.ends_with("# EOF\n") && first.body.matches("# EOF").count() == 1);

    // The same figures are the same text on both endpoints and scrape after scrape.
    for address in [own_port, mounted, own_port, mounted] {
        let (again, _) = get_accepting(address, "/metrics", Some(OPENMETRICS)).await;
        assert_eq!(again.body, first.body);
    }
    // New figures keep the families' order and the order of each family's samples.
    for round in 1..4 {
        shop.trade(round);
        for address in [own_port, mounted] {
            let (scrape, _) = get_accepting(address, "/metrics", Some(OPENMETRICS)).await;
            assert_eq!(families(&scrape.body), order);
            let kinds: Vec<&str> = scrape
                .body
                .lines()
                .filter(|line| line.starts_with("shop_orders_total{"))
                .collect();
            assert_eq!(kinds.len(), 6, "{}", scrape.body);
            assert!(kinds.is_sorted(), "{kinds:#?}");
            let total = (round + 1) * (round + 2) / 2;
            assert!(
                kinds[0].ends_with(&format!(" {total}")),
                "{} after round {round}",
                kinds[0]
            );
        }
    }

    let (openmetrics, _) = get_accepting(mounted, "/metrics", Some(OPENMETRICS)).await;
    if let Some((ok, output)) = python_parser(&openmetrics.body) {
        assert!(
            ok,
            "the OpenMetrics parser failed:\n{output}\n{}",
            openmetrics.body
        );
        assert!(output.contains("shop_orders counter 6\n"), "{output}");
        assert!(output.contains("shop_basket_value histogram "), "{output}");
    }
    for address in [own_port, mounted] {
        let (classic, _) = get_accepting(address, "/metrics", None).await;
        assert_eq!(
            classic.content_type.as_deref(),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert!(
            classic
                .body
                .contains("\n# TYPE shop_orders_total counter\n")
        );
        assert!(
            classic
                .body
                .contains("\nshop_basket_value_bucket{le=\"+Inf\"} 4\n")
        );
        assert!(classic.body.contains("\nshop_warehouse_stock_ratio 3.5\n"));
        if let Some((ok, output)) = promtool(&classic.body) {
            assert!(
                ok,
                "promtool check metrics failed:\n{output}\n{}",
                classic.body
            );
        }
    }

    handle.shutdown();
    let report = tokio::time::timeout(PATIENCE, run).await.unwrap().unwrap();
    assert!(report.is_success(), "{report:?}");
}

/// `/metrics` in OpenMetrics, asked of a `ProbeService` directly.
async fn scrape(probes: &service_runtime::ProbeService) -> String {
    let request = hyper::Request::get("/metrics")
        .header("accept", OPENMETRICS)
        .body(())
        .unwrap();
    let response = hyper::service::Service::call(probes, request)
        .await
        .unwrap();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn a_family_named_as_one_of_the_supervisors_fails_the_run() {
    // Every family a scrape declares: while a service runs (its dependencies' health),
    // and once it has stopped (its stop's duration).
    let supervisor = Supervisor::new().add(Managed::new(Feed));
    let handle = supervisor.handle();
    let probes = handle.probe_service();
    let mut running = String::new();
    let report = supervisor
        .run_until(async {
            handle.started().await.unwrap();
            running = scrape(&probes).await;
        })
        .await;
    assert!(report.is_success(), "{report:?}");
    let stopped = scrape(&probes).await;
    let mut declared: Vec<&str> = families(&running);
    declared.extend(families(&stopped));
    for family in SUPERVISOR_FAMILIES {
        assert!(
            declared.contains(&family),
            "{family} in neither:\n{running}\n{stopped}"
        );
    }
    assert!(
        declared
            .iter()
            .all(|family| SUPERVISOR_FAMILIES.contains(family)),
        "{declared:?}"
    );

    for family in SUPERVISOR_FAMILIES {
        let mut registry = Registry::default();
        registry.register(family, "Mine", Gauge::<i64>::default());
        let report = Supervisor::new()
            .add(Managed::new(Feed))
            .metrics_registry(registry)
            .run_until(std::future::pending())
            .await;
        assert!(!report.is_success());
        assert!(
            report.errors().iter().any(|error| matches!(
                error,
                SupervisorError::Config(message) if message.contains(&format!("`{family}`"))
            )),
            "{report:?}"
        );
    }
    // A counter clashes by the name its samples carry too; another name does not.
    let mut registry = Registry::default();
    registry.register("service_up", "Mine", Counter::<u64>::default());
    registry.register("service_requests", "Mine", Counter::<u64>::default());
    let report = Supervisor::new()
        .metrics_registry(registry)
        .run_until(async {})
        .await;
    assert_eq!(report.errors().len(), 1, "{report:?}");
}
