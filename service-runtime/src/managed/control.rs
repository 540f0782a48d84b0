//! The control state of a managed service, and the one function that changes its status.
//!
//! # Invariants
//!
//! - **What the lock protects.** `Inner::ctl` (a `std::sync::Mutex<Control>`) guards
//!   everything that changes together with the status: the operation in flight, the run
//!   loop, the components started, whether cleanup is owed, the last error and the
//!   subscribers. The status itself is an atomic beside the lock, so that
//!   [`Managed::status`](super::Managed::status) is one load; it is stored only by
//!   [`Inner::transition`], with the lock held, so transitions are totally ordered and
//!   every observer sees them in that order.
//! - **Who makes which transition.** The operation in flight (`Control::op`, see
//!   [`operation`](super::operation)) owns `starting` and `stopping`: only its work moves
//!   the service out of them, or its guard, which ends an operation dropped half-way in
//!   `error`. A start or stop with nothing to await makes its two transitions inline,
//!   under one lock, without an operation. A run loop's task makes one transition, from
//!   `running`: to `error` when its loop fails; a loop that returns `Ok` asks for a stop
//!   instead, which is an operation. `Control::run` holds a loop only while `running`, or
//!   while `starting` when the start waits for the loop's ready signal: then the start
//!   owns it, and the loop's end goes to the start, never to a transition
//!   ([`ready_wait`](super::ready_wait)).
//!   A supervisor's shutdown that gives up on the service moves it to `error` from any
//!   status ([`abandon`](super::abandon)), taking the operation, the loops and the
//!   components away; until the next call, nothing else moves it (`Control::abandoned`).
//! - **Who owns the run loop.** `Control::run` holds the loop of a `running` service. A
//!   stop moves it into its operation (`Control::op`) under the lock before telling it to
//!   return, so a loop's task knows by its id whether it is still the current loop (it
//!   returned on its own) or a stop waits for it. The stop's remaining steps run in the
//!   one task that takes the loop's end out of the operation: the loop's task as it
//!   returns, or a call waiting for the stop at its deadline
//!   ([`loop_stop`](super::loop_stop)).
//! - **Who watches the components.** While a parent is `running`, one task watches its
//!   components (`Control::components_watch`, see [`components`](super::components)): it
//!   acts only under this lock, as the current watch of a `running` parent; a stop ends
//!   it when it begins.
//! - **Deadlock safety.** The lock is never held across an `.await` and never while user
//!   code runs (hooks, health checks), so nothing waits for the lock while holding what
//!   its holder needs. Transitions send to channels under it; their wakers only schedule
//!   a task, never run one inline. A tracing subscriber that panics under the lock
//!   poisons it, which [`Inner::lock`] ignores: every update made under it is complete
//!   before the events that can panic.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{RwLock, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::components::ComponentIncident;
use super::observers::Subscribers;
use super::operation::Op;
use super::run_loop::RunLoop;
use crate::__private::ComponentEntry;
use crate::error::{HookKind, ServiceError};
use crate::service::{Service, ServiceConfig};
use crate::status::ServiceStatus;

/// A managed service: the user's value, its settings and its control state, shared by
/// every handle, by its operations in flight and by its run loop's task.
pub(super) struct Inner<S> {
    /// This service's own `Arc` (it always lives in one): the type-erased calls, which
    /// have `&self` only, begin operations that hold the service.
    pub(super) this: Weak<Inner<S>>,
    /// The service's name: the one setting that often differs between instances of a type.
    pub(super) name: Cow<'static, str>,
    /// Every other setting.
    pub(super) settings: Settings,
    /// `name` shared, made on first use (errors, status changes, a supervisor).
    shared_name: OnceLock<Arc<str>>,
    /// The status, readable from anywhere with one atomic load.
    status: AtomicU8,
    /// Everything changed together with the status.
    ctl: Mutex<Control>,
    /// The watch of [`Managed::watch`](super::Managed::watch), made on first use.
    pub(super) watch: OnceLock<watch::Sender<ServiceStatus>>,
    /// The handles on the service: [`Managed`](super::Managed) values and type-erased
    /// ones, not the runtime's own references (an operation's work, the run loop's task).
    /// When the last handle goes, nothing can stop the run loop any more, so it ends.
    pub(super) handles: AtomicUsize,
    /// The user's service. Init and cleanup hooks take the write lock (no one else
    /// reads while `starting` or `stopping`); the run loop and health checks share it.
    pub(super) service: RwLock<S>,
}

/// A service's settings but its name.
pub(super) enum Settings {
    /// Those of the `#[service(...)]` attribute, made once per type and shared by every
    /// service that keeps them.
    Shared(&'static ServiceConfig),
    /// Set at run time ([`Managed::with_config`](super::Managed::with_config)); the name
    /// in the box is not used.
    Own(Box<ServiceConfig>),
}

impl Settings {
    pub(super) fn get(&self) -> &ServiceConfig {
        match self {
            Settings::Shared(config) => config,
            Settings::Own(config) => config,
        }
    }
}

/// What changes together with the status (see the module's invariants).
pub(super) struct Control {
    /// The start or stop in flight; it owns the `starting`/`stopping` states (boxed: a
    /// service spends most of its life with none).
    pub(super) op: Option<Box<Op>>,
    /// The id of the next operation or run loop: tells a late report from a current one.
    next_id: u64,
    /// When the current status was entered (while `running`, the start of the uptime).
    pub(super) since: Instant,
    /// Every init hook completed and the cleanup hooks have not run since.
    pub(super) cleanup_owed: bool,
    /// The components the last start started, in start order.
    pub(super) components: Vec<ComponentEntry>,
    /// The run loop of a `running` service.
    pub(super) run: Option<RunLoop>,
    /// Set by [`abandon`](super::abandon) once the service is in `error`: the operation
    /// it cancelled, should it still be running a step on another thread, makes no more
    /// transitions. The next `start()` or `stop()` clears it.
    pub(super) abandoned: bool,
    /// The error of the last transition to `error` (boxed: rare).
    pub(super) last_error: Option<Box<ServiceError>>,
    /// The watch over the components of a `running` parent (see
    /// [`components`](super::components)).
    pub(super) components_watch: Option<AbortHandle>,
    /// What its components' failures left (boxed: only a parent whose component failed
    /// has any).
    component_failures: Option<Box<ComponentFailures>>,
    pub(super) subscribers: Subscribers,
}

/// What a parent's components' failures left in its control state.
#[derive(Default)]
struct ComponentFailures {
    /// Why the stop in flight was begun, when a critical component's failure began it:
    /// the stop ends in `error` with it.
    stop_cause: Option<ServiceError>,
    /// What the component watch answered optional components' failures with, for a
    /// supervisor's report.
    incidents: Vec<ComponentIncident>,
}

impl Control {
    /// Sets why the stop about to begin is begun (see [`end_stop`](Inner::end_stop)).
    pub(super) fn set_stop_cause(&mut self, cause: ServiceError) {
        self.component_failures
            .get_or_insert_with(Box::default)
            .stop_cause = Some(cause);
    }

    /// Takes the cause of the stop in flight, if a failure began it.
    pub(super) fn take_stop_cause(&mut self) -> Option<ServiceError> {
        self.component_failures.as_mut()?.stop_cause.take()
    }

    /// The answers to optional components' failures so far.
    pub(super) fn incidents(&self) -> &[ComponentIncident] {
        self.component_failures
            .as_ref()
            .map_or(&[], |failures| &failures.incidents)
    }

    /// The answers to optional components' failures, to record one.
    pub(super) fn incidents_mut(&mut self) -> &mut Vec<ComponentIncident> {
        &mut self
            .component_failures
            .get_or_insert_with(Box::default)
            .incidents
    }

    /// A fresh id for an operation or a run loop.
    pub(super) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

impl<S: Service> Inner<S> {
    pub(super) fn new(service: S, name: Cow<'static, str>, settings: Settings) -> Arc<Self> {
        Arc::new_cyclic(|this| Inner {
            this: this.clone(),
            name,
            settings,
            shared_name: OnceLock::new(),
            status: AtomicU8::new(ServiceStatus::Stopped as u8),
            ctl: Mutex::new(Control {
                op: None,
                next_id: 0,
                since: Instant::now(),
                cleanup_owed: false,
                components: Vec::new(),
                run: None,
                abandoned: false,
                last_error: None,
                components_watch: None,
                component_failures: None,
                subscribers: Subscribers::default(),
            }),
            watch: OnceLock::new(),
            handles: AtomicUsize::new(1),
            service: RwLock::new(service),
        })
    }

    /// The settings but the name.
    pub(super) fn config(&self) -> &ServiceConfig {
        self.settings.get()
    }

    /// The name as errors and status changes carry it.
    pub(super) fn name(&self) -> &Arc<str> {
        self.shared_name.get_or_init(|| Arc::from(&*self.name))
    }

    pub(super) fn status(&self) -> ServiceStatus {
        ServiceStatus::from_u8(self.status.load(Ordering::Acquire))
    }

    /// The span of everything the service does. Made per use rather than once at
    /// construction, so a service built before the subscriber was installed still logs
    /// with its name (a span created without a subscriber stays disabled for good).
    pub(super) fn span(&self) -> tracing::Span {
        // A root: operations and run loops run in tasks of their own, so the service's
        // spans never nest under whichever caller began them.
        tracing::info_span!(parent: None, "service", service = %self.name, version = %self.config().version)
    }

    pub(super) fn hook_span(&self, kind: HookKind, hook: &'static str) -> tracing::Span {
        tracing::info_span!(parent: &self.span(), "hook", kind = kind.as_str(), hook)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Control> {
        self.ctl.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn uptime(&self) -> Duration {
        let ctl = self.lock();
        if self.status() == ServiceStatus::Running {
            ctl.since.elapsed()
        } else {
            Duration::ZERO
        }
    }

    /// Moves to `error` now with `error` as its cause, and returns the error: how every
    /// failed operation ends.
    pub(super) fn fail(&self, ctl: &mut Control, error: ServiceError) -> ServiceError {
        self.transition(
            ctl,
            ServiceStatus::Error,
            Some(error.clone()),
            Instant::now(),
        );
        error
    }

    /// Moves to `to` at `now`, recording, logging and telling every observer; `error` is
    /// the cause of a move to `error`. Callers hold `ctl`, so changes are totally ordered;
    /// two transitions made together pass one `now`.
    pub(super) fn transition(
        &self,
        ctl: &mut Control,
        to: ServiceStatus,
        error: Option<ServiceError>,
        now: Instant,
    ) {
        if ctl.abandoned {
            // A late step of the operation a shutdown cancelled: the service stays where
            // the cancellation left it.
            return;
        }
        let from = self.status();
        if !from.can_transition_to(to) {
            // Unreachable by construction; the state-machine tests walk every path.
            debug_assert!(
                false,
                "illegal transition {from} -> {to} of `{}`",
                self.name
            );
            tracing::error!(parent: &self.span(), %from, %to, "refused illegal status transition");
            return;
        }
        let entered = std::mem::replace(&mut ctl.since, now);
        self.status.store(to as u8, Ordering::Release);
        match &error {
            Some(error) => {
                tracing::info!(parent: &self.span(), %from, %to, duration = ?(now - entered), %error, "status changed");
                ctl.last_error = Some(Box::new(error.clone()));
            }
            None => {
                tracing::info!(parent: &self.span(), %from, %to, duration = ?(now - entered), "status changed");
            }
        }
        ctl.subscribers.deliver(
            || self.name().clone(),
            from,
            to,
            entered,
            now,
            error.as_ref(),
        );
        if let Some(watch) = self.watch.get() {
            watch.send_replace(to);
        }
    }
}

/// The name of a service's `#[run]` hook, for its errors and spans.
pub(super) fn run_hook_name<S: Service>() -> &'static str {
    S::__HOOKS.run.map_or("run", |spec| spec.name)
}
