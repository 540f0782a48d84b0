//! A supervisor aggregates its services' health in the order of their names (the order
//! of its report's map): each latency still reaches its own service (`/metrics`), and
//! the report is the one the map built from the services in the order added would be,
//! duplicate names included (the last added wins).

use std::time::Duration;

use http_client::{address_of, get, until};
use service_runtime::{HealthDetail, Managed, Service, Supervisor, lifecycle};

mod http_client;

#[derive(Service)]
#[service(health_timeout = "5s")]
struct Slow {
    ms: u64,
}

#[lifecycle]
impl Slow {
    #[health(name = "wait")]
    async fn wait(&self) -> HealthDetail {
        if self.ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.ms)).await;
        }
        HealthDetail::healthy()
    }
}

fn slow(name: &str, ms: u64) -> Managed<Slow> {
    Managed::with_config(Slow { ms }, Slow::config().name(name.to_owned()))
}

#[tokio::test]
async fn each_latency_reaches_its_own_service() {
    // Added in an order unlike the names' order; distinct durations.
    let supervisor = Supervisor::new()
        .add(slow("zeta", 0))
        .add(slow("alpha", 600))
        .add(slow("mid", 300))
        .add(slow("beta", 0))
        .serve_health("127.0.0.1:0");
    let handle = supervisor.handle();
    let run = tokio::spawn(supervisor.run_until(std::future::pending()));
    let address = address_of(&handle).await;
    until("started", || handle.has_started()).await;
    let body = get(address, "/metrics").await.body;
    let lat = |name: &str| -> f64 {
        let prefix = format!("service_health_check_duration_seconds{{service=\"{name}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no latency for {name}:\n{body}"))
            .trim()
            .parse()
            .unwrap()
    };
    // The checks sleep 600 and 300 ms (lower bounds); the instant ones finish first.
    let (alpha, mid, zeta, beta) = (lat("alpha"), lat("mid"), lat("zeta"), lat("beta"));
    assert!(alpha >= 0.6, "alpha {alpha}");
    assert!(mid >= 0.3 && mid < alpha, "mid {mid}, alpha {alpha}");
    assert!(
        zeta < mid && beta < mid,
        "zeta {zeta}, beta {beta}, mid {mid}"
    );
    handle.shutdown();
    assert!(run.await.unwrap().is_success());
}

/// The JSON of the aggregation against a map built the old way (pairs in the order
/// added, collected), duplicates and all; names added out of their order.
#[tokio::test]
async fn the_report_is_the_map_of_the_services_in_the_order_added_duplicates_included() {
    let names = ["b", "dup", "a", "dup", "c", "dup", "a"];
    let mut supervisor = Supervisor::new();
    let mut kept = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let m = Managed::with_config(
            Slow { ms: 0 },
            Slow::config()
                .name(n.to_string())
                .version(format!("{i}.0.0")),
        );
        kept.push(m.clone());
        supervisor = supervisor.add(m);
    }
    let handle = supervisor.handle();
    for _ in 0..3 {
        let health = handle.health().await;
        let mut reports = Vec::new();
        for m in &kept {
            reports.push(m.health().await);
        }
        let old: std::collections::BTreeMap<_, _> = reports
            .into_iter()
            .map(|r| (r.service_name.clone(), r))
            .collect();
        assert_eq!(
            serde_json::to_string(&health.services).unwrap(),
            serde_json::to_string(&old).unwrap()
        );
        assert_eq!(health.services["dup"].version, "5.0.0");
        assert_eq!(health.services["a"].version, "6.0.0");
    }
}
