//! How much of the health reports the probe endpoint shows (feature `http`):
//! [`ShowDetails`], and the JSON views of a report at each level.

use std::borrow::Cow;
use std::collections::BTreeMap;

use hyper::body::Bytes;
use serde::{Serialize, Serializer};

use super::routes::json_bytes;
use crate::health::{HealthReport, HealthStatus};
use crate::status::ServiceStatus;
use crate::supervisor::{COMPLETED_REASON, STOPPED_ON_REQUEST_REASON, SupervisorHealth};

/// How much of the health reports the probe endpoint shows, as Spring Boot's
/// `management.endpoint.health.show-details`; see
/// [`Supervisor::show_details`](crate::Supervisor::show_details).
///
/// Error texts (a check's reason, a hook's error) may name hosts, users or files, and
/// anyone who can reach the probe port reads them; the default shows what a Kubernetes
/// operator needs to see which dependency failed, and leaves the texts to the logs and
/// to [`SupervisorHandle::health`](crate::SupervisorHandle::health).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ShowDetails {
    /// The status alone: `/health` and `/health?service=name` answer
    /// `{"status":"healthy"}`, and a failing `/readyz` names no service.
    Never,
    /// The default: every service's status, uptime, name and version, and each
    /// dependency's status. A report's `reason` says which dependency is not healthy, or
    /// which status the service is in, without the error's text; `details` and the
    /// checks' `data` are left out.
    #[default]
    Statuses,
    /// Everything, error texts included: each report's `reason`, `details` and `data`.
    Always,
}

/// The body of `/health` at `level`.
pub(super) fn health_body(health: &SupervisorHealth, level: ShowDetails) -> Bytes {
    match level {
        ShowDetails::Always => json_bytes(health),
        ShowDetails::Statuses => json_bytes(&HealthView {
            status: health.status,
            uptime: health.uptime,
            services: ServicesView(&health.services),
        }),
        ShowDetails::Never => json_bytes(&StatusOnly {
            status: health.status,
        }),
    }
}

/// The body of `/health?service=name` at `level`.
pub(super) fn report_body(report: &HealthReport, level: ShowDetails) -> Bytes {
    match level {
        ShowDetails::Always => json_bytes(report),
        ShowDetails::Statuses => json_bytes(&ReportView::of(report)),
        ShowDetails::Never => json_bytes(&StatusOnly {
            status: report.status,
        }),
    }
}

#[derive(Serialize)]
struct StatusOnly {
    status: HealthStatus,
}

/// [`SupervisorHealth`] with each report as a [`ReportView`].
#[derive(Serialize)]
struct HealthView<'a> {
    status: HealthStatus,
    uptime: u64,
    services: ServicesView<'a>,
}

struct ServicesView<'a>(&'a BTreeMap<Cow<'static, str>, HealthReport>);

impl Serialize for ServicesView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(
            self.0
                .iter()
                .map(|(name, report)| (name, ReportView::of(report))),
        )
    }
}

/// A [`HealthReport`] in its own shape and key order, without `details` and with a
/// reason made only of names and statuses.
#[derive(Serialize)]
struct ReportView<'a> {
    status: HealthStatus,
    uptime: u64,
    service_name: &'a str,
    version: &'a str,
    dependencies: &'a BTreeMap<Cow<'static, str>, HealthStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl<'a> ReportView<'a> {
    fn of(report: &'a HealthReport) -> Self {
        ReportView {
            status: report.status,
            uptime: report.uptime,
            service_name: &report.service_name,
            version: &report.version,
            dependencies: &report.dependencies,
            reason: reason_without_texts(report),
        }
    }
}

/// What the runtime's reasons start with for a service that is not running
/// (`Service status: error: <the error>`).
const STATUS_REASON: &str = "Service status: ";

/// The report's reason told from its names and statuses alone: which dependencies are
/// not healthy, or the service's status when the report has a reason but no failing
/// dependency. Nothing of the reason's own text is copied, so no error text can pass.
fn reason_without_texts(report: &HealthReport) -> Option<String> {
    let failing: Vec<String> = report
        .dependencies
        .iter()
        .filter(|(_, status)| **status != HealthStatus::Healthy)
        .map(|(name, status)| format!("dependency `{name}` is {status}"))
        .collect();
    if !failing.is_empty() {
        return Some(failing.join("; "));
    }
    // The runtime's own words for a service stopped on purpose: no error text.
    if let Some(reason @ (COMPLETED_REASON | STOPPED_ON_REQUEST_REASON)) = report.reason.as_deref()
    {
        return Some(reason.to_owned());
    }
    let rest = report.reason.as_deref()?.strip_prefix(STATUS_REASON)?;
    [
        ServiceStatus::Stopped,
        ServiceStatus::Starting,
        ServiceStatus::Running,
        ServiceStatus::Stopping,
        ServiceStatus::Error,
    ]
    .into_iter()
    .find(|status| {
        rest.strip_prefix(status.as_str())
            .is_some_and(|after| after.is_empty() || after.starts_with(": "))
    })
    .map(|status| format!("{STATUS_REASON}{status}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(reason: Option<&str>, dependencies: &[(&'static str, HealthStatus)]) -> HealthReport {
        HealthReport {
            status: HealthStatus::Unhealthy,
            uptime: 7,
            service_name: "feed".into(),
            version: "1.0.0".into(),
            dependencies: dependencies
                .iter()
                .map(|&(name, status)| (name.into(), status))
                .collect(),
            reason: reason.map(str::to_owned),
            details: dependencies
                .iter()
                .map(|&(name, _)| (name.into(), "password=hunter2".to_owned()))
                .collect(),
            data: dependencies
                .iter()
                .map(|&(name, _)| {
                    let figures = [("user".to_owned(), "admin".into())].into_iter().collect();
                    (name.into(), figures)
                })
                .collect(),
        }
    }

    fn json(bytes: Bytes) -> serde_json::Value {
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn statuses_keep_names_and_statuses_and_drop_every_text() {
        let failing = report(
            Some("critical dependency `redis` is unhealthy: password=hunter2"),
            &[
                ("redis", HealthStatus::Unhealthy),
                ("cache", HealthStatus::Healthy),
            ],
        );
        let body = report_body(&failing, ShowDetails::Statuses);
        assert!(!String::from_utf8_lossy(&body).contains("hunter2"));
        assert!(
            !String::from_utf8_lossy(&body).contains("admin"),
            "no check data"
        );
        assert_eq!(
            json(body),
            serde_json::json!({
                "status": "unhealthy", "uptime": 7, "service_name": "feed", "version": "1.0.0",
                "dependencies": { "cache": "healthy", "redis": "unhealthy" },
                "reason": "dependency `redis` is unhealthy",
            })
        );
        let errored = report(
            Some("Service status: error: connect to 10.0.0.3 failed"),
            &[],
        );
        assert_eq!(
            json(report_body(&errored, ShowDetails::Statuses))["reason"],
            "Service status: error"
        );
        let stopped = report(Some("Service status: stopped"), &[]);
        assert_eq!(
            json(report_body(&stopped, ShowDetails::Statuses))["reason"],
            "Service status: stopped"
        );
        let unknown = report(Some("Service status: stoppedx"), &[]);
        assert!(json(report_body(&unknown, ShowDetails::Statuses))["reason"].is_null());
    }

    #[test]
    fn always_is_the_report_and_never_the_status() {
        let failing = report(Some("why"), &[("redis", HealthStatus::Degraded)]);
        assert_eq!(
            json(report_body(&failing, ShowDetails::Always)),
            serde_json::to_value(&failing).unwrap()
        );
        assert_eq!(
            json(report_body(&failing, ShowDetails::Never)),
            serde_json::json!({ "status": "unhealthy" })
        );
        let health = SupervisorHealth {
            status: HealthStatus::Unhealthy,
            uptime: 3,
            services: [("feed".into(), failing.clone())].into_iter().collect(),
        };
        assert_eq!(
            json(health_body(&health, ShowDetails::Never)),
            serde_json::json!({ "status": "unhealthy" })
        );
        assert_eq!(
            json(health_body(&health, ShowDetails::Statuses))["services"]["feed"],
            json(report_body(&failing, ShowDetails::Statuses))
        );
    }
}
