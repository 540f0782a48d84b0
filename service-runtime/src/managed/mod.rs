//! [`Managed`]: a service together with its state machine, its hooks' execution and its
//! observers.

mod abandon;
mod call;
mod cancel;
mod components;
mod control;
mod decide;
mod erased;
mod health;
mod hooks;
mod loop_stop;
mod observers;
mod operation;
mod ready_wait;
mod reload;
mod run_loop;
mod start;
mod stop;

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::{RwLockReadGuard, mpsc, watch};

pub(crate) use self::components::ComponentIncident;
use self::control::{Inner, Settings};
use self::decide::Request;
pub use self::erased::ErasedService;
pub(crate) use self::erased::{Begun, DynService};
pub(crate) use self::observers::{EntryChange, StatusTally, Subscriber};
use crate::__private::ComponentEntry;
use crate::error::ServiceError;
use crate::health::HealthReport;
use crate::service::{Service, ServiceConfig};
use crate::status::ServiceStatus;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A service under management: the handle a program starts, stops, checks and watches.
///
/// `Managed<S>` is a cheap, cloneable handle (an `Arc`); every clone controls the same
/// service. A start or stop runs in the caller's task up to its first wait (a service
/// whose hooks finish at once starts and stops without a task); from there it goes on in
/// a task of its own. So an operation always runs to its end, whether its caller keeps
/// polling, drops the future or keeps it aside, and every call waiting for it gets its
/// outcome.
///
/// When the last handle is dropped (a [`Supervisor`](crate::Supervisor) or a parent
/// service holds one too), nothing can stop the service any more: its run loop is told
/// to shut down and its task is aborted, and the service is freed. No cleanup hook runs:
/// call [`stop`](Self::stop) first for an orderly end.
///
/// ```
/// use service_runtime::{lifecycle, Managed, Service, ServiceStatus};
///
/// #[derive(Service)]
/// struct Cache { entries: usize }
///
/// #[lifecycle]
/// impl Cache {
///     #[init]
///     async fn warm(&mut self) -> Result<(), std::io::Error> {
///         self.entries = 128;
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let cache = Managed::new(Cache { entries: 0 });
/// cache.start().await?;
/// assert_eq!(cache.status(), ServiceStatus::Running);
/// assert_eq!(cache.read().await.entries, 128);
/// cache.stop().await?;
/// # Ok::<(), service_runtime::ServiceError>(())
/// # }).unwrap();
/// ```
pub struct Managed<S: Service> {
    inner: Arc<Inner<S>>,
}

impl<S: Service> Clone for Managed<S> {
    fn clone(&self) -> Self {
        Managed::counted(self.inner.clone())
    }
}

impl<S: Service> Drop for Managed<S> {
    fn drop(&mut self) {
        self.inner.release_handle();
    }
}

impl<S: Service> fmt::Debug for Managed<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Managed")
            .field("name", &self.name())
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// One status change of a service, as delivered to [`Managed::subscribe`] receivers.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StatusChange {
    /// The service's name.
    pub service: Arc<str>,
    /// The status left.
    pub from: ServiceStatus,
    /// The status entered.
    pub to: ServiceStatus,
    /// Wall-clock time of the change.
    pub at: SystemTime,
    /// Time spent in `from` (for `starting → running`, how long the start took).
    pub duration: Duration,
    /// The error that caused a change to `error`.
    pub error: Option<ServiceError>,
}

/// The stream of a service's status changes, from [`Managed::subscribe`].
///
/// Unbounded, so a slow subscriber never slows the service nor loses a change; a
/// dropped subscriber is forgotten at the next change.
#[derive(Debug)]
pub struct StatusChanges {
    receiver: mpsc::UnboundedReceiver<StatusChange>,
}

impl StatusChanges {
    pub(crate) fn from_receiver(receiver: mpsc::UnboundedReceiver<StatusChange>) -> Self {
        StatusChanges { receiver }
    }

    /// The next change; `None` once the service is freed and every change was read.
    ///
    /// A service is freed once its last [`Managed`] handle is dropped and, for a service
    /// with a run loop, once its task has ended (the loop is aborted then: at its next
    /// `.await`).
    pub async fn recv(&mut self) -> Option<StatusChange> {
        self.receiver.recv().await
    }

    /// The next change if one is waiting.
    pub fn try_recv(&mut self) -> Option<StatusChange> {
        self.receiver.try_recv().ok()
    }
}

/// The changes as a stream (`futures::StreamExt`, `tokio_stream::StreamExt`): it ends
/// when [`recv`](StatusChanges::recv) would return `None`.
impl futures_core::Stream for StatusChanges {
    type Item = StatusChange;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<StatusChange>> {
        self.receiver.poll_recv(cx)
    }
}

impl<S: Service> Managed<S> {
    /// Manages `service` with the configuration of its `#[service(...)]` attribute.
    pub fn new(service: S) -> Self {
        let shared = S::__shared_config();
        Self::with_settings(service, shared.name.clone(), Settings::Shared(shared))
    }

    /// Manages `service` with a configuration chosen at run time.
    ///
    /// ```
    /// # use service_runtime::{lifecycle, Managed, Service};
    /// # use std::time::Duration;
    /// # #[derive(Service)] struct Worker;
    /// # #[lifecycle] impl Worker {}
    /// let worker = Managed::with_config(
    ///     Worker,
    ///     Worker::config().name("worker-7").stop_timeout(Duration::from_secs(3)),
    /// );
    /// assert_eq!(worker.name(), "worker-7");
    /// ```
    pub fn with_config(service: S, mut config: ServiceConfig) -> Self {
        let name = std::mem::take(&mut config.name);
        let shared = S::__shared_config();
        let settings = if config.same_but_name(shared) {
            Settings::Shared(shared)
        } else {
            Settings::Own(Box::new(config))
        };
        Self::with_settings(service, name, settings)
    }

    fn with_settings(service: S, name: Cow<'static, str>, settings: Settings) -> Self {
        Managed {
            inner: Inner::new(service, name, settings),
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The service's version.
    pub fn version(&self) -> &str {
        &self.inner.config().version
    }

    /// A copy of the configuration the service runs with.
    ///
    /// A copy because a service does not keep one of its own: every instance that keeps
    /// its type's configuration (all but a run-time name) shares it.
    pub fn config(&self) -> ServiceConfig {
        ServiceConfig {
            name: self.inner.name.clone(),
            ..self.inner.config().clone()
        }
    }

    /// How a supervisor restarts the service, from its configuration.
    pub(crate) fn restart_policy(&self) -> crate::RestartPolicy {
        self.inner.config().restart
    }

    /// Whether the service's configuration chose its restart policy.
    pub(crate) fn restart_chosen(&self) -> bool {
        self.inner.config().restart_chosen()
    }

    /// The current status: one atomic load, never waits for a hook.
    pub fn status(&self) -> ServiceStatus {
        self.inner.status()
    }

    /// Time since the service last became `running`; zero when it is not running.
    pub fn uptime(&self) -> Duration {
        self.inner.uptime()
    }

    /// The error of the last transition to `error`, kept until the next one.
    pub fn last_error(&self) -> Option<ServiceError> {
        self.inner.lock().last_error.as_deref().cloned()
    }

    /// Every status change from now on, in order, with time and cause.
    pub fn subscribe(&self) -> StatusChanges {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.inner
            .lock()
            .subscribers
            .push(Subscriber::Public(sender));
        StatusChanges::from_receiver(receiver)
    }

    /// A watch of the current status: a new receiver sees the current status at once,
    /// then the latest one (intermediate statuses may be skipped; use
    /// [`subscribe`](Self::subscribe) for every change).
    pub fn watch(&self) -> watch::Receiver<ServiceStatus> {
        let _ctl = self.inner.lock();
        self.inner
            .watch
            .get_or_init(|| watch::Sender::new(self.inner.status()))
            .subscribe()
    }

    /// Shared access to the service's fields.
    ///
    /// Hold the guard briefly: cleanup hooks wait for it (up to the stop timeout). While
    /// a start or stop holds the service (its init or cleanup hooks run), this waits for
    /// it; an operation whose caller stopped polling it is handed to a task first, so it
    /// still finishes.
    pub async fn read(&self) -> RwLockReadGuard<'_, S> {
        if let Ok(guard) = self.inner.service.try_read() {
            return guard;
        }
        // An operation in flight may hold the lock while its caller does not poll it
        // (a `start()` kept aside): handed to a task, it goes on and releases it.
        self.inner.hand_over_op();
        self.inner.service.read().await
    }

    /// Starts the service: init hooks in source order, then components in field order,
    /// then the run loop; then `running`.
    ///
    /// Any failure (an `Err`, a panic, a timeout) ends in `error` with the started
    /// components stopped in reverse; when every init hook had completed, the cleanup
    /// hooks run too, so a failed start leaves nothing behind. Cleanup hooks never run
    /// after a failed init hook.
    ///
    /// Idempotent: starting a running service returns `Ok` at once; concurrent calls
    /// share one start and its result. From `error`, starts again (a restart), first
    /// running any cleanup still owed.
    #[expect(
        clippy::manual_async_fn,
        reason = "the signature shows the future is `Send`"
    )]
    pub fn start(&self) -> impl Future<Output = Result<(), ServiceError>> + Send + '_ {
        async move { self.inner.call(Request::Start).await }
    }

    /// Stops the service: the run loop is told to shut down and awaited (up to the stop
    /// timeout), components stop in reverse field order, cleanup hooks run in reverse
    /// source order. Every cleanup runs even if one fails; all errors are returned
    /// together and the service ends in `error`, otherwise in `stopped`.
    ///
    /// Idempotent: stopping a stopped service does nothing; concurrent calls share one
    /// stop. Stopping a service that is starting cancels the start: `running` is never
    /// reported, and cleanup runs only if every init hook had completed.
    #[expect(
        clippy::manual_async_fn,
        reason = "the signature shows the future is `Send`"
    )]
    pub fn stop(&self) -> impl Future<Output = Result<(), ServiceError>> + Send + '_ {
        async move { self.inner.call(Request::Stop).await }
    }

    /// The service's health report.
    ///
    /// A service that is not `running` is `unhealthy` with the reason
    /// `"Service status: <status>"`, answered at once. Otherwise every health check and
    /// component report runs concurrently, each under its timeout; a check that fails,
    /// panics or hangs counts as unhealthy for itself alone. A critical failure makes the
    /// service unhealthy, an optional one at most degraded.
    pub async fn health(&self) -> HealthReport {
        self.inner.health().await
    }

    /// Reloads the service: its `#[reload]` hooks in source order, each under its
    /// timeout (by default the service's `start_timeout`), then its components' reloads
    /// in start order.
    ///
    /// The service keeps running whatever the hooks do: every hook runs even if one
    /// failed, and the failures, each naming the service and the hook, are returned
    /// together. A service that is not `running` has nothing to reload (its next start
    /// reads what its init hooks read): `Ok` at once. A
    /// [`Supervisor`](crate::Supervisor) reloads its services in dependency order on
    /// `SIGHUP` and on [`SupervisorHandle::reload`](crate::SupervisorHandle::reload).
    ///
    /// Calls made at the same time run the hooks at the same time: a program that
    /// reloads from several places serialises them (a supervisor does).
    ///
    /// ```
    /// use std::sync::RwLock;
    /// use service_runtime::{lifecycle, Managed, Service};
    ///
    /// #[derive(Service)]
    /// struct Quoter { spread: RwLock<f64> }
    ///
    /// #[lifecycle]
    /// impl Quoter {
    ///     #[reload]
    ///     async fn read_settings(&self) -> Result<(), std::io::Error> {
    ///         *self.spread.write().unwrap() = 0.25; // e.g. from a file
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let quoter = Managed::new(Quoter { spread: RwLock::new(0.5) });
    /// quoter.start().await?;
    /// quoter.reload().await?;
    /// assert_eq!(*quoter.read().await.spread.read().unwrap(), 0.25);
    /// # Ok::<(), service_runtime::ServiceError>(())
    /// # }).unwrap();
    /// ```
    pub async fn reload(&self) -> Result<(), ServiceError> {
        self.inner.reload().await
    }

    pub(crate) fn erased(&self) -> ErasedService {
        self.inner.handles.fetch_add(1, Ordering::Relaxed);
        ErasedService(self.inner.clone())
    }

    /// A handle from one of the runtime's own references: counted as a handle.
    /// A handle on `service` if it is an `S`.
    pub(crate) fn from_erased(service: &ErasedService) -> Option<Self> {
        let inner = service.0.as_any().downcast_ref::<Inner<S>>()?;
        inner.this.upgrade().map(Managed::counted)
    }

    fn counted(inner: Arc<Inner<S>>) -> Self {
        // Relaxed, as `Arc::clone`: a new handle is made from a live one (or from the
        // runtime's reference, below), and the count only matters when it reaches zero.
        inner.handles.fetch_add(1, Ordering::Relaxed);
        Managed { inner }
    }
}

impl<S: Service> From<S> for Managed<S> {
    fn from(service: S) -> Self {
        Managed::new(service)
    }
}

/// A service, or a handle to one, that a [`Supervisor`](crate::Supervisor) can manage:
/// a `#[derive(Service)]` value (wrapped with [`Managed::new`]) or a [`Managed`] handle
/// (so the program keeps a clone to call the service directly).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is neither a service nor a `Managed` service",
    label = "expected a `#[derive(Service)]` value or a `Managed<S>`"
)]
pub trait IntoManaged {
    /// The service type.
    type Service: Service;

    /// Wraps the value, or returns the handle itself.
    fn into_managed(self) -> Managed<Self::Service>;
}

impl<S: Service> IntoManaged for S {
    type Service = S;

    fn into_managed(self) -> Managed<S> {
        Managed::new(self)
    }
}

impl<S: Service> IntoManaged for Managed<S> {
    type Service = S;

    fn into_managed(self) -> Managed<S> {
        self
    }
}

/// A field type that can be a `#[service(component)]`: child services started after
/// the parent's init hooks and stopped before its cleanup hooks.
///
/// - `Managed<S>`: one child, named by its field;
/// - `Option<Managed<S>>`: one child when `Some`; `None` is no child at all: nothing to
///   start, stop, watch or report;
/// - `Vec<Managed<S>>`: a pool, one child per element, named `field[i]`, started in
///   element order and stopped in reverse.
///
/// The children are read from the field after the parent's init hooks ran, so an init
/// hook may fill an `Option` or a pool (from the configuration it read, say); a start
/// keeps them until the stop that follows.
#[diagnostic::on_unimplemented(
    message = "`#[service(component)]` fields must be `Managed<S>`, `Option<Managed<S>>` or `Vec<Managed<S>>`, not `{Self}`",
    label = "not a managed service",
    note = "wrap the child service: `Managed::new(child)`"
)]
pub trait Component {
    /// Adds the field's children to `out`.
    #[doc(hidden)]
    fn __entries(&self, field: &'static str, critical: bool, out: &mut Vec<ComponentEntry>);
}

impl<S: Service> Component for Managed<S> {
    fn __entries(&self, field: &'static str, critical: bool, out: &mut Vec<ComponentEntry>) {
        out.push(ComponentEntry {
            field: Cow::Borrowed(field),
            critical,
            handle: self.erased(),
        });
    }
}

impl<S: Service> Component for Option<Managed<S>> {
    fn __entries(&self, field: &'static str, critical: bool, out: &mut Vec<ComponentEntry>) {
        if let Some(child) = self {
            child.__entries(field, critical, out);
        }
    }
}

impl<S: Service> Component for Vec<Managed<S>> {
    fn __entries(&self, field: &'static str, critical: bool, out: &mut Vec<ComponentEntry>) {
        out.extend(self.iter().enumerate().map(|(i, child)| ComponentEntry {
            field: Cow::Owned(format!("{field}[{i}]")),
            critical,
            handle: child.erased(),
        }));
    }
}
