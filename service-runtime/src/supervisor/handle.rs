//! [`SupervisorHandle`]: observes and controls a supervisor from other tasks. The health
//! aggregation over every service (the worst status wins, reports keyed by name), and
//! the per-service figures it reports ([`ServiceStats`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::shared::Aside;
use super::{BoxFuture, Shared, lock};
use crate::health::{HealthReport, HealthStatus};
use crate::managed::{ErasedService, StatusChanges, Subscriber};
use crate::status::ServiceStatus;
use futures_util::future::join_all;

/// The services of a supervisor, in the order added, and that order sorted by name.
#[derive(Default)]
pub(super) struct ServiceList {
    services: Vec<ErasedService>,
    /// Indices into `services`, by name (equal names in the order added), made by the
    /// first health aggregation after a service was added: an aggregation makes its
    /// futures in the order of its report's map, whose build then finds its input
    /// sorted. `push` drops it rather than keeping it sorted, so adding a service never
    /// inserts in the middle of it.
    name_order_cache: std::sync::OnceLock<Vec<usize>>,
}

impl Clone for ServiceList {
    /// Without the cached order: a copy is made to be added to (`Arc::make_mut` in
    /// `Supervisor::add`), which would throw it away.
    fn clone(&self) -> Self {
        ServiceList {
            services: self.services.clone(),
            name_order_cache: std::sync::OnceLock::new(),
        }
    }
}

impl ServiceList {
    pub(super) fn push(&mut self, service: ErasedService) {
        self.name_order_cache = std::sync::OnceLock::new();
        self.services.push(service);
    }

    /// See [`ServiceList::name_order_cache`]: a stable sort, so that of two services
    /// with one name the one added later wins in the map, as it would in a map built
    /// from the reports in the order added.
    fn name_order(&self) -> &[usize] {
        self.name_order_cache.get_or_init(|| {
            let mut order: Vec<usize> = (0..self.services.len()).collect();
            order.sort_by(|&a, &b| {
                self.services[a]
                    .0
                    .name_str()
                    .cmp(self.services[b].0.name_str())
            });
            order
        })
    }

    pub(super) fn iter(&self) -> std::slice::Iter<'_, ErasedService> {
        self.services.iter()
    }

    /// `make` of each service and its index in the order added, in the order of their
    /// names. (The closure's borrow is the list's own lifetime `'a`: one generic over
    /// every lifetime would make the aggregation's future fail to prove itself `Send`.)
    fn by_name<'a, T>(
        &'a self,
        mut make: impl FnMut(usize, &'a ErasedService) -> T + 'a,
    ) -> impl ExactSizeIterator<Item = T> + 'a {
        self.name_order()
            .iter()
            .copied()
            .map(move |i| make(i, &self.services[i]))
    }
}

/// Observes and controls a supervisor from other tasks (a health endpoint, an admin
/// command), before and while it runs.
#[derive(Clone)]
pub struct SupervisorHandle {
    pub(super) shared: Arc<Shared>,
}

impl fmt::Debug for SupervisorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorHandle")
            .field("statuses", &self.statuses())
            .finish()
    }
}

impl SupervisorHandle {
    /// Asks the supervisor to shut down, as a signal would.
    pub fn shutdown(&self) {
        self.shared.shutdown.request();
    }

    /// Whether the shutdown phase has begun (readiness is false from then on).
    pub fn is_stopping(&self) -> bool {
        self.shared.stopping.is_requested()
    }

    /// Whether every service has started (once): what `/startupz` reports.
    pub fn has_started(&self) -> bool {
        self.shared.started_at.get().is_some()
    }

    /// Resolves once every service has started (once), or with why not: the first
    /// service that failed to start, [`StartupError::Interrupted`] when a shutdown came
    /// first, or [`StartupError::Invalid`] when the supervisor cannot run. At once if the
    /// startup is over; it waits while the supervisor has not been run yet. Where
    /// `has_started()` answers now, this waits for the answer.
    pub async fn started(&self) -> Result<(), StartupError> {
        let mut startup = self.shared.startup.subscribe();
        // The sender lives in `Shared`, which this handle holds: the wait cannot fail.
        match startup.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().unwrap_or(Err(StartupError::Interrupted)),
            Err(_) => Err(StartupError::Interrupted),
        }
    }

    /// Reloads every running service, as `SIGHUP` does under
    /// [`run_until_signal`](super::Supervisor::run_until_signal): their `#[reload]` hooks
    /// (see [`Managed::reload`](crate::Managed::reload)), level by level in start order
    /// (what a service depends on reloads before it), with systemd told `RELOADING=1`
    /// before and `READY=1` after.
    ///
    /// Reloads are carried out one at a time by the supervisor's loop: a request made
    /// during the startup waits until every service runs (or the startup fails), and one
    /// made before the supervisor is run waits for its run. The services keep running
    /// whatever their hooks do; [`ReloadError::Failed`](super::ReloadError::Failed) lists
    /// the failures.
    pub async fn reload(&self) -> Result<(), super::ReloadError> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        let request = super::run::reload::ReloadRequest {
            reason: "SupervisorHandle::reload",
            reply: Some(reply),
        };
        if self.shared.reloads.send(request).is_err() {
            return Err(super::ReloadError::NotRunning);
        }
        outcome.await.unwrap_or(Err(super::ReloadError::NotRunning))
    }

    /// The address the probe endpoint listens on, once it does (feature `http`).
    #[cfg(feature = "http")]
    pub fn probe_address(&self) -> Option<std::net::SocketAddr> {
        *lock(&self.shared.probe_address)
    }

    /// The status of every service, in the order they were added.
    pub fn statuses(&self) -> Vec<(String, ServiceStatus)> {
        self.services()
            .iter()
            .map(|s| (s.0.name().to_string(), s.0.status()))
            .collect()
    }

    /// Every service, in the order added (one `Arc` clone, the lock released at once).
    pub(super) fn services(&self) -> Arc<ServiceList> {
        lock(&self.shared.services).clone()
    }

    /// Every status change of every service from now on, in order per service.
    pub fn subscribe(&self) -> StatusChanges {
        let (sender, receiver) = mpsc::unbounded_channel();
        // Held while the list is read (see `Supervisor::add`): a service added meanwhile
        // gets this subscriber there.
        let mut subscribers = lock(&self.shared.subscribers);
        for service in self.services().iter() {
            service.0.add_subscriber(Subscriber::Public(sender.clone()));
        }
        subscribers.push(sender);
        drop(subscribers);
        StatusChanges::from_receiver(receiver)
    }

    /// Which services are stopped on purpose and why, in the order added.
    fn set_aside(&self) -> Vec<Option<Aside>> {
        lock(&self.shared.stats)
            .iter()
            .map(|figures| figures.aside)
            .collect()
    }

    /// Start and stop durations and restart counts of every service, in the order added.
    pub fn stats(&self) -> Vec<ServiceStats> {
        let services = self.services();
        let stats = lock(&self.shared.stats);
        services
            .iter()
            .zip(stats.iter())
            .map(|(service, figures)| {
                let stopped = service.0.status() == ServiceStatus::Stopped;
                ServiceStats {
                    name: service.0.name().to_string(),
                    status: service.0.status(),
                    restarts: figures.restarts,
                    completed: figures.aside == Some(Aside::Completed) && stopped,
                    stopped_on_request: figures.aside == Some(Aside::StoppedOnRequest) && stopped,
                    last_start_duration: figures.last_start_duration,
                    last_stop_duration: figures.last_stop_duration,
                }
            })
            .collect()
    }

    /// The health of every service, concurrently: the worst status wins. A service
    /// that [completed](ServiceStats::completed) reports `healthy` with the reason
    /// `completed`; one [stopped on request](ServiceStats::stopped_on_request), `healthy`
    /// with the reason `stopped on request`.
    pub async fn health(&self) -> SupervisorHealth {
        let services = self.services();
        let aside = self.set_aside();
        // Made in the order of the map, each report keyed as it finishes.
        let checks = services.by_name(|i, s| {
            let aside = aside.get(i).copied().flatten();
            s.0.health()
                .map(move |report| keyed(as_set_aside(report, aside, s)))
        });
        let reports = join_all(checks).await;
        self.aggregate(reports)
    }

    /// The aggregate health and how long each service's report took, in the order added.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) async fn health_with_latency(
        &self,
    ) -> (SupervisorHealth, Vec<(Arc<str>, Duration)>) {
        let services = self.services();
        let aside = self.set_aside();
        let timed = services.by_name(|i, s| -> BoxFuture<'_, (usize, HealthReport, Duration)> {
            let aside = aside.get(i).copied().flatten();
            Box::pin(async move {
                let began = Instant::now();
                let report = as_set_aside(s.0.health().await, aside, s);
                (i, report, began.elapsed())
            })
        });
        let results = join_all(timed).await;
        // Back in the order added, each by the index its future carried.
        let mut latencies: Vec<_> = services
            .iter()
            .map(|s| (s.0.name().clone(), Duration::ZERO))
            .collect();
        for (i, _, latency) in &results {
            latencies[*i].1 = *latency;
        }
        let reports = results.into_iter().map(|(_, report, _)| keyed(report));
        let health = self.aggregate(reports.collect());
        (health, latencies)
    }

    /// The supervisor's report of `reports`, in the order of their names.
    fn aggregate(&self, reports: Vec<(Cow<'static, str>, HealthReport)>) -> SupervisorHealth {
        let status = reports
            .iter()
            .map(|(_, r)| r.status)
            .max()
            .unwrap_or(HealthStatus::Healthy);
        let uptime = self
            .shared
            .started_at
            .get()
            .map_or(0, |t| t.elapsed().as_secs());
        SupervisorHealth {
            status,
            uptime,
            // Sorted already: the map's build checks that at one comparison per report,
            // and takes the list's allocation as it is.
            services: reports.into_iter().collect(),
        }
    }

    /// How many status changes the services made: what a cached health report was
    /// computed at goes stale when this moves. Kept by the transitions themselves.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn generation(&self) -> u64 {
        self.shared.tally.changes()
    }

    /// `None` when every service runs, [completed](ServiceStats::completed) or was
    /// [stopped on request](ServiceStats::stopped_on_request) (one
    /// atomic load when all run: the count the transitions keep); otherwise which do not
    /// ("a is starting, b is stopped").
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn not_running(&self) -> Option<String> {
        if self.shared.tally.not_running() == 0 {
            return None;
        }
        let services = self.services();
        let aside = self.set_aside();
        let mut reason = String::new();
        for (i, service) in services.iter().enumerate() {
            let status = service.0.status();
            let done = status == ServiceStatus::Stopped && matches!(aside.get(i), Some(Some(_)));
            if status != ServiceStatus::Running && !done {
                if !reason.is_empty() {
                    reason.push_str(", ");
                }
                reason.push_str(service.0.name());
                reason.push_str(" is ");
                reason.push_str(status.as_str());
            }
        }
        (!reason.is_empty()).then_some(reason)
    }
}

/// The reason in the health report of a service that completed.
pub(crate) const COMPLETED_REASON: &str = "completed";

/// The reason in the health report of a service stopped by
/// [`SupervisorHandle::stop`].
pub(crate) const STOPPED_ON_REQUEST_REASON: &str = "stopped on request";

/// The report of a service the supervisor counts as stopped on purpose, if it still is
/// (it has not started again): `healthy`, with the reason why (`completed`, `stopped on
/// request`).
fn as_set_aside(
    mut report: HealthReport,
    aside: Option<Aside>,
    service: &ErasedService,
) -> HealthReport {
    if let Some(aside) = aside
        && service.0.status() == ServiceStatus::Stopped
    {
        report.status = HealthStatus::Healthy;
        report.reason = Some(aside.reason().to_owned());
    }
    report
}

/// Why [`SupervisorHandle::started`] resolved without every service started.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum StartupError {
    /// This service failed to start (the first to fail); the ones started before it were
    /// stopped.
    Failed(crate::ServiceError),
    /// A shutdown was requested (a signal, `SupervisorHandle::shutdown`, `run_until`'s
    /// future) before every service had started.
    Interrupted,
    /// The supervisor is invalid (a duplicate name, an unknown or cyclic dependency):
    /// nothing was started. The messages are the report's
    /// [`SupervisorError::Config`](super::SupervisorError::Config) errors.
    Invalid(Vec<String>),
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartupError::Failed(error) => write!(f, "startup failed: {error}"),
            StartupError::Interrupted => f.write_str(
                "startup interrupted: shutdown was requested before every service started",
            ),
            StartupError::Invalid(messages) => {
                write!(f, "invalid supervisor: {}", messages.join("; "))
            }
        }
    }
}

impl std::error::Error for StartupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartupError::Failed(error) => Some(error),
            StartupError::Interrupted | StartupError::Invalid(_) => None,
        }
    }
}

/// A service's report with its key in [`SupervisorHealth::services`]: a name borrowed
/// from the service's configuration costs no copy here.
fn keyed(report: HealthReport) -> (Cow<'static, str>, HealthReport) {
    (report.service_name.clone(), report)
}

/// The aggregate health of a supervisor's services, in the note's shape with a
/// `services` map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorHealth {
    /// The worst status of any service.
    pub status: HealthStatus,
    /// Whole seconds since every service first ran.
    pub uptime: u64,
    /// Each service's own report, by name (its `service_name`; look up with a `&str`:
    /// `health.services["feed"]`).
    pub services: BTreeMap<std::borrow::Cow<'static, str>, HealthReport>,
}

impl std::fmt::Display for SupervisorHealth {
    /// The aggregate's JSON (every report whole): compact, or indented with `{:#}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::health::write_json(self, f)
    }
}

/// Per-service figures kept by a supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceStats {
    /// The service's name.
    pub name: String,
    /// Its status now.
    pub status: ServiceStatus,
    /// How many times the supervisor restarted it (including restarts caused by a
    /// dependency's restart).
    pub restarts: u32,
    /// It completed: its run loop returned `Ok` under a `transient` or `temporary`
    /// policy, so it is not restarted, and until it starts again it counts neither
    /// against readiness nor against health (its report says `completed`).
    pub completed: bool,
    /// It was stopped by [`SupervisorHandle::stop`] (or with a service it depends on) and
    /// has not started since: it is not restarted, and it counts neither against
    /// readiness nor against health (its report says `stopped on request`).
    pub stopped_on_request: bool,
    /// How long its last start took.
    pub last_start_duration: Option<Duration>,
    /// How long its last stop took.
    pub last_stop_duration: Option<Duration>,
}
