//! Items the macros' generated code names through `::service_runtime::__private`.
//!
//! Not public API: nothing here follows semver, and user code must not name it.

use std::borrow::Cow;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use ::core::option::Option::{self, None, Some};
pub use ::std::sync::OnceLock;
pub use ::std::vec::Vec;

use crate::BoxError;
use crate::health::{HealthChecks, HealthDetail, HealthStatus};
pub use crate::managed::ErasedService;
pub use crate::restart::Restart;
use crate::service::{
    DEFAULT_HEALTH_TIMEOUT, DEFAULT_START_TIMEOUT, DEFAULT_STOP_TIMEOUT, ServiceConfig,
};
pub use crate::supervisor::{NeedsAxum, NeedsHttp, NeedsMetrics, NeedsSystemd};

/// What an init, cleanup or run hook resolves to once its output is normalised.
pub type HookResult = Result<(), BoxError>;

/// The boxed future of an init, cleanup or run hook.
pub type HookFuture<'a> = Pin<Box<dyn Future<Output = HookResult> + Send + 'a>>;

/// What a health check resolves to once its output is normalised.
#[derive(Debug)]
pub enum CheckResult {
    /// One result, reported under the check's name.
    One(HealthDetail),
    /// Results named at run time, each reported as a check of its own (`check[name]`).
    Many(HealthChecks),
}

/// The boxed future of a health check.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = CheckResult> + Send + 'a>>;

/// One init, cleanup or run hook.
#[derive(Clone, Copy, Debug)]
pub struct HookSpec {
    /// The method name.
    pub name: &'static str,
    /// `timeout = "…"` on the hook attribute, overriding the service's.
    pub timeout: Option<Duration>,
}

/// One health check.
#[derive(Clone, Copy, Debug)]
pub struct CheckSpec {
    /// `name = "…"`, or the method name.
    pub name: &'static str,
    /// `critical` (the default) or `optional`.
    pub critical: bool,
    /// `timeout = "…"` on the hook attribute, overriding the service's.
    pub timeout: Option<Duration>,
}

/// Every hook of a service, in source order.
#[derive(Clone, Copy, Debug)]
pub struct Hooks {
    /// `#[init]` hooks.
    pub init: &'static [HookSpec],
    /// `#[cleanup]` hooks (source order; run in reverse).
    pub cleanup: &'static [HookSpec],
    /// `#[health]` checks.
    pub health: &'static [CheckSpec],
    /// The `#[run]` hook.
    pub run: Option<HookSpec>,
    /// The `#[run]` hook takes a [`Ready`](crate::Ready): a start waits for its signal.
    pub run_ready: bool,
    /// `#[reload]` hooks.
    pub reload: &'static [HookSpec],
    /// The name of the `#[health_rule]`, if there is one.
    pub health_rule: Option<&'static str>,
}

impl Hooks {
    /// A service without hooks.
    pub const NONE: Hooks = Hooks {
        init: &[],
        cleanup: &[],
        health: &[],
        run: None,
        run_ready: false,
        reload: &[],
        health_rule: None,
    };
}

/// The configuration written by `#[derive(Service)]`; `None` keeps a default.
pub fn config(
    name: &'static str,
    version: &'static str,
    start_timeout: Option<Duration>,
    stop_timeout: Option<Duration>,
    health_timeout: Option<Duration>,
) -> ServiceConfig {
    ServiceConfig::new(name)
        .version(version)
        .start_timeout(start_timeout.unwrap_or(DEFAULT_START_TIMEOUT))
        .stop_timeout(stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT))
        .health_timeout(health_timeout.unwrap_or(DEFAULT_HEALTH_TIMEOUT))
}

/// A `Duration` from milliseconds, usable in a `const`.
pub const fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// One child service of a `#[service(component)]` field, type-erased.
pub struct ComponentEntry {
    /// The field's name; `field[i]` for the element `i` of a `Vec` field.
    pub(crate) field: Cow<'static, str>,
    pub(crate) critical: bool,
    pub(crate) handle: ErasedService,
}

/// Adds the entries of a `#[service(component)]` field (none for an `Option` that is
/// `None`, one per element of a `Vec`); the bound reports a field of the wrong type at
/// the field.
pub fn component<C: crate::Component>(
    field: &'static str,
    critical: bool,
    value: &C,
    out: &mut Vec<ComponentEntry>,
) {
    value.__entries(field, critical, out);
}

/// Normalises the output of an init, cleanup or run hook.
#[diagnostic::on_unimplemented(
    message = "lifecycle hooks must return `Result<(), E>`, not `{Self}`",
    label = "expected `Result<(), E>` where `E` converts into `Box<dyn std::error::Error + Send + Sync>`",
    note = "any error type works: `std::io::Error`, your own `thiserror` type, `anyhow::Error`, `Box<dyn Error + Send + Sync>`"
)]
pub trait IntoHookResult {
    /// Converts into the runtime's result.
    fn into_hook_result(self) -> HookResult;
}

impl<E> IntoHookResult for Result<(), E>
where
    E: Into<BoxError>,
{
    fn into_hook_result(self) -> HookResult {
        self.map_err(Into::into)
    }
}

/// Normalises the output of an `#[init(state)]` hook: the `T` of `Result<T, E>` is what
/// the `#[run]` hook takes.
#[diagnostic::on_unimplemented(
    message = "an `#[init(state)]` hook must return `Result<{T}, E>`, not `{Self}`",
    label = "expected `Result<{T}, E>`: `{T}` is what the `#[run]` hook takes",
    note = "the `Ok` value of the `#[init(state)]` hook is handed to the `#[run]` hook by value"
)]
pub trait IntoRunState<T> {
    /// Splits into the state and the runtime's result.
    fn into_run_state(self) -> Result<T, BoxError>;
}

impl<T, E> IntoRunState<T> for Result<T, E>
where
    E: Into<BoxError>,
{
    fn into_run_state(self) -> Result<T, BoxError> {
        self.map_err(Into::into)
    }
}

/// Keeps the `Ok` value of an `#[init(state)]` hook for the run loop.
pub fn store_run_state<T, R: IntoRunState<T>>(slot: &mut Option<T>, result: R) -> HookResult {
    *slot = Some(result.into_run_state()?);
    Ok(())
}

/// The value an `#[init(state)]` hook made, for the `#[run]` hook.
pub fn run_state<T>(state: Option<T>) -> T {
    // A start spawns the run loop only after every init hook returned `Ok`.
    state.expect("the `#[init(state)]` hook returned `Ok` before the run loop began")
}

/// Normalises the output of a health check.
#[diagnostic::on_unimplemented(
    message = "health checks must return `HealthStatus`, `HealthDetail` or `HealthChecks`, or a `Result` of one of them or of `()`, not `{Self}`",
    label = "not a health check result",
    note = "an `Err` counts as a failed check, and its message becomes the check's detail"
)]
pub trait IntoCheckResult {
    /// Converts into the runtime's check result.
    fn into_check_result(self) -> CheckResult;
}

impl IntoCheckResult for HealthStatus {
    fn into_check_result(self) -> CheckResult {
        CheckResult::One(HealthDetail::new(self))
    }
}

impl IntoCheckResult for HealthDetail {
    fn into_check_result(self) -> CheckResult {
        CheckResult::One(self)
    }
}

impl IntoCheckResult for HealthChecks {
    fn into_check_result(self) -> CheckResult {
        CheckResult::Many(self)
    }
}

impl<E: Display> IntoCheckResult for Result<(), E> {
    fn into_check_result(self) -> CheckResult {
        match self {
            Ok(()) => HealthStatus::Healthy.into_check_result(),
            Err(error) => failed(&error),
        }
    }
}

impl<E: Display> IntoCheckResult for Result<HealthDetail, E> {
    fn into_check_result(self) -> CheckResult {
        self.map_or_else(|error| failed(&error), CheckResult::One)
    }
}

impl<E: Display> IntoCheckResult for Result<HealthStatus, E> {
    fn into_check_result(self) -> CheckResult {
        self.map_or_else(|error| failed(&error), IntoCheckResult::into_check_result)
    }
}

impl<E: Display> IntoCheckResult for Result<HealthChecks, E> {
    fn into_check_result(self) -> CheckResult {
        self.map_or_else(|error| failed(&error), CheckResult::Many)
    }
}

/// A check that returned `Err`: unhealthy under the check's own name, with the error's text.
fn failed(error: &dyn Display) -> CheckResult {
    CheckResult::One(HealthDetail::unhealthy(error.to_string()))
}

/// Boxes a hook's future; the `Send` bound makes a non-`Send` hook fail here,
/// at the span of the user's method.
pub fn hook<'a, F>(future: F) -> HookFuture<'a>
where
    F: Future<Output = HookResult> + Send + 'a,
{
    Box::pin(future)
}

/// The future of a `#[run]` hook that takes no [`Shutdown`](crate::Shutdown): it cannot
/// hear a stop, so a stop drops it as soon as shutdown is requested, and the loop ends
/// cleanly (`Ok`). A result the hook returns on its own comes first.
pub async fn until_shutdown<F>(shutdown: crate::Shutdown, run: F) -> HookResult
where
    F: Future<Output = HookResult>,
{
    let run = std::pin::pin!(run);
    let requested = std::pin::pin!(shutdown.requested());
    match futures_util::future::select(run, requested).await {
        futures_util::future::Either::Left((result, _)) => result,
        futures_util::future::Either::Right(((), _)) => Ok(()),
    }
}

/// Boxes a health check's future; see [`hook`].
pub fn check<'a, F>(future: F) -> CheckFuture<'a>
where
    F: Future<Output = CheckResult> + Send + 'a,
{
    Box::pin(future)
}

/// Boxes the future of a `#[lifecycle(?Send)]` hook: it may hold non-`Send` values across
/// `.await`, and fails if ever polled on another thread than the one that created it.
pub fn local_hook<'a, F>(future: F) -> HookFuture<'a>
where
    F: Future<Output = HookResult> + 'a,
{
    Box::pin(crate::local::LocalFuture::new(future))
}

/// The future of a `#[lifecycle(?Send)]` `#[run]` hook, not boxed again (the run hook's
/// future is returned unboxed: see `Lifecycle::__run`); the wrapper checks the thread as
/// [`local_hook`] does, and holds the hook's future in a box of its own, as it must to move
/// a non-`Send` value between threads.
pub fn local_run_hook<F>(future: F) -> impl Future<Output = HookResult> + Send
where
    F: Future<Output = HookResult>,
{
    crate::local::LocalFuture::new(future)
}

/// Boxes the future of a `#[lifecycle(?Send)]` health check; see [`local_hook`].
pub fn local_check<'a, F>(future: F) -> CheckFuture<'a>
where
    F: Future<Output = CheckResult> + 'a,
{
    Box::pin(crate::local::LocalFuture::new(future))
}

/// Applies the restart attributes of `#[derive(Service)]`; `None` keeps a default.
pub fn restart(
    config: ServiceConfig,
    restart: Option<Restart>,
    max_restarts: Option<u32>,
    restart_within: Option<Duration>,
    backoff: Option<Duration>,
    max_backoff: Option<Duration>,
) -> ServiceConfig {
    let mut policy = config.restart;
    if let Some(restart) = restart {
        policy = policy.restart(restart);
    }
    if let Some(max) = max_restarts {
        policy.max_restarts = max;
    }
    if let Some(within) = restart_within {
        policy.within = within;
    }
    if let Some(first) = backoff {
        policy.backoff = first;
        policy.max_backoff = policy.max_backoff.max(first);
    }
    if let Some(max) = max_backoff {
        policy.max_backoff = max;
    }
    config.restart(policy)
}

/// The future of a hook index that does not exist (a runtime bug if ever polled).
pub fn missing_hook<'a>(kind: &'static str, index: usize) -> HookFuture<'a> {
    Box::pin(async move { Err(format!("no {kind} hook number {index}").into()) })
}

/// The future of a health check index that does not exist.
pub fn missing_check<'a>(index: usize) -> CheckFuture<'a> {
    Box::pin(async move {
        CheckResult::One(HealthDetail::unhealthy(format!(
            "no health check number {index}"
        )))
    })
}
