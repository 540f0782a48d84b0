//! Health results: [`HealthStatus`], a check's [`HealthDetail`], a set of named results
//! known only at run time ([`HealthChecks`]), and the [`HealthReport`] in the JSON shape
//! of the design note.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// How well a service or one of its dependencies works. Ordered from best to worst,
/// so the worst of several is their maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Fully functional.
    Healthy,
    /// Working with reduced functionality (an optional dependency failed).
    Degraded,
    /// Not working (not running, or a critical dependency failed).
    Unhealthy,
}

impl HealthStatus {
    /// The lower-case name used in JSON and `Display`.
    pub const fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }

    /// The worse of two statuses.
    #[must_use]
    pub fn worst(self, other: HealthStatus) -> HealthStatus {
        self.max(other)
    }

    /// Whether a probe should count this as passing (`healthy` or `degraded`).
    pub const fn is_ok(self) -> bool {
        !matches!(self, HealthStatus::Unhealthy)
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The result of one health check: a status, when it is not healthy why, and any figures
/// the check wants to show (Spring's `Health.withDetail`, ASP.NET's `HealthCheckResult.Data`).
///
/// A `#[health]` hook may return this directly (or `Result<HealthDetail, E>`) to explain
/// a degraded status and to report what it measured:
///
/// ```
/// # use service_runtime::HealthDetail;
/// let lag_ms = 1_200;
/// let detail = if lag_ms > 1_000 {
///     HealthDetail::degraded(format!("consumer lag {lag_ms} ms"))
/// } else {
///     HealthDetail::healthy()
/// }
/// .with("lag_ms", lag_ms)
/// .with("partitions", vec![0, 1, 2]);
/// assert_eq!(detail.reason.as_deref(), Some("consumer lag 1200 ms"));
/// assert_eq!(detail.data["lag_ms"], 1_200);
/// ```
///
/// The data of each check appears in the service's [`HealthReport::data`] under the
/// check's name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthDetail {
    /// The check's status.
    pub status: HealthStatus,
    /// Why the check is not healthy, if it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the check measured or knows, by key (a lag, a pool's size, a version): JSON
    /// values, shown whatever the status.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, serde_json::Value>,
}

impl HealthDetail {
    /// A detail with the given status, no reason and no data.
    pub const fn new(status: HealthStatus) -> Self {
        HealthDetail {
            status,
            reason: None,
            data: BTreeMap::new(),
        }
    }

    /// Adds one entry of data (a later one with the same key replaces it): anything
    /// `serde_json::Value` converts from, such as numbers, strings, booleans and vectors
    /// of them; with `serde_json = "1"` among the program's dependencies (the same crate
    /// as the runtime's), a value built with `serde_json::json!` or, for any `Serialize`
    /// type, `serde_json::to_value(&x)?`.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.data.insert(key.into(), value.into());
        self
    }

    /// A healthy result.
    pub const fn healthy() -> Self {
        HealthDetail::new(HealthStatus::Healthy)
    }

    /// A degraded result with its reason.
    pub fn degraded(reason: impl Into<String>) -> Self {
        HealthDetail {
            reason: Some(reason.into()),
            ..HealthDetail::new(HealthStatus::Degraded)
        }
    }

    /// An unhealthy result with its reason.
    pub fn unhealthy(reason: impl Into<String>) -> Self {
        HealthDetail {
            reason: Some(reason.into()),
            ..HealthDetail::new(HealthStatus::Unhealthy)
        }
    }
}

impl From<HealthStatus> for HealthDetail {
    fn from(status: HealthStatus) -> Self {
        HealthDetail::new(status)
    }
}

/// The results of a `#[health]` hook that checks several things whose names it learns only
/// at run time: the shards of a store, the partitions of a topic, the replicas it found.
///
/// Each result appears in the service's [`HealthReport`] as a check of its own, named
/// `hook[name]` (the hook's check name, then the result's name in brackets, as a
/// component pool's elements are `field[i]`), and counts in the service's status as any
/// check does: critical or optional as the hook is. The results keep the order they were
/// added in; a name added again replaces the earlier result. A hook that returns an empty
/// set adds nothing to the report. Returned as `Result<HealthChecks, E>`, an `Err` makes
/// the hook's own entry (`hook`) unhealthy with the error's text, as a timeout or a panic
/// of the hook does.
///
/// ```
/// use service_runtime::{lifecycle, HealthChecks, HealthDetail, HealthStatus, Managed, Service};
///
/// #[derive(Service)]
/// struct Store {
///     shards: Vec<bool>,
/// }
///
/// #[lifecycle]
/// impl Store {
///     #[health]
///     async fn shards(&self) -> HealthChecks {
///         self.shards
///             .iter()
///             .enumerate()
///             .map(|(i, up)| {
///                 let status = if *up { HealthStatus::Healthy } else { HealthStatus::Unhealthy };
///                 (format!("shard-{i}"), status)
///             })
///             .collect()
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = Managed::new(Store { shards: vec![true, false] });
/// store.start().await.unwrap();
/// let report = store.health().await;
/// assert_eq!(report.dependencies["shards[shard-0]"], HealthStatus::Healthy);
/// assert_eq!(report.dependencies["shards[shard-1]"], HealthStatus::Unhealthy);
/// assert_eq!(report.status, HealthStatus::Unhealthy);
/// # store.stop().await.unwrap();
/// # });
///
/// let checks = HealthChecks::new()
///     .with("eu", HealthStatus::Healthy)
///     .with("us", HealthDetail::degraded("slow"));
/// assert_eq!(checks.len(), 2);
/// assert_eq!(checks.get("us").map(|detail| detail.status), Some(HealthStatus::Degraded));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthChecks {
    checks: Vec<(String, HealthDetail)>,
}

impl HealthChecks {
    /// An empty set.
    pub const fn new() -> Self {
        HealthChecks { checks: Vec::new() }
    }

    /// Adds the result `name`: a [`HealthStatus`] or a [`HealthDetail`]. A result already
    /// under `name` is replaced, in its place.
    pub fn push(&mut self, name: impl Into<String>, result: impl Into<HealthDetail>) {
        let (name, result) = (name.into(), result.into());
        match self.checks.iter_mut().find(|(known, _)| *known == name) {
            Some((_, earlier)) => *earlier = result,
            None => self.checks.push((name, result)),
        }
    }

    /// The set with the result `name` added (see [`push`](Self::push)).
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, result: impl Into<HealthDetail>) -> Self {
        self.push(name, result);
        self
    }

    /// The result named `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<&HealthDetail> {
        self.checks
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, detail)| detail)
    }

    /// How many results there are.
    pub fn len(&self) -> usize {
        self.checks.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// The results in the order they were added.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &HealthDetail)> {
        self.checks
            .iter()
            .map(|(name, detail)| (name.as_str(), detail))
    }
}

impl<N: Into<String>, D: Into<HealthDetail>> Extend<(N, D)> for HealthChecks {
    fn extend<I: IntoIterator<Item = (N, D)>>(&mut self, results: I) {
        for (name, result) in results {
            self.push(name, result);
        }
    }
}

impl<N: Into<String>, D: Into<HealthDetail>> FromIterator<(N, D)> for HealthChecks {
    fn from_iter<I: IntoIterator<Item = (N, D)>>(results: I) -> Self {
        let mut checks = HealthChecks::new();
        checks.extend(results);
        checks
    }
}

impl IntoIterator for HealthChecks {
    type Item = (String, HealthDetail);
    type IntoIter = std::vec::IntoIter<(String, HealthDetail)>;

    /// The results in the order they were added.
    fn into_iter(self) -> Self::IntoIter {
        self.checks.into_iter()
    }
}

/// A service's health, in the JSON shape of the design note:
///
/// ```json
/// { "status": "healthy", "uptime": 3600, "service_name": "market_feed", "version": "1.0.0",
///   "dependencies": { "upstream": "healthy", "consumer": "degraded" } }
/// ```
///
/// `reason` (why the service is not healthy) and `details` (why each failing
/// dependency failed) are added only when there is something to say.
///
/// Names are [`Cow<'static, str>`](Cow), as in [`ServiceConfig`](crate::ServiceConfig):
/// a report borrows the names the runtime already has (hook names, component fields, the
/// configured name and version) instead of copying one `String` per check. They read
/// like `String`s: index and look up by `&str`, compare with `&str`, deref to `str`;
/// construct them with `.into()` from a `&'static str` or a `String`. A deserialized
/// report owns its names.
///
/// ```
/// # use service_runtime::{HealthReport, HealthStatus};
/// let report: HealthReport = serde_json::from_str(
///     r#"{ "status": "degraded", "uptime": 5, "service_name": "feed", "version": "1.0.0",
///          "dependencies": { "redis": "degraded" }, "details": { "redis": "slow" } }"#,
/// )
/// .unwrap();
/// assert_eq!(report.service_name, "feed");
/// assert_eq!(report.dependencies["redis"], HealthStatus::Degraded);
/// assert_eq!(report.details.get("redis").map(String::as_str), Some("slow"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// `healthy`, `degraded` or `unhealthy`.
    pub status: HealthStatus,
    /// Whole seconds since the service last became `running`; 0 when it is not running.
    pub uptime: u64,
    /// The service's name.
    pub service_name: Cow<'static, str>,
    /// The service's version.
    pub version: Cow<'static, str>,
    /// Each health check and component, by name.
    pub dependencies: BTreeMap<Cow<'static, str>, HealthStatus>,
    /// Why the service is not healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why each dependency that is not healthy failed, where it said.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<Cow<'static, str>, String>,
    /// The data of each check that returned some ([`HealthDetail::data`]), by the
    /// check's name. Like `details`, the probe endpoint (feature `http`) shows it only
    /// when its `ShowDetails` is `Always`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<Cow<'static, str>, BTreeMap<String, serde_json::Value>>,
}

impl fmt::Display for HealthReport {
    /// The report's JSON: compact, or indented with `{:#}`.
    ///
    /// ```
    /// # use service_runtime::{HealthReport, HealthStatus};
    /// let report = HealthReport {
    ///     status: HealthStatus::Healthy,
    ///     uptime: 5,
    ///     service_name: "feed".into(),
    ///     version: "1.0.0".into(),
    ///     dependencies: Default::default(),
    ///     reason: None,
    ///     details: Default::default(),
    ///     data: Default::default(),
    /// };
    /// assert_eq!(
    ///     report.to_string(),
    ///     r#"{"status":"healthy","uptime":5,"service_name":"feed","version":"1.0.0","dependencies":{}}"#
    /// );
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_json(self, f)
    }
}

/// Writes `value` as JSON (indented under `{:#}`).
pub(crate) fn write_json(value: &impl Serialize, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let json = if f.alternate() {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    // A report always serialises: its keys are strings and its values plain data.
    f.write_str(&json.map_err(|_| fmt::Error)?)
}

impl HealthReport {
    /// Whether a probe should count this report as passing (`healthy` or `degraded`).
    pub fn is_ok(&self) -> bool {
        self.status.is_ok()
    }
}

/// Folds check results into a service status: a critical check passes its status on,
/// an optional one at most degrades the service. Returns the status and, when it is not
/// healthy, the reason naming the checks that decided it.
pub(crate) fn aggregate<'a>(
    checks: impl IntoIterator<Item = (&'a str, bool, &'a HealthDetail)>,
) -> (HealthStatus, Option<String>) {
    let mut status = HealthStatus::Healthy;
    let mut failing = Vec::new();
    for (name, critical, detail) in checks {
        let effect = if critical {
            detail.status
        } else {
            detail.status.min(HealthStatus::Degraded)
        };
        if detail.status != HealthStatus::Healthy {
            let kind = if critical { "critical" } else { "optional" };
            failing.push(match &detail.reason {
                Some(reason) => {
                    format!("{kind} dependency `{name}` is {}: {reason}", detail.status)
                }
                None => format!("{kind} dependency `{name}` is {}", detail.status),
            });
        }
        status = status.worst(effect);
    }
    let reason = (!failing.is_empty()).then(|| failing.join("; "));
    (status, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn critical_failures_are_unhealthy_optional_ones_degrade() {
        let ok = HealthDetail::healthy();
        let down = HealthDetail::unhealthy("refused");
        let slow = HealthDetail::degraded("slow");
        assert_eq!(aggregate([]), (HealthStatus::Healthy, None));
        assert_eq!(aggregate([("db", true, &ok)]).0, HealthStatus::Healthy);
        let (status, reason) = aggregate([("db", true, &ok), ("cache", false, &down)]);
        assert_eq!(status, HealthStatus::Degraded);
        assert_eq!(
            reason.unwrap(),
            "optional dependency `cache` is unhealthy: refused"
        );
        assert_eq!(
            aggregate([("db", true, &down), ("cache", false, &ok)]).0,
            HealthStatus::Unhealthy
        );
        assert_eq!(aggregate([("db", true, &slow)]).0, HealthStatus::Degraded);
        assert_eq!(
            aggregate([("db", false, &slow), ("x", true, &down)]).0,
            HealthStatus::Unhealthy
        );
    }

    #[test]
    fn report_has_the_notes_json_shape() {
        let report = HealthReport {
            status: HealthStatus::Healthy,
            uptime: 3600,
            service_name: "my_service".into(),
            version: "1.0.0".into(),
            dependencies: [
                ("database".into(), HealthStatus::Healthy),
                ("kafka".into(), HealthStatus::Degraded),
            ]
            .into_iter()
            .collect(),
            reason: None,
            details: BTreeMap::new(),
            data: BTreeMap::new(),
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "status": "healthy", "uptime": 3600, "service_name": "my_service", "version": "1.0.0",
                "dependencies": { "database": "healthy", "kafka": "degraded" }
            })
        );
        let back: HealthReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }

    /// The report as it was with `String` names, to check the JSON byte for byte.
    #[derive(Serialize, Deserialize)]
    struct StringReport {
        status: HealthStatus,
        uptime: u64,
        service_name: String,
        version: String,
        dependencies: BTreeMap<String, HealthStatus>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        details: BTreeMap<String, String>,
    }

    #[test]
    fn borrowed_and_owned_names_serialize_to_the_same_bytes_as_strings() {
        // Borrowed names (as the runtime builds them), in an order other than the map's.
        let borrowed = HealthReport {
            status: HealthStatus::Unhealthy,
            uptime: 7,
            service_name: Cow::Borrowed("feed"),
            version: Cow::Borrowed("2.1.0"),
            dependencies: [
                (Cow::Borrowed("upstream"), HealthStatus::Unhealthy),
                (Cow::Borrowed("cache"), HealthStatus::Healthy),
                (Cow::Borrowed("Z-last"), HealthStatus::Degraded),
            ]
            .into_iter()
            .collect(),
            reason: Some("critical dependency `upstream` is unhealthy: refused".into()),
            details: [(Cow::Borrowed("upstream"), "refused \"quoted\"".to_owned())]
                .into_iter()
                .collect(),
            data: BTreeMap::new(),
        };
        let strings = StringReport {
            status: HealthStatus::Unhealthy,
            uptime: 7,
            service_name: "feed".into(),
            version: "2.1.0".into(),
            dependencies: [
                ("upstream".to_owned(), HealthStatus::Unhealthy),
                ("cache".to_owned(), HealthStatus::Healthy),
                ("Z-last".to_owned(), HealthStatus::Degraded),
            ]
            .into_iter()
            .collect(),
            reason: borrowed.reason.clone(),
            details: [("upstream".to_owned(), "refused \"quoted\"".to_owned())]
                .into_iter()
                .collect(),
        };
        let json = serde_json::to_string(&borrowed).unwrap();
        assert_eq!(json, serde_json::to_string(&strings).unwrap());
        assert_eq!(
            json,
            r#"{"status":"unhealthy","uptime":7,"service_name":"feed","version":"2.1.0","dependencies":{"Z-last":"degraded","cache":"healthy","upstream":"unhealthy"},"reason":"critical dependency `upstream` is unhealthy: refused","details":{"upstream":"refused \"quoted\""}}"#
        );
        assert_eq!(
            serde_json::to_string_pretty(&borrowed).unwrap(),
            serde_json::to_string_pretty(&strings).unwrap()
        );

        // Read back: owned names, equal to the borrowed ones, looked up by `&str`.
        let back: HealthReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, borrowed);
        assert!(matches!(back.service_name, Cow::Owned(_)));
        assert_eq!(back.service_name, "feed");
        assert_eq!(&*back.version, "2.1.0");
        assert_eq!(back.dependencies["upstream"], HealthStatus::Unhealthy);
        assert_eq!(back.dependencies.get("cache"), Some(&HealthStatus::Healthy));
        assert!(!back.dependencies.contains_key("missing"));
        assert_eq!(back.details["upstream"], "refused \"quoted\"");
        // A report written by the old `String` shape reads as well, and back again.
        let old: StringReport = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&old).unwrap(), json);
        // Without the optional fields.
        let minimal: HealthReport = serde_json::from_str(
            r#"{"status":"healthy","uptime":0,"service_name":"a","version":"0.0.0","dependencies":{}}"#,
        )
        .unwrap();
        assert!(minimal.dependencies.is_empty() && minimal.details.is_empty());
        assert_eq!(minimal.reason, None);
    }
}
