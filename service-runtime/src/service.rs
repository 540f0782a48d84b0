//! The traits the macros implement, and the configuration a service starts with.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use crate::__private::{CheckFuture, ComponentEntry, HookFuture, HookResult, Hooks};
use crate::restart::{Restart, RestartPolicy};
use crate::{Ready, Shutdown};

/// Timeout applied to each init hook when `#[service(start_timeout = "…")]` is absent.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout applied to each cleanup hook (and to the run loop's exit) when
/// `#[service(stop_timeout = "…")]` is absent.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout applied to each health check when `#[service(health_timeout = "…")]` is absent.
///
/// Two seconds keeps a report inside Kubernetes' default probe timeout budget
/// when checks run concurrently, as they do here.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// A service's identity and time budgets.
///
/// [`#[derive(Service)]`](macro@crate::Service) fills it from the `#[service(...)]`
/// attribute; [`Managed::with_config`](crate::Managed::with_config) lets a program
/// override it at run time (for example from its own settings file).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ServiceConfig {
    /// The name that appears in every log line, error, event and health report.
    pub name: Cow<'static, str>,
    /// The version reported by health checks (by default the user's crate version).
    pub version: Cow<'static, str>,
    /// How long each init hook may take before the start fails.
    ///
    /// Like every hook timeout, it fires only at an `.await`: a hook that blocks its
    /// thread (synchronous I/O, `std::thread::sleep`) runs past it, and is logged at
    /// `warn` naming the service and the hook once it returns. Run blocking work in
    /// `tokio::task::spawn_blocking`.
    pub start_timeout: Duration,
    /// How long each cleanup hook, and the run loop after shutdown is requested, may take.
    ///
    /// The run loop's deadline follows tokio's clock on a current-thread runtime (a
    /// paused clock, as in `#[tokio::test(start_paused = true)]`, moves it). On a
    /// multi-thread runtime, or when a stop is awaited outside tokio, it is kept by one
    /// thread of the process (`service-deadlines`, started by the first such stop) that
    /// sleeps until the earliest deadline: a tokio timer there would wake an idle worker
    /// at every stop.
    pub stop_timeout: Duration,
    /// How long each health check may take before it counts as unhealthy.
    pub health_timeout: Duration,
    /// How a [`Supervisor`](crate::Supervisor) restarts the service when it ends.
    pub restart: RestartPolicy,
    /// Whether the policy was chosen for this service ([`restart`](Self::restart), or the
    /// attribute's restart keys): a supervisor's
    /// [`default_restart`](crate::Supervisor::default_restart) applies only where not.
    pub(crate) restart_chosen: bool,
}

impl ServiceConfig {
    /// A configuration with the given name, version `0.0.0` and the default timeouts.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        ServiceConfig {
            name: name.into(),
            version: Cow::Borrowed("0.0.0"),
            start_timeout: DEFAULT_START_TIMEOUT,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            health_timeout: DEFAULT_HEALTH_TIMEOUT,
            restart: RestartPolicy::new(Restart::Transient),
            restart_chosen: false,
        }
    }

    /// Sets the reported name.
    #[must_use]
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the reported version.
    #[must_use]
    pub fn version(mut self, version: impl Into<Cow<'static, str>>) -> Self {
        self.version = version.into();
        self
    }

    /// Sets the timeout of each init hook.
    #[must_use]
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Sets the timeout of each cleanup hook and of the run loop's exit.
    #[must_use]
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Sets the timeout of each health check.
    #[must_use]
    pub fn health_timeout(mut self, timeout: Duration) -> Self {
        self.health_timeout = timeout;
        self
    }

    /// Sets how a supervisor restarts the service (a supervisor's
    /// [`default_restart`](crate::Supervisor::default_restart) does not override it).
    #[must_use]
    pub fn restart(mut self, policy: RestartPolicy) -> Self {
        self.restart = policy;
        self.restart_chosen = true;
        self
    }

    /// Whether the restart policy was chosen for this service (see `restart_chosen`).
    pub(crate) fn restart_chosen(&self) -> bool {
        self.restart_chosen
    }

    /// Whether every setting but the name is the same as in `other`.
    pub(crate) fn same_but_name(&self, other: &ServiceConfig) -> bool {
        // Written out field by field, so that a new field cannot be forgotten here.
        let ServiceConfig {
            name: _,
            version,
            start_timeout,
            stop_timeout,
            health_timeout,
            restart,
            restart_chosen,
        } = self;
        // The same literal (the derive's version, kept) is equal without reading it.
        let same_version = std::ptr::eq(&**version, &*other.version) || *version == other.version;
        same_version
            && *start_timeout == other.start_timeout
            && *stop_timeout == other.stop_timeout
            && *health_timeout == other.health_timeout
            && *restart == other.restart
            && *restart_chosen == other.restart_chosen
    }
}

/// A service: a struct with `#[derive(Service)]` and a `#[lifecycle]` impl block.
///
/// Implemented by the derive; not meant to be implemented by hand. Wrap a value in
/// [`Managed`](crate::Managed) to start, stop and observe it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a service",
    label = "add `#[derive(Service)]` to `{Self}`",
    note = "a service is a struct with `#[derive(Service)]` and a `#[lifecycle]` impl block"
)]
pub trait Service: Lifecycle {
    /// The configuration given by the `#[service(...)]` attribute.
    fn config() -> ServiceConfig;

    /// [`config`](Self::config), made once per type and shared by every
    /// [`Managed`](crate::Managed) that keeps it, rather than copied into each.
    #[doc(hidden)]
    fn __shared_config() -> &'static ServiceConfig;

    /// Appends the `#[service(component)]` fields, in field order.
    #[doc(hidden)]
    fn __components(&self, out: &mut Vec<ComponentEntry>);
}

/// The hooks of a service, implemented by `#[lifecycle]`.
///
/// Not meant to be implemented by hand: write an inherent impl block with
/// `#[lifecycle]` and mark its methods `#[init]`, `#[cleanup]`, `#[health]`, `#[run]`,
/// `#[reload]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has `#[derive(Service)]` but no `#[lifecycle]` impl block",
    label = "the hooks of `{Self}` are declared by a `#[lifecycle]` impl block",
    note = "add `#[lifecycle] impl {Self} {{ ... }}` with its hooks; an empty block is fine for a service without hooks"
)]
pub trait Lifecycle: Send + Sync + Sized + 'static {
    /// What the `#[init(state)]` hook hands the `#[run]` hook (`()` without one).
    #[doc(hidden)]
    type __RunState: Send + 'static;

    /// Names and options of the hooks, in source order.
    #[doc(hidden)]
    const __HOOKS: Hooks;

    /// Runs init hook number `index` (source order); the `#[init(state)]` hook fills `state`.
    #[doc(hidden)]
    fn __init<'a>(
        &'a mut self,
        index: usize,
        state: &'a mut Option<Self::__RunState>,
    ) -> HookFuture<'a>;

    /// Runs cleanup hook number `index` (source order; the runtime walks them in reverse).
    #[doc(hidden)]
    fn __cleanup(&mut self, index: usize) -> HookFuture<'_>;

    /// Runs health check number `index` (source order).
    #[doc(hidden)]
    fn __health(&self, index: usize) -> CheckFuture<'_>;

    /// Runs reload hook number `index` (source order).
    #[doc(hidden)]
    fn __reload(&self, index: usize) -> HookFuture<'_>;

    /// The service's health as its `#[health_rule]` decides it from `report` (the checks'
    /// report with the default rule's status), if `__HOOKS.health_rule` is `Some`.
    #[doc(hidden)]
    fn __health_rule(&self, report: &crate::HealthReport) -> Option<crate::HealthStatus> {
        let _ = report;
        None
    }

    /// Runs the `#[run]` hook, if `__HOOKS.run` is `Some`.
    ///
    /// Unlike the other hooks, its future is returned unboxed, so that the run loop's task
    /// holds it inline: one allocation less per started run-loop service. The others stay
    /// boxed because one method returns the futures of several hooks (chosen by `index`).
    #[doc(hidden)]
    fn __run(
        &self,
        shutdown: Shutdown,
        ready: Ready,
        state: Option<Self::__RunState>,
    ) -> impl Future<Output = HookResult> + Send + '_;
}
