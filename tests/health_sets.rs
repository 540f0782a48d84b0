//! Health checks whose names are known only at run time: a `#[health]` hook that returns
//! `HealthChecks` (or `Result<HealthChecks, E>`), each result reported as `hook[name]`.

use std::sync::Mutex;

use serde_json::json;
use service_runtime::{HealthChecks, HealthDetail, HealthStatus, Managed, Service, lifecycle};

/// How the shard check behaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Answer,
    Fail,
    Hang,
    Panic,
}

/// A store of N shards, whose number it learns when it connects.
#[derive(Service)]
#[service(name = "store", health_timeout = "1s")]
struct Store {
    shards: Mutex<Vec<HealthDetail>>,
    mode: Mode,
}

#[lifecycle]
impl Store {
    #[health(name = "shard")]
    async fn shards(&self) -> Result<HealthChecks, std::io::Error> {
        match self.mode {
            Mode::Answer => {}
            Mode::Fail => return Err(std::io::Error::other("cluster unreachable")),
            Mode::Hang => std::future::pending().await,
            Mode::Panic => panic!("shard map corrupt"),
        }
        let shards = self.shards.lock().unwrap().clone();
        Ok(shards
            .into_iter()
            .enumerate()
            .map(|(i, detail)| (i.to_string(), detail))
            .collect())
    }

    #[health(optional)]
    async fn replicas(&self) -> HealthChecks {
        HealthChecks::new()
            .with("eu-1", HealthStatus::Healthy)
            .with("us-1", HealthDetail::healthy().with("lag_ms", 4))
    }

    #[health]
    async fn disk(&self) -> HealthStatus {
        HealthStatus::Healthy
    }
}

fn store(shards: Vec<HealthDetail>, mode: Mode) -> Managed<Store> {
    Managed::new(Store {
        shards: Mutex::new(shards),
        mode,
    })
}

#[tokio::test]
async fn each_named_result_is_a_check_of_its_own_in_the_report_and_its_json() {
    let healthy = vec![
        HealthDetail::healthy(),
        HealthDetail::healthy().with("keys", 120),
    ];
    let service = store(healthy, Mode::Answer);
    service.start().await.unwrap();

    let report = service.health().await;

    assert_eq!(report.status, HealthStatus::Healthy);
    assert_eq!(report.reason, None);
    let json = json!(report);
    assert_eq!(
        json["dependencies"],
        json!({
            "disk": "healthy",
            "replicas[eu-1]": "healthy",
            "replicas[us-1]": "healthy",
            "shard[0]": "healthy",
            "shard[1]": "healthy",
        })
    );
    assert_eq!(
        json["data"],
        json!({ "replicas[us-1]": { "lag_ms": 4 }, "shard[1]": { "keys": 120 } })
    );
    assert!(
        !report.dependencies.contains_key("shard"),
        "a hook that answered has no entry of its own"
    );
    service.stop().await.unwrap();
}

#[tokio::test]
async fn the_set_grows_and_shrinks_with_what_the_hook_finds() {
    let service = store(vec![HealthDetail::healthy()], Mode::Answer);
    service.start().await.unwrap();
    assert!(service.health().await.dependencies.contains_key("shard[0]"));

    service
        .read()
        .await
        .shards
        .lock()
        .unwrap()
        .extend([HealthDetail::healthy(), HealthDetail::healthy()]);
    let grown = service.health().await;
    assert!(grown.dependencies.contains_key("shard[2]"));

    service.read().await.shards.lock().unwrap().clear();
    let none = service.health().await;
    assert!(
        !none
            .dependencies
            .keys()
            .any(|name| name.starts_with("shard")),
        "an empty set reports nothing: {none}"
    );
    assert_eq!(none.status, HealthStatus::Healthy);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn one_unhealthy_result_of_a_critical_hook_makes_the_service_unhealthy() {
    let shards = vec![
        HealthDetail::healthy(),
        HealthDetail::unhealthy("replica lost"),
        HealthDetail::healthy(),
    ];
    let service = store(shards, Mode::Answer);
    service.start().await.unwrap();

    let report = service.health().await;

    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert_eq!(report.dependencies["shard[1]"], HealthStatus::Unhealthy);
    assert_eq!(report.dependencies["shard[0]"], HealthStatus::Healthy);
    assert_eq!(report.details["shard[1]"], "replica lost");
    assert_eq!(
        report.reason.as_deref(),
        Some("critical dependency `shard[1]` is unhealthy: replica lost")
    );
    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_degraded_result_degrades_the_service() {
    let shards = vec![
        HealthDetail::degraded("rebalancing"),
        HealthDetail::healthy(),
    ];
    let service = store(shards, Mode::Answer);
    service.start().await.unwrap();

    let report = service.health().await;

    assert_eq!(report.status, HealthStatus::Degraded);
    assert_eq!(report.dependencies["shard[0]"], HealthStatus::Degraded);
    assert_eq!(report.details["shard[0]"], "rebalancing");
    service.stop().await.unwrap();
}

/// An optional hook's unhealthy results only degrade the service.
#[derive(Service)]
struct Mirrors;

#[lifecycle]
impl Mirrors {
    #[health(optional)]
    async fn mirror(&self) -> HealthChecks {
        [("a", HealthStatus::Healthy), ("b", HealthStatus::Unhealthy)]
            .into_iter()
            .collect()
    }
}

#[tokio::test]
async fn an_optional_hooks_unhealthy_result_degrades_the_service() {
    let service = Managed::new(Mirrors);
    service.start().await.unwrap();

    let report = service.health().await;

    assert_eq!(report.status, HealthStatus::Degraded);
    assert_eq!(report.dependencies["mirror[b]"], HealthStatus::Unhealthy);
    assert_eq!(
        report.reason.as_deref(),
        Some("optional dependency `mirror[b]` is unhealthy")
    );
    service.stop().await.unwrap();
}

#[tokio::test]
async fn an_err_makes_the_hooks_own_entry_unhealthy_with_the_errors_text() {
    let service = store(vec![HealthDetail::healthy()], Mode::Fail);
    service.start().await.unwrap();

    let report = service.health().await;

    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert_eq!(report.dependencies["shard"], HealthStatus::Unhealthy);
    assert_eq!(report.details["shard"], "cluster unreachable");
    assert!(!report.dependencies.contains_key("shard[0]"));
    assert_eq!(report.dependencies["replicas[eu-1]"], HealthStatus::Healthy);
    service.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_hook_that_times_out_makes_its_own_entry_unhealthy() {
    let service = store(vec![HealthDetail::healthy()], Mode::Hang);
    service.start().await.unwrap();

    let report = service.health().await;

    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert_eq!(report.dependencies["shard"], HealthStatus::Unhealthy);
    assert_eq!(report.details["shard"], "check timed out after 1s");
    assert_eq!(report.dependencies["disk"], HealthStatus::Healthy);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_hook_that_panics_makes_its_own_entry_unhealthy() {
    let service = store(vec![HealthDetail::healthy()], Mode::Panic);
    service.start().await.unwrap();

    let report = service.health().await;

    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert_eq!(report.dependencies["shard"], HealthStatus::Unhealthy);
    assert_eq!(report.details["shard"], "check panicked: shard map corrupt");
    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_large_set_is_reported_whole() {
    let shards = (0..40)
        .map(|i| {
            if i == 17 {
                HealthDetail::unhealthy("down")
            } else {
                HealthDetail::healthy()
            }
        })
        .collect();
    let service = store(shards, Mode::Answer);
    service.start().await.unwrap();

    let report = service.health().await;

    // 40 shards, two replicas, the disk.
    assert_eq!(report.dependencies.len(), 43);
    assert_eq!(report.dependencies["shard[17]"], HealthStatus::Unhealthy);
    assert_eq!(report.details.len(), 1);
    assert_eq!(report.status, HealthStatus::Unhealthy);
    service.stop().await.unwrap();
}

#[test]
fn a_set_keeps_its_order_and_a_name_added_again_replaces_its_result() {
    let mut checks = HealthChecks::new().with("b", HealthStatus::Healthy);
    checks.push("a", HealthDetail::degraded("slow"));
    checks.push("b", HealthStatus::Unhealthy);
    checks.extend([("c", HealthStatus::Healthy)]);

    let names: Vec<&str> = checks.iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["b", "a", "c"]);
    assert_eq!(checks.len(), 3);
    assert_eq!(checks.get("b").unwrap().status, HealthStatus::Unhealthy);
    assert!(checks.get("z").is_none());
    assert!(HealthChecks::new().is_empty());
    let owned: Vec<(String, HealthDetail)> = checks.into_iter().collect();
    assert_eq!(owned[1], ("a".to_owned(), HealthDetail::degraded("slow")));
}
