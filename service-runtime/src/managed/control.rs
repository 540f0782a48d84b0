//! The control state of a managed service and the one function that changes its status.
//!
//! # Invariants
//!
//! - **What the lock protects.** `Inner::ctl` (a `std::sync::Mutex<Control>`) guards
//!   everything that changes together with the status: the operation in flight, the run
//!   loop, the components started, whether cleanup is owed, the last error and the
//!   subscribers. The status itself lives in an atomic beside the lock so that
//!   [`Managed::status`] is one load; it is only ever stored by
//!   [`Inner::transition_at`], with the lock held, so transitions are totally ordered and
//!   every subscriber sees them in that order.
//! - **Who may make which transition.** `stopped → starting → running` and
//!   `running → stopping → stopped` are made by the operation in flight (`Control::op`),
//!   which owns the `starting` and `stopping` states: no other party moves a service out
//!   of them, except the operation's abandonment guard (`OpGuard`), which ends an
//!   operation dropped half-way in `error`. A run loop's task moves `running → error`
//!   (the loop failed) and ends a run stop (`stopping → stopped`/`error`). A start or
//!   stop with nothing to await makes both of its transitions inline, under one lock.
//! - **Deadlock safety.** The lock is never held across an `.await` and never while user
//!   code runs (hooks, health checks), so no task waits for the lock while holding
//!   something the holder needs. A transition sends to channels under it (whose wakers
//!   only schedule a task, never run one inline); a waker the state replaces is dropped
//!   after the lock is released. A tracing subscriber that panics under it poisons the
//!   lock, which [`Inner::lock`] ignores: every update under it is complete before the
//!   events that can panic.

use super::*;

pub(super) struct Inner<S> {
    /// This service's own `Arc` (it always lives in one): lets the type-erased service
    /// be the `Inner` itself rather than an `Arc` around a `Managed`.
    pub(super) this: Weak<Inner<S>>,
    /// The service's name: the one setting that often differs between instances of a type.
    pub(super) name: Cow<'static, str>,
    /// Every other setting.
    pub(super) settings: Settings,
    /// `name` shared, made on first use (errors, status changes, a supervisor):
    /// a service that never needs it allocates nothing for it.
    pub(super) shared_name: std::sync::OnceLock<Arc<str>>,
    /// The status, readable from anywhere with one atomic load.
    pub(super) status: AtomicU8,
    /// Everything changed together with the status. Never held across an `.await`.
    pub(super) ctl: Mutex<Control>,
    pub(super) watch: std::sync::OnceLock<watch::Sender<ServiceStatus>>,
    /// The handles on the service: [`Managed`] values and type-erased ones
    /// ([`ErasedService`]), not the runtime's own references (an operation finishing in
    /// a task, the run loop's task). When the last handle goes, nothing can stop the run
    /// loop any more: [`Inner::last_handle_gone`] ends it.
    pub(super) handles: AtomicUsize,
    /// The user's service. Init and cleanup hooks take the write lock (no one else
    /// reads while `starting` or `stopping`); the run loop and health checks share it.
    pub(super) service: RwLock<S>,
}

/// A service's settings but its name.
pub(super) enum Settings {
    /// Those of the `#[service(...)]` attribute, made once per type (most services keep
    /// them), shared rather than copied into each service.
    Shared(&'static ServiceConfig),
    /// Set at run time ([`Managed::with_config`]); the name in the box is not used.
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

pub(super) struct Control {
    /// The start or stop in flight; it owns the `starting`/`stopping` states.
    pub(super) op: Option<Op>,
    pub(super) next_op: u64,
    /// When the current status was entered (while `running`, the start of the uptime).
    pub(super) since: Instant,
    /// Every init hook completed and the cleanup hooks have not run yet.
    pub(super) cleanup_owed: bool,
    /// Components started by the last start, in start order.
    pub(super) components: Vec<ComponentEntry>,
    pub(super) run: Option<RunLoop>,
    /// Set by a run loop that returned before its start finished.
    pub(super) early_run_exit: Option<Option<Box<ServiceError>>>,
    pub(super) last_error: Option<Box<ServiceError>>,
    pub(super) subscribers: Subscribers,
    /// The outcome of the last [`OpKind::RunStop`] that ended before the call that began
    /// it took it (see [`Op::beginner`]).
    pub(super) run_stop_outcome: Option<RunStopOutcome>,
    /// Older untaken outcomes: a run stop ended while the outcome of an earlier one
    /// still waited for its caller's next poll.
    #[expect(
        clippy::box_collection,
        reason = "rare: a boxed list costs 8 bytes in every service, a list 24"
    )]
    pub(super) more_run_stop_outcomes: Option<Box<Vec<RunStopOutcome>>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum OpKind {
    Start,
    Stop,
    /// A stop of a service that owes nothing but its run loop (no component, no cleanup
    /// hook to run). Rather than a sequence of its own, the stop is ended by the run task
    /// when the loop returns (`Inner::on_run_exit`): a stop costs a shutdown request and a
    /// wait, no work to allocate and drive. The loop stays in `Control::run` meanwhile.
    /// At its deadline the loop is aborted and the stop ends in `error`
    /// (`Inner::time_out_run_stop`): by the process's deadline list (`crate::deadline`),
    /// or on a current-thread runtime by whichever waiter's tokio timer fires first.
    RunStop,
}

impl<S: Service> Inner<S> {
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
        // A root: an operation can move to a spawned task half-way and a run loop always
        // runs in one, so the service's spans never nest under whichever caller began them.
        tracing::info_span!(parent: None, "service", service = %self.name, version = %self.settings.get().version)
    }

    pub(super) fn hook_span(&self, kind: HookKind, hook: &'static str) -> tracing::Span {
        tracing::info_span!(parent: &self.span(), "hook", kind = kind.as_str(), hook)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Control> {
        // A panic while holding the lock can only come from a subscriber's tracing
        // layer; the control state is still consistent, so keep going.
        self.ctl
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn uptime(&self) -> Duration {
        let ctl = self.lock();
        if self.status() == ServiceStatus::Running {
            ctl.since.elapsed()
        } else {
            Duration::ZERO
        }
    }

    /// Moves to `to`, recording, logging and broadcasting the change. Callers hold `ctl`,
    /// so changes are totally ordered.
    pub(super) fn transition(
        &self,
        ctl: &mut Control,
        to: ServiceStatus,
        error: Option<ServiceError>,
    ) {
        self.transition_at(ctl, to, error, Instant::now());
    }

    /// [`transition`](Self::transition) at `now`: two transitions made together under one
    /// lock share one clock read (so an inline start reports no time spent `starting`,
    /// and an inline stop none `stopping`: nothing was awaited).
    pub(super) fn transition_at(
        &self,
        ctl: &mut Control,
        to: ServiceStatus,
        error: Option<ServiceError>,
        now: Instant,
    ) {
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
        if !ctl.subscribers.is_empty() {
            // Built for the first public subscriber, if any: a supervisor needs neither the
            // name nor the wall-clock time.
            let mut change: Option<StatusChange> = None;
            let running = ServiceStatus::Running;
            // A subscriber gone is removed after the delivery.
            let mut gone = false;
            for subscriber in ctl.subscribers.iter() {
                let delivered = match subscriber {
                    Subscriber::Public(sender) => {
                        let change = change.get_or_insert_with(|| StatusChange {
                            service: self.name().clone(),
                            from,
                            to,
                            at: SystemTime::now(),
                            duration: now - entered,
                            error: error.clone(),
                        });
                        sender.send(change.clone()).is_ok()
                    }
                    Subscriber::Supervisor { index, tally } => {
                        // The tally first: whoever gets the change sees the count include it.
                        if from == running {
                            tally.not_running.fetch_add(1, Ordering::AcqRel);
                        } else if to == running {
                            tally.not_running.fetch_sub(1, Ordering::AcqRel);
                        }
                        tally.changes.fetch_add(1, Ordering::AcqRel);
                        match tally.state.load(Ordering::Acquire) {
                            StatusTally::IDLE => true,
                            StatusTally::OBSERVED => {
                                tally.post(EntryChange {
                                    index: *index,
                                    from,
                                    to,
                                    entered,
                                    at: now,
                                    error: error.clone().map(Box::new),
                                });
                                true
                            }
                            _ => false,
                        }
                    }
                };
                gone |= !delivered;
            }
            if gone {
                ctl.subscribers.retain_open();
            }
        }
        if let Some(watch) = self.watch.get() {
            watch.send_replace(to);
        }
    }
}

impl<S> Drop for Inner<S> {
    fn drop(&mut self) {
        // A loop whose task is gone without reporting (its runtime shut down mid-poll):
        // make sure it is told.
        let ctl = self
            .ctl
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(run) = ctl.run.take() {
            run.shutdown.request();
            run.handle.abort();
        }
    }
}

pub(super) fn run_hook_name<S: Lifecycle>() -> &'static str {
    S::__HOOKS.run.map_or("run", |spec| spec.name)
}
