//! [`Supervisor`]: starts many services in dependency order, restarts the ones that fail,
//! and stops them all in reverse order when a signal arrives.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::process::{ExitCode, Termination};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::health::{HealthReport, HealthStatus};
use crate::managed::{
    Begun, DynService, EntryChange, ErasedService, IntoManaged, StatusChange, StatusChanges,
    StatusTally, Subscriber,
};
use crate::restart::{Restart, RestartPolicy};
use crate::status::ServiceStatus;
use crate::util::join_all;
use crate::{ServiceError, Shutdown};

/// Total time a shutdown may take when none is set: below Kubernetes' default 30 s
/// grace period, so the supervisor reports what hung before the kubelet's SIGKILL.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(25);

/// Exit code after a second signal forced the shutdown (128 + SIGINT, as shells report).
pub const EXIT_FORCED: u8 = 130;
/// Exit code when the shutdown budget ran out with services still stopping.
pub const EXIT_SHUTDOWN_TIMEOUT: u8 = 124;
/// Exit code of an invalid supervisor (unknown dependency, cycle, duplicate name).
pub const EXIT_CONFIG: u8 = 78;

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
    shared: Arc<Shared>,
    #[cfg(all(unix, feature = "systemd"))]
    systemd: Arc<crate::systemd::SystemdNotifier>,
    #[cfg(feature = "http")]
    probes: Option<crate::probes::http::ProbeConfig>,
}

struct Entry {
    service: ErasedService,
    depends_on: Vec<String>,
    policy: RestartPolicy,
}

/// State shared between the running supervisor and its [`SupervisorHandle`]s.
struct Shared {
    /// Every service, in the order added. Copy-on-write: readers take the `Arc` and
    /// release the lock at once (a health aggregation holds it across its awaits).
    services: Mutex<Arc<ServiceList>>,
    /// The figures of each service, indexed like `services`.
    stats: Mutex<Vec<Figures>>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<StatusChange>>>,
    /// Requested by [`SupervisorHandle::shutdown`]: behaves like a signal.
    shutdown: Shutdown,
    /// Set when the shutdown phase begins (readiness turns false).
    stopping: Shutdown,
    started_at: OnceLock<Instant>,
    /// Kept by the services' own transitions: what readiness and the probes' cache read.
    tally: Arc<StatusTally>,
    #[cfg(feature = "http")]
    probe_address: Mutex<Option<std::net::SocketAddr>>,
}

/// The services of a supervisor, in the order added, and that order sorted by name.
#[derive(Default)]
struct ServiceList {
    services: Vec<ErasedService>,
    /// Indices into `services`, by name (equal names in the order added), made by the
    /// first health aggregation after a service was added: an aggregation makes its
    /// futures in the order of its report's map, whose build then finds its input
    /// sorted (sorting a thousand reports by name cost a fifth of an aggregation of a
    /// thousand instant checks). Not kept up by `push`: an insertion in the middle per
    /// service added made adding N services quadratic.
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
    fn push(&mut self, service: ErasedService) {
        self.name_order_cache = std::sync::OnceLock::new();
        self.services.push(service);
    }

    /// See [`ServiceList::name_order_cache`]: a stable sort, so that a later duplicate
    /// wins in the map, as it did when the map sorted the reports itself.
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

    fn iter(&self) -> std::slice::Iter<'_, ErasedService> {
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

impl Drop for Shared {
    /// The supervisor is gone (run or not): its services forget it at their next change.
    fn drop(&mut self) {
        self.tally.close();
    }
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
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// An empty supervisor with the default shutdown budget.
    pub fn new() -> Self {
        Supervisor {
            entries: Vec::new(),
            names: String::new(),
            name_ends: Vec::new(),
            config_errors: Vec::new(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            #[cfg(all(unix, feature = "systemd"))]
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
                tally: Arc::default(),
                #[cfg(feature = "http")]
                probe_address: Mutex::new(None),
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
        let service = managed.erased();
        for subscriber in lock(&self.shared.subscribers).iter() {
            service
                .0
                .add_subscriber(Subscriber::Public(subscriber.clone()));
        }
        let index = self.entries.len();
        service.0.join(index, &self.shared.tally);
        self.names.push_str(service.0.name_str());
        self.name_ends.push(self.names.len());
        Arc::make_mut(&mut *lock(&self.shared.services)).push(service.clone());
        lock(&self.shared.stats).push(Figures::default());
        self.entries.push(Entry {
            service,
            depends_on: Vec::new(),
            policy,
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

    /// Sets the restart policy of the service added last.
    #[must_use]
    pub fn restart(mut self, policy: RestartPolicy) -> Self {
        match self.entries.last_mut() {
            Some(entry) => entry.policy = policy,
            None => self
                .config_errors
                .push("restart(..) was called before any service was added".to_owned()),
        }
        self
    }

    /// Sets the total time the shutdown may take (default [`DEFAULT_SHUTDOWN_TIMEOUT`]).
    #[must_use]
    pub fn shutdown_timeout(mut self, budget: Duration) -> Self {
        self.shutdown_timeout = budget;
        self
    }

    /// Sends systemd notifications through `notifier` instead of the one `NOTIFY_SOCKET`
    /// names (feature `systemd`).
    #[cfg(all(unix, feature = "systemd"))]
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
    /// - `/livez`: 200 while the supervisor answers; never depends on dependencies.
    /// - `/readyz`: 200 when every service is running and none is unhealthy; 503 from the
    ///   moment shutdown begins, before the first cleanup.
    /// - `/startupz`: 200 once every service has started.
    /// - `/health`: the aggregate report as JSON (`?service=name` for one service); 200
    ///   for healthy and degraded, 503 for unhealthy.
    ///
    /// Health results are cached for the [`health_cache_ttl`](Self::health_cache_ttl) so a
    /// probe storm does not hammer dependencies; concurrent probes share one computation.
    #[cfg(feature = "http")]
    #[must_use]
    pub fn serve_health(mut self, address: impl Into<String>) -> Self {
        let cache_ttl = self
            .probes
            .as_ref()
            .map_or(crate::probes::http::DEFAULT_HEALTH_CACHE_TTL, |probes| {
                probes.cache_ttl
            });
        self.probes = Some(crate::probes::http::ProbeConfig {
            address: address.into(),
            cache_ttl,
        });
        self
    }

    /// How long the probe endpoint reuses a health report (default 1 s; zero disables
    /// the cache). Feature `http`.
    #[cfg(feature = "http")]
    #[must_use]
    pub fn health_cache_ttl(mut self, ttl: Duration) -> Self {
        match &mut self.probes {
            Some(probes) => probes.cache_ttl = ttl,
            None => {
                self.probes = Some(crate::probes::http::ProbeConfig {
                    address: String::new(),
                    cache_ttl: ttl,
                });
            }
        }
        self
    }

    /// A handle to observe and stop the supervisor while it runs.
    pub fn handle(&self) -> SupervisorHandle {
        SupervisorHandle {
            shared: self.shared.clone(),
        }
    }

    /// Runs until SIGINT or SIGTERM, then stops every service in reverse dependency
    /// order under the shutdown budget. A signal during startup stops the startup at
    /// once; a second signal abandons the remaining stops (exit code [`EXIT_FORCED`]).
    ///
    /// Returns the report of the whole run; `main` can return it as its exit status.
    ///
    /// On the multi-thread runtime the supervisor runs in a task of its own (so from
    /// `#[tokio::main]` it runs on a worker, not in `block_on` on the main thread);
    /// dropping the returned future still ends it.
    pub async fn run_until_signal(self) -> Report {
        let signals = match signals() {
            Ok(signals) => signals,
            Err(error) => return Report::single(SupervisorError::Signal(Arc::new(error))),
        };
        if on_multi_thread_runtime() {
            AbortOnDrop(tokio::spawn(
                self.run(Trigger::Channel(signals), None).in_current_span(),
            ))
            .await
        } else {
            self.run(Trigger::Channel(signals), None).await
        }
    }

    /// Runs until `until` completes (or [`SupervisorHandle::shutdown`] is called), then
    /// stops every service in reverse dependency order under the shutdown budget.
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
        if !on_multi_thread_runtime() {
            return self.run(Trigger::Future(Some(Box::pin(until))), None).await;
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
        // starts, as when the supervisor ran in this task.
        if std::future::poll_fn(|cx| Poll::Ready(poll_until(cx).is_ready())).await {
            let _ = request.send(REQUEST);
        }
        let poke = Arc::new(Notify::new());
        let mut task = AbortOnDrop(tokio::spawn(
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
                report = &mut task => return report,
                () = poke.notified() => {}
            }
        }
    }

    async fn run(self, mut trigger: Trigger<'_>, poke: Option<Arc<Notify>>) -> Report {
        let plan = match self.plan() {
            Ok(plan) => plan,
            Err(errors) => {
                for error in &errors {
                    tracing::error!(error = %error, "invalid supervisor");
                }
                return Report { errors };
            }
        };
        // Observed before the probes are served, so every change they could see is
        // observed. (Each service joined the supervisor, with its index, when added.)
        self.shared.tally.observe();
        // Made at once: its drop closes the mailbox however the run ends (a probe address
        // that cannot be bound, a `run` future dropped while the probes start).
        let observer = Observer {
            inbox: Vec::new(),
            deferred: VecDeque::new(),
            shared: self.shared.clone(),
        };
        #[cfg(feature = "http")]
        let _probes = match self
            .probes
            .as_ref()
            .filter(|probes| !probes.address.is_empty())
        {
            Some(probes) => match crate::probes::http::serve(probes, self.handle()).await {
                Ok((server, address)) => {
                    *lock(&self.shared.probe_address) = Some(address);
                    Some(server)
                }
                Err(error) => {
                    tracing::error!(address = %probes.address, %error, "could not serve the probe endpoint");
                    return Report::single(SupervisorError::Probe {
                        address: probes.address.clone(),
                        error: Arc::new(error),
                    });
                }
            },
            None => None,
        };
        #[cfg(all(unix, feature = "systemd"))]
        let systemd = crate::systemd::Session::begin(self.systemd.clone(), &self.handle());
        let mut run = Run {
            #[cfg(all(unix, feature = "systemd"))]
            systemd,
            states: self.entries.iter().map(|_| EntryState::default()).collect(),
            entries: self.entries,
            plan,
            shared: self.shared,
            shutdown_timeout: self.shutdown_timeout,
            observer,
            report: Report::default(),
            pending: Vec::new(),
            to_stop: Vec::new(),
            poke,
        };
        run.execute(&mut trigger).await;
        run.report
    }

    /// Checks names and dependencies and computes the start levels.
    fn plan(&self) -> Result<Plan, Vec<SupervisorError>> {
        let mut errors: Vec<SupervisorError> = self
            .config_errors
            .iter()
            .cloned()
            .map(SupervisorError::Config)
            .collect();
        // Hashed with a multiply-rotate rather than SipHash (about half of `plan()` for
        // 10,000 services): the names are the program's own, not an attacker's.
        let mut index: HashMap<&str, usize, BuildHasherDefault<NameHasher>> =
            HashMap::with_capacity_and_hasher(self.entries.len(), BuildHasherDefault::default());
        let mut start = 0;
        for (i, &end) in self.name_ends.iter().enumerate() {
            let name = &self.names[start..end];
            start = end;
            if index.insert(name, i).is_some() {
                errors.push(SupervisorError::Config(format!(
                    "two services are named `{name}`; give one another name with `ServiceConfig::name`"
                )));
            }
        }
        // Only made when some service depends on another: nothing is owed otherwise.
        let mut deps = Vec::new();
        if self
            .entries
            .iter()
            .any(|entry| !entry.depends_on.is_empty())
        {
            deps = vec![Vec::new(); self.entries.len()];
        }
        for (i, entry) in self.entries.iter().enumerate() {
            for name in &entry.depends_on {
                match index.get(name.as_str()) {
                    Some(&j) if j == i => errors.push(SupervisorError::Config(format!(
                        "service `{name}` depends on itself"
                    ))),
                    Some(&j) => {
                        if !deps[i].contains(&j) {
                            deps[i].push(j);
                        }
                    }
                    None => errors.push(SupervisorError::Config(format!(
                        "service `{}` depends on `{name}`, which was not added to the supervisor",
                        entry.service.0.name()
                    ))),
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let sequential = deps.iter().all(Vec::is_empty);
        let (order, level_ends) = if sequential {
            (
                (0..self.entries.len()).collect(),
                (1..=self.entries.len()).collect(),
            )
        } else {
            match levels(&deps) {
                Ok(levels) => {
                    let mut order = Vec::with_capacity(self.entries.len());
                    let mut ends = Vec::with_capacity(levels.len());
                    for level in levels {
                        order.extend(level);
                        ends.push(order.len());
                    }
                    (order, ends)
                }
                Err(cycle) => {
                    let names: Vec<_> = cycle
                        .iter()
                        .map(|&i| format!("`{}`", self.entries[i].service.0.name()))
                        .collect();
                    return Err(vec![SupervisorError::Config(format!(
                        "dependency cycle: {}",
                        names.join(" -> ")
                    ))]);
                }
            }
        };
        let mut dependents = Vec::new();
        if !deps.is_empty() {
            dependents = vec![Vec::new(); self.entries.len()];
        }
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                dependents[d].push(i);
            }
        }
        Ok(Plan {
            deps,
            dependents,
            order,
            level_ends,
        })
    }
}

/// Something that names a service in [`Supervisor::depends_on`]: its name, or its handle.
pub trait ServiceRef {
    /// The name of the service referred to.
    fn service_name(&self) -> String;
}

impl ServiceRef for &str {
    fn service_name(&self) -> String {
        (*self).to_owned()
    }
}

impl ServiceRef for String {
    fn service_name(&self) -> String {
        self.clone()
    }
}

impl<S: crate::Service> ServiceRef for &crate::Managed<S> {
    fn service_name(&self) -> String {
        self.name().to_owned()
    }
}

/// Groups services into start levels: level 0 depends on nothing, level n on lower
/// levels only. Returns a cycle's members when there is one.
fn levels(deps: &[Vec<usize>]) -> Result<Vec<Vec<usize>>, Vec<usize>> {
    let n = deps.len();
    let mut level = vec![None::<usize>; n];
    let mut remaining: Vec<usize> = (0..n).collect();
    while !remaining.is_empty() {
        let before = remaining.len();
        remaining.retain(|&i| {
            let mut max = 0;
            for &d in &deps[i] {
                match level[d] {
                    Some(l) => max = max.max(l + 1),
                    None => return true,
                }
            }
            level[i] = Some(max);
            false
        });
        if remaining.len() == before {
            return Err(find_cycle(deps, &remaining));
        }
    }
    let depth = level.iter().flatten().max().map_or(0, |l| l + 1);
    let mut out = vec![Vec::new(); depth];
    for (i, l) in level.into_iter().enumerate() {
        out[l.expect("every service got a level")].push(i);
    }
    Ok(out)
}

/// A cycle among `stuck` (services whose dependencies never resolved), in dependency order.
fn find_cycle(deps: &[Vec<usize>], stuck: &[usize]) -> Vec<usize> {
    let mut path = vec![stuck[0]];
    loop {
        let last = *path.last().expect("path is never empty");
        let next = deps[last]
            .iter()
            .copied()
            .find(|d| stuck.contains(d))
            .expect("a stuck service has a stuck dependency");
        if let Some(start) = path.iter().position(|&p| p == next) {
            let mut cycle = path[start..].to_vec();
            cycle.push(next);
            return cycle;
        }
        path.push(next);
    }
}

struct Plan {
    /// What each service depends on; empty when no service depends on another.
    deps: Vec<Vec<usize>>,
    /// What depends on each service; empty when no service depends on another.
    dependents: Vec<Vec<usize>>,
    /// Every service in start order: the levels one after another.
    order: Vec<usize>,
    /// Where each level ends in `order` (one level per service when nothing depends).
    level_ends: Vec<usize>,
}

impl Plan {
    /// The start levels, in start order: each level's services start in parallel.
    fn levels(&self) -> impl DoubleEndedIterator<Item = &[usize]> + '_ {
        self.level_ends.iter().enumerate().map(|(k, &end)| {
            let start = k.checked_sub(1).map_or(0, |before| self.level_ends[before]);
            &self.order[start..end]
        })
    }

    /// `root` and everything that depends on it, transitively, in start order.
    fn rest_for_one(&self, root: usize) -> Vec<usize> {
        if self.dependents.is_empty() {
            return vec![root];
        }
        let mut member = vec![false; self.dependents.len()];
        member[root] = true;
        let mut queue = VecDeque::from([root]);
        while let Some(i) = queue.pop_front() {
            for &d in &self.dependents[i] {
                if !member[d] {
                    member[d] = true;
                    queue.push_back(d);
                }
            }
        }
        self.order.iter().copied().filter(|&i| member[i]).collect()
    }

    fn depends_transitively(&self, i: usize, on: usize) -> bool {
        let Some(deps) = self.deps.get(i) else {
            return false;
        };
        let mut stack = deps.clone();
        let mut seen = vec![false; self.deps.len()];
        while let Some(d) = stack.pop() {
            if d == on {
                return true;
            }
            if !std::mem::replace(&mut seen[d], true) {
                stack.extend(&self.deps[d]);
            }
        }
        false
    }
}

/// What ends the running phase.
enum Trigger<'a> {
    /// The caller's future, polled by the supervisor itself.
    Future(Option<BoxFuture<'a, ()>>),
    /// Signals, or the request of a caller that polls its future in its own task.
    Channel(mpsc::UnboundedReceiver<&'static str>),
}

impl Trigger<'_> {
    /// The next shutdown request: the future (once), or the next signal or request.
    async fn next(&mut self) -> &'static str {
        match self {
            Trigger::Future(slot) => match slot {
                Some(future) => {
                    future.await;
                    *slot = None;
                    "the shutdown future completed"
                }
                None => std::future::pending().await,
            },
            Trigger::Channel(requests) => match requests.recv().await {
                Some(name) => name,
                None => std::future::pending().await,
            },
        }
    }
}

/// Whether the caller runs on the multi-thread runtime, where the supervisor gets a task
/// of its own (on a worker) rather than running in the caller's (perhaps `block_on`).
fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// The supervisor's own task. Aborted when dropped, so dropping the `run_until*` future
/// ends the supervisor, as it did when it ran in the caller's task.
struct AbortOnDrop(JoinHandle<Report>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Future for AbortOnDrop {
    type Output = Report;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Report> {
        match std::task::ready!(Pin::new(&mut self.0).poll(cx)) {
            Ok(report) => Poll::Ready(report),
            // A panic of the supervisor reaches the caller, as before.
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => panic!("the supervisor's task was cancelled: {error}"),
        }
    }
}

/// Listens for SIGINT and SIGTERM from now on, so none arriving during startup is lost.
fn signals() -> std::io::Result<mpsc::UnboundedReceiver<&'static str>> {
    let (sender, receiver) = mpsc::unbounded_channel();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        for (kind, name) in [
            (SignalKind::interrupt(), "SIGINT"),
            (SignalKind::terminate(), "SIGTERM"),
        ] {
            let mut stream = signal(kind)?;
            let sender = sender.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if sender.send(name).is_err() {
                        break;
                    }
                }
            });
        }
    }
    #[cfg(not(unix))]
    {
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                if sender.send("Ctrl-C").is_err() {
                    break;
                }
            }
        });
    }
    Ok(receiver)
}

#[derive(Clone, Copy, PartialEq, Eq, Default)]
enum Desired {
    /// The supervisor wants it running: a failure or exit is acted on.
    #[default]
    Running,
    /// The supervisor stopped it (for a restart) or gave up on it: changes are ignored.
    Stopped,
}

#[derive(Default)]
struct EntryState {
    desired: Desired,
    /// When each restart happened, within the policy's window.
    restarts: VecDeque<Instant>,
    /// Consecutive restarts since the backoff last reset.
    attempt: u32,
    running_since: Option<Instant>,
}

struct PendingRestart {
    due: Instant,
    group: Vec<usize>,
}

/// What the supervisor keeps of each service; see [`ServiceStats`].
#[derive(Clone, Copy, Default)]
struct Figures {
    restarts: u32,
    last_start_duration: Option<Duration>,
    last_stop_duration: Option<Duration>,
}

/// The phase a change is observed in, which decides whether the running phase must act
/// on it later.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Starting the services: failures and exits are acted on once all started (their
    /// running time is reset then anyway).
    Startup,
    /// Running, during a restart: every change the running phase acts on is kept.
    Running,
    /// Stopping every service: nothing is acted on.
    Shutdown,
}

impl Phase {
    fn acts_on(self, change: &EntryChange) -> bool {
        let failed_or_exited = change.to == ServiceStatus::Error
            || (change.from, change.to) == (ServiceStatus::Stopping, ServiceStatus::Stopped);
        match self {
            Phase::Startup => failed_or_exited,
            Phase::Running => failed_or_exited || change.to == ServiceStatus::Running,
            Phase::Shutdown => false,
        }
    }
}

/// Receives the status changes of the supervisor's services in every phase: keeps their
/// figures (readiness and the probes' cache read the services' own tally instead), and
/// queues the changes the running phase acts on when it cannot act at once. Each change
/// carries the index of its entry (each service joined with it in `Supervisor::add`), so
/// nothing is looked up.
struct Observer {
    /// The batch taken from the mailbox (`StatusTally::take`), kept for its capacity.
    inbox: Vec<EntryChange>,
    /// Changes observed but not acted on yet, in order.
    deferred: VecDeque<EntryChange>,
    shared: Arc<Shared>,
}

impl Observer {
    /// Records one change in its entry's figures.
    fn note(stats: &mut [Figures], change: &EntryChange) {
        let Some(figures) = stats.get_mut(change.index) else {
            return;
        };
        match (change.from, change.to) {
            (ServiceStatus::Starting, ServiceStatus::Running) => {
                figures.last_start_duration = Some(change.duration());
            }
            (ServiceStatus::Stopping, ServiceStatus::Stopped) => {
                figures.last_stop_duration = Some(change.duration());
            }
            _ => {}
        }
    }

    /// Observes every change posted so far, in one lock of the figures; queues the ones
    /// the running phase will act on.
    fn absorb(&mut self, phase: Phase) {
        self.shared.tally.take(&mut self.inbox);
        if self.inbox.is_empty() {
            return;
        }
        let mut stats = lock(&self.shared.stats);
        for change in self.inbox.drain(..) {
            Self::note(&mut stats, &change);
            if phase.acts_on(&change) {
                self.deferred.push_back(change);
            }
        }
    }
}

impl Drop for Observer {
    /// The run is over: the services stop posting changes and forget the supervisor.
    fn drop(&mut self) {
        self.shared.tally.close();
    }
}

struct Run {
    entries: Vec<Entry>,
    plan: Plan,
    shared: Arc<Shared>,
    shutdown_timeout: Duration,
    observer: Observer,
    report: Report,
    states: Vec<EntryState>,
    pending: Vec<PendingRestart>,
    /// Failed services that will not be restarted: stopped at once to release what they hold.
    to_stop: Vec<usize>,
    /// Wakes a `run_until` caller that polls its future in its own task.
    poke: Option<Arc<Notify>>,
    #[cfg(all(unix, feature = "systemd"))]
    systemd: Option<crate::systemd::Session>,
}

/// What the running phase decided while handling one status change.
enum Step {
    Continue,
    Escalate,
}

impl Run {
    fn name(&self, i: usize) -> &Arc<str> {
        self.entries[i].service.0.name()
    }

    async fn execute(&mut self, trigger: &mut Trigger<'_>) {
        tracing::info!(
            services = self.entries.len(),
            levels = self.plan.level_ends.len(),
            "supervisor starting"
        );
        let shutdown = self.shared.shutdown.clone();
        let started = tokio::select! {
            biased;
            reason = trigger.next() => {
                tracing::warn!(reason, "shutdown requested during startup");
                false
            }
            () = shutdown.requested() => {
                tracing::warn!("shutdown requested during startup");
                false
            }
            ok = start_levels(&self.entries, &self.plan, &mut self.report, &mut self.observer) => ok,
        };
        if started {
            let now = Instant::now();
            let _ = self.shared.started_at.set(now);
            for state in &mut self.states {
                state.running_since = Some(now);
            }
            tracing::info!("all services running");
            #[cfg(all(unix, feature = "systemd"))]
            if let Some(systemd) = &mut self.systemd {
                let handle = SupervisorHandle {
                    shared: self.shared.clone(),
                };
                systemd.ready(&handle, self.entries.len());
            }
            self.poke();
            self.supervise(trigger).await;
        }
        self.shutdown(trigger).await;
    }

    /// The running phase: act on failures and exits until a shutdown request.
    async fn supervise(&mut self, trigger: &mut Trigger<'_>) {
        let shutdown = self.shared.shutdown.clone();
        let tally = self.shared.tally.clone();
        loop {
            let next_due = self.pending.iter().map(|p| p.due).min();
            let step = tokio::select! {
                biased;
                reason = trigger.next() => {
                    tracing::info!(reason, "shutdown requested");
                    return;
                }
                () = shutdown.requested() => {
                    tracing::info!("shutdown requested through the handle");
                    return;
                }
                // Changes observed while a restart or the startup ran, in order.
                () = std::future::ready(()), if !self.observer.deferred.is_empty() => {
                    match self.observer.deferred.pop_front() {
                        Some(change) => self.on_change(change),
                        None => Step::Continue,
                    }
                }
                // Observed, then acted on in order through `deferred` above.
                () = tally.arrived() => {
                    self.observer.absorb(Phase::Running);
                    Step::Continue
                }
                () = sleep_until_opt(next_due), if next_due.is_some() => {
                    Step::Continue
                }
            };
            #[cfg(all(unix, feature = "systemd"))]
            if let Some(systemd) = &mut self.systemd {
                systemd.flush();
            }
            self.poke();
            if let Step::Escalate = step {
                return;
            }
            // Restarts and their preparation run here, raced against shutdown requests:
            // a request abandons them at once (the shutdown stops whatever they began).
            // Changes meanwhile are observed, and acted on once the work is done.
            let work = self.restart_work();
            if work.is_empty() {
                continue;
            }
            let observer = &mut self.observer;
            let mut work =
                std::pin::pin!(perform(&self.entries, &self.plan, &mut self.states, work));
            let done = loop {
                tokio::select! {
                    biased;
                    reason = trigger.next() => {
                        tracing::info!(reason, "shutdown requested during a restart");
                        return;
                    }
                    () = shutdown.requested() => return,
                    errors = &mut work => break errors,
                    () = tally.arrived() => observer.absorb(Phase::Running),
                }
            };
            self.report.errors.extend(done);
        }
    }

    /// Wakes a `run_until` caller polling its future in its own task, so it polls it
    /// again (as it is polled with the supervisor when they share a task).
    fn poke(&self) {
        if let Some(poke) = &self.poke {
            poke.notify_one();
        }
    }

    /// Decides what an observed status change of an entry means.
    fn on_change(&mut self, change: EntryChange) -> Step {
        let i = change.index;
        if change.to == ServiceStatus::Running {
            self.states[i].running_since = Some(Instant::now());
        }
        if self.states[i].desired != Desired::Running {
            return Step::Continue;
        }
        let service = &self.entries[i].service.0;
        // Act on the change that reports the failure or exit, and only if the service is
        // still in that state (a later change may already have superseded it).
        match (change.from, change.to, service.status()) {
            (_, ServiceStatus::Error, ServiceStatus::Error) => {
                self.on_failure(i, change.error.map(|error| *error), false)
            }
            (ServiceStatus::Stopping, ServiceStatus::Stopped, ServiceStatus::Stopped) => {
                if self.entries[i].policy.restart == Restart::Permanent {
                    tracing::warn!(service = %self.name(i), "service stopped by itself; restarting it (permanent)");
                    self.on_failure(i, None, true)
                } else {
                    tracing::info!(service = %self.name(i), "service finished its work; not restarting it");
                    self.states[i].desired = Desired::Stopped;
                    Step::Continue
                }
            }
            _ => Step::Continue,
        }
    }

    /// A service failed (or exited, under `permanent`): schedule its restart with the
    /// services that depend on it, or escalate.
    fn on_failure(&mut self, i: usize, error: Option<ServiceError>, exited: bool) -> Step {
        let name = self.name(i).clone();
        let policy = self.entries[i].policy;
        if policy.restart == Restart::Temporary && !exited {
            tracing::warn!(service = %name, "service failed; not restarting it (temporary)");
            self.to_stop.push(i);
            self.states[i].desired = Desired::Stopped;
            if let Some(error) = error {
                self.report.errors.push(SupervisorError::Failed(error));
            }
            return Step::Continue;
        }
        let now = Instant::now();
        let state = &mut self.states[i];
        while state
            .restarts
            .front()
            .is_some_and(|&t| now.duration_since(t) >= policy.within)
        {
            state.restarts.pop_front();
        }
        if state.restarts.len() >= policy.max_restarts as usize {
            tracing::error!(
                service = %name,
                restarts = state.restarts.len(),
                within = ?policy.within,
                "restart limit exceeded; stopping every service"
            );
            self.report.errors.push(SupervisorError::Escalated {
                service: name,
                restarts: policy.max_restarts,
                within: policy.within,
                last_error: error,
            });
            return Step::Escalate;
        }
        if state
            .running_since
            .is_some_and(|since| now.duration_since(since) >= policy.reset_after)
        {
            state.attempt = 0;
        }
        if let Some(error) = error {
            self.report.errors.push(SupervisorError::Restarted(error));
        }
        let state = &mut self.states[i];
        let delay = policy.jittered_delay(state.attempt, fastrand::f64());
        state.attempt = state.attempt.saturating_add(1);
        state.running_since = None;
        let group = self.plan.rest_for_one(i);
        for &member in &group {
            self.states[member].desired = Desired::Stopped;
        }
        tracing::warn!(
            service = %name,
            ?delay,
            with = ?group.iter().skip(1).map(|&m| self.name(m).to_string()).collect::<Vec<_>>(),
            "restarting after backoff"
        );
        self.pending.push(PendingRestart {
            due: now + delay,
            group,
        });
        Step::Continue
    }

    /// Collects the work now owed: stopping groups of pending restarts (at once, so
    /// resources are released during the backoff) and starting the ones that are due.
    fn restart_work(&mut self) -> Vec<Work> {
        let now = Instant::now();
        let mut work = Vec::new();
        for i in std::mem::take(&mut self.to_stop) {
            work.push(Work::Stop(vec![i]));
        }
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.due <= now);
        self.pending = waiting;
        for pending in &self.pending {
            if pending
                .group
                .iter()
                .any(|&m| stoppable(self.entries[m].service.0.status()))
            {
                work.push(Work::Stop(pending.group.clone()));
            }
        }
        for pending in due {
            {
                let mut stats = lock(&self.shared.stats);
                for &m in &pending.group {
                    if let Some(figures) = stats.get_mut(m) {
                        figures.restarts += 1;
                    }
                }
            }
            self.states[pending.group[0]].restarts.push_back(now);
            work.push(Work::Restart(pending.group));
        }
        work
    }

    /// Stops every service in reverse levels (each level in parallel) under the budget;
    /// a second shutdown request abandons what is left.
    async fn shutdown(&mut self, trigger: &mut Trigger<'_>) {
        self.shared.stopping.request();
        #[cfg(all(unix, feature = "systemd"))]
        if let Some(systemd) = &mut self.systemd {
            systemd.stopping();
        }
        self.pending.clear();
        tracing::info!(budget = ?self.shutdown_timeout, "stopping every service");
        let errors = Mutex::new(Vec::new());
        let outcome = {
            let (entries, plan, errors) = (&self.entries, &self.plan, &errors);
            let stop_all = async move {
                for level in plan.levels().rev() {
                    for error in stop_level(entries, level).await {
                        lock(errors).push(SupervisorError::Stop(error));
                    }
                }
            };
            let stop = tokio::time::timeout(self.shutdown_timeout, stop_all);
            // Changes are observed as the services stop (for the figures and the probes).
            tokio::select! {
                biased;
                reason = trigger.next() => Some((reason, true)),
                finished = observing(&mut self.observer, Phase::Shutdown, stop) => {
                    finished.err().map(|_| ("the shutdown budget ran out", false))
                }
            }
        };
        self.report.errors.extend(
            errors
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        self.observer.absorb(Phase::Shutdown);
        if let Some((reason, forced)) = outcome {
            let abandoned: Vec<String> = self
                .plan
                .order
                .iter()
                .rev()
                .filter(|&&i| {
                    !matches!(
                        self.entries[i].service.0.status(),
                        ServiceStatus::Stopped | ServiceStatus::Error
                    )
                })
                .map(|&i| self.name(i).to_string())
                .collect();
            tracing::error!(
                reason,
                ?abandoned,
                "shutdown abandoned with services still stopping"
            );
            self.report.errors.push(if forced {
                SupervisorError::Forced { abandoned }
            } else {
                SupervisorError::ShutdownTimeout {
                    budget: self.shutdown_timeout,
                    abandoned,
                }
            });
        } else {
            tracing::info!("every service stopped");
        }
    }
}

fn stoppable(status: ServiceStatus) -> bool {
    matches!(
        status,
        ServiceStatus::Running | ServiceStatus::Starting | ServiceStatus::Error
    )
}

enum Work {
    /// Stop these services, dependents first (a restart is pending).
    Stop(Vec<usize>),
    /// Start these services in order (the restart is due).
    Restart(Vec<usize>),
}

/// Carries out restart work; returns the errors of the stops it made (start failures
/// arrive as status changes and are handled there).
async fn perform(
    entries: &[Entry],
    plan: &Plan,
    states: &mut [EntryState],
    work: Vec<Work>,
) -> Vec<SupervisorError> {
    let mut errors = Vec::new();
    for item in work {
        match item {
            Work::Stop(group) => {
                for &i in group.iter().rev() {
                    let service = &entries[i].service.0;
                    if let Err(error) = service.stop().await {
                        tracing::error!(service = %service.name(), %error, "stopping before a restart failed");
                        errors.push(SupervisorError::Stop(error));
                    }
                }
            }
            Work::Restart(group) => {
                let mut failed: Vec<usize> = Vec::new();
                for &i in &group {
                    if failed.iter().any(|&f| plan.depends_transitively(i, f)) {
                        // Restarted with the failed dependency's own restart.
                        continue;
                    }
                    let service = &entries[i].service.0;
                    // Stop first: a restart never overlaps the old incarnation's cleanup.
                    if let Err(error) = service.stop().await {
                        errors.push(SupervisorError::Stop(error));
                    }
                    states[i].desired = Desired::Running;
                    if service.start().await.is_err() {
                        // The failure arrives as a status change and is handled there.
                        failed.push(i);
                    }
                }
            }
        }
    }
    errors
}

async fn sleep_until_opt(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Starts each level in parallel, the levels in order, observing the changes as they
/// come. On a failure, stops nothing itself (the shutdown phase stops everything in
/// reverse) and records every error.
async fn start_levels(
    entries: &[Entry],
    plan: &Plan,
    report: &mut Report,
    observer: &mut Observer,
) -> bool {
    for level in plan.levels() {
        // The level's changes are observed whenever the start makes progress (without a
        // wake-up of its own per change), and all of them once it is done: before the next
        // level starts and before `has_started`, so they never pile up.
        let errors = observing(observer, Phase::Startup, start_level(entries, level)).await;
        if !errors.is_empty() {
            for error in errors {
                tracing::warn!(service = %error.service(), "start failed; stopping what started");
                report.errors.push(SupervisorError::Start(error));
            }
            return false;
        }
    }
    true
}

/// Polls `work`, and after each poll observes every change waiting. Observing on the
/// work's own wake-ups (rather than waking for each change) keeps a level of many
/// services from being polled again for every change of each of them.
async fn observing<F: Future>(observer: &mut Observer, phase: Phase, work: F) -> F::Output {
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(|cx| {
        let poll = work.as_mut().poll(cx);
        observer.absorb(phase);
        poll
    })
    .await
}

/// Starts one level's services concurrently; returns their errors.
async fn start_level(entries: &[Entry], level: &[usize]) -> Vec<ServiceError> {
    on_level(entries, level, |service| service.start_now()).await
}

/// Stops one level's services concurrently; returns their errors.
async fn stop_level(entries: &[Entry], level: &[usize]) -> Vec<ServiceError> {
    on_level(entries, level, |service| service.stop_now()).await
}

/// Begins the operation `begin` on each of a level's services in order and awaits the
/// ones that did not finish at once, concurrently; returns their errors, in level order.
async fn on_level<'a>(
    entries: &'a [Entry],
    level: &[usize],
    begin: impl Fn(&'a dyn DynService) -> Begun<'a>,
) -> Vec<ServiceError> {
    if let [i] = *level {
        // One service (every level when nothing depends): no list, no join.
        let outcome = match begin(&*entries[i].service.0) {
            Ok(outcome) => outcome,
            Err(rest) => rest.await,
        };
        return outcome.err().into_iter().collect();
    }
    let ops = level.iter().map(|&i| begin(&*entries[i].service.0));
    let mut outcomes = Vec::new();
    let mut waiting = Vec::new();
    for op in ops {
        outcomes.push(match op {
            Ok(outcome) => Some(outcome),
            Err(rest) => {
                waiting.push(rest);
                None
            }
        });
    }
    let mut waited = join_all(waiting).await.into_iter();
    outcomes
        .into_iter()
        .filter_map(|outcome| outcome.or_else(|| waited.next())?.err())
        .collect()
}

/// Hashes service names for `Supervisor::plan`: FxHash's multiply-rotate, a word at a
/// time. Fast for short keys; not meant for keys an attacker picks (names are the
/// program's own).
#[derive(Default)]
struct NameHasher(u64);

impl NameHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let mut rest = [0u8; 8];
        let tail = chunks.remainder();
        rest[..tail.len()].copy_from_slice(tail);
        self.add(u64::from_le_bytes(rest));
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn finish(&self) -> u64 {
        // A product's low bits depend only on the low bits of its factors (names that
        // share their first byte would share them); the table indexes by the low bits,
        // so bring the well-mixed high bits down.
        self.0.rotate_left(26)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Observes and controls a supervisor from other tasks (a health endpoint, an admin
/// command), before and while it runs.
#[derive(Clone)]
pub struct SupervisorHandle {
    shared: Arc<Shared>,
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
    fn services(&self) -> Arc<ServiceList> {
        lock(&self.shared.services).clone()
    }

    /// Every status change of every service from now on, in order per service.
    pub fn subscribe(&self) -> StatusChanges {
        let (sender, receiver) = mpsc::unbounded_channel();
        for service in self.services().iter() {
            service.0.add_subscriber(Subscriber::Public(sender.clone()));
        }
        lock(&self.shared.subscribers).push(sender);
        StatusChanges::from_receiver(receiver)
    }

    /// Start and stop durations and restart counts of every service, in the order added.
    pub fn stats(&self) -> Vec<ServiceStats> {
        let services = self.services();
        let stats = lock(&self.shared.stats);
        services
            .iter()
            .zip(stats.iter())
            .map(|(service, figures)| ServiceStats {
                name: service.0.name().to_string(),
                status: service.0.status(),
                restarts: figures.restarts,
                last_start_duration: figures.last_start_duration,
                last_stop_duration: figures.last_stop_duration,
            })
            .collect()
    }

    /// The health of every service, concurrently: the worst status wins.
    pub async fn health(&self) -> SupervisorHealth {
        let services = self.services();
        // Made in the order of the map, each report keyed as it finishes.
        let checks = services.by_name(|_, s| Keyed(s.0.health()));
        let reports = join_all(checks).await;
        self.aggregate(reports)
    }

    /// The aggregate health and how long each service's report took, in the order added.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) async fn health_with_latency(
        &self,
    ) -> (SupervisorHealth, Vec<(Arc<str>, Duration)>) {
        let services = self.services();
        let timed = services.by_name(|i, s| -> BoxFuture<'_, (usize, HealthReport, Duration)> {
            Box::pin(async move {
                let began = Instant::now();
                let report = s.0.health().await;
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

    /// `None` when every service runs (one atomic load: the count the transitions keep);
    /// otherwise which do not ("a is starting, b is stopped").
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn not_running(&self) -> Option<String> {
        if self.shared.tally.not_running() == 0 {
            return None;
        }
        let mut reason = String::new();
        for service in self.services().iter() {
            let status = service.0.status();
            if status != ServiceStatus::Running {
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

/// A service's health report, keyed as it finishes.
struct Keyed<'a>(BoxFuture<'a, HealthReport>);

impl Future for Keyed<'_> {
    type Output = (Cow<'static, str>, HealthReport);

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx).map(keyed)
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
    /// How long its last start took.
    pub last_start_duration: Option<Duration>,
    /// How long its last stop took.
    pub last_stop_duration: Option<Duration>,
}

/// An error of a supervisor run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum SupervisorError {
    /// The supervisor is invalid: an unknown or cyclic dependency, a duplicate name.
    /// Nothing was started.
    Config(String),
    /// A service failed to start; the ones started before it were stopped.
    Start(ServiceError),
    /// A service failed while running and was not restarted (its policy is
    /// `temporary`, or its restarts ran out).
    Failed(ServiceError),
    /// A service failed while running and was restarted: kept for the record, it does
    /// not make the run unsuccessful.
    Restarted(ServiceError),
    /// A service failed more often than its policy allows; everything was stopped.
    Escalated {
        /// The service that failed too often.
        service: Arc<str>,
        /// The restarts its policy allows…
        restarts: u32,
        /// …within this window.
        within: Duration,
        /// Its last error, if it failed (rather than exited).
        last_error: Option<ServiceError>,
    },
    /// A service failed to stop cleanly.
    Stop(ServiceError),
    /// The shutdown budget ran out; these services were still stopping.
    ShutdownTimeout {
        /// The budget.
        budget: Duration,
        /// The services abandoned, in stop order.
        abandoned: Vec<String>,
    },
    /// A second signal forced the exit; these services were still stopping.
    Forced {
        /// The services abandoned, in stop order.
        abandoned: Vec<String>,
    },
    /// The signal handlers could not be installed.
    Signal(Arc<std::io::Error>),
    /// The probe endpoint could not listen on its address; nothing was started.
    Probe {
        /// The address asked for.
        address: String,
        /// Why it failed.
        error: Arc<std::io::Error>,
    },
}

impl fmt::Display for SupervisorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisorError::Config(message) => write!(f, "invalid supervisor: {message}"),
            SupervisorError::Start(error) => write!(f, "start failed: {error}"),
            SupervisorError::Failed(error) => write!(f, "failed while running: {error}"),
            SupervisorError::Restarted(error) => {
                write!(f, "failed while running and restarted: {error}")
            }
            SupervisorError::Escalated {
                service,
                restarts,
                within,
                last_error,
            } => {
                write!(
                    f,
                    "service `{service}` failed more than {restarts} restarts within {within:?} allow"
                )?;
                if let Some(error) = last_error {
                    write!(f, "; last error: {error}")?;
                }
                Ok(())
            }
            SupervisorError::Stop(error) => write!(f, "stop failed: {error}"),
            SupervisorError::ShutdownTimeout { budget, abandoned } => write!(
                f,
                "shutdown budget of {budget:?} ran out; abandoned: {}",
                abandoned.join(", ")
            ),
            SupervisorError::Forced { abandoned } => {
                write!(
                    f,
                    "shutdown forced by a second signal; abandoned: {}",
                    abandoned.join(", ")
                )
            }
            SupervisorError::Signal(error) => write!(f, "could not listen for signals: {error}"),
            SupervisorError::Probe { address, error } => {
                write!(
                    f,
                    "could not serve the probe endpoint on {address}: {error}"
                )
            }
        }
    }
}

impl std::error::Error for SupervisorError {}

/// What a supervisor run ended with: every error, in order, and the exit code.
///
/// `main` can return it: it prints the errors to stderr and exits with
/// [`exit_code`](Self::exit_code).
#[derive(Debug, Default)]
#[must_use = "the report says whether every service stopped cleanly"]
pub struct Report {
    errors: Vec<SupervisorError>,
}

impl Report {
    fn single(error: SupervisorError) -> Self {
        Report {
            errors: vec![error],
        }
    }

    /// Every error of the run, in the order they happened, including failures that a
    /// restart recovered from ([`SupervisorError::Restarted`]).
    pub fn errors(&self) -> &[SupervisorError] {
        &self.errors
    }

    /// Whether every service started (or was never asked to) and stopped cleanly, and no
    /// failure was left unrecovered. Failures healed by a restart do not count.
    pub fn is_success(&self) -> bool {
        self.code() == 0
    }

    /// The numeric exit code: 0 on success, [`EXIT_FORCED`] after a second signal,
    /// [`EXIT_SHUTDOWN_TIMEOUT`] when the budget ran out, [`EXIT_CONFIG`] for an invalid
    /// supervisor, 1 for any other error.
    pub fn code(&self) -> u8 {
        let has = |f: fn(&SupervisorError) -> bool| self.errors.iter().any(f);
        if self
            .errors
            .iter()
            .all(|e| matches!(e, SupervisorError::Restarted(_)))
        {
            0
        } else if has(|e| matches!(e, SupervisorError::Forced { .. })) {
            EXIT_FORCED
        } else if has(|e| matches!(e, SupervisorError::ShutdownTimeout { .. })) {
            EXIT_SHUTDOWN_TIMEOUT
        } else if has(|e| matches!(e, SupervisorError::Config(_))) {
            EXIT_CONFIG
        } else {
            1
        }
    }

    /// The process exit code; see [`code`](Self::code).
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }
}

impl From<Report> for ExitCode {
    fn from(report: Report) -> Self {
        report.exit_code()
    }
}

impl Termination for Report {
    fn report(self) -> ExitCode {
        for error in &self.errors {
            match error {
                SupervisorError::Restarted(_) => eprintln!("warning: {error}"),
                _ => eprintln!("error: {error}"),
            }
        }
        self.exit_code()
    }
}
