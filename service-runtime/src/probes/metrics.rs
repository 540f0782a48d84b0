//! `/metrics` (feature `metrics`): the supervisor's state, encoded by `prometheus-client`
//! from a registry built for each scrape, so every figure is read at scrape time and
//! nothing is kept twice, then the program's own registry ([`AppMetrics`]); answered in
//! OpenMetrics or the classic Prometheus text, as the scrape's `Accept` asks (see
//! `exposition`).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::Full;
use hyper::Response;
use hyper::body::Bytes;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, VARY};
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::exposition::{Format, stabilise, to_classic};
use crate::health::HealthStatus;
use crate::status::ServiceStatus;
use crate::supervisor::{SupervisorHandle, SupervisorHealth};

type Labels = Vec<(&'static str, String)>;
type Seconds = Gauge<f64, AtomicU64>;

/// The names of the supervisor's own families, as their `# TYPE` lines give them: the
/// program's registry may use none of them (`tests/app_metrics.rs` checks the list is
/// complete).
const FAMILIES: [&str; 9] = [
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

/// The program's own registries ([`Supervisor::metrics_registry`](crate::Supervisor::metrics_registry)),
/// encoded after the supervisor's families at each scrape, in the order added. A scrape
/// clones the list of `Arc`s and encodes without the lock.
#[derive(Default)]
pub(crate) struct AppMetrics(Mutex<Vec<Arc<Registry>>>);

impl AppMetrics {
    pub(crate) fn add(&self, registry: Registry) {
        self.registries().push(Arc::new(registry));
    }

    fn registries(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Registry>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The families of `registry` that the supervisor's own would clash with: its names
/// (by their `# TYPE` lines, a counter's `_total` aside), which would make every scrape
/// invalid. Found by encoding it once.
pub(crate) fn clashes(registry: &Registry) -> Vec<String> {
    let mut text = String::new();
    if encode_registry(&mut text, registry).is_err() {
        return Vec::new();
    }
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.split(' ').next())
        .filter(|name| {
            let bare = name.strip_suffix("_total").unwrap_or(name);
            FAMILIES.contains(&bare)
        })
        .map(str::to_owned)
        .collect()
}

/// Encodes every metric of the supervisor's services, then the program's own.
pub(crate) fn encode_all(
    handle: &SupervisorHandle,
    health: &SupervisorHealth,
    latencies: &[(Arc<str>, Duration)],
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("service");

    let status = Family::<Labels, Gauge>::default();
    let up = Family::<Labels, Gauge>::default();
    let restarts = Family::<Labels, Counter>::default();
    let start_seconds = Family::<Labels, Seconds>::default();
    let stop_seconds = Family::<Labels, Seconds>::default();
    let uptime = Family::<Labels, Seconds>::default();
    for stats in handle.stats() {
        let service = || vec![("service", stats.name.clone())];
        for candidate in ServiceStatus::ALL {
            let mut labels = service();
            labels.push(("status", candidate.as_str().to_owned()));
            status
                .get_or_create(&labels)
                .set(i64::from(stats.status == candidate));
        }
        up.get_or_create(&service())
            .set(i64::from(stats.status == ServiceStatus::Running));
        restarts
            .get_or_create(&service())
            .inc_by(u64::from(stats.restarts));
        if let Some(duration) = stats.last_start_duration {
            start_seconds
                .get_or_create(&service())
                .set(duration.as_secs_f64());
        }
        if let Some(duration) = stats.last_stop_duration {
            stop_seconds
                .get_or_create(&service())
                .set(duration.as_secs_f64());
        }
        if let Some(report) = health.services.get(stats.name.as_str()) {
            // Whole seconds, as in the health report.
            uptime.get_or_create(&service()).set(report.uptime as f64);
        }
    }
    registry.register(
        "status",
        "1 for the status each service is in, 0 for the others",
        status,
    );
    registry.register("up", "1 when the service is running", up);
    registry.register("restarts", "Restarts made by the supervisor", restarts);
    registry.register(
        "last_start_duration_seconds",
        "How long the last start took",
        start_seconds,
    );
    registry.register(
        "last_stop_duration_seconds",
        "How long the last stop took",
        stop_seconds,
    );
    registry.register(
        "uptime_seconds",
        "Time since the service last became running",
        uptime,
    );

    let health_state = Family::<Labels, Gauge>::default();
    let dependency_state = Family::<Labels, Gauge>::default();
    for (name, report) in &health.services {
        for candidate in [
            HealthStatus::Healthy,
            HealthStatus::Degraded,
            HealthStatus::Unhealthy,
        ] {
            let labels = vec![
                ("service", name.to_string()),
                ("status", candidate.as_str().to_owned()),
            ];
            health_state
                .get_or_create(&labels)
                .set(i64::from(report.status == candidate));
            for (dependency, status) in &report.dependencies {
                let labels = vec![
                    ("service", name.to_string()),
                    ("dependency", dependency.to_string()),
                    ("status", candidate.as_str().to_owned()),
                ];
                dependency_state
                    .get_or_create(&labels)
                    .set(i64::from(*status == candidate));
            }
        }
    }
    let latency = Family::<Labels, Seconds>::default();
    for (name, duration) in latencies {
        latency
            .get_or_create(&vec![("service", name.to_string())])
            .set(duration.as_secs_f64());
    }
    registry.register(
        "health",
        "1 for the health status of each service, 0 for the others",
        health_state,
    );
    registry.register(
        "dependency_health",
        "1 for the status of each health check and component, 0 for the others",
        dependency_state,
    );
    registry.register(
        "health_check_duration_seconds",
        "How long the service's last health report took (its checks run concurrently)",
        latency,
    );

    let mut out = String::new();
    encode_registry(&mut out, &registry)?;
    let app = handle.probe_answers().app_metrics.registries().clone();
    for registry in &app {
        encode_registry(&mut out, registry)?;
    }
    encode_eof(&mut out)?;
    Ok(out)
}

/// [`encode_all`] in a stable order, or a comment explaining why encoding failed (it
/// only fails on a formatter error, which writing to a `String` never raises).
pub(crate) fn encode(
    handle: &SupervisorHandle,
    health: &SupervisorHealth,
    latencies: &[(Arc<str>, Duration)],
) -> String {
    encode_all(handle, health, latencies).map_or_else(
        |error| format!("# encoding failed: {error}\n# EOF\n"),
        |text| stabilise(&text),
    )
}

/// The answer to a scrape whose `Accept` header is `accept`: the metrics in the format
/// it asks for, never cached (each scrape reads the figures of its moment).
pub(crate) fn response(
    handle: &SupervisorHandle,
    health: &SupervisorHealth,
    latencies: &[(Arc<str>, Duration)],
    accept: Option<&HeaderValue>,
) -> Response<Full<Bytes>> {
    let format = Format::negotiate(accept.and_then(|value| value.to_str().ok()));
    let openmetrics = encode(handle, health, latencies);
    let body = match format {
        Format::OpenMetrics => openmetrics,
        Format::Classic => to_classic(&openmetrics),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(VARY, HeaderValue::from_static("accept"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn a_registry_clashes_by_family_name_only() {
        let mut registry = Registry::default();
        registry.register("service_up", "Mine", Gauge::<i64>::default());
        registry.register("service_restarts", "Mine", Counter::<u64>::default());
        registry.register("service_requests", "Mine", Counter::<u64>::default());
        registry.sub_registry_with_prefix("shop").register(
            "service_up",
            "Mine",
            Gauge::<i64>::default(),
        );
        assert_eq!(clashes(&registry), ["service_up", "service_restarts"]);
        assert!(clashes(&Registry::with_prefix("service")).is_empty());
    }
}
