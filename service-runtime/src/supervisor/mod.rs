//! [`Supervisor`]: starts many services in dependency order, restarts the ones that fail,
//! and stops them all in reverse order when a signal arrives.
//!
//! Here: the builder and the `run_until*` entry points. The rest of the supervisor lives in
//!
//! - `shared`: the state a run shares with its handles, and the figures of each service;
//! - `plan`: the check of names and dependencies, and the start levels computed from them;
//! - `run`: one run, from its plan to its report (startup, the running phase, the
//!   shutdown), with what a failure or an exit is answered with in `run::restarts`, and
//!   the program's requests in `run::reload`, `run::commands` (stop or restart one
//!   service) and `run::add` (a service added at run time);
//! - `handle`: [`SupervisorHandle`], the health aggregation and the per-service figures;
//! - `liveness`: whether the loop answers, the rule of the liveness answers;
//! - `lookup`: typed lookup of a service (`SupervisorHandle::get`, `get_named`);
//! - `report`: [`Report`], [`SupervisorError`], [`RestartRecord`] and the exit codes;
//! - `feature_hints`: the builder methods of a feature that is off, which say so;
//! - `signals`: what ends the running phase (SIGINT or SIGTERM, a future, a request);
//! - `service_ref`: [`ServiceRef`], what names a service in [`Supervisor::depends_on`].

mod feature_hints;
mod handle;
mod liveness;
mod lookup;
mod plan;
mod report;
mod run;
mod service_ref;
mod shared;
mod signals;

pub use feature_hints::{NeedsAxum, NeedsHttp, NeedsMetrics, NeedsSystemd};
pub(crate) use handle::{COMPLETED_REASON, STOPPED_ON_REQUEST_REASON};
pub use handle::{ServiceStats, StartupError, SupervisorHandle, SupervisorHealth};
pub use lookup::LookupError;
pub use report::{
    EXIT_CONFIG, EXIT_FORCED, EXIT_SHUTDOWN_TIMEOUT, Report, RestartRecord, SupervisorError,
};
pub use run::add::AddService;
pub use run::commands::CommandError;
pub use run::reload::ReloadError;
pub use service_ref::ServiceRef;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinError;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use self::handle::ServiceList;
use self::shared::{Figures, Shared};
use self::signals::{Trigger, signals};
use crate::Shutdown;
use crate::managed::{ErasedService, IntoManaged};
use crate::restart::RestartPolicy;

/// Total time a shutdown may take when none is set: below Kubernetes' default 30 s
/// grace period, so the supervisor reports what hung before the kubelet's SIGKILL.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(25);

/// How soon after the first shutdown request a second one counts as the same request
/// rather than forcing the exit: a Ctrl-C delivered to the whole process group and a
/// process manager's SIGTERM often arrive within milliseconds of each other.
pub const DEFAULT_REPEAT_WINDOW: Duration = Duration::from_secs(1);

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Starts, watches, restarts and stops many services.
///
/// Services start in dependency order: each level of the dependency graph in parallel,
/// the levels one after another (when no dependency is declared, one at a time in the
/// order they were added, as the design note's loop does). They stop in the reverse
/// order: dependents before what they depend on.
///
/// ```
/// use service_runtime::{lifecycle, Restart, RestartPolicy, Service, Supervisor};
///
/// #[derive(Service)]
/// struct Feed;
/// #[lifecycle]
/// impl Feed {}
///
/// #[derive(Service)]
/// struct Strategy;
/// #[lifecycle]
/// impl Strategy {}
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let report = Supervisor::new()
///     .add(Feed)
///     .add(Strategy)
///     .depends_on("feed")
///     .restart(RestartPolicy::new(Restart::Permanent))
///     .run_until(async { /* until the program decides to stop */ })
///     .await;
/// assert!(report.is_success());
/// # });
/// ```
pub struct Supervisor {
    entries: Vec<Entry>,
    /// The services' names back to back, entry `i`'s ending at `name_ends[i]`: copied as
    /// each service is added, so `plan` reads them from one buffer rather than following
    /// every service's pointers to its name.
    names: String,
    name_ends: Vec<usize>,
    config_errors: Vec<String>,
    shutdown_timeout: Duration,
    drain_period: Duration,
    repeat_window: Duration,
    default_restart: Option<RestartPolicy>,
    shared: Arc<Shared>,
    /// The requests of `Shared::reloads`, taken by the run's running phase.
    reload_requests: mpsc::UnboundedReceiver<run::reload::ReloadRequest>,
    /// The commands of `Shared::commands`, taken by the run's running phase.
    commands: mpsc::UnboundedReceiver<run::commands::Command>,
    #[cfg(feature = "systemd")]
    systemd: Arc<crate::systemd::SystemdNotifier>,
    #[cfg(feature = "http")]
    probes: Option<crate::probes::http::ProbeConfig>,
}

struct Entry {
    service: ErasedService,
    depends_on: Vec<String>,
    policy: RestartPolicy,
    /// Chosen for this service (its configuration, or [`Supervisor::restart`]): the
    /// supervisor's default does not apply.
    policy_chosen: bool,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor::new()
    }
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field(
                "services",
                &self
                    .entries
                    .iter()
                    .map(|e| e.service.0.name_str())
                    .collect::<Vec<_>>(),
            )
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("drain_period", &self.drain_period)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// An empty supervisor with the default shutdown budget.
    pub fn new() -> Self {
        let (reloads, reload_requests) = mpsc::unbounded_channel();
        let (command_sender, commands) = mpsc::unbounded_channel();
        Supervisor {
            reload_requests,
            commands,
            entries: Vec::new(),
            names: String::new(),
            name_ends: Vec::new(),
            config_errors: Vec::new(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            drain_period: Duration::ZERO,
            repeat_window: DEFAULT_REPEAT_WINDOW,
            default_restart: None,
            #[cfg(feature = "systemd")]
            systemd: Arc::new(crate::systemd::SystemdNotifier::from_env()),
            #[cfg(feature = "http")]
            probes: None,
            shared: Arc::new(Shared {
                services: Mutex::new(Arc::new(ServiceList::default())),
                stats: Mutex::new(Vec::new()),
                subscribers: Mutex::new(Vec::new()),
                shutdown: Shutdown::new(),
                stopping: Shutdown::new(),
                started_at: OnceLock::new(),
                startup: tokio::sync::watch::Sender::new(None),
                turns: liveness::Turns::new(),
                tally: Arc::default(),
                reloads,
                commands: command_sender,
                #[cfg(feature = "http")]
                probe_address: Mutex::new(None),
                #[cfg(feature = "http")]
                probes: crate::probes::ProbeAnswers::default(),
            }),
        }
    }

    /// Adds a service (a `#[derive(Service)]` value, or a [`Managed`](crate::Managed)
    /// handle the program keeps a clone of). Its restart policy is the one of its
    /// configuration until [`restart`](Self::restart) sets another.
    #[must_use]
    #[allow(clippy::should_implement_trait)] // "add a service", DESIGN.md's name; not arithmetic
    pub fn add(mut self, service: impl IntoManaged) -> Self {
        let managed = service.into_managed();
        let policy = managed.restart_policy();
        let policy_chosen = managed.restart_chosen();
        let service = managed.erased();
        self.shared.list(&service, self.entries.len());
        self.names.push_str(service.0.name_str());
        self.name_ends.push(self.names.len());
        self.entries.push(Entry {
            service,
            depends_on: Vec::new(),
            policy,
            policy_chosen,
        });
        self
    }

    /// Declares that the service added last depends on `service` (a name, or a
    /// `Managed` handle): it starts after it, stops before it, and is restarted with it.
    #[must_use]
    pub fn depends_on(mut self, service: impl ServiceRef) -> Self {
        let name = service.service_name();
        match self.entries.last_mut() {
            Some(entry) => entry.depends_on.push(name),
            None => self.config_errors.push(format!(
                "depends_on(\"{name}\") was called before any service was added"
            )),
        }
        self
    }

    /// Sets the restart policy of the service added last (see
    /// [`default_restart`](Self::default_restart) for every service at once).
    #[must_use]
    pub fn restart(mut self, policy: RestartPolicy) -> Self {
        match self.entries.last_mut() {
            Some(entry) => {
                entry.policy = policy;
                entry.policy_chosen = true;
            }
            None => self
                .config_errors
                .push("restart(..) was called before any service was added".to_owned()),
        }
        self
    }

    /// Sets the restart policy of every service, added before or after this call, whose
    /// policy was not chosen for it: by its `#[service(restart = ...)]` keys, by
    /// [`ServiceConfig::restart`](crate::ServiceConfig::restart), or by
    /// [`restart`](Self::restart) after its `add`. Without it, such a service is restarted
    /// under the default policy (`transient`, see [`RestartPolicy`]).
    #[must_use]
    pub fn default_restart(mut self, policy: RestartPolicy) -> Self {
        self.default_restart = Some(policy);
        self
    }

    /// Sets the total time the shutdown may take (default [`DEFAULT_SHUTDOWN_TIMEOUT`]).
    #[must_use]
    pub fn shutdown_timeout(mut self, budget: Duration) -> Self {
        self.shutdown_timeout = budget;
        self
    }

    /// Sets how long the shutdown waits, once readiness reports not ready, before it
    /// stops the first service (default zero: no wait). Every service keeps running and
    /// serving meanwhile, so that a load balancer that polls `/readyz` (or Kubernetes,
    /// which removes a terminating pod from its endpoints a moment after it sends
    /// SIGTERM) stops sending new work before the servers close: the role of a `preStop`
    /// sleep, without a shell in the image.
    ///
    /// The drain comes before the [shutdown budget](Self::shutdown_timeout), not out of
    /// it: give the pod a `terminationGracePeriodSeconds` of at least the drain plus the
    /// budget. It applies only after a startup that completed (a service never ready has
    /// no traffic to drain). A second shutdown request during the drain (a second Ctrl-C
    /// after the [repeat window](Self::repeat_window)) ends it: the stops begin at once,
    /// and a further request forces the exit as usual. Changes during the drain are
    /// observed but not acted on: a service that fails then is not restarted.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use service_runtime::Supervisor;
    /// let supervisor = Supervisor::new()
    ///     .drain_period(Duration::from_secs(5))
    ///     .shutdown_timeout(Duration::from_secs(20)); // grace period ≥ 25 s
    /// # drop(supervisor);
    /// ```
    #[must_use]
    pub fn drain_period(mut self, period: Duration) -> Self {
        self.drain_period = period;
        self
    }

    /// Sets how soon after the first shutdown request (a signal, the handle's
    /// [`shutdown`](SupervisorHandle::shutdown), `run_until`'s future) a second signal
    /// counts as the same request (default [`DEFAULT_REPEAT_WINDOW`]); a second signal
    /// after it forces the exit, abandoning the stops still running. `Duration::ZERO`
    /// makes every second signal force.
    #[must_use]
    pub fn repeat_window(mut self, window: Duration) -> Self {
        self.repeat_window = window;
        self
    }

    /// Sends systemd notifications through `notifier` instead of the one `NOTIFY_SOCKET`
    /// names (feature `systemd`).
    #[cfg(feature = "systemd")]
    #[must_use]
    pub fn systemd(mut self, notifier: crate::systemd::SystemdNotifier) -> Self {
        self.systemd = Arc::new(notifier);
        self
    }

    /// Serves `/livez`, `/readyz`, `/startupz` and `/health` on `address` (for example
    /// `"127.0.0.1:8080"`, or port 0 for any free port; see
    /// [`SupervisorHandle::probe_address`]) from before the first service starts until
    /// the run ends (feature `http`).
    ///
    /// - `/livez`: 200 while the endpoint answers; never depends on dependencies (no health
    ///   check is read). The systemd watchdog follows the same principle, with the rule of
    ///   [`SupervisorHandle::is_live`]: the supervisor's loop answers.
    /// - `/readyz`: 200 when every service is running and none is unhealthy; 503 from the
    ///   moment shutdown begins, before the first cleanup.
    /// - `/startupz`: 200 once every service has started.
    /// - `/health`: the aggregate report as JSON (`?service=name` for one service); 200
    ///   for healthy and degraded, 503 for unhealthy.
    ///
    /// Health results are cached for the [`health_cache_ttl`](Self::health_cache_ttl) so a
    /// probe storm does not hammer dependencies; concurrent probes share one computation.
    /// Each connection is bounded by the [`probe_limits`](Self::probe_limits), and the
    /// reports show error texts only as [`show_details`](Self::show_details) allows.
    /// With feature `metrics` it also serves `/metrics`, the program's own
    /// `metrics_registry` included.
    ///
    /// The same answers can be served by the program's own HTTP server, beside this port
    /// or instead of it: [`SupervisorHandle::probe_service`] (a `tower::Service` and a
    /// hyper service) and, with feature `axum`, `SupervisorHandle::probe_router`.
    ///
    /// Anyone who can reach `address` can read the probes: `127.0.0.1` keeps them to the
    /// machine (or the pod); `0.0.0.0` serves every network it is on, which a pod needs
    /// for the kubelet (it probes the pod's IP) and which also lets any peer that can
    /// route to the pod read them.
    #[cfg(feature = "http")]
    #[must_use]
    pub fn serve_health(mut self, address: impl Into<String>) -> Self {
        self.probe_config().address = address.into();
        self
    }

    /// How long the probe endpoints reuse a health report (default 1 s; zero disables
    /// the cache): `serve_health`'s and every mounted one, which share it. Feature `http`.
    #[cfg(feature = "http")]
    #[must_use]
    pub fn health_cache_ttl(self, ttl: Duration) -> Self {
        self.shared.probes.cache.set_ttl(ttl);
        self
    }

    /// The bounds of each connection to `serve_health`'s port: the header and idle
    /// timeouts, and how many connections are served at once (default
    /// [`ProbeLimits::new`](crate::ProbeLimits::new): 5 s, 5 s, 256). A mounted
    /// endpoint's connections are its server's to bound. Feature `http`.
    #[cfg(feature = "http")]
    #[must_use]
    pub fn probe_limits(mut self, limits: crate::ProbeLimits) -> Self {
        self.probe_config().limits = limits;
        self
    }

    /// How much of the health reports `/health` and `/readyz` show (default
    /// [`ShowDetails::Statuses`](crate::ShowDetails::Statuses): statuses and names, no
    /// error texts), on `serve_health`'s port and every mounted endpoint. Feature `http`.
    #[cfg(feature = "http")]
    #[must_use]
    pub fn show_details(self, level: crate::ShowDetails) -> Self {
        self.shared.probes.cache.set_show(level);
        self
    }

    /// Serves the program's own metrics on `/metrics` after the supervisor's `service_*`
    /// families (feature `metrics`), on `serve_health`'s port and every mounted endpoint.
    /// Each scrape encodes `registry` as it is then; its families keep the order they were
    /// registered in, after the supervisor's, and each family's samples are in the order
    /// of their labels, so two scrapes of the same figures are the same text.
    ///
    /// Each call adds a registry (a library may bring its own), encoded in the order of
    /// the calls. A family named as one of the supervisor's (`service_up`,
    /// `service_health`, …; a counter's `_total` aside) would make every scrape invalid:
    /// the run then fails at once, as for any invalid supervisor.
    ///
    /// ```
    /// use service_runtime::Supervisor;
    /// use service_runtime::prometheus_client::metrics::counter::Counter;
    /// use service_runtime::prometheus_client::registry::Registry;
    ///
    /// let orders = Counter::<u64>::default();
    /// let mut registry = Registry::with_prefix("shop");
    /// registry.register("orders", "Orders placed", orders.clone());
    /// let supervisor = Supervisor::new().metrics_registry(registry);
    /// orders.inc(); // `shop_orders_total 1` on the next scrape
    /// # let _ = supervisor;
    /// ```
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn metrics_registry(mut self, registry: prometheus_client::registry::Registry) -> Self {
        for family in crate::probes::metrics::clashes(&registry) {
            self.config_errors.push(format!(
                "metrics_registry(..): the family `{family}` is one of the supervisor's own; \
                 name it otherwise (a prefix: `Registry::with_prefix(\"app\")`)"
            ));
        }
        self.shared.probes.app_metrics.add(registry);
        self
    }

    /// The probe configuration, made with its defaults (and no address) if none is yet.
    #[cfg(feature = "http")]
    fn probe_config(&mut self) -> &mut crate::probes::http::ProbeConfig {
        self.probes.get_or_insert_with(Default::default)
    }

    /// A handle to observe and stop the supervisor while it runs (and to mount its probes:
    /// `SupervisorHandle::probe_service`, feature `http`).
    pub fn handle(&self) -> SupervisorHandle {
        SupervisorHandle {
            shared: self.shared.clone(),
        }
    }

    /// Runs until SIGINT, SIGTERM or SIGQUIT (on Windows: Ctrl-C, Ctrl-Break, the
    /// console's closing or the system's shutdown), then stops every service in reverse
    /// dependency order under the shutdown budget. On SIGHUP it reloads every service
    /// ([`SupervisorHandle::reload`]); SIGUSR1 and SIGUSR2 are logged and ignored, so no
    /// signal a process manager commonly sends ends the process unannounced. A signal during startup stops the startup at
    /// once; a second signal after the [repeat window](Self::repeat_window) abandons the
    /// remaining stops (exit code [`EXIT_FORCED`]).
    ///
    /// It listens from this call on: a signal before it meets the signal's default action
    /// and ends the process, with nothing started yet. (Listening earlier, from
    /// [`new`](Self::new), would take the signals for good, since tokio's handler cannot be
    /// removed, from programs that run the supervisor with [`run_until`](Self::run_until)
    /// and handle signals themselves.)
    ///
    /// Returns the report of the whole run; `main` can return it as its exit status.
    ///
    /// On the multi-thread runtime the supervisor runs in a task of its own (so from
    /// `#[tokio::main]` it runs on a worker, not in `block_on` on the main thread);
    /// dropping the returned future still ends it.
    pub async fn run_until_signal(self) -> Report {
        let signals = match signals(&self.shared.reloads) {
            Ok(signals) => signals,
            Err(error) => return Report::single(SupervisorError::Signal(Arc::new(error))).logged(),
        };
        if crate::flavour::multi_thread() {
            // Aborted when dropped: dropping the returned future ends the supervisor.
            let task = AbortOnDropHandle::new(tokio::spawn(
                self.run(Trigger::Channel(signals), None).in_current_span(),
            ));
            joined(task.await).logged()
        } else {
            self.run(Trigger::Channel(signals), None).await.logged()
        }
    }

    /// Runs until `until` completes (or [`SupervisorHandle::shutdown`] is called), then
    /// stops every service in reverse dependency order under the shutdown budget.
    /// A service whose start failed (and undid itself) is not stopped: it stays `error`,
    /// with [`Managed::last_error`](crate::Managed::last_error), so a program or a probe
    /// reading the statuses after the run still sees the failure.
    ///
    /// On the multi-thread runtime the supervisor runs in a task of its own while `until`
    /// is polled by the caller's task (it may borrow from the caller); `until` is polled
    /// again once every service has started and after each change the supervisor acts
    /// on. Dropping the returned future ends the supervisor (its task is aborted, so it
    /// stops at its next `.await`; an operation of a service in flight then completes on
    /// its own).
    pub async fn run_until<F>(self, until: F) -> Report
    where
        F: Future<Output = ()> + Send,
    {
        if !crate::flavour::multi_thread() {
            return self
                .run(Trigger::Future(Some(Box::pin(until))), None)
                .await
                .logged();
        }
        const REQUEST: &str = "the shutdown future completed";
        let (request, requests) = mpsc::unbounded_channel();
        // Dropped as soon as it completes, as the caller's guards in it expect.
        let mut until = std::pin::pin!(Some(until));
        let mut poll_until = |cx: &mut std::task::Context<'_>| match until.as_mut().as_pin_mut() {
            Some(future) => {
                std::task::ready!(future.poll(cx));
                until.set(None);
                Poll::Ready(())
            }
            None => Poll::Pending,
        };
        // Polled once before the loop exists: a future complete at once means no service
        // starts, as when the supervisor runs in the caller's task.
        if std::future::poll_fn(|cx| Poll::Ready(poll_until(cx).is_ready())).await {
            let _ = request.send(REQUEST);
        }
        let poke = Arc::new(Notify::new());
        // Aborted when dropped: dropping the returned future ends the supervisor.
        let mut task = AbortOnDropHandle::new(tokio::spawn(
            self.run(Trigger::Channel(requests), Some(poke.clone()))
                .in_current_span(),
        ));
        loop {
            tokio::select! {
                biased;
                () = std::future::poll_fn(&mut poll_until) => {
                    // The loop may have ended already: then its report is on its way.
                    let _ = request.send(REQUEST);
                }
                result = &mut task => return joined(result).logged(),
                () = poke.notified() => {}
            }
        }
    }
}

/// The report of the supervisor's own task: a panic of the supervisor reaches the
/// caller, as it would if the supervisor ran in the caller's task.
fn joined(result: Result<Report, JoinError>) -> Report {
    match result {
        Ok(report) => report,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => panic!("the supervisor's task was cancelled: {error}"),
    }
}

#[cfg(feature = "http")]
impl SupervisorHandle {
    /// What the probe endpoints answer from.
    pub(crate) fn probe_answers(&self) -> &crate::probes::ProbeAnswers {
        &self.shared.probes
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
