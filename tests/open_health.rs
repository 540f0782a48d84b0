//! Open health reports: a check's data beside its status, `Result<HealthDetail, E>`
//! checks, and reports that print as JSON without serde_json.

mod http_client;

use std::sync::atomic::{AtomicU64, Ordering};

use http_client::{address_of, get, until};
use serde_json::json;
use service_runtime::{
    HealthDetail, HealthStatus, Managed, Service, ShowDetails, Supervisor, lifecycle,
};

/// A consumer that reports its lag, and a broker check that can fail with an error.
#[derive(Service)]
#[service(name = "consumer")]
struct Consumer {
    lag_ms: AtomicU64,
    broker_down: bool,
}

#[lifecycle]
impl Consumer {
    #[health]
    async fn lag(&self) -> HealthDetail {
        let lag_ms = self.lag_ms.load(Ordering::Relaxed);
        let detail = if lag_ms > 1_000 {
            HealthDetail::degraded(format!("lag {lag_ms} ms"))
        } else {
            HealthDetail::healthy()
        };
        detail
            .with("lag_ms", lag_ms)
            .with("partitions", vec![0, 1, 2])
    }

    #[health(optional)]
    async fn broker(&self) -> Result<HealthDetail, std::io::Error> {
        if self.broker_down {
            return Err(std::io::Error::other("connection refused"));
        }
        Ok(HealthDetail::healthy().with("version", "3.7.0"))
    }

    #[health]
    async fn disk(&self) -> HealthStatus {
        HealthStatus::Healthy
    }
}

fn consumer(lag_ms: u64, broker_down: bool) -> Consumer {
    Consumer {
        lag_ms: AtomicU64::new(lag_ms),
        broker_down,
    }
}

#[tokio::test]
async fn a_checks_data_is_in_the_report_under_its_name_whatever_its_status() {
    let service = Managed::new(consumer(1_200, false));
    service.start().await.unwrap();

    let report = service.health().await;

    assert_eq!(report.status, HealthStatus::Degraded);
    assert_eq!(report.details["lag"], "lag 1200 ms");
    assert_eq!(report.data["lag"]["lag_ms"], 1_200);
    assert_eq!(report.data["lag"]["partitions"], json!([0, 1, 2]));
    assert_eq!(report.data["broker"]["version"], "3.7.0");
    assert!(
        !report.data.contains_key("disk"),
        "a check without data has no entry"
    );
    assert_eq!(
        json!(report)["data"],
        json!({
            "broker": { "version": "3.7.0" },
            "lag": { "lag_ms": 1200, "partitions": [0, 1, 2] },
        })
    );
    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_result_check_that_fails_is_unhealthy_with_the_errors_text() {
    let service = Managed::new(consumer(10, true));
    service.start().await.unwrap();

    let report = service.health().await;

    assert_eq!(report.dependencies["broker"], HealthStatus::Unhealthy);
    assert_eq!(report.details["broker"], "connection refused");
    // Optional: the service is degraded, not unhealthy.
    assert_eq!(report.status, HealthStatus::Degraded);
    assert_eq!(
        report.reason.as_deref(),
        Some("optional dependency `broker` is unhealthy: connection refused")
    );
    assert!(!report.data.contains_key("broker"));
    service.stop().await.unwrap();
}

#[tokio::test]
async fn reports_print_as_their_json() {
    let service = Managed::new(consumer(10, false));
    service.start().await.unwrap();
    let report = service.health().await;

    let printed = report.to_string();
    let pretty = format!("{report:#}");

    assert_eq!(printed, serde_json::to_string(&report).unwrap());
    assert_eq!(pretty, serde_json::to_string_pretty(&report).unwrap());
    assert!(pretty.contains('\n') && !printed.contains('\n'));
    let back: service_runtime::HealthReport = serde_json::from_str(&printed).unwrap();
    assert_eq!(back, report);

    let supervisor = Supervisor::new().add(service.clone());
    let health = supervisor.handle().health().await;
    assert_eq!(health.to_string(), serde_json::to_string(&health).unwrap());
    service.stop().await.unwrap();
}

#[tokio::test]
async fn the_probe_endpoint_shows_data_only_with_every_detail() {
    for (level, shown) in [(ShowDetails::Always, true), (ShowDetails::Statuses, false)] {
        let supervisor = Supervisor::new()
            .add(consumer(1_200, false))
            .serve_health("127.0.0.1:0")
            .show_details(level);
        let handle = supervisor.handle();
        let run = tokio::spawn(supervisor.run_until(std::future::pending()));
        let address = address_of(&handle).await;
        until("every service started", || handle.has_started()).await;

        let body = get(address, "/health?service=consumer").await.json();

        if shown {
            assert_eq!(body["data"]["lag"]["lag_ms"], 1_200, "{body}");
        } else {
            assert!(body.get("data").is_none(), "{body}");
        }
        handle.shutdown();
        assert!(run.await.unwrap().is_success());
    }
}

/// A parent whose component reports data.
#[derive(Service)]
#[service(name = "pipeline")]
struct Pipeline {
    #[service(component)]
    consumer: Managed<Consumer>,
}

#[lifecycle]
impl Pipeline {}

#[tokio::test]
async fn a_components_data_is_in_its_parents_report_under_the_component() {
    let pipeline = Managed::new(Pipeline {
        consumer: Managed::new(consumer(10, false)),
    });
    pipeline.start().await.unwrap();

    let report = pipeline.health().await;

    assert_eq!(report.dependencies["consumer"], HealthStatus::Healthy);
    // The component's checks, each with its data, under the component's field.
    assert_eq!(
        json!(report.data["consumer"]),
        json!({ "lag": { "lag_ms": 10, "partitions": [0, 1, 2] }, "broker": { "version": "3.7.0" } })
    );
    pipeline.stop().await.unwrap();
}

/// The design note's custom check: dependencies checked one by one, the overall status
/// decided by the service's own rule.
#[derive(Service)]
#[service(name = "trading_engine")]
struct TradingEngine {
    down: Vec<&'static str>,
    rule_panics: bool,
}

#[lifecycle]
impl TradingEngine {
    #[health]
    async fn database(&self) -> Result<(), std::io::Error> {
        self.probe("database")
    }

    #[health]
    async fn redis(&self) -> Result<(), std::io::Error> {
        self.probe("redis")
    }

    #[health]
    async fn exchange(&self) -> Result<(), std::io::Error> {
        self.probe("exchange")
    }

    /// One dependency down degrades the engine (it trades on what is left); two are an
    /// outage.
    #[health_rule]
    fn aggregate_health_status(&self, report: &service_runtime::HealthReport) -> HealthStatus {
        assert!(!self.rule_panics, "the rule's own bug");
        let down = report
            .dependencies
            .values()
            .filter(|status| **status == HealthStatus::Unhealthy)
            .count();
        match down {
            0 => HealthStatus::Healthy,
            1 => HealthStatus::Degraded,
            _ => HealthStatus::Unhealthy,
        }
    }
}

impl TradingEngine {
    fn probe(&self, name: &str) -> Result<(), std::io::Error> {
        if self.down.contains(&name) {
            return Err(std::io::Error::other(format!(
                "{name} refused the connection"
            )));
        }
        Ok(())
    }
}

async fn engine_health(
    down: Vec<&'static str>,
    rule_panics: bool,
) -> service_runtime::HealthReport {
    let engine = Managed::new(TradingEngine { down, rule_panics });
    engine.start().await.unwrap();
    let report = engine.health().await;
    engine.stop().await.unwrap();
    report
}

#[tokio::test]
async fn a_health_rule_decides_the_status_from_the_checks_report() {
    let all_up = engine_health(vec![], false).await;
    let one_down = engine_health(vec!["redis"], false).await;
    let two_down = engine_health(vec!["redis", "exchange"], false).await;

    assert_eq!(
        (all_up.status, all_up.reason),
        (HealthStatus::Healthy, None)
    );
    // A critical check failing would make it unhealthy; the rule says degraded, and the
    // default rule's reason still says why.
    assert_eq!(one_down.status, HealthStatus::Degraded);
    assert_eq!(one_down.dependencies["redis"], HealthStatus::Unhealthy);
    assert_eq!(
        one_down.reason.as_deref(),
        Some("critical dependency `redis` is unhealthy: redis refused the connection")
    );
    assert_eq!(two_down.status, HealthStatus::Unhealthy);
}

#[tokio::test]
async fn a_health_rule_that_panics_makes_the_service_unhealthy_and_says_so() {
    let report = engine_health(vec![], true).await;

    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert_eq!(
        report.reason.as_deref(),
        Some("health rule `aggregate_health_status` panicked: the rule's own bug")
    );
    assert_eq!(report.dependencies["database"], HealthStatus::Healthy);
}

#[tokio::test]
async fn a_service_not_running_is_unhealthy_without_its_rule() {
    let engine = Managed::new(TradingEngine {
        down: vec![],
        rule_panics: true,
    });

    let report = engine.health().await;

    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert_eq!(report.reason.as_deref(), Some("Service status: stopped"));
}
