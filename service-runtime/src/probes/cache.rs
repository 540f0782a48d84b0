//! The health report the probes answer from (feature `http`): [`HealthCache`], one per
//! supervisor, shared by every endpoint that answers for it (`serve_health`'s listener
//! and each mounted [`ProbeService`](crate::ProbeService) or router), with the settings
//! it is computed under: its TTL and the detail level of the bodies it keeps.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::StatusCode;
use hyper::body::Bytes;
use tokio::time::Instant;

use super::detail::{ShowDetails, health_body};
use super::routes::{NOT_READY, StatusBody, json_bytes, passing};
use crate::supervisor::{SupervisorHandle, SupervisorHealth};

/// How long a computed health report answers probes when none is set: a probe storm
/// runs the checks at most once per second.
pub const DEFAULT_HEALTH_CACHE_TTL: Duration = Duration::from_secs(1);

/// The last health report, when it was computed, the count of status changes it saw, and
/// what probes answer from it. It is reused while it is younger than the TTL, no status
/// changed since (the count, kept by the transitions themselves, did not move) and the
/// detail level is the one its bodies were written at. Refreshes are single-flight: the
/// async lock makes concurrent probes share one computation, which is itself bounded by
/// the checks' timeouts.
///
/// The settings sit under the same lock as the report: the supervisor's builder sets
/// them (`health_cache_ttl`, `show_details`) while a mounted endpoint may already answer.
pub(crate) struct HealthCache {
    /// The settings and the report answering probes now; read without waiting.
    current: Mutex<Current>,
    /// Held while a report is computed.
    refresh: tokio::sync::Mutex<()>,
}

struct Current {
    ttl: Duration,
    show: ShowDetails,
    report: Option<Arc<Cached>>,
}

/// A computed report and the bodies made from it.
pub(super) struct Cached {
    at: Instant,
    generation: u64,
    /// The detail level `body` and `unhealthy` are written at.
    pub(super) show: ShowDetails,
    pub(super) health: SupervisorHealth,
    /// `/health`: the serialised report (at the endpoint's detail level) and its status code.
    pub(super) body: Bytes,
    pub(super) code: StatusCode,
    /// `/readyz` once every service runs: `None` when every report passes, otherwise the
    /// body naming the unhealthy services.
    pub(super) unhealthy: Option<Bytes>,
    /// How long each service's report took, in the order added.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(super) latencies: Vec<(Arc<str>, Duration)>,
}

impl Cached {
    fn new(
        generation: u64,
        health: SupervisorHealth,
        latencies: Vec<(Arc<str>, Duration)>,
        show: ShowDetails,
    ) -> Self {
        let unhealthy: Vec<&str> = health
            .services
            .values()
            .filter(|report| !report.is_ok())
            .map(|report| &*report.service_name)
            .collect();
        let unhealthy = (!unhealthy.is_empty()).then(|| match show {
            ShowDetails::Never => Bytes::from_static(NOT_READY),
            _ => json_bytes(&StatusBody::fail(
                "not ready",
                &format!("unhealthy: {}", unhealthy.join(", ")),
            )),
        });
        Cached {
            at: Instant::now(),
            generation,
            show,
            body: health_body(&health, show),
            code: passing(health.status.is_ok()),
            unhealthy,
            health,
            latencies,
        }
    }
}

impl Default for HealthCache {
    fn default() -> Self {
        HealthCache {
            current: Mutex::new(Current {
                ttl: DEFAULT_HEALTH_CACHE_TTL,
                show: ShowDetails::default(),
                report: None,
            }),
            refresh: tokio::sync::Mutex::new(()),
        }
    }
}

impl HealthCache {
    fn current(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets how long a report is reused (zero: never).
    pub(crate) fn set_ttl(&self, ttl: Duration) {
        self.current().ttl = ttl;
    }

    /// Sets the detail level of the bodies; a report written at another is not reused.
    pub(crate) fn set_show(&self, show: ShowDetails) {
        self.current().show = show;
    }

    /// The detail level the probes answer at.
    pub(super) fn show(&self) -> ShowDetails {
        self.current().show
    }

    /// The current report if it is still fresh, and the detail level to write a new one at.
    fn fresh(&self, handle: &SupervisorHandle) -> Result<Arc<Cached>, ShowDetails> {
        let current = self.current();
        match &current.report {
            Some(cached)
                if cached.generation == handle.generation()
                    && cached.show == current.show
                    && cached.at.elapsed() < current.ttl =>
            {
                Ok(cached.clone())
            }
            _ => Err(current.show),
        }
    }

    /// A fresh report: the current one, or one computed now (by this probe or by the one
    /// computing it already).
    pub(super) async fn get(&self, handle: &SupervisorHandle) -> Arc<Cached> {
        if let Ok(cached) = self.fresh(handle) {
            return cached;
        }
        let _refreshing = self.refresh.lock().await;
        // Another probe may have refreshed it while this one waited.
        let show = match self.fresh(handle) {
            Ok(cached) => return cached,
            Err(show) => show,
        };
        // Read before computing: a change meanwhile makes this report stale.
        let generation = handle.generation();
        let (health, latencies) = handle.health_with_latency().await;
        let cached = Arc::new(Cached::new(generation, health, latencies, show));
        self.current().report = Some(cached.clone());
        cached
    }
}
